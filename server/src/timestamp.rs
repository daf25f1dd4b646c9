//! Timestamps as the wire formats spell them: RFC 3339 in UTC, to the second (CloudEvents'
//! `ce-time`) or to the millisecond (the live trace's `time`). Formatted here from the civil
//! date, without a date-time dependency for two format strings.

use std::time::{SystemTime, UNIX_EPOCH};

/// UTC `yyyy-MM-ddTHH:mm:ssZ`: CloudEvents' `ce-time`.
pub fn rfc3339_seconds(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// UTC `yyyy-MM-ddTHH:mm:ss.fffZ` (RFC 3339 with milliseconds): the live trace's `time`.
pub fn rfc3339_millis(time: SystemTime) -> String {
    let seconds = rfc3339_seconds(time);
    let millis = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_millis())
        .unwrap_or(0);
    format!("{}.{millis:03}Z", seconds.trim_end_matches('Z'))
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn times_are_utc_seconds() {
        assert_eq!(rfc3339_seconds(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_767_225_600 + 3661);
        assert_eq!(rfc3339_seconds(t), "2026-01-01T01:01:01Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339_seconds(leap), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn milliseconds_are_kept_for_the_live_trace() {
        let t = UNIX_EPOCH + Duration::from_millis(1_796_785_445_678);
        assert_eq!(rfc3339_millis(t), "2026-12-09T03:04:05.678Z");
        assert_eq!(rfc3339_millis(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
