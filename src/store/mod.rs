//! The on-disk variant store: one self-contained `.acv` file per precision (header with the
//! model config and tokenizer bytes, a checksummed tensor directory, 4 KiB-aligned payloads
//! in forward order) and a `manifest.json` tying the four of a model together.
//! The file layout and its alignment guarantees are documented in [`mod@format`].

pub mod entries;
pub mod format;
mod listed;
pub mod manifest;
mod read;
mod write;

pub use entries::{
    decode_globals, decode_layer, entry_layout, read_globals, EntryLayout, EntryPart, Globals,
    Placed,
};
pub use format::{ByteRange, Meta, Segment, TensorEntry, TensorFormat, VariantIndex};
pub use listed::ListedVariant;
pub use manifest::{Manifest, VariantInfo, MANIFEST_FILE};
pub use read::{load_variant, read_index, LoadOptions};
pub use write::write_variant;

/// The conventional file name of a precision's variant (`fp16.acv`, `int8.acv`, ...).
pub fn variant_file_name(p: crate::quant::Precision) -> String {
    format!("{}.acv", p.name())
}
