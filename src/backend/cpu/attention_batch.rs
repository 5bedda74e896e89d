//! Attention of several sequences as one parallel job. A batched decode step's sequences each
//! attend over their own cache with one or a few query rows: too little work to split one
//! sequence over the threads (or split three ways over two threads), so the (sequence, query
//! row, key/value head) groups of all of them are the items of one job, cut into contiguous
//! runs over the threads ([`worker_pool::for_each_in_runs`]). Each group runs
//! [`attend_group_f16`] exactly as the one-sequence attention does, so the outputs have the
//! same bits.

use super::attention_f16::{attend_group_f16, attend_row_f16};
use super::{worker_pool, CpuBackend, KvCache};
use crate::backend::{AttentionJob, AttentionShape};
use half::f16;

/// Below this many multiply-adds in all (rows x heads x keys x head_dim) the job runs on the
/// calling thread, as one sequence's attention does.
const PARALLEL_MIN_WORK: usize = 1 << 16;

/// One sequence's inputs and where its output goes.
struct Seq<'a> {
    q: &'a [f32],
    k: &'a [f16],
    v: &'a [f16],
    out: *mut f32,
    shape: AttentionShape,
}

/// The sequences of one job, shared with the pool's threads.
struct Seqs<'a>(Vec<Seq<'a>>);

// SAFETY: the inputs are shared reads; each task writes only its own (row, head group) range
// of one sequence's output, and the outputs outlive the job (they are borrowed by `jobs`).
unsafe impl Sync for Seqs<'_> {}

impl<'a> Seqs<'a> {
    /// Sequence `i` (a method, so closures capture the `Sync` wrapper, not its vector).
    fn get(&self, i: usize) -> &Seq<'a> {
        &self.0[i]
    }
}

/// Runs `jobs` (shapes already checked by [`crate::backend::Backend::attention_batch`]) when
/// every cache is FP16 and returns true; returns false, having run nothing, otherwise.
pub(super) fn attention_f16_batch(jobs: &mut [AttentionJob<'_, CpuBackend>]) -> bool {
    let mut seqs = Vec::new();
    let mut groups = Vec::new();
    if seqs.try_reserve(jobs.len()).is_err() || groups.try_reserve(jobs.len()).is_err() {
        return false;
    }
    let mut work = 0usize;
    for j in jobs.iter_mut() {
        let (KvCache::F16(k), KvCache::F16(v)) = (j.k_cache, j.v_cache) else {
            return false;
        };
        let s = j.shape;
        work = work.saturating_add(s.rows * s.n_heads * (s.pos0 + s.rows) * s.head_dim);
        groups.push(s.rows);
        seqs.push(Seq {
            q: j.q,
            k,
            v,
            out: j.out.as_mut_ptr(),
            shape: s,
        });
    }
    let seqs = Seqs(seqs);
    // With rows enough to keep every thread busy, an item is one query row of one sequence,
    // all of its heads ([`attend_row_f16`]: each cached row read whole, once per pass);
    // with fewer, one (query row, KV head) pair, so that a few rows still spread over the
    // threads. Both give every head the same bits.
    let rows: usize = groups.iter().sum();
    let whole_rows = rows >= 2 * worker_pool::threads();
    if !whole_rows {
        for (n, j) in groups.iter_mut().zip(jobs.iter()) {
            *n *= j.shape.n_kv_heads;
        }
    }
    let run = |i: usize, t: usize| {
        let s = seqs.get(i);
        let AttentionShape {
            pos0,
            n_heads,
            n_kv_heads,
            head_dim,
            ..
        } = s.shape;
        let q_dim = n_heads * head_dim;
        if whole_rows {
            // SAFETY: task (i, t) alone writes row t of sequence i's output, inside the
            // `rows * q_dim` the shape check guaranteed.
            let out = unsafe { std::slice::from_raw_parts_mut(s.out.add(t * q_dim), q_dim) };
            let q = &s.q[t * q_dim..(t + 1) * q_dim];
            attend_row_f16(q, s.k, s.v, pos0 + t + 1, n_kv_heads, head_dim, out);
            return;
        }
        // Item `t`: query row `t / n_kv_heads`, key/value head `t % n_kv_heads`.
        let (r, g) = (t / n_kv_heads, t % n_kv_heads);
        let width = (n_heads / n_kv_heads) * head_dim;
        let at = r * q_dim + g * width;
        // SAFETY: task (i, r, g) alone writes `out[at..at + width]` of sequence i, inside the
        // `rows * q_dim` the shape check guaranteed.
        let out = unsafe { std::slice::from_raw_parts_mut(s.out.add(at), width) };
        attend_group_f16(
            &s.q[at..at + width],
            s.k,
            s.v,
            pos0 + r + 1,
            n_kv_heads * head_dim,
            g * head_dim,
            head_dim,
            out,
        );
    };
    if work >= PARALLEL_MIN_WORK {
        worker_pool::for_each_in_runs(&groups, run);
    } else {
        for (i, &n) in groups.iter().enumerate() {
            (0..n).for_each(|t| run(i, t));
        }
    }
    true
}
