//! Criterion benchmarks of the CPU backend's kernels through the public `Backend` API: matrix
//! products in every weight format (FP16, packed INT8/INT4/INT2) at SmolLM2-135M and
//! Llama-2-7B row widths, one input row (decode) and eight (a short prefill chunk or a
//! speculative verify), plus RMSNorm and decode attention over a growing FP16 cache.
//!
//! Run with `cargo bench --bench cpu_kernels` (`-- matmul/int4` to filter). Throughput is in
//! bytes of weights read, so the reported rate compares directly with the host's copy rate
//! (`agentcompress bench decode` prints that floor). Whole-model figures live in
//! `agentcompress bench decode`, not here.

use agentcompress::backend::cpu::CpuBackend;
use agentcompress::backend::{AttentionShape, Backend, NormShape};
use agentcompress::model::{DType, Tensor};
use agentcompress::quant::quantizer::quantize_matrix;
use agentcompress::quant::{Method, WeightMatrix};
use agentcompress::util::rng::Rng;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;

/// `(name, out, in)`: SmolLM2-135M's projections and one Llama-2-7B FFN matrix.
const SHAPES: [(&str, usize, usize); 4] = [
    ("smollm2-qkvo-576x576", 576, 576),
    ("smollm2-up-1536x576", 1536, 576),
    ("smollm2-down-576x1536", 576, 1536),
    ("7b-up-11008x4096", 11008, 4096),
];

/// `(format, bits, group)`; bits 16 is dense FP16, group 0 is one group per row.
const FORMATS: [(&str, u32, usize); 4] = [
    ("fp16", 16, 0),
    ("int8", 8, 0),
    ("int4-g128", 4, 128),
    ("int2-g64", 2, 64),
];

fn weight(rng: &mut Rng, out: usize, inp: usize, bits: u32, group: usize) -> WeightMatrix {
    let w = rng.vec_uniform(out * inp, 0.05);
    if bits == 16 {
        let bytes: Vec<u8> = w
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect();
        return WeightMatrix::Dense(Tensor::from_bytes(&bytes, vec![out, inp], DType::F16));
    }
    let group = if group == 0 { inp } else { group };
    quantize_matrix(&w, out, inp, bits, group, Method::Rtn, None).expect("quantize")
}

fn matmul(c: &mut Criterion) {
    let be = CpuBackend::new();
    let mut rng = Rng::new(7);
    let mut group = c.benchmark_group("matmul");
    group.sample_size(20);
    for (shape, out, inp) in SHAPES {
        for (format, bits, g) in FORMATS {
            let m = weight(&mut rng, out, inp, bits, g);
            let bytes = m.byte_len() as u64;
            let mat = be.upload_matrix(&m).expect("upload");
            for rows in [1usize, 8] {
                let x = rng.vec_uniform(rows * inp, 1.0);
                let mut y = vec![0.0f32; rows * out];
                group.throughput(Throughput::Bytes(bytes));
                let id = BenchmarkId::new(format!("{format}/{shape}"), format!("rows{rows}"));
                group.bench_function(id, |b| {
                    b.iter(|| {
                        be.matmul(black_box(&x), &mat, &mut y, rows)
                            .expect("matmul")
                    })
                });
            }
        }
    }
    group.finish();
}

fn rmsnorm(c: &mut Criterion) {
    let be = CpuBackend::new();
    let mut rng = Rng::new(8);
    let mut group = c.benchmark_group("rmsnorm");
    for dim in [576usize, 4096] {
        let (x, w) = (rng.vec_uniform(dim, 1.0), rng.vec_uniform(dim, 1.0));
        let mut out = vec![0.0f32; dim];
        let shape = NormShape {
            rows: 1,
            dim,
            eps: 1e-5,
        };
        group.throughput(Throughput::Bytes((dim * 4) as u64));
        group.bench_function(BenchmarkId::from_parameter(dim), |b| {
            b.iter(|| {
                be.rmsnorm(black_box(&x), &w, &mut out, &shape)
                    .expect("rmsnorm")
            })
        });
    }
    group.finish();
}

/// One decode row of grouped-query attention (SmolLM2: 9 query heads over 3 KV heads of
/// width 64) against a cache of `pos` earlier tokens.
fn attention_decode(c: &mut Criterion) {
    let be = CpuBackend::new();
    let mut rng = Rng::new(9);
    let (n_heads, n_kv_heads, head_dim) = (9usize, 3usize, 64usize);
    let mut group = c.benchmark_group("attention_decode");
    for pos in [64usize, 512, 2048] {
        let (rows, width) = (pos + 1, n_kv_heads * head_dim);
        let kv = rows * width;
        let mut k = be.alloc_cache(kv).expect("cache");
        let mut v = be.alloc_cache(kv).expect("cache");
        be.store_rows(&rng.vec_uniform(kv, 1.0), &mut k, rows, width, 0)
            .expect("store keys");
        be.store_rows(&rng.vec_uniform(kv, 1.0), &mut v, rows, width, 0)
            .expect("store values");
        let q = rng.vec_uniform(n_heads * head_dim, 1.0);
        let mut out = vec![0.0f32; n_heads * head_dim];
        let shape = AttentionShape {
            rows: 1,
            pos0: pos,
            n_heads,
            n_kv_heads,
            head_dim,
        };
        // Bytes of the FP16 cache one decode row streams.
        group.throughput(Throughput::Bytes((2 * kv * 2) as u64));
        group.bench_function(BenchmarkId::from_parameter(pos), |b| {
            b.iter(|| {
                be.attention(black_box(&q), &k, &v, &mut out, &shape)
                    .expect("attention")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, matmul, rmsnorm, attention_decode);
criterion_main!(benches);
