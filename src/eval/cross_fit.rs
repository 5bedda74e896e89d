//! Out-of-fold predictions (cross-fitting): every training item is predicted by a model fitted
//! without it. A router calibrated on a model's predictions for its own training tasks learns
//! how that model scores what it memorised, not how it scores a task it has not seen, and the
//! two distributions differ (the held-out predictions are compressed toward the mean); the
//! out-of-fold predictions are distributed like the test predictions, so quantile bins and
//! per-bin qualities fitted on them hold on the test tasks.

use crate::{Error, Result};
use rayon::prelude::*;

/// The `k` folds of `idx`: for each fold, the items it fits on and the items it holds out.
/// Item at position `j` of `idx` is held out by fold `j % k`, so consecutive items (the chat
/// suite rotates kinds and domains) spread over every fold. `k` is clamped to `idx.len()`
/// (leave-one-out); `k < 2` is an error, since one fold holds out everything.
pub fn fold_sets(idx: &[usize], k: usize) -> Result<Vec<(Vec<usize>, Vec<usize>)>> {
    let k = k.min(idx.len());
    if k < 2 {
        return Err(Error::invalid(format!(
            "cross-fitting needs at least 2 folds over at least 2 items ({} folds asked over {} items)",
            k,
            idx.len()
        )));
    }
    Ok((0..k)
        .map(|f| {
            let held = idx.iter().copied().skip(f).step_by(k).collect();
            let fit = idx
                .iter()
                .enumerate()
                .filter(|(j, _)| j % k != f)
                .map(|(_, &i)| i)
                .collect();
            (fit, held)
        })
        .collect())
}

/// Out-of-fold outputs for `idx`, in `idx`'s order: for each of `k` folds (see [`fold_sets`]),
/// `fit_predict(fit, held)` fits a model on `fit` and returns its outputs for `held` (one per
/// item, in order). Folds run in parallel on rayon's pool; `fit_predict` must hold no lock
/// across its own rayon work.
pub fn out_of_fold<O: Send>(
    idx: &[usize],
    k: usize,
    fit_predict: impl Fn(&[usize], &[usize]) -> Result<Vec<O>> + Sync,
) -> Result<Vec<O>> {
    let folds = fold_sets(idx, k)?;
    let k = folds.len();
    let per_fold = folds
        .par_iter()
        .map(|(fit, held)| {
            let outs = fit_predict(fit, held)?;
            if outs.len() != held.len() {
                return Err(Error::Internal(format!(
                    "a fold predicted {} outputs for {} held-out items",
                    outs.len(),
                    held.len()
                )));
            }
            Ok(outs)
        })
        .collect::<Result<Vec<_>>>()?;
    // Fold f holds out positions f, f + k, f + 2k...: interleave back into idx's order.
    let mut iters: Vec<_> = per_fold.into_iter().map(Vec::into_iter).collect();
    let mut out = Vec::with_capacity(idx.len());
    for j in 0..idx.len() {
        match iters[j % k].next() {
            Some(o) => out.push(o),
            None => return Err(Error::Internal("a fold ran out of outputs".into())),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_partition_the_items_and_each_holds_out_what_it_does_not_fit() {
        let idx: Vec<usize> = (10..20).collect();
        let folds = fold_sets(&idx, 3).unwrap();
        assert_eq!(folds.len(), 3);
        let mut held_all: Vec<usize> = folds.iter().flat_map(|(_, h)| h.clone()).collect();
        held_all.sort();
        assert_eq!(held_all, idx);
        for (fit, held) in &folds {
            assert_eq!(fit.len() + held.len(), idx.len());
            assert!(fit.iter().all(|i| !held.contains(i)));
        }
        assert_eq!(folds[1].1, vec![11, 14, 17]);
        // More folds than items: leave-one-out.
        let loo = fold_sets(&idx[..4], 9).unwrap();
        assert_eq!(loo.len(), 4);
        assert!(loo.iter().all(|(f, h)| h.len() == 1 && f.len() == 3));
        assert!(fold_sets(&idx, 1).is_err());
        assert!(fold_sets(&idx[..1], 5).is_err());
    }

    #[test]
    fn out_of_fold_outputs_come_back_in_order_from_models_that_never_saw_them() {
        let idx: Vec<usize> = vec![3, 8, 1, 9, 4, 7, 0];
        // A "model" that records what it was fitted on; its output for an item says whether it
        // saw the item and how many items it fitted.
        let outs = out_of_fold(&idx, 3, |fit, held| {
            Ok(held
                .iter()
                .map(|h| (*h, fit.contains(h), fit.len()))
                .collect())
        })
        .unwrap();
        assert_eq!(outs.iter().map(|o| o.0).collect::<Vec<_>>(), idx);
        assert!(outs.iter().all(|o| !o.1));
        // Folds of 3, 2 and 2 items: models fit on 4 or 5 of the 7.
        assert!(outs.iter().all(|o| o.2 == 4 || o.2 == 5));
        let short = out_of_fold(&idx, 3, |_, held| Ok(vec![0u8; held.len() - 1]));
        assert!(matches!(short, Err(Error::Internal(_))));
        let failing = out_of_fold(&idx, 3, |_, _| -> Result<Vec<u8>> {
            Err(Error::invalid("no"))
        });
        assert!(failing.is_err());
    }
}
