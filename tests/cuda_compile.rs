//! Compiles every embedded CUDA kernel with NVRTC for sm_80 and sm_90 (no GPU needed).
//! Skips, with a clear message, only when no NVRTC library can be found at all.

use agentcompress::backend::cuda::{libs, nvrtc, sources};

#[test]
fn every_kernel_compiles_for_sm80_and_sm90() {
    if libs::find_nvrtc().is_none() {
        println!("SKIPPED: NVRTC not found (install nvidia-cuda-nvrtc or set AGENTCOMPRESS_NVRTC)");
        return;
    }
    let (maj, min) = nvrtc::version().expect("NVRTC loads");
    println!("NVRTC {maj}.{min} from {:?}", libs::find_nvrtc());
    let archs = nvrtc::supported_archs().expect("arch list");
    let mut failures = Vec::new();
    for arch in [80, 90] {
        assert!(
            archs.contains(&arch),
            "NVRTC {maj}.{min} cannot target sm_{arch}"
        );
        for (name, src) in sources::KERNEL_SOURCES {
            match nvrtc::compile(name, src, arch) {
                Ok(c) => {
                    assert!(c.cubin.starts_with(b"\x7fELF"), "{name}: not an ELF cubin");
                    if !c.log.is_empty() {
                        println!("{name} sm_{arch} log:\n{}", c.log);
                    }
                }
                Err(e) => failures.push(format!("{name} sm_{arch}: {e}")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
