//! The runtime controller (gather -> encode -> head, after a safetensors round trip) agrees
//! with the training forward (cached encodings, `sample_loss`) on every output the loss uses.

use agentcompress::controller::train::{sample_loss, train, Sample, TrainConfig};
use agentcompress::controller::{io, Controller, ControllerConfig};
use agentcompress::util::rng::Rng;

#[test]
fn runtime_and_training_forward_agree_after_training_and_reload() {
    let embed = 16;
    let vocab = 50;
    let table = Rng::new(1).vec_uniform(vocab * embed, 1.0);
    let c = Controller::new(ControllerConfig::small(embed), 3).unwrap();
    let mut rng = Rng::new(4);
    let tasks: Vec<Vec<u32>> = (0..24)
        .map(|i| {
            (0..(5 + i % 40))
                .map(|_| rng.below(vocab as u64) as u32)
                .collect()
        })
        .collect();
    let samples: Vec<Sample> = tasks
        .iter()
        .enumerate()
        .map(|(i, ids)| {
            let hard = (ids[0] as f32) / vocab as f32;
            Sample {
                enc: c.encode(&c.gather(&table, ids).unwrap()).unwrap(),
                quality: [1.0, 0.99, 1.0 - 0.4 * hard, 0.2],
                cost: [1.0, 0.6, 0.4, 0.3],
                complexity: hard,
                headroom: 0.5,
                domain: i % 2,
            }
        })
        .collect();
    let tc = TrainConfig {
        iterations: 60,
        batch: 4,
        ..TrainConfig::default()
    };
    let mut trained = c.clone();
    train(&mut trained.head, &samples, 4, &tc, 20, |_, _| {}).unwrap();
    assert_ne!(trained.head, c.head);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.safetensors");
    io::save(&trained, &path).unwrap();
    let runtime = io::load(&path).unwrap();
    let zero = [0.0; 4];
    for (ids, s) in tasks.iter().zip(&samples) {
        let out = runtime.predict(&table, ids).unwrap();
        // Recompute the deterministic training loss from the runtime outputs.
        let mut y = out.precision_logits;
        let m = y.iter().copied().fold(f32::MIN, f32::max);
        let z: f32 = y.iter().map(|v| (v - m).exp()).sum();
        y.iter_mut().for_each(|v| *v = (*v - m).exp() / z);
        let q: f32 = (0..4).map(|p| y[p] * s.quality[p]).sum();
        let cost: f32 = (0..4).map(|p| y[p] * s.cost[p]).sum();
        let cx = out.complexity - s.complexity;
        let pr = out.pruning - 0.5 * s.headroom;
        let sp = out.sparsity - s.headroom;
        let want = tc.w_cost * cost
            + tc.w_quality * (tc.threshold - q).max(0.0)
            + tc.w_complexity * cx * cx
            + 0.1 * (pr * pr + sp * sp);
        let got = sample_loss(&trained.head, s, 4, &tc, &zero, None);
        assert!(
            (got - want).abs() < 1e-5,
            "training loss {got} vs runtime {want}"
        );
        assert!((out.precision_probs.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
}
