//! The token distributions speculative sampling works on, and its acceptance rule: a draft
//! token `x` drawn from the draft's distribution `q` is kept with probability
//! `min(1, p(x) / q(x))` (`p` the target's), otherwise the target's token is drawn from the
//! normalised residual `max(0, p - q)`. Every token so chosen is distributed exactly as `p`.

use crate::backend::cpu::argmax;
use crate::engine::SamplingParams;
use crate::util::rng::Rng;

/// Writes into `out` the distribution [`crate::engine::Sampler`] draws from for `logits`
/// under `params` (temperature, then the top-p nucleus with the same cut, renormalised);
/// greedy parameters give all mass to the argmax. `out` is resized to the vocabulary.
/// `scratch` holds the nucleus sort between calls (no allocation once warm).
pub fn distribution(
    logits: &[f32],
    params: &SamplingParams,
    out: &mut Vec<f32>,
    scratch: &mut Vec<(f32, u32)>,
) {
    out.clear();
    out.resize(logits.len(), 0.0);
    if params.is_greedy() || logits.len() < 2 {
        if !logits.is_empty() {
            out[argmax(logits)] = 1.0;
        }
        return;
    }
    let t = params.temperature;
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for (o, &l) in out.iter_mut().zip(logits) {
        *o = ((l - max) / t).exp();
        sum += *o;
    }
    if params.top_p >= 1.0 {
        out.iter_mut().for_each(|o| *o /= sum);
        return;
    }
    // The sampler's nucleus: drop what cannot be in it, sort the rest (ties by id), keep the
    // shortest prefix whose mass reaches top_p.
    let cutoff = (1.0 - params.top_p) / (logits.len() - 1) as f32 * sum;
    scratch.clear();
    scratch.extend(
        out.iter()
            .enumerate()
            .filter(|&(_, &p)| p >= cutoff)
            .map(|(i, &p)| (p, i as u32)),
    );
    scratch.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut kept = 0.0f32;
    let mut n = scratch.len();
    for (k, &(p, _)) in scratch.iter().enumerate() {
        kept += p;
        if kept >= params.top_p * sum {
            n = k + 1;
            break;
        }
    }
    out.iter_mut().for_each(|o| *o = 0.0);
    for &(p, i) in &scratch[..n] {
        out[i as usize] = p / kept;
    }
}

/// Draws a token from distribution `p` (non-negative, summing to about 1) by inverse CDF.
/// Rounding that leaves the coin past the total picks the last token with mass.
pub fn draw(p: &[f32], rng: &mut Rng) -> u32 {
    draw_scaled(p, 1.0, rng)
}

/// Draws from `p` scaled by `1 / total` (an unnormalised distribution of mass `total`).
fn draw_scaled(p: &[f32], total: f32, rng: &mut Rng) -> u32 {
    let target = rng.next_f32() * total;
    let mut acc = 0.0f32;
    let mut last = 0;
    for (i, &x) in p.iter().enumerate() {
        if x > 0.0 {
            acc += x;
            last = i;
            if target < acc {
                return i as u32;
            }
        }
    }
    last as u32
}

/// The acceptance rule for draft token `x` drawn from `q`, with the target's distribution
/// `p`: `None` when `x` is kept, otherwise `Some(token)` drawn from the normalised residual
/// `max(0, p - q)` (from `p` itself when rounding leaves no residual). `residual` is scratch.
pub fn accept_or_resample(
    x: u32,
    p: &[f32],
    q: &[f32],
    rng: &mut Rng,
    residual: &mut Vec<f32>,
) -> Option<u32> {
    let (px, qx) = (p[x as usize], q[x as usize]);
    // Kept with probability min(1, px / qx); qx > 0 because x was drawn from q.
    if rng.next_f32() * qx < px {
        return None;
    }
    residual.clear();
    residual.extend(p.iter().zip(q).map(|(&a, &b)| (a - b).max(0.0)));
    let total: f32 = residual.iter().sum();
    Some(if total > 0.0 {
        draw_scaled(residual, total, rng)
    } else {
        draw(p, rng)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Sampler;

    fn params(temperature: f32, top_p: f32) -> SamplingParams {
        SamplingParams {
            temperature,
            top_p,
            seed: 3,
        }
    }

    #[test]
    fn distribution_matches_the_samplers_frequencies() {
        let logits: Vec<f32> = (0..12).map(|i| ((i * 7) % 5) as f32 * 0.6).collect();
        for (t, top_p) in [(1.0, 1.0), (0.7, 0.8), (1.3, 0.5)] {
            let pr = params(t, top_p);
            let (mut p, mut s) = (Vec::new(), Vec::new());
            distribution(&logits, &pr, &mut p, &mut s);
            assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            let mut sampler = Sampler::new(pr).unwrap();
            let n = 20_000;
            let mut counts = vec![0usize; logits.len()];
            for _ in 0..n {
                counts[sampler.sample(&logits) as usize] += 1;
            }
            for (i, &c) in counts.iter().enumerate() {
                let f = c as f32 / n as f32;
                assert!((f - p[i]).abs() < 0.02, "t {t} top_p {top_p} token {i}");
                assert_eq!(c == 0, p[i] == 0.0, "t {t} top_p {top_p} token {i}");
            }
        }
    }

    #[test]
    fn greedy_distribution_is_the_argmax() {
        let (mut p, mut s) = (Vec::new(), Vec::new());
        distribution(&[0.1, 3.0, 2.0], &params(0.0, 0.9), &mut p, &mut s);
        assert_eq!(p, vec![0.0, 1.0, 0.0]);
    }

    #[test]
    fn draft_then_accept_or_resample_is_distributed_as_the_target() {
        let p = [0.5f32, 0.3, 0.2, 0.0];
        let q = [0.1f32, 0.1, 0.4, 0.4];
        let mut rng = Rng::new(11);
        let mut residual = Vec::new();
        let n = 40_000;
        let mut counts = [0usize; 4];
        for _ in 0..n {
            let x = draw(&q, &mut rng);
            let t = accept_or_resample(x, &p, &q, &mut rng, &mut residual).unwrap_or(x);
            counts[t as usize] += 1;
        }
        for i in 0..4 {
            let f = counts[i] as f32 / n as f32;
            assert!((f - p[i]).abs() < 0.012, "token {i}: {f} vs {}", p[i]);
        }
        assert_eq!(counts[3], 0);
    }

    #[test]
    fn equal_distributions_always_accept() {
        let p = [0.25f32, 0.25, 0.5];
        let mut rng = Rng::new(5);
        let mut residual = Vec::new();
        for _ in 0..1000 {
            let x = draw(&p, &mut rng);
            assert_eq!(accept_or_resample(x, &p, &p, &mut rng, &mut residual), None);
        }
    }
}
