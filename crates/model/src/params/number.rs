//! Numbers in setting values: strict parsing, units, and exact rendering.

fn bytes_of(unit: &str) -> Option<f64> {
    Some(match unit {
        "B" => 1.0,
        "kB" | "K" | "k" => 1024.0,
        "8kB" => 8192.0,
        "16kB" => 16384.0,
        "32kB" => 32768.0,
        "64kB" => 65536.0,
        "MB" | "M" | "m" => 1024.0 * 1024.0,
        "GB" | "G" | "g" => 1024.0 * 1024.0 * 1024.0,
        "TB" | "T" | "t" => 1024.0f64.powi(4),
        _ => return None,
    })
}

fn millis_of(unit: &str) -> Option<f64> {
    Some(match unit {
        "us" => 0.001,
        "ms" => 1.0,
        "s" => 1000.0,
        "min" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        _ => return None,
    })
}

/// A strictly formatted number and what follows it: an optional minus, digits, and an
/// optional fraction of digits. No plus sign, exponent, hex, `inf` or `NaN` — forms
/// the engines' grammars read differently (PostgreSQL reads `010` as octal, MariaDB
/// takes `inf` as a name), so they never reach an engine. The number comes back in its
/// canonical spelling (no leading zeros, no empty fraction), the rest trimmed.
pub fn strict_number(value: &str) -> Option<(String, &str)> {
    let v = value.trim();
    let (neg, body) = match v.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, v),
    };
    let int_len = body.bytes().take_while(u8::is_ascii_digit).count();
    if int_len == 0 {
        return None;
    }
    let (int, rest) = body.split_at(int_len);
    let (frac, rest) = match rest.strip_prefix('.') {
        Some(r) => {
            let n = r.bytes().take_while(u8::is_ascii_digit).count();
            if n == 0 {
                return None;
            }
            r.split_at(n)
        }
        None => ("", rest),
    };
    let int = int.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let frac = frac.trim_end_matches('0');
    let mut out = String::new();
    if neg && (int != "0" || !frac.is_empty()) {
        out.push('-');
    }
    out.push_str(int);
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    Some((out, rest.trim()))
}

/// Whether `value` is, as it is, a strictly formatted number in canonical spelling:
/// the only values an engine may receive unquoted.
pub fn is_strict_number(value: &str) -> bool {
    matches!(strict_number(value), Some((n, "")) if n == value)
}

/// A number with an optional unit, converted to `base` (the setting's unit).
pub(super) fn number_in(value: &str, base: Option<&str>) -> Option<f64> {
    let (num, unit) = strict_number(value)?;
    let n: f64 = num.parse().ok().filter(|n: &f64| n.is_finite())?;
    if unit.is_empty() {
        return Some(n);
    }
    let base = base?;
    let scaled = if let (Some(u), Some(b)) = (bytes_of(unit), bytes_of(base)) {
        n * u / b
    } else if let (Some(u), Some(b)) = (millis_of(unit), millis_of(base)) {
        n * u / b
    } else {
        return None;
    };
    scaled.is_finite().then_some(scaled)
}

/// A whole number in the setting's `base` unit (MariaDB: bytes), computed exactly:
/// `value` with an optional unit, as its digits (f64 would round values near 2^64).
pub(super) fn exact_integer(value: &str, base: &str) -> Option<String> {
    let (num, unit) = strict_number(value)?;
    let mult: i128 = match unit {
        "" => 1,
        u => {
            let m = match (bytes_of(u), bytes_of(base)) {
                (Some(u), Some(b)) => u / b,
                _ => millis_of(u)? / millis_of(base)?,
            };
            (m.fract() == 0.0 && m >= 1.0).then_some(m as i128)?
        }
    };
    let (neg, digits) = match num.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, num.as_str()),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.len() + frac.len() > 30 {
        return None;
    }
    let int: i128 = int.parse().ok()?;
    let scale = 10i128.checked_pow(u32::try_from(frac.len()).ok()?)?;
    let frac: i128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    let whole = int.checked_mul(mult)?;
    let part = frac.checked_mul(mult)?;
    if part % scale != 0 {
        return None;
    }
    let total = whole.checked_add(part / scale)?;
    Some(if neg && total != 0 {
        format!("-{total}")
    } else {
        total.to_string()
    })
}

/// A memory value in bytes: `value` as written (with or without a unit) for a setting
/// whose base unit is `base` (`8kB`, `kB`, `B`, …).
pub fn bytes_value(value: &str, base: &str) -> Option<f64> {
    Some(number_in(value, Some(base))? * bytes_of(base)?)
}

pub(super) fn fmt_bound(n: f64, unit: Option<&str>) -> String {
    let n = if n.fract() == 0.0 && n.abs() < 1e18 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    };
    match unit {
        // "16×8kB": a count of 8kB pages, not 168kB.
        Some(u) if u.starts_with(|c: char| c.is_ascii_digit()) => format!("{n}×{u}"),
        Some(u) => format!("{n}{u}"),
        None => n,
    }
}
