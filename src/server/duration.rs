//! Durations as operators and the kube-apiserver write them: Go syntax (`10s`, `1m30s`,
//! `500ms`, `1.5h`) or plain seconds (`5`).

use std::time::Duration;

/// Parses `5s`, `500ms`, `1m30s`, `0.5s`, `5` (seconds). Units: ns, us, µs, ms, s, m, h.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let invalid = || format!("{text:?} is not a duration: write e.g. 10s, 500ms, 1m30s or plain seconds");
    if text.is_empty() {
        return Err(invalid());
    }
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).map_err(|_| invalid());
    }
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let unit_len =
            rest[number_len..].find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len() - number_len);
        let (number, unit) = (&rest[..number_len], &rest[number_len..number_len + unit_len]);
        let value: f64 = number.parse().map_err(|_| invalid())?;
        let seconds_per_unit = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(invalid()),
        };
        total += value * seconds_per_unit;
        rest = &rest[number_len + unit_len..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_and_plain_seconds() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
    }

    #[test]
    fn rejects_what_is_not_a_duration() {
        for bad in ["", "s", "10x", "ten seconds", "-5s", "1..5s", "-1"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains("is not a duration"), "{bad:?}: {err}");
        }
    }
}
