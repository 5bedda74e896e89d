//! Finding the CUDA driver and NVRTC shared libraries at run time.
//!
//! cudarc loads libraries by file name only (`dlopen("libnvrtc.so.13")`), so a library outside
//! the loader's search path is invisible to it. [`ensure_nvrtc`] therefore searches, in order,
//! `AGENTCOMPRESS_NVRTC` (a file), `CUDA_HOME`, `CUDA_PATH`, `/usr/local/cuda/targets/x86_64-linux/lib`,
//! `/usr/local/cuda/lib64`, then the `nvidia` pip packages in any Python site-packages
//! folder, and loads the first match by full path. glibc then answers cudarc's later
//! `dlopen` by soname with that already-loaded copy. The toolkit comes first on purpose: a pip
//! NVRTC newer than the driver produces code the driver may refuse.

use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// File names NVRTC may have, newest first.
const NVRTC_NAMES: &[&str] = &["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"];

/// Whether the CUDA driver library (`libcuda`) can be loaded. Never panics.
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen candidate names; no CUDA call is made.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Folders that may hold NVRTC, in preference order (existing or not).
pub fn nvrtc_search_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(root) = std::env::var_os(var) {
            let root = PathBuf::from(root);
            dirs.push(root.join("targets/x86_64-linux/lib"));
            dirs.push(root.join("lib64"));
            dirs.push(root.join("lib"));
        }
    }
    dirs.push(PathBuf::from("/usr/local/cuda/targets/x86_64-linux/lib"));
    dirs.push(PathBuf::from("/usr/local/cuda/lib64"));
    for sp in site_packages_dirs() {
        for sub in [
            "nvidia/cu13/lib",
            "nvidia/cuda_nvrtc/lib",
            "nvidia/cublas/lib",
            "nvidia/cu12/lib",
        ] {
            dirs.push(sp.join(sub));
        }
    }
    dirs
}

/// Python site-packages folders: common system and pyenv locations, then whatever `python3`
/// reports (if it runs).
fn site_packages_dirs() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = Vec::new();
    let mut globbed = |base: PathBuf, pattern_prefix: &str, tail: &str| {
        if let Ok(rd) = std::fs::read_dir(&base) {
            let mut found: Vec<PathBuf> = rd
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with(pattern_prefix))
                .map(|e| e.path().join(tail))
                .collect();
            found.sort();
            found.reverse();
            roots.extend(found);
        }
    };
    for base in ["/usr/local/lib", "/usr/lib"] {
        globbed(PathBuf::from(base), "python3", "dist-packages");
        globbed(PathBuf::from(base), "python3", "site-packages");
    }
    if let Some(home) = std::env::var_os("HOME") {
        let pyenv = PathBuf::from(home).join(".pyenv/versions");
        if let Ok(rd) = std::fs::read_dir(&pyenv) {
            for v in rd.filter_map(|e| e.ok()) {
                globbed(v.path().join("lib"), "python3", "site-packages");
            }
        }
    }
    if let Ok(out) = std::process::Command::new("python3")
        .args([
            "-c",
            "import site,sys; print('\\n'.join(site.getsitepackages()+[site.getusersitepackages()]))",
        ])
        .output()
    {
        if out.status.success() {
            roots.extend(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .map(|l| PathBuf::from(l.trim())),
            );
        }
    }
    roots
}

/// The first NVRTC library file found by the search described in the module docs.
pub fn find_nvrtc() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("AGENTCOMPRESS_NVRTC") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Some(p);
        }
    }
    nvrtc_search_dirs()
        .into_iter()
        .find_map(|d| NVRTC_NAMES.iter().map(|n| d.join(n)).find(|p| p.is_file()))
}

/// The CUDA include folder that belongs with an NVRTC library, if any (kernels need none, but
/// it is reported in diagnostics).
pub fn include_dir_for(lib: &Path) -> Option<PathBuf> {
    let parent = lib.parent()?;
    [parent.join("../include"), parent.join("../../include")]
        .into_iter()
        .find(|p| p.join("cuda_fp16.h").is_file())
}

static NVRTC: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();

/// Loads NVRTC by full path once per process (so cudarc finds it) and returns that path.
pub fn ensure_nvrtc() -> Result<PathBuf> {
    NVRTC
        .get_or_init(|| {
            let path = find_nvrtc().ok_or_else(|| {
                format!(
                    "NVRTC not found (set AGENTCOMPRESS_NVRTC or CUDA_HOME; searched {} folders, e.g. {})",
                    nvrtc_search_dirs().len(),
                    nvrtc_search_dirs()
                        .iter()
                        .take(3)
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
            // SAFETY: loading NVRTC runs only its (side-effect free) initialisers.
            let lib = unsafe { libloading::Library::new(&path) }
                .map_err(|e| format!("cannot load {}: {e}", path.display()))?;
            // Keep it loaded for the life of the process so cudarc's dlopen finds it.
            std::mem::forget(lib);
            // SAFETY: the library is loaded now, so cudarc's name-based lookup succeeds.
            if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
                return Err(format!(
                    "loaded {} but cudarc still cannot open NVRTC by name",
                    path.display()
                ));
            }
            Ok(path)
        })
        .clone()
        .map_err(Error::Cuda)
}

static CUBLAS: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();

/// Loads cuBLAS (and cuBLASLt, which it needs) by full path from the same folders as NVRTC,
/// once per process, so cudarc's name-based lookup finds them. Used by the benchmarks only.
pub fn ensure_cublas() -> Result<PathBuf> {
    CUBLAS
        .get_or_init(|| {
            let find = |names: &[&str]| {
                nvrtc_search_dirs()
                    .into_iter()
                    .find_map(|d| names.iter().map(|n| d.join(n)).find(|p| p.is_file()))
            };
            let lt = find(&["libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so"]);
            let blas = find(&["libcublas.so.13", "libcublas.so.12", "libcublas.so"])
                .ok_or_else(|| "cuBLAS not found in the CUDA or pip folders".to_string())?;
            for p in lt.iter().chain(std::iter::once(&blas)) {
                // SAFETY: loading cuBLAS runs only its initialisers.
                let lib = unsafe { libloading::Library::new(p) }
                    .map_err(|e| format!("cannot load {}: {e}", p.display()))?;
                std::mem::forget(lib);
            }
            // SAFETY: name-based probe only.
            if !unsafe { cudarc::cublas::sys::is_culib_present() } {
                return Err(format!(
                    "loaded {} but cudarc cannot open it by name",
                    blas.display()
                ));
            }
            Ok(blas)
        })
        .clone()
        .map_err(Error::Cuda)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_prefers_toolkit_over_pip() {
        let dirs = nvrtc_search_dirs();
        let sys = dirs
            .iter()
            .position(|d| d.ends_with("cuda/targets/x86_64-linux/lib"))
            .expect("toolkit folder listed");
        if let Some(pip) = dirs.iter().position(|d| d.ends_with("nvidia/cu13/lib")) {
            assert!(sys < pip, "toolkit must come before pip packages");
        }
    }
}
