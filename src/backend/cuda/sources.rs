//! The kernel sources under `kernels/`, embedded at build time by `build.rs`.

include!(concat!(env!("OUT_DIR"), "/kernels_gen.rs"));

/// The source of the translation unit `name` (e.g. `"gemv.cu"`).
pub fn source(name: &str) -> Option<&'static str> {
    KERNEL_SOURCES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| *s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_file_is_embedded_with_a_fingerprint() {
        for f in [
            "gemv.cu",
            "gemm.cu",
            "attention_decode.cu",
            "rmsnorm.cu",
            "argmax.cu",
            "encoder.cu",
        ] {
            assert!(source(f).is_some_and(|s| s.contains("extern \"C\"")), "{f}");
        }
        assert!(KERNEL_HEADERS.iter().any(|(n, _)| *n == "common.cuh"));
        assert_eq!(KERNEL_FINGERPRINT.len(), 16);
    }
}
