//! Compiling the embedded kernels with NVRTC, to CUBIN for the device's exact architecture,
//! with an on-disk cache keyed by source fingerprint, architecture and NVRTC version.

use super::libs;
use super::sources::{KERNEL_FINGERPRINT, KERNEL_HEADERS};
use crate::{Error, Result};
use cudarc::nvrtc::sys;
use std::ffi::{CStr, CString};
use std::path::PathBuf;

/// NVRTC's `(major, minor)` version (loads NVRTC first).
pub fn version() -> Result<(i32, i32)> {
    libs::ensure_nvrtc()?;
    let (mut a, mut b) = (0, 0);
    // SAFETY: plain out-parameters.
    check(unsafe { sys::nvrtcVersion(&mut a, &mut b) }, "nvrtcVersion")?;
    Ok((a, b))
}

/// The GPU architectures NVRTC can target (as `sm_XY` numbers, e.g. 90).
pub fn supported_archs() -> Result<Vec<i32>> {
    libs::ensure_nvrtc()?;
    let mut n = 0;
    // SAFETY: out-parameter, then a buffer of the reported length.
    check(
        unsafe { sys::nvrtcGetNumSupportedArchs(&mut n) },
        "nvrtcGetNumSupportedArchs",
    )?;
    let mut v = vec![0i32; n.max(0) as usize];
    check(
        unsafe { sys::nvrtcGetSupportedArchs(v.as_mut_ptr()) },
        "nvrtcGetSupportedArchs",
    )?;
    Ok(v)
}

fn check(r: sys::nvrtcResult, what: &str) -> Result<()> {
    if r == sys::nvrtcResult::NVRTC_SUCCESS {
        Ok(())
    } else {
        Err(Error::Cuda(format!("{what} failed: {r:?}")))
    }
}

/// What a compilation produced.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// CUBIN (ELF) bytes for the requested architecture.
    pub cubin: Vec<u8>,
    /// The compiler log (warnings); empty when clean.
    pub log: String,
}

/// Compiles one translation unit for `sm_{arch}` (e.g. 90) to CUBIN. The embedded headers are
/// supplied in memory, so no include path is needed. Errors carry NVRTC's log.
pub fn compile(name: &str, src: &str, arch: i32) -> Result<Compiled> {
    libs::ensure_nvrtc()?;
    let c_src = CString::new(src).map_err(|_| Error::Internal(format!("{name}: NUL in source")))?;
    let c_name = CString::new(name).map_err(|_| Error::Internal("NUL in name".into()))?;
    let hdr_src: Vec<CString> = KERNEL_HEADERS
        .iter()
        .map(|(_, s)| CString::new(*s))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| Error::Internal("NUL in header".into()))?;
    let hdr_names: Vec<CString> = KERNEL_HEADERS
        .iter()
        .map(|(n, _)| CString::new(*n))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| Error::Internal("NUL in header name".into()))?;
    let hs: Vec<*const std::ffi::c_char> = hdr_src.iter().map(|c| c.as_ptr()).collect();
    let hn: Vec<*const std::ffi::c_char> = hdr_names.iter().map(|c| c.as_ptr()).collect();
    let mut prog: sys::nvrtcProgram = std::ptr::null_mut();
    // SAFETY: every pointer outlives the call; counts match the arrays.
    check(
        unsafe {
            sys::nvrtcCreateProgram(
                &mut prog,
                c_src.as_ptr(),
                c_name.as_ptr(),
                hs.len() as i32,
                hs.as_ptr(),
                hn.as_ptr(),
            )
        },
        "nvrtcCreateProgram",
    )?;
    let mut opts = vec![
        format!("--gpu-architecture=sm_{arch}"),
        "--std=c++17".to_string(),
        "-DAC_NVRTC=1".to_string(),
    ];
    if std::env::var_os("AGENTCOMPRESS_PTXAS_VERBOSE").is_some() {
        opts.push("--ptxas-options=-v".to_string());
    }
    let opts: Vec<CString> = opts
        .into_iter()
        .map(|o| CString::new(o).unwrap_or_default())
        .collect();
    let op: Vec<*const std::ffi::c_char> = opts.iter().map(|c| c.as_ptr()).collect();
    // SAFETY: prog is valid; options outlive the call.
    let rc = unsafe { sys::nvrtcCompileProgram(prog, op.len() as i32, op.as_ptr()) };
    let log = program_log(prog);
    let result = if rc != sys::nvrtcResult::NVRTC_SUCCESS {
        Err(Error::Cuda(format!(
            "NVRTC failed to compile {name} for sm_{arch} ({rc:?}):\n{log}"
        )))
    } else {
        let mut size = 0usize;
        // SAFETY: prog compiled; buffer sized from the query.
        check(
            unsafe { sys::nvrtcGetCUBINSize(prog, &mut size) },
            "nvrtcGetCUBINSize",
        )
        .and_then(|_| {
            let mut cubin = vec![0u8; size];
            check(
                unsafe { sys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr() as *mut _) },
                "nvrtcGetCUBIN",
            )?;
            if cubin.is_empty() {
                return Err(Error::Cuda(format!("NVRTC produced no CUBIN for {name}")));
            }
            Ok(Compiled {
                cubin,
                log: log.clone(),
            })
        })
    };
    // SAFETY: prog is valid and not used afterwards.
    unsafe { sys::nvrtcDestroyProgram(&mut prog) };
    result
}

fn program_log(prog: sys::nvrtcProgram) -> String {
    let mut size = 0usize;
    // SAFETY: prog is valid; buffer sized from the query.
    unsafe {
        if sys::nvrtcGetProgramLogSize(prog, &mut size) != sys::nvrtcResult::NVRTC_SUCCESS
            || size <= 1
        {
            return String::new();
        }
        let mut buf = vec![0u8; size];
        if sys::nvrtcGetProgramLog(prog, buf.as_mut_ptr() as *mut _)
            != sys::nvrtcResult::NVRTC_SUCCESS
        {
            return String::new();
        }
        CStr::from_bytes_until_nul(&buf)
            .map(|c| c.to_string_lossy().trim().to_string())
            .unwrap_or_default()
    }
}

/// The kernel cache folder: `AGENTCOMPRESS_KERNEL_CACHE`, else `$XDG_CACHE_HOME/agentcompress/kernels`,
/// else `~/.cache/agentcompress/kernels`.
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("AGENTCOMPRESS_KERNEL_CACHE") {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("agentcompress/kernels"))
}

/// Like [`compile`], but reuses a cached CUBIN for the same sources, architecture and NVRTC
/// version. Cache failures are never fatal (the kernel is simply recompiled).
pub fn compile_cached(name: &str, src: &str, arch: i32) -> Result<Vec<u8>> {
    type Memo = std::sync::Mutex<std::collections::HashMap<(String, i32), Vec<u8>>>;
    static MEMO: std::sync::OnceLock<Memo> = std::sync::OnceLock::new();
    let memo = MEMO.get_or_init(Default::default);
    let key = (name.to_string(), arch);
    if let Some(c) = memo.lock().ok().and_then(|m| m.get(&key).cloned()) {
        return Ok(c);
    }
    let cubin = compile_cached_on_disk(name, src, arch)?;
    if let Ok(mut m) = memo.lock() {
        m.insert(key, cubin.clone());
    }
    Ok(cubin)
}

fn compile_cached_on_disk(name: &str, src: &str, arch: i32) -> Result<Vec<u8>> {
    let (maj, min) = version()?;
    let stem = name.trim_end_matches(".cu");
    let file = cache_dir().map(|d| {
        d.join(format!(
            "{stem}-{KERNEL_FINGERPRINT}-sm{arch}-nvrtc{maj}.{min}.cubin"
        ))
    });
    if let Some(f) = &file {
        if let Ok(bytes) = std::fs::read(f) {
            if bytes.starts_with(b"\x7fELF") {
                return Ok(bytes);
            }
        }
    }
    let c = compile(name, src, arch)?;
    if let Some(f) = &file {
        if let Some(dir) = f.parent() {
            let _ = std::fs::create_dir_all(dir);
            let tmp = f.with_extension(format!("tmp{}", std::process::id()));
            if std::fs::write(&tmp, &c.cubin).is_ok() {
                let _ = std::fs::rename(&tmp, f);
            }
        }
    }
    Ok(c.cubin)
}
