//! The cluster's join token, `<data-dir>/server/token`, in k3s's shape:
//! `K10<sha256 of the cluster CA certificate, hex>::server:<secret>`. The CA hash lets a joining
//! node check it reached the right cluster before trusting it; the secret authenticates. It is
//! created once (32 random hex characters) and kept; `--token` replaces the secret (a full
//! `K10...` token given there must name this cluster's CA).
//!
//! As a bearer token (the full form or the secret alone) it authenticates as a cluster
//! administrator, `system:rkube-server` in `system:masters`, as k3s's server token does.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::authn::UserInfo;

/// The user a valid server token authenticates as.
pub const SERVER_TOKEN_USER: &str = "system:rkube-server";

/// Failures of reading or writing the token file.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file cannot be read or written.
    #[error("cannot {action} the token file {path}")]
    Io {
        /// `read` or `write`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The file or `--token` is not a token.
    #[error("the token {what} is not valid: {why}")]
    Invalid {
        /// Where it came from (`--token`, the file's path).
        what: String,
        /// What is wrong.
        why: String,
    },
}

/// The server token.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerToken {
    full: String,
    secret: String,
}

impl std::fmt::Debug for ServerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerToken(..)")
    }
}

/// The token file's path.
pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("server").join("token")
}

fn ca_hash(ca_pem: &str) -> String {
    hex::encode(Sha256::digest(ca_pem.as_bytes()))
}

impl ServerToken {
    /// The token of this cluster: `override_secret` (`--token`) when given, else the one in the
    /// file, else a new one. The file is (re)written when it changes.
    pub fn load_or_create(
        data_dir: &Path,
        ca_pem: &str,
        override_secret: Option<&str>,
    ) -> Result<ServerToken, TokenError> {
        let path = token_path(data_dir);
        let hash = ca_hash(ca_pem);
        let secret = match override_secret {
            Some(given) => Self::secret_of(given, &hash, "--token")?,
            None => match std::fs::read_to_string(&path) {
                Ok(text) => Self::secret_of(text.trim(), &hash, &path.display().to_string())?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    hex::encode(rand::random::<[u8; 16]>())
                }
                Err(source) => {
                    return Err(TokenError::Io {
                        action: "read",
                        path,
                        source,
                    });
                }
            },
        };
        let token = ServerToken {
            full: format!("K10{hash}::server:{secret}"),
            secret,
        };
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current.trim() != token.full {
            crate::kubeconfig::write(&path, &format!("{}\n", token.full)).map_err(|source| {
                TokenError::Io {
                    action: "write",
                    path: path.clone(),
                    source,
                }
            })?;
        }
        Ok(token)
    }

    /// The secret of a token given in full (`K10<hash>::server:<secret>`, or `K10<hash>::<secret>`)
    /// or as the secret alone.
    fn secret_of(given: &str, hash: &str, what: &str) -> Result<String, TokenError> {
        let invalid = |why: &str| TokenError::Invalid {
            what: what.to_owned(),
            why: why.to_owned(),
        };
        let secret = match given.strip_prefix("K10") {
            Some(rest) => {
                let (given_hash, creds) = rest
                    .split_once("::")
                    .ok_or_else(|| invalid("a K10 token is K10<ca-hash>::server:<secret>"))?;
                if given_hash != hash {
                    return Err(invalid("it was made for another cluster's CA"));
                }
                creds.strip_prefix("server:").unwrap_or(creds)
            }
            None => given,
        };
        if secret.is_empty() {
            return Err(invalid("the secret is empty"));
        }
        if secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("the secret contains whitespace"));
        }
        Ok(secret.to_owned())
    }

    /// The full token, as written to the file.
    pub fn full(&self) -> &str {
        &self.full
    }

    /// The user a bearer token names, when it is this token (full or secret alone).
    pub fn authenticate(&self, bearer: &str) -> Option<UserInfo> {
        let matches = constant_time_eq(bearer.as_bytes(), self.full.as_bytes())
            | constant_time_eq(bearer.as_bytes(), self.secret.as_bytes());
        matches.then(|| UserInfo {
            name: SERVER_TOKEN_USER.into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
        })
    }
}

/// Equality whose time does not depend on where the inputs first differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    #[test]
    fn a_token_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = ServerToken::load_or_create(dir.path(), CA, None).unwrap();
        assert!(
            a.full()
                .starts_with(&format!("K10{}::server:", ca_hash(CA)))
        );
        assert_eq!(a.secret.len(), 32);
        let b = ServerToken::load_or_create(dir.path(), CA, None).unwrap();
        assert_eq!(a, b);
        let text = std::fs::read_to_string(token_path(dir.path())).unwrap();
        assert_eq!(text, format!("{}\n", a.full()));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(token_path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn the_flag_overrides_and_must_match_the_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let t = ServerToken::load_or_create(dir.path(), CA, Some("s3cret")).unwrap();
        assert_eq!(t.full(), format!("K10{}::server:s3cret", ca_hash(CA)));
        let full = t.full().to_owned();
        assert_eq!(
            ServerToken::load_or_create(dir.path(), CA, Some(&full)).unwrap(),
            t
        );
        assert_eq!(
            ServerToken::load_or_create(dir.path(), CA, None).unwrap(),
            t
        );
        let other = format!("K10{}::server:x", "0".repeat(64));
        let err = ServerToken::load_or_create(dir.path(), CA, Some(&other)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the token --token is not valid: it was made for another cluster's CA"
        );
        assert!(ServerToken::load_or_create(dir.path(), CA, Some("")).is_err());
        assert!(ServerToken::load_or_create(dir.path(), CA, Some("a b")).is_err());
    }

    #[test]
    fn bearer_tokens_authenticate_as_an_administrator() {
        let dir = tempfile::tempdir().unwrap();
        let t = ServerToken::load_or_create(dir.path(), CA, Some("s3cret")).unwrap();
        let user = t.authenticate("s3cret").unwrap();
        assert_eq!(user.name, SERVER_TOKEN_USER);
        assert!(user.groups.contains(&"system:masters".to_owned()));
        assert!(t.authenticate(t.full()).is_some());
        assert!(t.authenticate("s3cre").is_none());
        assert!(t.authenticate("").is_none());
    }
}
