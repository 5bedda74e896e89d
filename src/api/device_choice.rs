//! Device choice and model upload onto the chosen backend.

use super::DynModel;
use crate::backend::cpu::CpuBackend;
use crate::backend::cuda::CudaBackend;
use crate::engine::Model;
use crate::model::ModelWeights;
use crate::{Error, Result};

/// Where a model runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Device {
    /// CUDA when a usable GPU is present, else the CPU.
    #[default]
    Auto,
    /// The CPU backend.
    Cpu,
    /// The CUDA backend on GPU `ordinal`; an error when none is present.
    Cuda(usize),
}

impl std::str::FromStr for Device {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Device::Auto),
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse) {
                Some(Ok(n)) => Ok(Device::Cuda(n)),
                _ => Err(Error::invalid(format!(
                    "unknown device '{s}' (expected auto, cpu, cuda or cuda:N)"
                ))),
            },
        }
    }
}

impl Device {
    /// Resolves the choice once, when an engine opens: [`Device::Auto`] becomes `Cuda(0)` when
    /// a usable GPU is present, else `Cpu`; an explicit `Cuda(n)` is checked now (driver and
    /// device), so a missing GPU fails the open with [`Error::NoDevice`] instead of the first
    /// run that needs a kernel.
    pub fn resolve(self) -> Result<Device> {
        match self {
            Device::Auto => match CudaBackend::new(0) {
                Ok(_) => Ok(Device::Cuda(0)),
                Err(Error::NoDevice(_)) => Ok(Device::Cpu),
                Err(e) => Err(e),
            },
            Device::Cuda(n) => {
                crate::backend::cuda::pinned::open_context(n).map_err(|e| asked_for(n, e))?;
                Ok(Device::Cuda(n))
            }
            Device::Cpu => Ok(Device::Cpu),
        }
    }
}

/// Names the device asked for in a [`Error::NoDevice`].
fn asked_for(n: usize, e: Error) -> Error {
    match e {
        Error::NoDevice(why) => Error::NoDevice(format!("device cuda:{n} was asked for: {why}")),
        other => other,
    }
}

/// Opens the CUDA backend on GPU `n`, an explicit choice: a missing GPU is an
/// [`Error::NoDevice`] naming `cuda:n`.
pub(crate) fn open_cuda(n: usize) -> Result<CudaBackend> {
    CudaBackend::new(n).map_err(|e| asked_for(n, e))
}

/// Uploads variant weights (packed matrices) to the backend `device` names.
pub fn upload_matrices(
    device: Device,
    weights: &ModelWeights<crate::quant::WeightMatrix>,
) -> Result<Box<dyn DynModel>> {
    match device {
        Device::Cpu => Ok(Box::new(Model::new(CpuBackend::new(), weights)?)),
        Device::Cuda(ordinal) => Ok(Box::new(Model::new(open_cuda(ordinal)?, weights)?)),
        Device::Auto => match CudaBackend::new(0) {
            Ok(cuda) => Ok(Box::new(Model::new(cuda, weights)?)),
            Err(Error::NoDevice(_)) => Ok(Box::new(Model::new(CpuBackend::new(), weights)?)),
            Err(e) => Err(e),
        },
    }
}

/// Uploads `weights` to the backend `device` names.
pub fn upload(device: Device, weights: &ModelWeights) -> Result<Box<dyn DynModel>> {
    match device {
        Device::Cpu => Ok(Box::new(Model::new(CpuBackend::new(), weights)?)),
        Device::Cuda(ordinal) => Ok(Box::new(Model::new(open_cuda(ordinal)?, weights)?)),
        Device::Auto => match CudaBackend::new(0) {
            Ok(cuda) => Ok(Box::new(Model::new(cuda, weights)?)),
            Err(Error::NoDevice(_)) => Ok(Box::new(Model::new(CpuBackend::new(), weights)?)),
            Err(e) => Err(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_gpu_that_is_not_there_fails_at_resolve() {
        assert_eq!(Device::Cpu.resolve().unwrap(), Device::Cpu);
        let e = Device::Cuda(10_000).resolve().unwrap_err();
        assert!(matches!(e, Error::NoDevice(_)), "{e}");
        assert!(e.to_string().contains("cuda:10000"), "{e}");
        // Auto never fails for want of a GPU.
        assert!(matches!(
            Device::Auto.resolve(),
            Ok(Device::Cpu | Device::Cuda(0)) | Err(Error::Cuda(_))
        ));
    }
}
