//! A TLS client configuration as the cluster administrator, for tests and benchmarks that speak
//! HTTP/2 to the apiserver directly (hyper) rather than through curl or a client library.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Trusts the cluster CA in `tls_dir` (`<data-dir>/server/tls`) and presents its admin client
/// certificate; offers only HTTP/2. Panics on unreadable files: test set-up, not a product path.
pub fn admin_client_config(tls_dir: &Path) -> Arc<rustls::ClientConfig> {
    let read =
        |f: &str| std::fs::read(tls_dir.join(f)).unwrap_or_else(|e| panic!("reading {f}: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&read("server-ca.crt")) {
        roots
            .add(cert.expect("CA certificate"))
            .expect("CA certificate");
    }
    let chain = CertificateDer::pem_slice_iter(&read("client-admin.crt"))
        .collect::<Result<Vec<_>, _>>()
        .expect("admin certificate");
    let key = PrivateKeyDer::from_pem_slice(&read("client-admin.key")).expect("admin key");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .expect("admin client certificate");
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}
