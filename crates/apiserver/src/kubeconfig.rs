//! The admin kubeconfig: the cluster CA, the server URL and the admin client certificate,
//! embedded as base64 so the file stands alone. Written with mode 0600: it grants everything.

use std::path::Path;

use base64::Engine;

use crate::pki::{CertPair, Pki};

/// Renders a kubeconfig for `server` (e.g. `https://127.0.0.1:6443`) with the admin identity.
pub fn admin_kubeconfig(pki: &Pki, server: &str) -> String {
    kubeconfig_for(pki, server, &pki.admin)
}

/// Renders a kubeconfig for `server` with the client identity `client` (the in-process
/// controllers get their own, so the apiserver sees who acts).
pub fn kubeconfig_for(pki: &Pki, server: &str, client: &CertPair) -> String {
    let b64 = |pem: &str| base64::engine::general_purpose::STANDARD.encode(pem.as_bytes());
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: default
  cluster:
    server: {server}
    certificate-authority-data: {ca}
contexts:
- name: default
  context:
    cluster: default
    user: default
current-context: default
preferences: {{}}
users:
- name: default
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
",
        ca = b64(&pki.ca.cert_pem),
        cert = b64(&client.cert_pem),
        key = b64(&client.key_pem),
    )
}

/// Writes `contents` to `path` (mode 0600), creating its directory, replacing it atomically.
pub fn write(path: &Path, contents: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    crate::pki::write_atomically(path, contents, 0o600)
}
