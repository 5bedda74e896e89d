//! Small shared helpers with no dependencies on the rest of the crate.

pub mod rng;
pub mod scratch_pool;

/// Largest absolute difference between two equally long slices (for agreement tests).
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
