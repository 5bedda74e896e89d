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

/// Uploads variant weights (packed matrices) to the backend `device` names.
pub fn upload_matrices(
    device: Device,
    weights: &ModelWeights<crate::quant::WeightMatrix>,
) -> Result<Box<dyn DynModel>> {
    match device {
        Device::Cpu => Ok(Box::new(Model::new(CpuBackend::new(), weights)?)),
        Device::Cuda(ordinal) => Ok(Box::new(Model::new(CudaBackend::new(ordinal)?, weights)?)),
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
        Device::Cuda(ordinal) => Ok(Box::new(Model::new(CudaBackend::new(ordinal)?, weights)?)),
        Device::Auto => match CudaBackend::new(0) {
            Ok(cuda) => Ok(Box::new(Model::new(cuda, weights)?)),
            Err(Error::NoDevice(_)) => Ok(Box::new(Model::new(CpuBackend::new(), weights)?)),
            Err(e) => Err(e),
        },
    }
}
