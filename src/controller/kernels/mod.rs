//! The controller's own CPU matrix products (f32 and INT8, packed and cache-blocked). They
//! are not `Backend` operations: only the packed controller runs them.

pub mod gemm;
pub mod gemm_i8;
