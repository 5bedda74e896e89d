//! AMX-INT8 tiles for the packed panel products on x86-64 Linux: detection, the one-time
//! permission Linux asks a process for before it may use the tile registers, and the tile
//! instructions the panel kernel uses, as inline assembly (Rust's AMX intrinsics are not
//! stable).
//!
//! **Tiles** (configured by [`configure`] for `m <= 16` input rows): `tmm0` the accumulator,
//! `m` rows of sixteen `i32` (one per panel output); `tmm1` the activations, `m` rows of one
//! 32-code block (signed bytes, row `r` at `a + r * a_stride`); `tmm2` the weights, eight
//! 64-byte panel lines of one block (unsigned bytes; line `i` holds K positions `4i .. 4i + 4`
//! of the block for each of the sixteen outputs, the layout `vpdpbusd` also reads, which is
//! the B layout `tdpbsud` takes).

/// True when [`supported`] and `AGENTCOMPRESS_CPU_AMX=1`: the panel products then run 16 rows
/// or more on tiles. Off by default because, with activations scaled per 32-code block, every
/// block's tile must be stored and rescaled row by row, and measured that way the tiles were
/// no faster than the VNNI kernels (`docs/PERFORMANCE.md`; `bench cpu-kernels` with and
/// without the variable compares them).
pub fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        std::env::var("AGENTCOMPRESS_CPU_AMX").is_ok_and(|v| v.trim() == "1") && supported()
    })
}

/// True when the CPU has AVX-512 VNNI, AMX-TILE and AMX-INT8 and Linux granted this process
/// the tile data state.
pub fn supported() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| super::qgemv_vnni::available() && detect_and_request())
}

/// CPUID says AMX-TILE and AMX-INT8, and `arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA)`
/// succeeds (the permission holds for every thread of the process).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect_and_request() -> bool {
    use std::arch::x86_64::__cpuid_count;
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // Leaf 7 is read only when leaf 0 lists it.
    if __cpuid_count(0, 0).eax < 7 {
        return false;
    }
    let leaf7 = __cpuid_count(7, 0);
    let (tile, int8) = ((leaf7.edx >> 24) & 1 == 1, (leaf7.edx >> 25) & 1 == 1);
    if !(tile && int8) {
        return false;
    }
    // SAFETY: a request for a process-wide permission; no memory is passed.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect_and_request() -> bool {
    false
}

/// The 64-byte tile configuration `ldtilecfg` reads (palette 1).
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    _reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

/// Configures the three tiles of the module docs for `m` input rows (`1..=16`).
///
/// # Safety
/// [`supported`] must have returned true; [`release`] must follow before this thread runs
/// anything else that might configure tiles.
#[cfg(target_arch = "x86_64")]
pub unsafe fn configure(m: usize) {
    debug_assert!((1..=16).contains(&m));
    let mut cfg = TileConfig {
        palette: 1,
        start_row: 0,
        _reserved: [0; 14],
        colsb: [0; 16],
        rows: [0; 16],
    };
    (cfg.colsb[0], cfg.rows[0]) = (64, m as u8);
    (cfg.colsb[1], cfg.rows[1]) = (32, m as u8);
    (cfg.colsb[2], cfg.rows[2]) = (64, 8);
    (cfg.colsb[3], cfg.rows[3]) = (64, m as u8);
    (cfg.colsb[4], cfg.rows[4]) = (32, m as u8);
    (cfg.colsb[5], cfg.rows[5]) = (64, 8);
    std::arch::asm!("ldtilecfg [{}]", in(reg) &cfg, options(nostack, readonly));
}

/// Returns the tile registers to their initial state.
///
/// # Safety
/// As [`configure`].
#[cfg(target_arch = "x86_64")]
pub unsafe fn release() {
    std::arch::asm!("tilerelease", options(nostack, nomem));
}

/// One block's integer products: `c[r][o] = sum_k a[r][k] * b[k][o]` over the block's 32 K
/// positions for the configured `m` rows, signed activations times unsigned weight codes,
/// exact in `i32`.
///
/// # Safety
/// Tiles configured by [`configure`] for `m` rows; `a + r * a_stride` readable for 32 bytes
/// for `r < m`; `b` readable for 512 bytes; `c` writable for `m * 64` bytes.
#[cfg(target_arch = "x86_64")]
pub unsafe fn block_product(a: *const i8, a_stride: usize, b: *const u8, c: *mut i32) {
    std::arch::asm!(
        "tilezero tmm0",
        "tileloadd tmm1, [{a} + {sa} * 1]",
        "tileloadd tmm2, [{b} + {sb} * 1]",
        "tdpbsud tmm0, tmm1, tmm2",
        "tilestored [{c} + {sc} * 1], tmm0",
        a = in(reg) a,
        sa = in(reg) a_stride,
        b = in(reg) b,
        sb = in(reg) 64usize,
        c = in(reg) c,
        sc = in(reg) 64usize,
        options(nostack),
    );
}

/// Two blocks' integer products as [`block_product`], on two sets of tiles (`tmm0..2` and
/// `tmm3..5`), so the second product runs while the first is stored.
///
/// # Safety
/// As [`block_product`], for both blocks.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn block_pair_product(
    a0: *const i8,
    a1: *const i8,
    a_stride: usize,
    b0: *const u8,
    b1: *const u8,
    c0: *mut i32,
    c1: *mut i32,
) {
    std::arch::asm!(
        "tilezero tmm0",
        "tilezero tmm3",
        "tileloadd tmm1, [{a0} + {sa} * 1]",
        "tileloadd tmm2, [{b0} + {sb} * 1]",
        "tileloadd tmm4, [{a1} + {sa} * 1]",
        "tileloadd tmm5, [{b1} + {sb} * 1]",
        "tdpbsud tmm0, tmm1, tmm2",
        "tdpbsud tmm3, tmm4, tmm5",
        "tilestored [{c0} + {sc} * 1], tmm0",
        "tilestored [{c1} + {sc} * 1], tmm3",
        a0 = in(reg) a0,
        a1 = in(reg) a1,
        sa = in(reg) a_stride,
        b0 = in(reg) b0,
        b1 = in(reg) b1,
        sb = in(reg) 64usize,
        c0 = in(reg) c0,
        c1 = in(reg) c1,
        sc = in(reg) 64usize,
        options(nostack),
    );
}
