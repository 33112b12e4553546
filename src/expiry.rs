//! When a presigned URL stops working, as the URL itself says: S3's SigV4 `X-Amz-Date` +
//! `X-Amz-Expires` (Cloudflare R2 and most S3-compatible stores write the same), Google Cloud
//! Storage's `X-Goog-Date` + `X-Goog-Expires`, or an absolute `Expires` (S3 SigV2, CloudFront,
//! GCS V2: Unix seconds). Names are read case-insensitively; a URL that says nothing has no
//! known expiry.

use crate::text::parse_unsigned;

/// The moment `url` expires, in ms since the Unix epoch, when its query says.
///
/// ```
/// use runflow_kontext::expiry::url_expiry;
/// let s3 = "https://b.s3.amazonaws.com/o.png?X-Amz-Date=20261202T011700Z&X-Amz-Expires=86400&X-Amz-Signature=ab";
/// assert_eq!(url_expiry(s3), Some(1_796_174_220_000 + 86_400_000));
/// assert_eq!(url_expiry("https://cdn.example.com/o.png?Expires=1796174220"), Some(1_796_174_220_000));
/// assert_eq!(url_expiry("https://cdn.example.com/o.png"), None);
/// ```
pub fn url_expiry(url: &str) -> Option<u64> {
    let query = url.split('#').next()?.split_once('?')?.1;
    let mut signed_at = None;
    let mut lifetime_secs = None;
    let mut absolute_secs = None;
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let is = |known: &str| name.eq_ignore_ascii_case(known);
        if is("x-amz-date") || is("x-goog-date") {
            signed_at = compact_utc_secs(value);
        } else if is("x-amz-expires") || is("x-goog-expires") {
            lifetime_secs = parse_unsigned(value, 10);
        } else if is("expires") {
            absolute_secs = parse_unsigned(value, 10);
        }
    }
    let secs = match (signed_at, lifetime_secs) {
        (Some(at), Some(lifetime)) => at.checked_add(lifetime),
        _ => absolute_secs,
    };
    secs?.checked_mul(1000)
}

/// `YYYYMMDDTHHMMSSZ` (SigV4's date) in Unix seconds (Howard Hinnant's days-from-civil).
fn compact_utc_secs(text: &str) -> Option<u64> {
    let digits = text.strip_suffix('Z')?;
    if digits.len() != 15 || digits.as_bytes().get(8) != Some(&b'T') {
        return None;
    }
    let part = |from: usize, to: usize| parse_unsigned(digits.get(from..to)?, 10);
    let (year, month, day) = (part(0, 4)?, part(4, 6)?, part(6, 8)?);
    let (hour, min, sec) = (part(9, 11)?, part(11, 13)?, part(13, 15)?);
    if year < 1970 || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    if hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let year_of_era = y - era * 400;
    let day_of_year = (153 * m + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = (era * 146_097 + day_of_era).checked_sub(719_468)?;
    Some(days * 86_400 + hour * 3600 + min * 60 + sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_an_expiry() {
        let at = 1_796_174_220; // 2026-12-02T01:17:00Z
        let cases = [
            (
                "https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=20261202T011700Z&X-Amz-Expires=3600&X-Amz-Signature=x",
                Some((at + 3600) * 1000),
            ),
            (
                "https://b.s3.amazonaws.com/k?x-amz-expires=60&x-amz-date=20261202T011700Z",
                Some((at + 60) * 1000),
            ),
            (
                "https://storage.googleapis.com/b/k?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Date=20261202T011700Z&X-Goog-Expires=900",
                Some((at + 900) * 1000),
            ),
            (
                "https://d.cloudfront.net/k?Expires=1796174220&Signature=x&Key-Pair-Id=K",
                Some(at * 1000),
            ),
            (
                "http://127.0.0.1:8080/__mock/files/r/0.png?expires=1796174220&signature=ab",
                Some(at * 1000),
            ),
            ("https://x/k?X-Amz-Date=20261202T011700Z", None),
            ("https://x/k?X-Amz-Date=2026-12-02&X-Amz-Expires=60", None),
            (
                "https://x/k?X-Amz-Date=20261302T011700Z&X-Amz-Expires=60",
                None,
            ),
            ("https://x/k?Expires=soon", None),
            ("https://x/k?Expires=+5", None),
            ("https://x/k#Expires=1796174220", None),
            ("https://x/k#part?Expires=1796174220", None),
            ("data:image/png;base64,AAAA", None),
        ];
        for (url, expected) in cases {
            assert_eq!(url_expiry(url), expected, "{url}");
        }
    }

    #[test]
    fn civil_dates() {
        let at = |text: &str| compact_utc_secs(text);
        assert_eq!(at("19700101T000000Z"), Some(0));
        assert_eq!(at("20000301T000000Z"), Some(951_868_800));
        assert_eq!(at("20240229T120000Z"), Some(1_709_208_000));
        assert_eq!(at("19691231T000000Z"), None);
        assert_eq!(at("20240229 120000Z"), None);
    }
}
