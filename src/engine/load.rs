//! Loading a whole variant file as a resident model at the disk's speed: every entry (the
//! globals and each block) is read through the streaming pipeline (io_uring with O_DIRECT,
//! checksums verified as its chunks land), and entry `i` is decoded and uploaded while entry
//! `i + 1` is read, so a swap costs about the read plus the upload of the last entry. Two
//! entry buffers are live at a time, not the whole file.

use super::layers::{vec_of, Layer, Layers};
use super::Model;
use crate::backend::Backend;
use crate::io::{AlignedBuf, StagingPipeline};
use crate::pool::OpenVariant;
use crate::quant::WeightMatrix;
use crate::store::{decode_globals, decode_layer, EntryPart};
use crate::{Error, Result};
use crossbeam_channel::bounded;

/// Entry buffers in flight: one being read, one being decoded and uploaded.
const BUFFERS: usize = 2;

impl<B: Backend> Model<B> {
    /// Loads `variant` from its file and uploads it to `backend` (the same model as
    /// [`Model::new`] on the weights `store::load_variant` returns). With `verify`, every
    /// tensor's crc32 is checked as it is read; a mismatch names the entry and the tensor.
    pub fn load(
        backend: B,
        variant: &OpenVariant,
        pipeline: &StagingPipeline,
        verify: bool,
    ) -> Result<Self> {
        let config = variant.index.meta.config.clone();
        config.validate()?;
        // Block 0 first: a small entry, so the first wait is short and the globals (the
        // largest entry) are decoded and uploaded while later blocks are read.
        let parts: Vec<EntryPart> = (0..config.n_layers.min(1))
            .map(EntryPart::Layer)
            .chain(std::iter::once(EntryPart::Globals))
            .chain((1..config.n_layers).map(EntryPart::Layer))
            .collect();
        let plans = parts
            .iter()
            .map(|&part| Ok((part, variant.extents(part, verify)?)))
            .collect::<Result<Vec<_>>>()?;
        let largest = plans.iter().map(|(_, l)| l.total_len()).max().unwrap_or(0);
        let largest = usize::try_from(largest)
            .map_err(|_| Error::OutOfMemory(format!("an entry of {largest} bytes")))?;
        let (free_tx, free_rx) = bounded::<AlignedBuf>(BUFFERS);
        let (full_tx, full_rx) = bounded::<Result<(EntryPart, AlignedBuf)>>(BUFFERS);
        for _ in 0..BUFFERS.min(plans.len()) {
            free_tx
                .send(AlignedBuf::zeroed(largest)?)
                .map_err(|_| Error::Internal("entry buffer ring closed early".into()))?;
        }
        std::thread::scope(|s| {
            let reader = s.spawn(move || {
                for (part, extents) in &plans {
                    let Ok(mut buf) = free_rx.recv() else { return };
                    let read = pipeline
                        .load(extents, &mut buf)
                        .map(|_| (*part, buf))
                        .map_err(|e| variant.explain_load_error(*part, e));
                    let failed = read.is_err();
                    if full_tx.send(read).is_err() || failed {
                        return;
                    }
                }
            });
            // The channels' ends held here close when this block ends, so the reader stops
            // early when building fails.
            let built = {
                let (full_rx, free_tx) = (full_rx, free_tx);
                build(&backend, variant, &parts, |part| {
                    let (got, buf) = full_rx
                        .recv()
                        .map_err(|_| Error::Internal("entry reader stopped early".into()))??;
                    if got != part {
                        return Err(Error::Internal(format!(
                            "entry {got:?} arrived, expected {part:?}"
                        )));
                    }
                    Ok((buf, &free_tx))
                })
            };
            reader
                .join()
                .map_err(|_| Error::Internal("entry reader thread panicked".into()))?;
            let (embedding, layers, final_norm, classifier) = built?;
            Ok(Model {
                backend,
                config,
                embedding,
                layers: Layers::Resident(layers),
                final_norm,
                classifier,
            })
        })
    }
}

/// The uploaded parts of a model: embedding, blocks, final norm, classifier.
type Uploaded<B> = (
    <B as Backend>::Mat,
    Vec<Layer<B>>,
    <B as Backend>::Buf,
    Option<<B as Backend>::Mat>,
);

/// Decodes and uploads each entry of `parts` in order, taking its bytes from `next` and
/// handing the buffer back for the next read as soon as the entry is decoded.
fn build<'a, B: Backend>(
    be: &B,
    variant: &OpenVariant,
    parts: &[EntryPart],
    mut next: impl FnMut(EntryPart) -> Result<(AlignedBuf, &'a crossbeam_channel::Sender<AlignedBuf>)>,
) -> Result<Uploaded<B>> {
    let (path, idx) = (&variant.path, &variant.index);
    let mut globals = None;
    let mut layers = Vec::new();
    layers
        .try_reserve_exact(parts.len().saturating_sub(1))
        .map_err(|_| Error::OutOfMemory(format!("a list of {} blocks", parts.len())))?;
    for &part in parts {
        let (buf, free) = next(part)?;
        let layout = variant.layout(part)?;
        let bytes = &buf[..layout.total_len() as usize];
        // The pipeline verified every padded payload; decoding checks the shapes.
        match part {
            EntryPart::Globals => {
                let g = decode_globals(path, idx, layout, bytes, false)?;
                let _ = free.send(buf);
                let embedding = be.upload_matrix(&WeightMatrix::Dense(g.embedding))?;
                let final_norm = vec_of(be, &g.final_norm)?;
                let classifier = g
                    .classifier
                    .as_ref()
                    .map(|c| be.upload_matrix(c))
                    .transpose()?;
                globals = Some((embedding, final_norm, classifier));
            }
            EntryPart::Layer(i) => {
                let w = decode_layer(path, idx, layout, bytes, false)?;
                let _ = free.send(buf);
                debug_assert_eq!(i, layers.len());
                layers.push(Layer::upload(be, &w)?);
            }
        }
    }
    let (embedding, final_norm, classifier) =
        globals.ok_or_else(|| Error::Internal("the globals entry was never read".into()))?;
    Ok((embedding, layers, final_norm, classifier))
}
