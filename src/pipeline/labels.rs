//! Labels from the model itself: each task is run on all four variants and scored by fidelity
//! to FP16 (teacher-forced top-1 agreement and KL divergence over the FP16 greedy
//! continuation, exact match of each variant's own greedy continuation) and by cost (measured
//! time, bytes of weights read, FLOPs).

use super::variant_set::VariantSet;
use crate::backend::cpu::argmax;
use crate::backend::cpu::CpuBackend;
use crate::engine::Model;
use crate::quant::{PerPrecision, Precision};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;

/// Measurements of one task on the four variants.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskLabel {
    /// Quality used for routing: teacher-forced top-1 agreement with FP16.
    pub quality: PerPrecision<f32>,
    /// Mean KL(FP16 || variant) per continuation position, in nats.
    pub kl: PerPrecision<f32>,
    /// Whether the variant's own greedy continuation equals FP16's.
    pub exact: PerPrecision<bool>,
    /// Wall time of the variant's greedy generation, milliseconds.
    pub time_ms: PerPrecision<f32>,
    /// Bytes of weights read (variant size times forward calls).
    pub bytes: PerPrecision<u64>,
    /// Multiply-adds times two over all tokens processed.
    pub flops: u64,
}

impl TaskLabel {
    /// Ground-truth complexity: the mean quality lost by INT8, INT4 and INT2.
    pub fn complexity(&self) -> f32 {
        (3.0 - self.quality[Precision::Int8]
            - self.quality[Precision::Int4]
            - self.quality[Precision::Int2])
            / 3.0
    }

    /// The cheapest precision whose quality meets `threshold` (FP16 when none does).
    pub fn oracle(&self, threshold: f32) -> Precision {
        [Precision::Int2, Precision::Int4, Precision::Int8]
            .into_iter()
            .find(|p| self.quality[*p] >= threshold)
            .unwrap_or(Precision::Fp16)
    }
}

fn greedy(m: &Model<CpuBackend>, prompt: &[u32], n: usize) -> Result<Vec<u32>> {
    let mut st = m.new_state(prompt.len())?;
    let logits = m.forward(&mut st, prompt, false)?;
    let mut tok = argmax(&logits) as u32;
    let mut out = vec![tok];
    while out.len() < n {
        tok = m.step_greedy(&mut st, tok)?;
        out.push(tok);
    }
    Ok(out)
}

/// A variant's greedy answer to a prompt, with its prefill and decode wall times.
#[derive(Clone, Debug, PartialEq)]
pub struct GreedyAnswer {
    /// Generated ids, without the stop token that ended them.
    pub ids: Vec<u32>,
    /// Wall time of the prompt's forward pass, milliseconds.
    pub prefill_ms: f32,
    /// Wall time of the token-by-token steps after it, milliseconds.
    pub decode_ms: f32,
}

/// Greedy generation on `m` from `prompt` until a token of `stop` (not kept) or `max` tokens;
/// an error when the prompt is empty or `prompt + max` exceeds the context.
pub fn greedy_until(
    m: &Model<CpuBackend>,
    prompt: &[u32],
    max: usize,
    stop: &[u32],
) -> Result<GreedyAnswer> {
    let ctx = m.config().max_seq_len;
    if prompt.is_empty() || prompt.len() + max > ctx {
        return Err(Error::invalid(format!(
            "a prompt of {} tokens plus {max} generated must be non-empty and fit the context of {ctx}",
            prompt.len()
        )));
    }
    let t0 = Instant::now();
    let mut st = m.new_state(prompt.len())?;
    let logits = m.forward(&mut st, prompt, false)?;
    let mut tok = argmax(&logits) as u32;
    let prefill_ms = t0.elapsed().as_secs_f32() * 1e3;
    let t1 = Instant::now();
    let mut ids = Vec::new();
    while max > 0 && !stop.contains(&tok) {
        ids.push(tok);
        if ids.len() == max {
            break;
        }
        tok = m.step_greedy(&mut st, tok)?;
    }
    Ok(GreedyAnswer {
        ids,
        prefill_ms,
        decode_ms: t1.elapsed().as_secs_f32() * 1e3,
    })
}

fn log_softmax(x: &[f32]) -> Vec<f32> {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = x.iter().map(|v| (v - max).exp()).sum::<f32>().ln() + max;
    x.iter().map(|v| v - lse).collect()
}

/// Measures one task (prompt ids) on every variant, generating `n_gen` tokens.
pub fn measure(set: &VariantSet, prompt: &[u32], n_gen: usize) -> Result<TaskLabel> {
    if prompt.is_empty() || n_gen == 0 {
        return Err(Error::invalid(
            "a task needs a non-empty prompt and n_gen > 0",
        ));
    }
    let c = &set.config;
    if prompt.len() + n_gen > c.max_seq_len {
        return Err(Error::invalid(format!(
            "prompt of {} tokens plus {n_gen} generated exceeds the context of {}",
            prompt.len(),
            c.max_seq_len
        )));
    }
    let vocab = c.vocab_size;
    let fp16 = set.model(Precision::Fp16);
    let t0 = Instant::now();
    let cont = greedy(fp16, prompt, n_gen)?;
    let t_fp16 = t0.elapsed().as_secs_f32() * 1e3;
    let mut seq = prompt.to_vec();
    seq.extend_from_slice(&cont[..n_gen - 1]);
    let teacher = |m: &Model<CpuBackend>| -> Result<Vec<f32>> {
        let mut st = m.new_state(seq.len())?;
        let all = m.forward(&mut st, &seq, true)?;
        Ok(all[(prompt.len() - 1) * vocab..].to_vec())
    };
    let ref_rows = teacher(fp16)?;
    let ref_lp: Vec<Vec<f32>> = ref_rows.chunks(vocab).map(log_softmax).collect();
    let mut label = TaskLabel {
        quality: PerPrecision::splat(1.0),
        kl: PerPrecision::splat(0.0),
        exact: PerPrecision::splat(true),
        time_ms: PerPrecision::splat(t_fp16),
        bytes: PerPrecision::splat(0),
        flops: 2 * c.parameter_count() * (prompt.len() + n_gen - 1) as u64,
    };
    for p in Precision::ALL {
        label.bytes[p] = set.bytes[p] * n_gen as u64;
        if p == Precision::Fp16 {
            continue;
        }
        let m = set.model(p);
        let rows = teacher(m)?;
        let mut agree = 0usize;
        let mut kl = 0.0f32;
        for (i, row) in rows.chunks(vocab).enumerate() {
            if argmax(row) as u32 == cont[i] {
                agree += 1;
            }
            let lq = log_softmax(row);
            kl += ref_lp[i]
                .iter()
                .zip(&lq)
                .map(|(a, b)| a.exp() * (a - b))
                .sum::<f32>();
        }
        let t0 = Instant::now();
        let own = greedy(m, prompt, n_gen)?;
        label.time_ms[p] = t0.elapsed().as_secs_f32() * 1e3;
        label.quality[p] = agree as f32 / n_gen as f32;
        label.kl[p] = (kl / n_gen as f32).max(0.0);
        label.exact[p] = own == cont;
    }
    Ok(label)
}

/// One labelled stage of a workflow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabelledTask {
    /// Workflow index.
    pub workflow: usize,
    /// Stage index in the workflow.
    pub stage: usize,
    /// Domain index.
    pub domain: usize,
    /// Prompt token ids (what the model and the controller read).
    pub ids: Vec<u32>,
    /// Measurements.
    pub label: TaskLabel,
}

/// A labels file: what model produced them and the labelled tasks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabelSet {
    /// Description of the model.
    pub model: String,
    /// How the variants were made (packed formats, method, groups; see
    /// [`VariantSet::formats`]).
    #[serde(default)]
    pub formats: String,
    /// Tokens generated per task.
    pub n_gen: usize,
    /// Variant sizes in bytes.
    pub bytes: PerPrecision<u64>,
    /// The tasks.
    pub tasks: Vec<LabelledTask>,
}

impl LabelSet {
    /// Writes the set as JSON.
    pub fn save(&self, path: &Path) -> Result<()> {
        let s = serde_json::to_string(self).map_err(|e| Error::Internal(e.to_string()))?;
        std::fs::write(path, s).map_err(|e| Error::io(path, e))
    }

    /// Reads a set written by [`LabelSet::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let s = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&s).map_err(|e| Error::corrupt(path, e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::synthetic::{preset, synthetic_weights};
    use crate::model::DType;
    use Precision::*;

    #[test]
    fn labels_rank_precisions_and_fp16_is_perfect() {
        let mut cfg = preset("tiny").unwrap();
        cfg.max_seq_len = 64;
        let w = synthetic_weights(&cfg, 3, DType::F32).unwrap();
        let q = crate::quant::QuantConfig {
            method: crate::quant::Method::Rtn,
            ..Default::default()
        };
        let set = VariantSet::quantize(&w, &q).unwrap();
        let l = measure(&set, &[1, 40, 41, 300, 7, 9], 8).unwrap();
        assert_eq!(l.quality[Fp16], 1.0);
        assert!(l.exact[Fp16]);
        assert!(l.kl[Int8] <= l.kl[Int2], "{:?}", l.kl);
        assert!(
            l.bytes[Int2] < l.bytes[Int4]
                && l.bytes[Int4] < l.bytes[Int8]
                && l.bytes[Int8] < l.bytes[Fp16]
        );
        assert!((0.0..=1.0).contains(&l.complexity()));
        assert!(l.quality.iter().all(|(_, q)| (0.0..=1.0).contains(q)));
        assert!(measure(&set, &[], 8).is_err());
        assert!(measure(&set, &[1; 60], 8).is_err());
        let mut hard = l.clone();
        hard.quality = [1.0, 0.97, 0.5, 0.1].into();
        assert_eq!(hard.oracle(0.95), Precision::Int8);
        assert_eq!(hard.oracle(0.99), Precision::Fp16);
        assert_eq!(hard.oracle(0.05), Precision::Int2);
    }

    #[test]
    fn greedy_until_stops_at_a_stop_token_or_the_limit() {
        let mut cfg = preset("tiny").unwrap();
        cfg.max_seq_len = 64;
        let w = synthetic_weights(&cfg, 3, DType::F32).unwrap();
        let q = crate::quant::QuantConfig {
            method: crate::quant::Method::Rtn,
            ..Default::default()
        };
        let set = VariantSet::quantize(&w, &q).unwrap();
        let m = set.model(Fp16);
        let prompt = [1, 40, 41, 300];
        let full = greedy(m, &prompt, 10).unwrap();
        let a = greedy_until(m, &prompt, 10, &[]).unwrap();
        assert_eq!(a.ids, full);
        assert!(a.prefill_ms >= 0.0 && a.decode_ms >= 0.0);
        // Stopping at the fourth token keeps the three before it.
        let b = greedy_until(m, &prompt, 10, &[full[3]]).unwrap();
        let first = full.iter().position(|t| *t == full[3]).unwrap();
        assert_eq!(b.ids, full[..first]);
        assert!(greedy_until(m, &prompt, 0, &[]).unwrap().ids.is_empty());
        assert!(greedy_until(m, &[], 4, &[]).is_err());
        assert!(greedy_until(m, &prompt, 61, &[]).is_err());
    }
}
