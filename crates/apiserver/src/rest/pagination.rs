//! `continue` tokens: opaque to clients, they carry the revision of the list's first page (so all
//! pages read one snapshot) and the key the next page starts at, relative to the list's prefix.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use rkube_store::Revision;

#[derive(Serialize, Deserialize)]
struct Token {
    v: String,
    rv: Revision,
    start: String,
}

const VERSION: &str = "meta.k8s.io/v1";

/// Encodes where the next page starts.
pub fn encode(revision: Revision, start_after_prefix: &str) -> String {
    let token = Token {
        v: VERSION.into(),
        rv: revision,
        start: start_after_prefix.into(),
    };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&token).unwrap_or_default())
}

/// Decodes a token into (revision, start key relative to the prefix).
pub fn decode(token: &str) -> Result<(Revision, String), String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|e| format!("continue key is not valid: {e}"))?;
    let token: Token =
        serde_json::from_slice(&bytes).map_err(|e| format!("continue key is not valid: {e}"))?;
    if token.v != VERSION {
        return Err(format!(
            "continue key is not valid: incorrect encoded start resourceVersion (version {})",
            token.v
        ));
    }
    if token.rv <= 0 {
        return Err("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)".into());
    }
    if token.start.contains("..") || token.start.starts_with('/') {
        return Err("continue key is not valid: the start key may not leave the list".into());
    }
    Ok((token.rv, token.start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        let t = encode(42, "default/web\0");
        assert_eq!(decode(&t).unwrap(), (42, "default/web\0".to_owned()));
    }

    #[test]
    fn garbage_and_foreign_tokens_are_refused() {
        assert!(decode("!!!").is_err());
        assert!(decode(&URL_SAFE_NO_PAD.encode(b"{}")).is_err());
        let escaping =
            URL_SAFE_NO_PAD.encode(br#"{"v":"meta.k8s.io/v1","rv":3,"start":"../secrets/x"}"#);
        assert!(decode(&escaping).is_err());
        let zero = URL_SAFE_NO_PAD.encode(br#"{"v":"meta.k8s.io/v1","rv":0,"start":"a"}"#);
        assert!(decode(&zero).is_err());
    }
}
