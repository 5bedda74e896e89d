//! The runtime controller (token ids -> gather -> encode -> head, after a safetensors round
//! trip) agrees with the candle training forward on every output, before and after
//! end-to-end training.
#![cfg(feature = "train")]

use agentcompress::controller::train::{train, Sample, TrainConfig};
use agentcompress::controller::train_model::{rows_of, Batch, TrainModel};
use agentcompress::controller::{io, Controller, ControllerConfig};
use agentcompress::util::rng::Rng;

/// Largest absolute difference, over tasks and outputs, between the runtime controller loaded
/// from `path` and the candle forward of the weights `c`.
fn max_diff(c: &Controller, path: &std::path::Path, table: &[f32], tasks: &[Vec<u32>]) -> f32 {
    io::save(c, path).unwrap();
    let runtime = io::load(path).unwrap();
    let model = TrainModel::from_controller(c).unwrap();
    let gathered: Vec<Vec<f32>> = tasks.iter().map(|t| c.gather(table, t).unwrap()).collect();
    let refs: Vec<&[f32]> = gathered.iter().map(|g| g.as_slice()).collect();
    let out = model
        .forward(&model.weights(), &Batch::new(&c.config, &refs).unwrap())
        .unwrap();
    let cx = rows_of(&out.complexity).unwrap();
    let lg = rows_of(&out.logits).unwrap();
    let pr = rows_of(&out.pruning).unwrap();
    let sp = rows_of(&out.sparsity).unwrap();
    let mut worst = 0f32;
    for (r, ids) in tasks.iter().enumerate() {
        let o = runtime.predict(table, ids).unwrap();
        let want = [o.complexity, o.pruning, o.sparsity];
        let got = [cx[r][0], pr[r][0], sp[r][0]];
        for (a, b) in got
            .iter()
            .chain(&lg[r])
            .zip(want.iter().chain(&o.precision_logits))
        {
            worst = worst.max((a - b).abs());
        }
    }
    worst
}

#[test]
fn runtime_and_candle_forward_agree_before_and_after_training() {
    let embed = 16;
    let vocab = 50;
    let table = Rng::new(1).vec_uniform(vocab * embed, 1.0);
    let mut cfg = ControllerConfig::small(embed);
    cfg.k = 12;
    let c = Controller::new(cfg, 3).unwrap();
    let mut rng = Rng::new(4);
    // Lengths from 5 to 44 ids: short tasks are padded, long ones truncated to k.
    let tasks: Vec<Vec<u32>> = (0..24)
        .map(|i| {
            (0..(5 + i % 40))
                .map(|_| rng.below(vocab as u64) as u32)
                .collect()
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.safetensors");
    let before = max_diff(&c, &path, &table, &tasks);
    assert!(before < 1e-5, "random weights: max abs diff {before}");

    let samples: Vec<Sample> = tasks
        .iter()
        .enumerate()
        .map(|(i, ids)| {
            let hard = (ids[0] as f32) / vocab as f32;
            Sample {
                emb: c.gather(&table, ids).unwrap(),
                quality: [1.0, 0.99, 1.0 - 0.4 * hard, 0.2],
                cost: [1.0, 0.6, 0.4, 0.3],
                complexity: hard,
                headroom: 0.5,
                domain: i % 2,
            }
        })
        .collect();
    let tc = TrainConfig {
        iterations: 30,
        batch: 4,
        outer_lr: 3e-3,
        ..TrainConfig::default()
    };
    let mut trained = c.clone();
    train(&mut trained, &samples, &tc, 10, |_, _| {}).unwrap();
    assert_ne!(trained.proj, c.proj);
    assert_ne!(trained.layers, c.layers);
    let after = max_diff(&trained, &path, &table, &tasks);
    assert!(after < 1e-5, "trained weights: max abs diff {after}");
}
