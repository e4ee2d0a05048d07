//! Decimal fractions without floating-point formatting.
//!
//! Formatting an `f64` (`{:.3}`) links core's float printing (Grisu and
//! Dragon4, ~10 KB of the static binary); the four places pminit prints a
//! fraction (metrics seconds, `pminit status` sizes and CPU %) need none of
//! it: a ratio of integers rounded half up is exact and smaller.

/// `num / den` with `places` decimals, rounded half up: `fixed(1500, 1000,
/// 3)` is "1.500". `den` must not be 0.
pub fn fixed(num: u128, den: u128, places: u32) -> String {
    let scale = 10u128.pow(places);
    let scaled = (num * scale * 2 + den) / (den * 2);
    let (whole, frac) = (scaled / scale, scaled % scale);
    if places == 0 {
        whole.to_string()
    } else {
        format!("{whole}.{frac:0width$}", width = places as usize)
    }
}

/// A non-negative `f64` with `places` decimals, rounded half up; NaN and
/// negative values print as 0.
pub fn fixed_f64(v: f64, places: u32) -> String {
    let scale = 10u64.pow(places);
    let scaled = (v * scale as f64 + 0.5).max(0.0) as u128;
    fixed(scaled, scale as u128, places)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_float_formatting_on_ratios() {
        for num in (0..5000u128).chain([u64::MAX as u128, 999_999, 1_000_000, 123_456_789]) {
            for (den, places) in [(1000u128, 3u32), (1024 * 1024, 1), (3, 2), (1, 0)] {
                let want = format!("{:.*}", places as usize, num as f64 / den as f64);
                let got = fixed(num, den, places);
                // Float formatting rounds a tie (a remainder of exactly
                // half) to even, this rounds it up; and past 2^52 the f64
                // itself is off. Anywhere else they must agree.
                if got != want {
                    let tie = (num * 10u128.pow(places)) % den * 2 == den;
                    assert!(
                        tie || num > 1 << 52,
                        "{num}/{den} .{places}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn rounds_half_up_and_pads() {
        assert_eq!(fixed(1500, 1000, 3), "1.500");
        assert_eq!(fixed(1, 1000, 3), "0.001");
        assert_eq!(fixed(5, 10, 0), "1");
        assert_eq!(fixed(1_572_864, 1024 * 1024, 1), "1.5");
        assert_eq!(fixed(0, 7, 2), "0.00");
        assert_eq!(fixed_f64(1.5, 1), "1.5");
        assert_eq!(fixed_f64(0.04, 1), "0.0");
        assert_eq!(fixed_f64(0.05, 1), "0.1");
        assert_eq!(fixed_f64(99.96, 1), "100.0");
        assert_eq!(fixed_f64(-3.0, 1), "0.0");
        assert_eq!(fixed_f64(f64::NAN, 1), "0.0");
    }
}
