//! Decimal numbers in header values (`Retry-After` seconds, rate-limit reset times) read without
//! core's `f64` parser, whose tables and slow paths cost the module about 22 KB.

/// `text` as an `f64`, in the grammar of `str::parse::<f64>` for finite numbers: an optional sign,
/// digits with an optional `.` (at least one digit in all), an optional exponent `e`/`E` with an
/// optional sign and at least one digit. `inf` and `nan` are `None`: every caller rejects them.
///
/// Up to 15 significant digits and exponents within 10^±22, the answer is exactly core's (one
/// rounding of an exact integer times an exact power of ten); beyond, it may differ in the last bit.
pub fn parse_f64(text: &str) -> Option<f64> {
    let bytes = text.as_bytes();
    let (negative, rest) = match bytes.first() {
        Some(b'-') => (true, bytes.get(1..)?),
        Some(b'+') => (false, bytes.get(1..)?),
        _ => (false, bytes),
    };
    let mut mantissa: u64 = 0;
    let mut exponent: i64 = 0;
    let mut digits = 0usize;
    let mut seen_point = false;
    let mut at = 0usize;
    while let Some(&b) = rest.get(at) {
        match b {
            b'0'..=b'9' => {
                digits += 1;
                if mantissa < 10u64.pow(18) {
                    mantissa = mantissa * 10 + u64::from(b - b'0');
                    if seen_point {
                        exponent -= 1;
                    }
                } else if !seen_point {
                    // Beyond 19 digits only the magnitude counts.
                    exponent += 1;
                }
            }
            b'.' if !seen_point => seen_point = true,
            _ => break,
        }
        at += 1;
    }
    if digits == 0 {
        return None;
    }
    if let Some(&(b'e' | b'E')) = rest.get(at) {
        at += 1;
        let (sign, start) = match rest.get(at) {
            Some(b'-') => (-1, at + 1),
            Some(b'+') => (1, at + 1),
            _ => (1, at),
        };
        let exp_digits = rest.get(start..)?;
        if exp_digits.is_empty() || !exp_digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let mut value: i64 = 0;
        for &d in exp_digits {
            value = (value * 10 + i64::from(d - b'0')).min(100_000);
        }
        exponent += sign * value;
        at = rest.len();
    }
    if at != rest.len() {
        return None;
    }
    let magnitude = scale(mantissa, exponent);
    Some(if negative { -magnitude } else { magnitude })
}

/// `mantissa` times ten to the `exponent`.
fn scale(mantissa: u64, exponent: i64) -> f64 {
    const EXACT: [f64; 23] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20,
        1e21, 1e22,
    ];
    let m = mantissa as f64;
    if mantissa == 0 {
        return 0.0;
    }
    match EXACT.get(exponent.unsigned_abs() as usize) {
        Some(&p) if exponent < 0 => m / p,
        Some(&p) => m * p,
        // Outside the exact powers: good to a few units in the last place, which no header needs.
        None if exponent < 0 => m / 10f64.powi(exponent.unsigned_abs().min(400) as i32),
        None => m * 10f64.powi(exponent.min(400) as i32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_core_on_what_headers_carry() {
        let cases = [
            "0", "12", "0.5", "1.5", "3.", ".25", "-3", "+7", "0.29", "0.001", "30.123", "1e3", "2.5E-2", "1e+2", "007",
            "86400", "0.1", "123456.987654321", "1e22", "1e-22", "4.2e-5",
        ];
        for text in cases {
            assert_eq!(parse_f64(text), text.parse::<f64>().ok(), "{text}");
        }
    }

    #[test]
    fn refuses_what_core_refuses_and_what_is_not_finite() {
        for text in ["", ".", "-", "+", "e5", "1e", "1e+", "1.2.3", "5s", " 5", "1 ", "soon", "0x10", "--1", "inf", "NaN", "infinity"] {
            assert_eq!(parse_f64(text), None, "{text}");
        }
    }

    #[test]
    fn far_exponents_and_long_mantissas_stay_close() {
        for text in ["123456789.987654321", "1e300", "1e-300", "12345678901234567890123", "0.000000000000000000000000001", "1e400"] {
            let core: f64 = text.parse().unwrap();
            let ours = parse_f64(text).unwrap();
            assert!((ours - core).abs() <= core.abs() * 1e-14 || ours == core, "{text}: {ours} vs {core}");
        }
    }
}
