//! Device choice and model upload onto the chosen backend.

use super::DynModel;
use crate::backend::cpu::CpuBackend;
use crate::backend::cuda::CudaBackend;
use crate::engine::Model;
use crate::io::{open_reader, HostStagingAlloc, ReaderConfig, StagingConfig, StagingPipeline};
use crate::model::ModelWeights;
use crate::pool::OpenVariant;
use crate::store::ListedVariant;
use crate::{Error, Result};
use std::sync::Arc;

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

/// A backend opened for a [`Device`].
pub enum OpenBackend {
    /// The CPU backend.
    Cpu(CpuBackend),
    /// A CUDA backend on the given ordinal.
    Cuda(CudaBackend, usize),
}

impl Device {
    /// Opens the backend this device names. `Auto` takes CUDA device 0 when one is usable and
    /// falls back to the CPU only when there is none ([`Error::NoDevice`]); any other CUDA
    /// failure is returned, so a broken driver is not silently hidden.
    pub fn open(self) -> Result<OpenBackend> {
        match self {
            Device::Cpu => Ok(OpenBackend::Cpu(CpuBackend::new())),
            Device::Cuda(ordinal) => Ok(OpenBackend::Cuda(open_cuda(ordinal)?, ordinal)),
            Device::Auto => match CudaBackend::new(0) {
                Ok(cuda) => Ok(OpenBackend::Cuda(cuda, 0)),
                Err(Error::NoDevice(_)) => Ok(OpenBackend::Cpu(CpuBackend::new())),
                Err(e) => Err(e),
            },
        }
    }

    /// Resolves the choice once, when an engine opens: [`Device::Auto`] becomes `Cuda(0)` when
    /// a usable GPU is present, else `Cpu`; an explicit `Cuda(n)` is checked now (driver and
    /// device), so a missing GPU fails the open with [`Error::NoDevice`] instead of the first
    /// run that needs a kernel.
    pub fn resolve(self) -> Result<Device> {
        match self {
            Device::Auto => Ok(match self.open()? {
                OpenBackend::Cpu(_) => Device::Cpu,
                OpenBackend::Cuda(_, ordinal) => Device::Cuda(ordinal),
            }),
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

/// Loads the variant `listed` names (its header checked against the manifest) onto the backend
/// `device` names: every entry read with O_DIRECT through the streaming pipeline, checksums
/// verified as it lands when `verify`, one entry decoded and uploaded while the next is read
/// ([`Model::load`]).
pub fn load_listed(
    device: Device,
    listed: &ListedVariant,
    verify: bool,
) -> Result<Box<dyn DynModel>> {
    let variant = OpenVariant::open_listed(listed)?;
    let pipeline = StagingPipeline::new(
        open_reader(&ReaderConfig::default())?,
        Arc::new(HostStagingAlloc),
        StagingConfig::default(),
    )?;
    match device.open()? {
        OpenBackend::Cpu(cpu) => Ok(Box::new(Model::load(cpu, &variant, &pipeline, verify)?)),
        OpenBackend::Cuda(cuda, _) => Ok(Box::new(Model::load(cuda, &variant, &pipeline, verify)?)),
    }
}

/// Uploads `weights` to the backend `device` names.
pub fn upload(device: Device, weights: &ModelWeights) -> Result<Box<dyn DynModel>> {
    match device.open()? {
        OpenBackend::Cpu(cpu) => Ok(Box::new(Model::new(cpu, weights)?)),
        OpenBackend::Cuda(cuda, _) => Ok(Box::new(Model::new(cuda, weights)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;

    #[test]
    fn open_names_the_backend_and_auto_falls_back_only_without_a_gpu() {
        assert!(matches!(Device::Cpu.open(), Ok(OpenBackend::Cpu(_))));
        assert_eq!(Device::Cpu.resolve().unwrap(), Device::Cpu);
        assert!(matches!(
            Device::Cuda(10_000).open(),
            Err(Error::NoDevice(_))
        ));
        let gpu = CudaBackend::new(0).is_ok();
        match Device::Auto.open().unwrap() {
            OpenBackend::Cuda(be, ordinal) => {
                assert!(gpu && ordinal == 0, "{}", be.name());
            }
            OpenBackend::Cpu(be) => assert!(!gpu, "{}", be.name()),
        }
        let want = if gpu { Device::Cuda(0) } else { Device::Cpu };
        assert_eq!(Device::Auto.resolve().unwrap(), want);
        assert_eq!("cuda:3".parse::<Device>().unwrap(), Device::Cuda(3));
    }

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
