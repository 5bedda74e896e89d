//! Launch-level items that the command line's kernel benchmarks need and that are not part of
//! the supported API: the benchmark fill kernels and the driver-error conversion. Hidden from
//! the docs; no stability promise. Hosts use [`crate::api`].

use crate::backend::cuda::CudaBackend;
use crate::Error;
use cudarc::driver::{CudaFunction, DriverError};

/// A CUDA driver error as the crate's [`Error::Cuda`].
pub fn cuda_err(e: DriverError) -> Error {
    crate::backend::cuda::cuda_err(e)
}

/// The kernel that fills an FP16 matrix with seeded values on the device (`synthetic.cu`).
pub fn fill_synthetic_kernel(be: &CudaBackend) -> &CudaFunction {
    &be.kernels().fill_synthetic
}

/// The kernel that fills packed weight words with seeded values (`qgemv.cu`).
pub fn fill_words_kernel(be: &CudaBackend) -> &CudaFunction {
    &be.quant().fill_words
}

/// The kernel that fills FP16 scales/zeros with seeded values (`qgemv.cu`).
pub fn fill_halves_kernel(be: &CudaBackend) -> &CudaFunction {
    &be.quant().fill_halves
}
