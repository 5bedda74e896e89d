//! Routing a sequence of tasks through the router and the residency model: swaps and hits are
//! counted, residency changes decisions, and reasons name the choice.

use agentcompress::controller::ControllerOutput;
use agentcompress::quant::{PerPrecision, Precision};
use agentcompress::router::{
    QualityModel, Router, RouterConfig, VariantCache, DEFAULT_PREFETCH_MIN_PROB,
};

fn out(c: f32) -> ControllerOutput {
    ControllerOutput {
        complexity: c,
        precision_logits: [0.0; 4].into(),
        precision_probs: [0.25; 4].into(),
        pruning: 0.0,
        sparsity: 0.0,
    }
}

#[test]
fn residency_aware_routing_saves_swaps_on_alternating_tasks() {
    let pts: Vec<(f32, PerPrecision<f32>)> = (0..50)
        .map(|i| {
            let c = i as f32 / 50.0;
            (c, [1.0, 0.99, if c < 0.5 { 0.97 } else { 0.7 }, 0.1].into())
        })
        .collect();
    let bytes = [100, 62, 40, 29];
    let mk = |horizon: f64| Router {
        config: RouterConfig {
            target: 0.95,
            swap_factor: 50.0,
            horizon,
            task_bytes: 20.0,
            prefetch_min_prob: DEFAULT_PREFETCH_MIN_PROB,
        },
        quality: QualityModel::fit(&pts, 5).unwrap(),
        relative_bytes: bytes.map(|b| b as f64 / 100.0).into(),
    };
    // Device holds one of INT8/INT4 at a time (capacity 0.7 of fp16 after FP16 is excluded).
    let run = |r: &Router| {
        let mut res = VariantCache::new(100, bytes).unwrap();
        let mut cost = 0.0;
        let mut chosen = Vec::new();
        for i in 0..20 {
            let c = if i % 2 == 0 { 0.1 } else { 0.9 };
            let d = r.decide(&out(c), &res);
            assert!(d
                .reasons
                .last()
                .unwrap()
                .contains(&format!("chose {}", d.precision)));
            let swap = res.use_variant(d.precision);
            assert_eq!(swap, d.swap);
            cost += r.cost(d.precision, swap);
            chosen.push(d.precision);
        }
        (cost, res.swaps, chosen)
    };
    let (greedy_cost, greedy_swaps, greedy) = run(&mk(1000.0));
    let (aware_cost, aware_swaps, aware) = run(&mk(2.0));
    assert!(greedy.contains(&Precision::Int4) && greedy.contains(&Precision::Int8));
    // INT8 + INT4 do not fit together, so the greedy router swaps on every task.
    assert!(greedy_swaps >= 19, "{greedy_swaps}");
    // The residency-aware router starts on INT4 (nothing is resident), then, once the first
    // hard task has loaded INT8, stays on INT8, which is adequate for both kinds of task.
    assert_eq!(aware[0], Precision::Int4);
    assert!(
        aware[1..].iter().all(|&p| p == Precision::Int8),
        "{aware:?}"
    );
    assert_eq!(aware_swaps, 2);
    assert!(aware_cost < greedy_cost);
}
