//! The controller a routed engine consults: the packed CPU form by default, or the controller
//! over the CUDA backend ([`DeviceController`]) when the engine runs on a GPU and
//! [`super::EngineBuilder::controller_on_device`] asks for it.

use super::Device;
use crate::backend::cuda::CudaBackend;
use crate::controller::{Controller, ControllerOutput, DeviceController, PackedController};
use crate::Result;

/// Where the routing controller runs.
pub(crate) enum RouteController {
    /// The packed CPU inference form (reads the host embedding table).
    Cpu(Box<PackedController>),
    /// On the CUDA backend, with its own FP16 copy of the embedding table.
    Cuda(Box<DeviceController<CudaBackend>>),
}

impl RouteController {
    /// The controller for an engine on `device` (already resolved): on CUDA when `on_device`
    /// and `device` is a GPU, else the packed CPU form. `table` is the embedding table the
    /// controller reads (uploaded once when on the GPU).
    pub(crate) fn new(
        c: &Controller,
        table: &[f32],
        device: Device,
        on_device: bool,
    ) -> Result<Self> {
        match (device, on_device) {
            (Device::Cuda(n), true) => Ok(RouteController::Cuda(Box::new(DeviceController::new(
                CudaBackend::new(n)?,
                c,
                table,
            )?))),
            _ => Ok(RouteController::Cpu(Box::new(c.packed()))),
        }
    }

    /// Predicts complexity and policy for a task (`table` is the host embedding table, read
    /// only by the CPU form).
    pub(crate) fn predict(&self, table: &[f32], ids: &[u32]) -> Result<ControllerOutput> {
        match self {
            RouteController::Cpu(p) => p.predict(table, ids),
            RouteController::Cuda(d) => d.predict(ids),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::ControllerConfig;
    use crate::util::rng::Rng;

    #[test]
    fn the_cpu_stays_the_default_and_a_missing_gpu_is_an_error() {
        let c = Controller::new(ControllerConfig::small(16), 2).unwrap();
        let table = Rng::new(3).vec_uniform(40 * 16, 1.0);
        let ids = [4u32, 9, 1];
        let want = c.packed().predict(&table, &ids).unwrap();
        for (device, on) in [
            (Device::Cpu, true),
            (Device::Cpu, false),
            (Device::Cuda(0), false),
        ] {
            let r = RouteController::new(&c, &table, device, on).unwrap();
            assert!(matches!(r, RouteController::Cpu(_)), "{device:?} {on}");
            assert_eq!(r.predict(&table, &ids).unwrap(), want);
        }
        // Asking for a GPU that is not there is a typed error, never a panic.
        assert!(matches!(
            RouteController::new(&c, &table, Device::Cuda(10_000), true),
            Err(crate::Error::NoDevice(_))
        ));
    }
}
