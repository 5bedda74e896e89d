//! Models: configuration, host tensors, checkpoint loaders, the synthetic generator, tokenizers.

pub mod config;
pub mod gguf;
pub mod hf;
pub mod input_file;
pub mod llama2c;
pub mod load;
pub mod synthetic;
pub mod tensor;
pub mod tokenizer;
pub mod weights;

pub use config::{ModelConfig, RopeStyle};
pub use load::{find_tokenizer, load_model};
pub use tensor::{DType, Tensor};
pub use weights::{LayerWeights, MatrixSite, ModelWeights};
