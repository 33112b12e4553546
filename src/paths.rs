//! The API's paths, built with each segment percent-encoded.

use crate::text::hex;

/// `/v1/models/{model}/runs`, encoding each slash-delimited segment of the model id.
///
/// ```
/// assert_eq!(runflow_kontext::paths::create_run("black-forest-labs/flux-pro/kontext"),
///            "/v1/models/black-forest-labs/flux-pro/kontext/runs");
/// ```
pub fn create_run(model: &str) -> String {
    // Pushed segment by segment: joining a Vec<String> would add a second copy of `join` (1 KB).
    let mut path = String::from("/v1/models");
    for segment in model.split('/') {
        path.push('/');
        path.push_str(&encode(segment));
    }
    path.push_str("/runs");
    path
}

/// `/v1/runs/{id}`.
pub fn run(id: &str) -> String {
    ["/v1/runs/", &encode(id)].concat()
}

/// Where an asset upload starts.
pub const ASSET_UPLOADS: &str = "/v1/asset-uploads";

/// `/v1/asset-uploads/{id}/confirmations`.
pub fn confirm_asset_upload(asset_id: &str) -> String {
    ["/v1/asset-uploads/", &encode(asset_id), "/confirmations"].concat()
}

/// The search for runs carrying `client_ref`, quoting the value when it needs it. The ref holds
/// no `"` nor `\` (`validate_create` refuses them), so the quotes need no escapes.
///
/// ```
/// assert_eq!(runflow_kontext::paths::search_by_client_ref("rk_1"), "/v1/runs?q=client_ref%3Ark_1&limit=5");
/// ```
pub fn search_by_client_ref(client_ref: &str) -> String {
    let plain = client_ref
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let filter = if plain {
        ["client_ref:", client_ref].concat()
    } else {
        ["client_ref:\"", client_ref, "\""].concat()
    };
    ["/v1/runs?q=", &encode(&filter), "&limit=5"].concat()
}

/// Whether a model id is well formed: non-empty segments separated by single slashes.
pub fn is_valid_model(model: &str) -> bool {
    // `.` and `..` would be resolved away by fetch, making the request for another model.
    !model.is_empty()
        && model.split('/').all(|segment| {
            !segment.trim().is_empty()
                && segment != "."
                && segment != ".."
                && !segment.chars().any(|c| c == '\\' || c.is_control())
        })
}

/// Percent-encodes like JS `encodeURIComponent`.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push_str(&hex(byte.into(), 2).to_ascii_uppercase());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded_one_by_one() {
        assert_eq!(
            create_run("acme/my model/v 2"),
            "/v1/models/acme/my%20model/v%202/runs"
        );
        assert_eq!(run("a/b?c"), "/v1/runs/a%2Fb%3Fc");
        assert_eq!(encode("é"), "%C3%A9");
        assert_eq!(
            confirm_asset_upload("as 1"),
            "/v1/asset-uploads/as%201/confirmations"
        );
    }

    #[test]
    fn odd_client_refs_are_quoted() {
        assert_eq!(
            search_by_client_ref("order 7"),
            "/v1/runs?q=client_ref%3A%22order%207%22&limit=5"
        );
    }

    #[test]
    fn model_ids() {
        assert!(is_valid_model("black-forest-labs/flux-pro/kontext"));
        assert!(!is_valid_model(""));
        assert!(!is_valid_model("a//b"));
        for odd in ["a/../b", "a/./b", "a\\b/c", "a/b\nc"] {
            assert!(!is_valid_model(odd), "{odd}");
        }
        assert!(!is_valid_model("/a"));
    }
}
