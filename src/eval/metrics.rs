//! Summary statistics used by the benchmark.

/// Pearson correlation of `x` and `y` (0 when either is constant or they are empty).
pub fn pearson(x: &[f32], y: &[f32]) -> f64 {
    let n = x.len().min(y.len());
    if n < 2 {
        return 0.0;
    }
    let mx = x[..n].iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    let my = y[..n].iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let (dx, dy) = (x[i] as f64 - mx, y[i] as f64 - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if sxx == 0.0 || syy == 0.0 {
        0.0
    } else {
        sxy / (sxx * syy).sqrt()
    }
}

/// The `q`-quantile (0..=1, nearest rank) of `xs` (0 when empty).
pub fn quantile(xs: &[f64], q: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q.clamp(0.0, 1.0) * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// Share of the across-task variance of `qs` (agreement rates over `n` teacher-forced positions
/// each) beyond what per-position sampling noise alone would give: `1 - noise / variance`,
/// where the noise is the mean binomial variance `q (1 - q) / (n - 1)` of a task's rate
/// (unbiased for independent positions). 0 means the differences between tasks are what
/// re-drawing the positions would produce, so no predictor of the task can explain them; the
/// square root bounds the correlation any predictor can reach. 0 when fewer than two tasks,
/// `n < 2` or no variance.
pub fn signal_share(qs: &[f32], n: usize) -> f64 {
    if qs.len() < 2 || n < 2 {
        return 0.0;
    }
    let m = qs.iter().map(|&q| q as f64).sum::<f64>() / qs.len() as f64;
    let var = qs.iter().map(|&q| (q as f64 - m).powi(2)).sum::<f64>() / (qs.len() - 1) as f64;
    if var <= 0.0 {
        return 0.0;
    }
    let noise = qs.iter().map(|&q| q as f64 * (1.0 - q as f64)).sum::<f64>()
        / qs.len() as f64
        / (n - 1) as f64;
    (1.0 - noise / var).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_share_separates_real_differences_from_sampling_noise() {
        // Tasks that are all the same coin (p = 0.8) drawn over 20 positions: no signal.
        let mut rng = crate::util::rng::Rng::new(5);
        let draw = |rng: &mut crate::util::rng::Rng, p: f32| {
            (0..20).filter(|_| rng.next_f32() < p).count() as f32 / 20.0
        };
        let same: Vec<f32> = (0..2000).map(|_| draw(&mut rng, 0.8)).collect();
        assert!(signal_share(&same, 20) < 0.1, "{}", signal_share(&same, 20));
        // Half the tasks easy (0.99), half hard (0.5): most variance is real.
        let mixed: Vec<f32> = (0..2000)
            .map(|i| draw(&mut rng, if i % 2 == 0 { 0.99 } else { 0.5 }))
            .collect();
        assert!(
            signal_share(&mixed, 20) > 0.7,
            "{}",
            signal_share(&mixed, 20)
        );
        assert_eq!(signal_share(&[0.5], 20), 0.0);
        assert_eq!(signal_share(&[0.5, 0.5], 20), 0.0);
    }

    #[test]
    fn pearson_of_linear_anti_and_constant_series() {
        let x = [1.0, 2.0, 3.0, 4.0];
        assert!((pearson(&x, &[2.0, 4.0, 6.0, 8.0]) - 1.0).abs() < 1e-12);
        assert!((pearson(&x, &[4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        assert_eq!(pearson(&x, &[1.0; 4]), 0.0);
        let r = pearson(&x, &[1.0, 3.0, 2.0, 4.0]);
        assert!((r - 0.8).abs() < 1e-9, "{r}");
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let xs: Vec<f64> = (1..=100).map(|v| v as f64).collect();
        assert_eq!(quantile(&xs, 0.5), 50.0);
        assert_eq!(quantile(&xs, 0.99), 99.0);
        assert_eq!(quantile(&xs, 1.0), 100.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }
}
