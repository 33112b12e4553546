//! Runflow-Signature verification for callback deliveries.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::text::parse_unsigned;

/// Whether `signature` (the `Runflow-Signature` header: lowercase hex of HMAC-SHA256 over the raw
/// body, keyed by the secret's UTF-8 bytes) matches `body` under any of `secrets` (two are valid
/// while a secret is rotated). The comparison is constant-time.
///
/// ```
/// use runflow_kontext::callback::verify_signature;
/// // RFC 4231, test case 2.
/// let sig = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
/// assert!(verify_signature(b"what do ya want for nothing?", sig, &["whsec_new", "Jefe"]));
/// ```
pub fn verify_signature(body: &[u8], signature: &str, secrets: &[&str]) -> bool {
    let signature = signature.trim();
    let hex = signature.strip_prefix("sha256=").unwrap_or(signature);
    let Some(expected) = decode_hex(hex) else {
        return false;
    };
    // Check every secret, so the time taken does not reveal which one matched.
    secrets
        .iter()
        .filter(|secret| !secret.is_empty())
        .fold(false, |matched, secret| {
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
                return matched;
            };
            mac.update(body);
            mac.verify_slice(&expected).is_ok() | matched
        })
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    // A loop rather than collecting into Option<Vec<_>>, whose adapter costs wasm bytes.
    let mut bytes = Vec::with_capacity(hex.len() / 2);
    for i in (0..hex.len()).step_by(2) {
        let pair = hex.get(i..i + 2)?;
        bytes.push(u8::try_from(parse_unsigned(pair, 16)?).ok()?);
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    // HMAC-SHA256 test vector from RFC 4231, case 2: key "Jefe".
    const BODY: &[u8] = b"what do ya want for nothing?";
    const SIG: &str = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";

    #[test]
    fn known_vector() {
        assert!(verify_signature(BODY, SIG, &["Jefe"]));
        // Found by fuzzing: a pair's leading 0 written `+` was read as the digit alone.
        let mut plus = SIG.to_owned();
        assert_eq!(plus.get(18..20), Some("04"));
        plus.replace_range(18..19, "+");
        assert!(!verify_signature(BODY, &plus, &["Jefe"]));
        assert!(verify_signature(BODY, &SIG.to_uppercase(), &["Jefe"]));
        assert!(verify_signature(BODY, &format!("sha256={SIG}"), &["Jefe"]));
    }

    #[test]
    fn rotation_accepts_either_secret() {
        assert!(verify_signature(BODY, SIG, &["whsec_new", "Jefe"]));
        assert!(!verify_signature(BODY, SIG, &["whsec_new", "whsec_old"]));
    }

    #[test]
    fn anything_else_is_refused() {
        assert!(!verify_signature(
            b"what do ya want for nothing?!",
            SIG,
            &["Jefe"]
        ));
        assert!(!verify_signature(BODY, &SIG[..63], &["Jefe"]));
        assert!(!verify_signature(BODY, "", &["Jefe"]));
        assert!(!verify_signature(BODY, SIG, &[]));
        assert!(!verify_signature(BODY, SIG, &[""]));
        assert!(!verify_signature(BODY, &"zz".repeat(32), &["Jefe"]));
    }
}
