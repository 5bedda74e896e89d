//! Opening one precision of a variant directory as an [`Engine`], fully resident or with its
//! blocks streamed through a pool (offloaded execution), and reading the pool's counters.

use super::{Device, DynModel, Engine, EngineStats, OpenBackend};
use crate::engine::{Model, StreamOptions};
use crate::model::tokenizer::Tokenizer;
use crate::pool::{variant_pool, PoolStats, VariantPoolConfig, VariantSource};
use crate::quant::Precision;
use crate::store::Manifest;
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// How [`open_variant`] opens a variant directory.
#[derive(Clone, Debug)]
pub struct VariantOpenOptions {
    /// Which precision (default FP16).
    pub precision: Precision,
    /// Where to run (streamed or resident, on either backend).
    pub device: Device,
    /// A tokenizer file instead of the one embedded in the variant.
    pub tokenizer: Option<PathBuf>,
    /// Stream the blocks through a pool of this many bytes instead of uploading them all.
    pub pool_budget: Option<u64>,
    /// With a pool: bytes of uploaded blocks kept on the backend (GPU memory on CUDA) between
    /// uses, by the same priority policy; 0 keeps none (see [`StreamOptions::upload_budget`]).
    pub upload_budget: u64,
    /// Verify checksums while loading (default true).
    pub verify_checksums: bool,
}

impl Default for VariantOpenOptions {
    fn default() -> Self {
        VariantOpenOptions {
            precision: Precision::Fp16,
            device: Device::Auto,
            tokenizer: None,
            pool_budget: None,
            upload_budget: 0,
            verify_checksums: true,
        }
    }
}

/// The tokenizer embedded in a variant file (`name` says which kind), if any.
fn embedded_tokenizer(
    path: &Path,
    name: Option<&str>,
    bytes: Option<&[u8]>,
) -> Result<Option<Box<dyn Tokenizer>>> {
    let Some(bytes) = bytes else { return Ok(None) };
    let origin = path.join(name.unwrap_or("tokenizer"));
    crate::model::tokenizer::embedded_tokenizer(name, bytes, &origin).map(Some)
}

/// The tokenizer the FP16 variant of directory `dir` carries, if it carries one.
pub fn variant_tokenizer(dir: &Path) -> Result<Option<Box<dyn Tokenizer>>> {
    let manifest = Manifest::read(dir)?;
    if manifest.variant(Precision::Fp16).is_none() {
        return Err(Error::invalid(format!(
            "{} has no fp16 variant",
            dir.display()
        )));
    }
    let listed = manifest.listed(dir, Precision::Fp16)?;
    let file = listed.path.clone();
    let index = listed.read_index()?;
    embedded_tokenizer(
        &file,
        index.meta.tokenizer_name.as_deref(),
        index.tokenizer.as_deref(),
    )
}

/// Opens precision `opts.precision` of the variant directory `dir` (what `load_model` leaves to
/// this level, since `model` sits below `store`). Without a pool budget the variant is loaded
/// and uploaded whole; with one, its blocks are streamed through a pool of that many bytes.
pub fn open_variant(dir: &Path, opts: &VariantOpenOptions) -> Result<Engine> {
    let manifest = Manifest::read(dir)?;
    if manifest.variant(opts.precision).is_none() {
        return Err(Error::invalid(format!(
            "{} has no {} variant",
            dir.display(),
            opts.precision
        )));
    }
    let listed = manifest.listed(dir, opts.precision)?;
    let file = listed.path.clone();
    let (model, index): (Box<dyn DynModel>, _) = match opts.pool_budget {
        None => (
            super::device_choice::load_listed(opts.device, &listed, opts.verify_checksums)?,
            listed.read_index()?,
        ),
        Some(budget) => {
            let source = Arc::new(VariantSource::open_dir(dir, opts.verify_checksums)?);
            let index = source.variant(opts.precision)?.index.clone();
            let pool = Arc::new(variant_pool(
                source.clone(),
                &VariantPoolConfig::with_budget(budget),
            )?);
            let stream = StreamOptions {
                upload_budget: opts.upload_budget,
                ..StreamOptions::default()
            };
            let p = opts.precision;
            let m: Box<dyn DynModel> = match opts.device.open()? {
                OpenBackend::Cpu(be) => Box::new(Model::streamed(be, pool, source, p, stream)?),
                OpenBackend::Cuda(be, _) => Box::new(Model::streamed(be, pool, source, p, stream)?),
            };
            (m, index)
        }
    };
    let tokenizer = match &opts.tokenizer {
        Some(p) => Some(crate::model::tokenizer::load_tokenizer(p)?),
        None => embedded_tokenizer(
            &file,
            index.meta.tokenizer_name.as_deref(),
            index.tokenizer.as_deref(),
        )?,
    };
    Ok(Engine {
        models: super::Models::Single {
            model: Arc::from(model),
            precision: opts.precision,
        },
        tokenizer: tokenizer.map(Arc::from),
        source: format!("{} ({})", dir.display(), opts.precision),
        stats: Mutex::new(EngineStats::default()),
        draft_memory: Mutex::default(),
    })
}

impl Engine {
    /// The weight pool's counters (hits, misses, bytes read, swap time, GB/s per stage,
    /// evictions) when the model streams its blocks; `None` when it is fully resident.
    pub fn pool_stats(&self) -> Option<PoolStats> {
        match &self.models {
            super::Models::Single { model, .. } => model.pool_stats(),
            super::Models::Routed(_) => None,
        }
    }

    /// The backend tier's counters (hits, misses, evictions, bytes uploaded) when a streamed
    /// model keeps uploaded blocks on the device ([`VariantOpenOptions::upload_budget`]).
    pub fn upload_stats(&self) -> Option<crate::engine::DeviceTierStats> {
        match &self.models {
            super::Models::Single { model, .. } => model.upload_stats(),
            super::Models::Routed(_) => None,
        }
    }
}
