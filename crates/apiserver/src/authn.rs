//! Authentication. A request is made by the user its client certificate names (CN = user name,
//! each O = a group, Kubernetes' convention); without one it is anonymous, as upstream's
//! `system:anonymous` in `system:unauthenticated`, which may only read the version and health
//! endpoints.

use x509_parser::prelude::{FromDer, X509Certificate};

/// Who made a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    /// User name.
    pub name: String,
    /// Groups; always includes `system:authenticated` or `system:unauthenticated`.
    pub groups: Vec<String>,
}

impl UserInfo {
    /// The user of a request without credentials.
    pub fn anonymous() -> Self {
        Self {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
        }
    }

    /// Whether the request carried valid credentials.
    pub fn is_authenticated(&self) -> bool {
        self.groups.iter().any(|g| g == "system:authenticated")
    }

    /// The user a verified client certificate (DER) names. The TLS layer has already checked
    /// that the cluster CA signed it; a certificate without a CN is anonymous.
    pub fn from_client_certificate(der: &[u8]) -> Self {
        let Ok((_, cert)) = X509Certificate::from_der(der) else {
            return Self::anonymous();
        };
        let subject = cert.subject();
        let Some(name) = subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .filter(|cn| !cn.is_empty())
        else {
            return Self::anonymous();
        };
        let mut groups: Vec<String> = subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok())
            .map(str::to_owned)
            .collect();
        groups.push("system:authenticated".into());
        Self {
            name: name.to_owned(),
            groups,
        }
    }
}

/// Paths upstream opens to anonymous users (the `system:public-info-viewer` role).
pub fn is_public_path(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/livez" | "/readyz" | "/version" | "/version/"
    ) || path.starts_with("/healthz/")
        || path.starts_with("/livez/")
        || path.starts_with("/readyz/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::Pki;

    #[test]
    fn a_client_certificate_names_the_user_and_groups() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path(), &["127.0.0.1".into()]).unwrap();
        assert!(
            pki.mint_client("alice", &["dev", "ops"]).is_err(),
            "a group would be lost"
        );
        let pair = pki.mint_client("alice", &["dev"]).unwrap();
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(pair.cert_pem.as_bytes())
            .map(|c: rustls::pki_types::CertificateDer<'static>| c)
            .unwrap();
        let user = UserInfo::from_client_certificate(&der);
        assert_eq!(user.name, "alice");
        assert_eq!(user.groups, ["dev", "system:authenticated"]);
        assert!(user.is_authenticated());
    }

    #[test]
    fn garbage_is_anonymous_not_a_panic() {
        assert_eq!(
            UserInfo::from_client_certificate(b"not der"),
            UserInfo::anonymous()
        );
        assert!(!UserInfo::anonymous().is_authenticated());
    }

    #[test]
    fn only_version_and_health_are_public() {
        for path in ["/version", "/healthz", "/readyz", "/livez", "/readyz/ping"] {
            assert!(is_public_path(path), "{path}");
        }
        for path in ["/api", "/apis", "/api/v1/pods", "/metrics", "/openapi/v2"] {
            assert!(!is_public_path(path), "{path}");
        }
    }
}
