//! Numbers as text without `core::fmt`: every `format!` pulls in the formatter, `pad_integral`
//! and a `Display` impl per integer type, several KB of wasm for a few error messages.

/// `n` in decimal, as `n.to_string()` prints it.
pub fn decimal(n: u64) -> String {
    digits(n, 10, 1)
}

/// `n` in decimal with a `-` when negative, as `n.to_string()` prints it.
pub fn signed(n: i64) -> String {
    let magnitude = decimal(n.unsigned_abs());
    if n < 0 {
        ["-", &magnitude].concat()
    } else {
        magnitude
    }
}

/// `n` in lowercase hex, zero-padded to `width` digits, as `format!("{n:0width$x}")`.
pub fn hex(n: u64, width: usize) -> String {
    digits(n, 16, width)
}

/// An unsigned number in `radix`: digits only, at least one (`None` on anything else or on
/// overflow). Unlike `u64::from_str_radix` no `+` is taken: no wire format here writes one, and
/// taking it made the signature `+5` pass for `05`. Without core's per-type integer parsers.
pub fn parse_unsigned(text: &str, radix: u32) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    text.bytes().try_fold(0u64, |n, byte| {
        let digit = match byte {
            b'0'..=b'9' => byte - b'0',
            b'a'..=b'z' => byte - b'a' + 10,
            b'A'..=b'Z' => byte - b'A' + 10,
            _ => return None,
        };
        if u32::from(digit) >= radix {
            return None;
        }
        n.checked_mul(u64::from(radix))?
            .checked_add(u64::from(digit))
    })
}

fn digits(mut n: u64, radix: u32, width: usize) -> String {
    let mut reversed = Vec::with_capacity(width.max(4));
    while n > 0 || reversed.len() < width {
        // The remainder is below the radix, so from_digit always has a digit for it.
        reversed.push(char::from_digit((n % u64::from(radix)) as u32, radix).unwrap_or('0'));
        n /= u64::from(radix);
    }
    reversed.into_iter().rev().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_as_fmt() {
        for n in [0, 1, 9, 10, 99, 255, 1000, 4_294_967_295, u64::MAX] {
            assert_eq!(decimal(n), n.to_string());
            assert_eq!(hex(n, 8), format!("{n:08x}"));
            assert_eq!(hex(n, 2), format!("{n:02x}"));
        }
        for n in [0, -1, 7, -42, i64::MIN, i64::MAX, -9_007_199_254_740_991] {
            assert_eq!(signed(n), n.to_string());
        }
    }

    #[test]
    fn parses_as_from_str_radix() {
        let cases = [
            "",
            "+",
            "-",
            "0",
            "+7",
            "-7",
            "007",
            "255",
            "256",
            "1a",
            "ff",
            "FF",
            "+f",
            " 1",
            "1 ",
            "é",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999999",
        ];
        for text in cases {
            for radix in [10, 16] {
                if text.starts_with('+') {
                    assert_eq!(parse_unsigned(text, radix), None, "no sign is read");
                    continue;
                }
                assert_eq!(
                    parse_unsigned(text, radix),
                    u64::from_str_radix(text, radix).ok(),
                    "{text:?} in base {radix}"
                );
                assert_eq!(
                    parse_unsigned(text, radix).and_then(|n| u8::try_from(n).ok()),
                    u8::from_str_radix(text, radix).ok(),
                    "{text:?} in base {radix}"
                );
            }
        }
    }
}
