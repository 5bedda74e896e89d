//! `PerPrecision<T>`: one value for each of the four precisions, indexed by [`Precision`].
//!
//! Replaces bare `[T; 4]` arrays indexed by `p.index()`, so the index cannot be confused with
//! another position and the type says what the four entries are. Serialized as the plain
//! four-element array, so files written before it read the same.

use super::Precision;
use serde::{Deserialize, Serialize};
use std::ops::{Index, IndexMut};

/// One `T` per precision, in [`Precision::ALL`] order (FP16, INT8, INT4, INT2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PerPrecision<T>([T; 4]);

impl<T> PerPrecision<T> {
    /// The value `f(p)` for every precision `p`.
    pub fn from_fn(mut f: impl FnMut(Precision) -> T) -> Self {
        Self(Precision::ALL.map(&mut f))
    }

    /// `f` applied to every value.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> PerPrecision<U> {
        PerPrecision(self.0.map(f))
    }

    /// `(precision, value)` pairs, most precise first.
    pub fn iter(&self) -> impl Iterator<Item = (Precision, &T)> {
        Precision::ALL.into_iter().zip(self.0.iter())
    }

    /// The values, most precise first.
    pub fn values(&self) -> &[T; 4] {
        &self.0
    }

    /// The values as a plain array, most precise first.
    pub fn into_array(self) -> [T; 4] {
        self.0
    }

    /// `(precision, value)` pairs with mutable values, most precise first.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (Precision, &mut T)> {
        Precision::ALL.into_iter().zip(self.0.iter_mut())
    }
}

impl<T> TryFrom<Vec<T>> for PerPrecision<T> {
    /// The vector itself when it does not hold exactly four values.
    type Error = Vec<T>;
    /// Four values in [`Precision::ALL`] order.
    fn try_from(values: Vec<T>) -> Result<Self, Vec<T>> {
        <[T; 4]>::try_from(values).map(Self)
    }
}

impl<T: PartialEq> PartialEq<[T; 4]> for PerPrecision<T> {
    fn eq(&self, other: &[T; 4]) -> bool {
        self.0 == *other
    }
}

impl<T: Clone> PerPrecision<T> {
    /// The same value for every precision.
    pub fn splat(v: T) -> Self {
        Self::from_fn(|_| v.clone())
    }
}

impl<T> From<[T; 4]> for PerPrecision<T> {
    fn from(values: [T; 4]) -> Self {
        Self(values)
    }
}

impl<T> Index<Precision> for PerPrecision<T> {
    type Output = T;
    fn index(&self, p: Precision) -> &T {
        &self.0[p.index()]
    }
}

impl<T> IndexMut<Precision> for PerPrecision<T> {
    fn index_mut(&mut self, p: Precision) -> &mut T {
        &mut self.0[p.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_by_precision_iterates_in_order_and_maps() {
        let mut bits = PerPrecision::from_fn(Precision::bits);
        assert_eq!(bits[Precision::Int4], 4);
        bits[Precision::Int2] += 1;
        let pairs: Vec<(Precision, u32)> = bits.iter().map(|(p, b)| (p, *b)).collect();
        assert_eq!(
            pairs,
            [
                (Precision::Fp16, 16),
                (Precision::Int8, 8),
                (Precision::Int4, 4),
                (Precision::Int2, 3)
            ]
        );
        let halves = bits.map(|b| b as f64 / 2.0);
        assert_eq!(halves.into_array(), [8.0, 4.0, 2.0, 1.5]);
        assert_eq!(PerPrecision::splat(7u8).values(), &[7; 4]);
    }

    #[test]
    fn serializes_as_the_plain_array() {
        let v: PerPrecision<u64> = [1, 2, 3, 4].into();
        let text = serde_json::to_string(&v).unwrap();
        assert_eq!(text, "[1,2,3,4]");
        let back: PerPrecision<u64> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, v);
    }
}
