//! Calibration statistics: per-input-channel importances `E[x_k^2]` of every projection's
//! input and, for GPTQ, their Gram matrices. The quantizers read them here;
//! `crate::pipeline::calibrate` collects them by running the model.

use crate::model::weights::{MatrixSite, LAYER_MATRICES};

/// Gram matrices per layer, per matrix (indexed like [`LAYER_MATRICES`]).
pub(crate) type LayerGrams = Vec<Vec<Vec<f64>>>;

/// Importances per projection matrix: `E[x_k^2]` over all calibration tokens.
#[derive(Clone, Debug, Default)]
pub struct Calibration {
    /// `[layer][matrix index in LAYER_MATRICES]` -> one value per input channel.
    pub(crate) layers: Vec<Vec<Vec<f32>>>,
    /// The classifier's input importances.
    pub(crate) classifier: Vec<f32>,
    /// Gram matrices `sum x x^T` (`[in, in]`), same indexing, when collected (for GPTQ).
    pub(crate) grams: Option<(LayerGrams, Vec<f64>)>,
    /// Tokens the statistics were gathered over.
    pub tokens: usize,
}

impl Calibration {
    /// Importances of matrix `name` at `site`.
    pub fn importance(&self, site: MatrixSite, name: &str) -> Option<&[f32]> {
        let MatrixSite::Layer(layer) = site else {
            return (!self.classifier.is_empty()).then_some(&self.classifier[..]);
        };
        let m = LAYER_MATRICES.iter().position(|&n| n == name)?;
        self.layers.get(layer)?.get(m).map(|v| &v[..])
    }

    /// The Gram matrix `sum x x^T` of matrix `name`'s inputs, when collected.
    pub fn gram(&self, site: MatrixSite, name: &str) -> Option<&[f64]> {
        let (layers, cls) = self.grams.as_ref()?;
        let MatrixSite::Layer(layer) = site else {
            return (!cls.is_empty()).then_some(&cls[..]);
        };
        let m = LAYER_MATRICES.iter().position(|&n| n == name)?;
        layers.get(layer)?.get(m).map(|v| &v[..])
    }
}
