//! Value parsers for the numeric flags: each accepts only the range its flag means and says
//! what it expected, so clap's error names the flag and the value (negative numbers reach the
//! parser through `allow_negative_numbers` instead of being taken for flags).

use std::fmt::Display;
use std::str::FromStr;

/// Parses a whole number not below `min`.
fn whole<T>(s: &str, min: T, what: &str) -> Result<T, String>
where
    T: FromStr + PartialOrd + Display + Copy,
{
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!("must be {what}, not negative"));
    }
    match t.parse::<T>() {
        Ok(v) if v >= min => Ok(v),
        Ok(_) => Err(format!("must be {what}")),
        Err(_) => Err(format!("must be {what} (a whole number)")),
    }
}

/// Parses a finite number for which `ok` holds.
fn real<T>(s: &str, what: &str, ok: impl Fn(T) -> bool) -> Result<T, String>
where
    T: FromStr + Into<f64> + Copy,
{
    match s.trim().parse::<T>() {
        Ok(v) if v.into().is_finite() && ok(v) => Ok(v),
        Ok(_) => Err(format!("must be a finite number {what}")),
        Err(_) => Err(format!("must be a number {what}")),
    }
}

/// A count of at least 1.
pub fn count(s: &str) -> Result<usize, String> {
    whole(s, 1, "at least 1")
}

/// A count that may be 0.
pub fn count_or_zero(s: &str) -> Result<usize, String> {
    whole(s, 0, "0 or more")
}

/// A 32-bit count of at least 1.
pub fn count_u32(s: &str) -> Result<u32, String> {
    whole(s, 1, "at least 1")
}

/// A 64-bit count of at least 1.
pub fn count_u64(s: &str) -> Result<u64, String> {
    whole(s, 1, "at least 1")
}

/// An index (a device ordinal), 0 or more.
pub fn index(s: &str) -> Result<usize, String> {
    whole(s, 0, "0 or more")
}

/// A seed: any unsigned 64-bit number.
pub fn seed(s: &str) -> Result<u64, String> {
    whole(s, 0, "an unsigned 64-bit number")
}

/// A fraction in [0, 1].
pub fn fraction(s: &str) -> Result<f32, String> {
    real(s, "in [0, 1]", |v: f32| (0.0..=1.0).contains(&v))
}

/// A nucleus-sampling threshold in (0, 1].
pub fn top_p(s: &str) -> Result<f32, String> {
    real(s, "in (0, 1]", |v: f32| v > 0.0 && v <= 1.0)
}

/// A number above 0.
pub fn positive_f32(s: &str) -> Result<f32, String> {
    real(s, "above 0", |v: f32| v > 0.0)
}

/// A number above 0.
pub fn positive_f64(s: &str) -> Result<f64, String> {
    real(s, "above 0", |v: f64| v > 0.0)
}

/// A number of 0 or more.
pub fn non_negative_f32(s: &str) -> Result<f32, String> {
    real(s, "of 0 or more", |v: f32| v >= 0.0)
}

/// A number of 0 or more.
pub fn non_negative_f64(s: &str) -> Result<f64, String> {
    real(s, "of 0 or more", |v: f64| v >= 0.0)
}

/// A byte count with an optional suffix (see [`crate::common::parse_bytes`]).
pub fn bytes(s: &str) -> Result<u64, String> {
    if s.trim().starts_with('-') {
        return Err("must be a byte count, not negative".into());
    }
    crate::common::parse_bytes(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_enforced_and_explained() {
        assert_eq!(count("3"), Ok(3));
        assert!(count("0").unwrap_err().contains("at least 1"));
        assert!(count("-1").unwrap_err().contains("not negative"));
        assert!(count("x").unwrap_err().contains("whole number"));
        assert_eq!(count_or_zero("0"), Ok(0));
        assert_eq!(index("0"), Ok(0));
        assert_eq!(fraction("0.5"), Ok(0.5));
        for bad in ["2", "-0.1", "NaN", "inf", "x"] {
            assert!(fraction(bad).unwrap_err().contains("[0, 1]"), "{bad}");
        }
        assert!(top_p("0").is_err() && top_p("1").is_ok());
        assert!(positive_f32("0").is_err() && positive_f64("1e-3").is_ok());
        assert!(non_negative_f32("-1").is_err() && non_negative_f64("0").is_ok());
        assert!(non_negative_f32("NaN").unwrap_err().contains("finite"));
        assert_eq!(bytes("64K"), Ok(64 << 10));
        assert!(bytes("-5").unwrap_err().contains("negative"));
    }
}
