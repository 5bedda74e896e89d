//! The controller's forwards agree on every output, before and after end-to-end training:
//! the runtime controller (token ids -> gather -> encode -> head, after a safetensors round
//! trip) with the candle training forward; and the controller written over the `Backend`
//! trait (`DeviceController`, here on the CPU backend) with the reference forward
//! (`Controller::predict`) and the packed CPU inference form in f32.
#![cfg(feature = "train")]

use agentcompress::backend::cpu::CpuBackend;
use agentcompress::controller::train::{train, Sample, TrainConfig};
use agentcompress::controller::train_model::{rows_of, Batch, TrainModel};
use agentcompress::controller::{io, Controller, ControllerConfig};
use agentcompress::controller::{ControllerOutput, ControllerPrecision, DeviceController};
use agentcompress::util::rng::Rng;

/// Toy training samples for `tasks`: harder (lower INT4 quality) as the first id grows.
fn toy_samples(c: &Controller, table: &[f32], tasks: &[Vec<u32>], vocab: usize) -> Vec<Sample> {
    tasks
        .iter()
        .enumerate()
        .map(|(i, ids)| {
            let hard = (ids[0] as f32) / vocab as f32;
            Sample {
                emb: c.gather(table, ids).unwrap(),
                quality: [1.0, 0.99, 1.0 - 0.4 * hard, 0.2].into(),
                cost: [1.0, 0.6, 0.4, 0.3].into(),
                complexity: hard,
                headroom: 0.5,
                domain: i % 2,
            }
        })
        .collect()
}

/// `c` after 30 iterations of end-to-end training on `samples`.
fn trained(c: &Controller, samples: &[Sample]) -> Controller {
    let tc = TrainConfig {
        iterations: 30,
        batch: 4,
        outer_lr: 3e-3,
        ..TrainConfig::default()
    };
    let mut t = c.clone();
    train(&mut t, samples, &tc, 10, |_, _| {}).unwrap();
    t
}

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
            .zip(want.iter().chain(o.precision_logits.values()))
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

    let samples = toy_samples(&c, &table, &tasks, vocab);
    let trained = trained(&c, &samples);
    assert_ne!(trained.proj, c.proj);
    assert_ne!(trained.layers, c.layers);
    let after = max_diff(&trained, &path, &table, &tasks);
    assert!(after < 1e-5, "trained weights: max abs diff {after}");
}

/// Complexity, pruning, sparsity and the four precision logits.
fn outputs(o: &ControllerOutput) -> [f32; 7] {
    let l = o.precision_logits.into_array();
    [o.complexity, o.pruning, o.sparsity, l[0], l[1], l[2], l[3]]
}

/// Largest absolute difference, over tasks and outputs, of the backend controller from the
/// reference and from the packed forward.
fn worst(c: &Controller, table: &[f32], tasks: &[Vec<u32>]) -> (f32, f32) {
    let dc = DeviceController::new(CpuBackend::new(), c, table).unwrap();
    let packed = c.packed_with(ControllerPrecision::F32);
    let (mut vs_ref, mut vs_packed) = (0f32, 0f32);
    for ids in tasks {
        let got = outputs(&dc.predict(ids).unwrap());
        let want = outputs(&c.predict(table, ids).unwrap());
        let fast = outputs(&packed.predict(table, ids).unwrap());
        for i in 0..7 {
            vs_ref = vs_ref.max((got[i] - want[i]).abs());
            vs_packed = vs_packed.max((got[i] - fast[i]).abs());
        }
    }
    (vs_ref, vs_packed)
}

#[test]
fn backend_controller_agrees_before_and_after_training() {
    let (embed, vocab) = (16, 50);
    let table = Rng::new(1).vec_uniform(vocab * embed, 1.0);
    let mut cfg = ControllerConfig::small(embed);
    cfg.k = 12;
    let c = Controller::new(cfg, 3).unwrap();
    let mut rng = Rng::new(4);
    // Lengths from 1 to 40 ids: short tasks use fewer rows, long ones are truncated to k.
    let tasks: Vec<Vec<u32>> = (0..20)
        .map(|i| {
            (0..(1 + i * 2))
                .map(|_| rng.below(vocab as u64) as u32)
                .collect()
        })
        .collect();
    let (r, p) = worst(&c, &table, &tasks);
    assert!(
        r < 1e-4 && p < 1e-4,
        "random weights: {r} vs reference, {p} vs packed"
    );

    let samples = toy_samples(&c, &table, &tasks, vocab);
    let trained = trained(&c, &samples);
    // Training moved the norms and biases too, so the backend path exercises all of them.
    assert_ne!(trained.layers[0].ln1, c.layers[0].ln1);
    assert_ne!(trained.head.mlp1.b, c.head.mlp1.b);
    let (r, p) = worst(&trained, &table, &tasks);
    assert!(
        r < 1e-4 && p < 1e-4,
        "trained weights: {r} vs reference, {p} vs packed"
    );
    // The trained controller predicts differently from the untrained one: the comparison
    // above is not between two unchanged forwards.
    let dc = DeviceController::new(CpuBackend::new(), &trained, &table).unwrap();
    let before = outputs(&c.predict(&table, &tasks[5]).unwrap());
    let after = outputs(&dc.predict(&tasks[5]).unwrap());
    assert!(before.iter().zip(&after).any(|(a, b)| (a - b).abs() > 1e-4));
}
