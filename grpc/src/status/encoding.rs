//! The two encodings `/debug` and the original's `LastEvent` use: standard base64 (Go's
//! `[]byte` in JSON) and RFC 3339 times (Go's `time.Time` in JSON).

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding, as Go's `encoding/json` writes a `[]byte`.
pub(crate) fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 with padding (what [`base64_encode`] writes); `None` for anything
/// else, including non-canonical trailing bits.
pub(crate) fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if bytes.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let chunks = bytes.len() / 4;
    for (index, chunk) in bytes.chunks(4).enumerate() {
        let padding = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if padding > 2 || (padding > 0 && index + 1 != chunks) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - padding] {
            let value = ALPHABET.iter().position(|&a| a == c)?;
            n = (n << 6) | value as u32;
        }
        n <<= 6 * padding as u32;
        let decoded = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        let keep = 3 - padding;
        // Canonical form only: the bits dropped by the padding must be zero.
        if decoded[keep..].iter().any(|&b| b != 0) {
            return None;
        }
        out.extend_from_slice(&decoded[..keep]);
    }
    Some(out)
}

/// Unix seconds of an RFC 3339 time (`2018-04-10T12:00:00Z`, `…T12:00:00.5+08:00`), rounded
/// down like Go's `Time.Unix`. Go's zero time `0001-01-01T00:00:00Z` is `-62135596800`.
pub(crate) fn rfc3339_unix_seconds(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut rest = &b[19..];
    if let Some(fraction) = rest.strip_prefix(b".") {
        let len = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if len == 0 {
            return None;
        }
        rest = &fraction[len..];
    }
    let offset = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hours = digits(&[*h1, *h2])?;
            let minutes = digits(&[*m1, *m2])?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let offset = hours * 3600 + minutes * 60;
            if *sign == b'-' {
                -offset
            } else {
                offset
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

fn digits(b: &[u8]) -> Option<i64> {
    b.iter().try_fold(0i64, |n, &c| {
        c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
    })
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet_with_padding() {
        for (raw, text) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"{\"a\":1}", "eyJhIjoxfQ=="),
            (&[0xFB, 0xFF][..], "+/8="),
        ] {
            assert_eq!(base64_encode(raw), text);
            assert_eq!(base64_decode(text).as_deref(), Some(raw));
        }
    }

    #[test]
    fn base64_refuses_what_go_would_refuse() {
        for bad in ["Zg", "Zg=", "Z===", "Zh==", "Zg==Zg==", "Zm9v!", "Zm-v"] {
            assert_eq!(base64_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn rfc3339_times_become_unix_seconds() {
        assert_eq!(rfc3339_unix_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            rfc3339_unix_seconds("2018-04-10T03:13:20Z"),
            Some(1_523_330_000)
        );
        assert_eq!(
            rfc3339_unix_seconds("2018-04-10T11:13:20+08:00"),
            Some(1_523_330_000)
        );
        assert_eq!(
            rfc3339_unix_seconds("2018-04-09T22:13:20.999-05:00"),
            Some(1_523_330_000)
        );
        assert_eq!(
            rfc3339_unix_seconds("2000-02-29T00:00:00Z"),
            Some(951_782_400)
        );
        assert_eq!(rfc3339_unix_seconds("1969-12-31T23:59:59Z"), Some(-1));
    }

    #[test]
    fn go_zero_time_is_year_one() {
        assert_eq!(
            rfc3339_unix_seconds("0001-01-01T00:00:00Z"),
            Some(-62_135_596_800)
        );
    }

    #[test]
    fn malformed_times_are_refused() {
        for bad in [
            "",
            "2018-04-10",
            "2018-04-10 03:13:20Z",
            "2018-13-10T03:13:20Z",
            "2019-02-29T03:13:20Z",
            "2018-04-10T24:00:00Z",
            "2018-04-10T03:13:20",
            "2018-04-10T03:13:20.Z",
            "2018-04-10T03:13:20+0800",
            "２018-04-10T03:13:20Z",
        ] {
            assert_eq!(rfc3339_unix_seconds(bad), None, "{bad}");
        }
    }
}
