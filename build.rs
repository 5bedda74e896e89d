//! Embeds the CUDA sources under `kernels/` into the crate (NVRTC compiles them at first use)
//! together with a fingerprint of their contents, so compiled modules can be cached on disk by
//! source hash.

use std::fmt::Write as _;
use std::path::Path;

/// FNV-1a 64-bit: a stable, dependency-free content hash.
fn fnv1a(bytes: &[u8], mut h: u64) -> u64 {
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("cu" | "cuh")));
    files.sort();
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    let (mut sources, mut headers) = (String::new(), String::new());
    for p in &files {
        println!("cargo:rerun-if-changed={}", p.display());
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let text = std::fs::read(p).unwrap_or_default();
        hash = fnv1a(name.as_bytes(), hash);
        hash = fnv1a(&text, hash);
        let entry = format!(
            "    ({name:?}, include_str!({:?})),\n",
            p.display().to_string()
        );
        if name.ends_with(".cuh") {
            headers.push_str(&entry);
        } else {
            sources.push_str(&entry);
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "/// `(file name, source)` of every kernel translation unit."
    );
    let _ = writeln!(
        out,
        "pub const KERNEL_SOURCES: &[(&str, &str)] = &[\n{sources}];"
    );
    let _ = writeln!(
        out,
        "/// `(file name, source)` of every header the kernels include."
    );
    let _ = writeln!(
        out,
        "pub const KERNEL_HEADERS: &[(&str, &str)] = &[\n{headers}];"
    );
    let _ = writeln!(out, "/// Hash of every kernel source and header (hex).");
    let _ = writeln!(out, "pub const KERNEL_FINGERPRINT: &str = \"{hash:016x}\";");
    let out_dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    std::fs::write(Path::new(&out_dir).join("kernels_gen.rs"), out).expect("write kernels_gen.rs");
}
