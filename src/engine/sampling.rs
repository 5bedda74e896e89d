//! Choosing the next token from logits: greedy, temperature, top-p, seeded.

use crate::backend::cpu::argmax;
use crate::util::rng::Rng;
use crate::{Error, Result};

/// How to pick tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy (argmax); otherwise logits are divided by it before softmax.
    pub temperature: f32,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches `top_p`
    /// (1.0 keeps all).
    pub top_p: f32,
    /// Seed of the sampler's random stream.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_p: 0.9,
            seed: 42,
        }
    }
}

impl SamplingParams {
    /// Checks ranges, naming the bad parameter.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(Error::invalid(format!(
                "temperature {} must be a number >= 0",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::invalid(format!(
                "top_p {} must be in (0, 1]",
                self.top_p
            )));
        }
        Ok(())
    }

    /// Whether sampling is plain argmax.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

/// A sampler with its own seeded stream and reusable scratch (no allocation per token).
#[derive(Clone, Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
    probs: Vec<(f32, u32)>,
}

impl Sampler {
    /// A sampler; fails on out-of-range parameters.
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        let rng = Rng::new(params.seed);
        Ok(Sampler {
            params,
            rng,
            probs: Vec::new(),
        })
    }

    /// The parameters.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks a token from `logits`.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.params.is_greedy() || logits.len() < 2 {
            return argmax(logits) as u32;
        }
        let t = self.params.temperature;
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        self.probs.clear();
        let mut sum = 0.0f32;
        for (i, &l) in logits.iter().enumerate() {
            let p = ((l - max) / t).exp();
            sum += p;
            self.probs.push((p, i as u32));
        }
        let coin = self.rng.next_f32();
        if self.params.top_p >= 1.0 {
            let mut acc = 0.0;
            for &(p, i) in &self.probs {
                acc += p / sum;
                if coin < acc {
                    return i;
                }
            }
            return self.probs.last().map(|x| x.1).unwrap_or(0);
        }
        // Top-p: drop tokens that cannot be in the nucleus, sort the rest by probability.
        let cutoff = (1.0 - self.params.top_p) / (logits.len() - 1) as f32 * sum;
        self.probs.retain(|&(p, _)| p >= cutoff);
        self.probs
            .sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut kept = 0.0;
        let mut n = self.probs.len();
        for (k, &(p, _)) in self.probs.iter().enumerate() {
            kept += p;
            if kept >= self.params.top_p * sum {
                n = k + 1;
                break;
            }
        }
        let target = coin * kept;
        let mut acc = 0.0;
        for &(p, i) in &self.probs[..n] {
            acc += p;
            if target < acc {
                return i;
            }
        }
        self.probs[n - 1].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_is_argmax() {
        let mut s = Sampler::new(SamplingParams {
            temperature: 0.0,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.sample(&[0.1, 5.0, 2.0]), 1);
    }

    #[test]
    fn seeded_sampling_is_reproducible_and_follows_probabilities() {
        let p = SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
            seed: 9,
        };
        let logits = [0.0f32, (3.0f32).ln(), f32::NEG_INFINITY];
        let mut a = Sampler::new(p.clone()).unwrap();
        let mut b = Sampler::new(p).unwrap();
        let xs: Vec<u32> = (0..4000).map(|_| a.sample(&logits)).collect();
        let ys: Vec<u32> = (0..4000).map(|_| b.sample(&logits)).collect();
        assert_eq!(xs, ys);
        let ones = xs.iter().filter(|&&x| x == 1).count() as f32 / 4000.0;
        assert!((ones - 0.75).abs() < 0.03, "{ones}");
        assert!(!xs.contains(&2));
    }

    #[test]
    fn top_p_excludes_the_tail() {
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            top_p: 0.5,
            seed: 1,
        })
        .unwrap();
        // p = [0.6, 0.3, 0.1]: nucleus 0.5 keeps only token 0.
        let logits = [0.6f32.ln(), 0.3f32.ln(), 0.1f32.ln()];
        assert!((0..500).all(|_| s.sample(&logits) == 0));
    }

    #[test]
    fn bad_parameters_are_named() {
        let e = Sampler::new(SamplingParams {
            temperature: -1.0,
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("temperature"));
        let e = Sampler::new(SamplingParams {
            top_p: 0.0,
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("top_p"));
    }
}
