//! The variant store as a [`LayerSource`]: the pool entries of a variant directory are
//! `(precision, layer)` for each transformer block and `(precision, GLOBALS)` for the
//! embedding, final norm and classifier together. Each entry is one 4 KiB-aligned, crc-checked
//! extent per tensor (see [`crate::store::entries`]), so loading it is a few large O_DIRECT
//! reads and a corrupt tensor fails the load (nothing half-loaded becomes resident).

use super::block_pool::{LayerSource, Pool, PoolConfig, PoolKey};
use super::device_alloc::HostDeviceAlloc;
use crate::io::StagingPipeline;
use crate::io::{open_reader, Extent, HostStagingAlloc, Layer, ReaderConfig, StagingConfig};
use crate::model::LayerWeights;
use crate::quant::{Precision, WeightMatrix};
use crate::store::{
    decode_globals, decode_layer, entry_layout, read_index, EntryLayout, EntryPart, Globals,
    ListedVariant, Manifest, VariantIndex,
};
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The layer index of the globals entry (embedding, final norm, classifier) in a [`PoolKey`].
pub const GLOBALS: u32 = u32::MAX;

/// One variant file, its directory and its entry layouts.
#[derive(Debug)]
pub struct OpenVariant {
    /// Its precision.
    pub precision: Precision,
    /// The `.acv` file.
    pub path: PathBuf,
    /// Header and directory.
    pub index: VariantIndex,
    /// Layout of each block's entry.
    pub layers: Vec<EntryLayout>,
    /// Layout of the globals entry.
    pub globals: EntryLayout,
}

impl OpenVariant {
    /// Reads the header and directory of `path` (checking the header crc) and lays out its
    /// entries.
    pub fn open(path: &Path, precision: Precision) -> Result<Self> {
        let index = read_index(path)?;
        if index.meta.precision != precision.name() {
            return Err(Error::corrupt(
                path,
                format!(
                    "holds the {} variant, the manifest lists it as {precision}",
                    index.meta.precision
                ),
            ));
        }
        Self::from_index(path, precision, index)
    }

    /// Opens the variant `listed` names, checking its header against the manifest (precision,
    /// model config, quantization, file length), and lays out its entries.
    pub fn open_listed(listed: &ListedVariant) -> Result<Self> {
        let index = listed.read_index()?;
        Self::from_index(&listed.path, listed.precision, index)
    }

    /// Lays out the entries of the variant whose header is `index`.
    fn from_index(path: &Path, precision: Precision, index: VariantIndex) -> Result<Self> {
        index.meta.config.validate()?;
        let layers = (0..index.meta.config.n_layers)
            .map(|i| entry_layout(&index, EntryPart::Layer(i)))
            .collect::<Result<Vec<_>>>()
            .map_err(|e| Error::corrupt(path, e.to_string()))?;
        let globals = entry_layout(&index, EntryPart::Globals)
            .map_err(|e| Error::corrupt(path, e.to_string()))?;
        Ok(OpenVariant {
            precision,
            path: path.to_path_buf(),
            index,
            layers,
            globals,
        })
    }

    /// The layout of `part`.
    pub fn layout(&self, part: EntryPart) -> Result<&EntryLayout> {
        match part {
            EntryPart::Globals => Ok(&self.globals),
            EntryPart::Layer(i) => self.layers.get(i).ok_or_else(|| {
                Error::invalid(format!(
                    "layer {i} is out of range: the {} variant has {} layers",
                    self.precision,
                    self.layers.len()
                ))
            }),
        }
    }

    /// The extents that load `part`: one per tensor, padded to whole blocks, with the crc32 of
    /// the padded bytes when `verify`.
    pub fn extents(&self, part: EntryPart, verify: bool) -> Result<Layer> {
        let layout = self.layout(part)?;
        let extents = layout
            .tensors
            .iter()
            .map(|p| {
                let t = &self.index.tensors[p.tensor];
                let e = Extent::new(&self.path, t.offset, p.padded_len);
                if verify {
                    e.with_crc32(p.padded_crc32)
                } else {
                    e
                }
            })
            .collect();
        Ok(Layer::new(extents))
    }

    /// Explains a failed load of `part`: the error, prefixed with the entry and, when a
    /// tensor's payload on disk fails its checksum, that tensor's name.
    pub fn explain_load_error(&self, part: EntryPart, e: Error) -> Error {
        let p = self.precision;
        let what = match part {
            EntryPart::Layer(i) => format!("layer {i} of the {p} variant"),
            EntryPart::Globals => format!("embedding/head of the {p} variant"),
        };
        let tensor = match &e {
            Error::Corrupt { .. } => self
                .find_corrupt_tensor(part)
                .map(|t| format!(" (tensor {t}: crc32 checksum mismatch)"))
                .unwrap_or_default(),
            _ => String::new(),
        };
        match e {
            Error::Corrupt { path, msg } => {
                Error::corrupt(path, format!("loading {what}{tensor}: {msg}"))
            }
            other => other,
        }
    }

    /// Names the first tensor of `part` whose payload on disk does not match its crc32 (read
    /// with plain file reads; used to explain a failed load).
    pub fn find_corrupt_tensor(&self, part: EntryPart) -> Option<String> {
        use std::io::{Read, Seek, SeekFrom};
        let layout = self.layout(part).ok()?;
        let mut f = std::fs::File::open(&self.path).ok()?;
        for p in &layout.tensors {
            let t = &self.index.tensors[p.tensor];
            let mut buf = vec![0u8; t.len as usize];
            let ok = f.seek(SeekFrom::Start(t.offset)).is_ok() && f.read_exact(&mut buf).is_ok();
            if !ok || crc32fast::hash(&buf) != t.crc32 {
                return Some(t.name.clone());
            }
        }
        None
    }
}

/// The variants of one directory (or one file) as a [`LayerSource`].
#[derive(Debug)]
pub struct VariantSource {
    variants: Vec<OpenVariant>,
    verify: bool,
}

impl VariantSource {
    /// Opens every variant `dir/manifest.json` lists. `verify`: loads check every tensor's
    /// crc32 (turning it off is explicit, for speed).
    pub fn open_dir(dir: &Path, verify: bool) -> Result<Self> {
        let manifest = Manifest::read(dir)?;
        let variants = manifest
            .variants
            .iter()
            .map(|v| OpenVariant::open_listed(&manifest.listed(dir, v.precision)?))
            .collect::<Result<Vec<_>>>()?;
        if variants.is_empty() {
            return Err(Error::corrupt(
                dir.join(crate::store::MANIFEST_FILE),
                "lists no variants",
            ));
        }
        Ok(VariantSource { variants, verify })
    }

    /// A source over single variant files.
    pub fn from_variants(variants: Vec<OpenVariant>, verify: bool) -> Self {
        VariantSource { variants, verify }
    }

    /// Whether loads verify checksums.
    pub fn verifies(&self) -> bool {
        self.verify
    }

    /// The precisions available, in manifest order.
    pub fn precisions(&self) -> Vec<Precision> {
        self.variants.iter().map(|v| v.precision).collect()
    }

    /// The variant of precision `p`.
    pub fn variant(&self, p: Precision) -> Result<&OpenVariant> {
        self.variants
            .iter()
            .find(|v| v.precision == p)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "no {p} variant here (available: {})",
                    self.precisions()
                        .iter()
                        .map(|p| p.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }

    /// The pool key of `part` of precision `p`.
    pub fn key(p: Precision, part: EntryPart) -> PoolKey {
        match part {
            EntryPart::Layer(i) => PoolKey::new(p.name(), i as u32),
            EntryPart::Globals => PoolKey::new(p.name(), GLOBALS),
        }
    }

    /// The precision and part a key names.
    pub fn parse_key(key: &PoolKey) -> Result<(Precision, EntryPart)> {
        let p: Precision = key.variant.parse()?;
        let part = match key.layer {
            GLOBALS => EntryPart::Globals,
            i => EntryPart::Layer(i as usize),
        };
        Ok((p, part))
    }

    /// Bytes the entry `part` of precision `p` occupies in the pool.
    pub fn entry_bytes(&self, p: Precision, part: EntryPart) -> Result<u64> {
        Ok(self.variant(p)?.layout(part)?.total_len())
    }

    /// The largest entry of precision `p` (what a pool must hold at least to run it).
    pub fn max_entry_bytes(&self, p: Precision) -> Result<u64> {
        let v = self.variant(p)?;
        Ok(v.layers
            .iter()
            .chain(std::iter::once(&v.globals))
            .map(EntryLayout::total_len)
            .max()
            .unwrap_or(0))
    }

    /// Rebuilds block `i` of precision `p` from the bytes of its resident entry (no file
    /// access; the load already verified the checksums).
    pub fn decode_layer(
        &self,
        p: Precision,
        i: usize,
        bytes: &[u8],
    ) -> Result<LayerWeights<WeightMatrix>> {
        let v = self.variant(p)?;
        decode_layer(
            &v.path,
            &v.index,
            v.layout(EntryPart::Layer(i))?,
            bytes,
            false,
        )
    }

    /// Rebuilds the embedding, final norm and classifier of precision `p` from the bytes of
    /// its resident globals entry.
    pub fn decode_globals(&self, p: Precision, bytes: &[u8]) -> Result<Globals> {
        let v = self.variant(p)?;
        decode_globals(&v.path, &v.index, &v.globals, bytes, false)
    }

    /// Explains a failed load of `key`: the error, prefixed with the entry and, when a tensor's
    /// payload on disk fails its checksum, that tensor's name.
    pub fn explain_load_error(&self, key: &PoolKey, e: Error) -> Error {
        let Ok((p, part)) = Self::parse_key(key) else {
            return e;
        };
        let Ok(v) = self.variant(p) else { return e };
        v.explain_load_error(part, e)
    }
}

impl LayerSource for VariantSource {
    fn layer(&self, key: &PoolKey) -> Result<Layer> {
        let (p, part) = Self::parse_key(key)?;
        self.variant(p)?.extents(part, self.verify)
    }
}

/// How to build a pool over a [`VariantSource`] (the CPU path: host memory as the top tier).
#[derive(Clone, Debug)]
pub struct VariantPoolConfig {
    /// Bytes the top tier may hold.
    pub budget: u64,
    /// Bytes of the host tier below it (0: none).
    pub host_budget: u64,
    /// The reader (io_uring with O_DIRECT by default, pread fallback).
    pub reader: ReaderConfig,
    /// The staging ring.
    pub staging: StagingConfig,
}

impl VariantPoolConfig {
    /// A pool of `budget` bytes with no host tier and default I/O settings.
    pub fn with_budget(budget: u64) -> Self {
        VariantPoolConfig {
            budget,
            host_budget: 0,
            reader: ReaderConfig::default(),
            staging: StagingConfig::default(),
        }
    }
}

/// A pool loading `source`'s entries into host memory through the staging pipeline.
pub fn variant_pool(source: Arc<VariantSource>, cfg: &VariantPoolConfig) -> Result<Pool> {
    let reader = open_reader(&cfg.reader)?;
    let pipeline = StagingPipeline::new(reader, Arc::new(HostStagingAlloc), cfg.staging.clone())?;
    Pool::new(
        PoolConfig {
            device_budget: cfg.budget,
            host_budget: cfg.host_budget,
        },
        pipeline,
        source,
        Arc::new(HostDeviceAlloc::default()),
    )
}
