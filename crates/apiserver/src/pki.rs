//! The cluster's certificates: a CA minted at first start, the apiserver's serving certificate and
//! the admin's client certificate, all kept under `<data-dir>/server/tls/`, plus the admin
//! kubeconfig that embeds them.
//!
//! Client certificates follow Kubernetes' convention: the subject's CN is the user name and each
//! O is a group, so the admin certificate (`CN=system:admin`, `O=system:masters`) is what upstream
//! tools expect an all-powerful user to look like. Existing files are reused, so restarting the
//! server keeps every issued kubeconfig valid.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// Errors of minting or loading certificates.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A certificate or key file cannot be read or written.
    #[error("cannot access {}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A file exists but is not a usable certificate or key.
    #[error("{} is not a valid PEM certificate or key; delete it to have a new one minted", .path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
    /// rcgen writes one value per subject attribute, so a certificate can carry one group (O);
    /// refusing is better than silently dropping the others.
    #[error("a client certificate can name at most one group for now; got {groups:?}")]
    TooManyGroups {
        /// The groups asked for.
        groups: Vec<String>,
    },
    /// Minting a certificate failed.
    #[error("minting the {what} certificate failed")]
    Mint {
        /// Which certificate.
        what: &'static str,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
}

type Result<T, E = PkiError> = std::result::Result<T, E>;

/// A certificate and its private key, PEM-encoded.
#[derive(Clone)]
pub struct CertPair {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

/// The files of the cluster PKI.
#[derive(Clone)]
pub struct Pki {
    /// The cluster CA.
    pub ca: CertPair,
    /// The apiserver's serving certificate, signed by the CA.
    pub serving: CertPair,
    /// The admin client certificate, signed by the CA.
    pub admin: CertPair,
}

/// Where the PKI lives inside a data dir.
pub fn tls_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("server").join("tls")
}

impl Pki {
    /// Loads the PKI from `<data-dir>/server/tls/`, minting whatever is missing. The serving
    /// certificate is reissued when it lacks one of `sans`, so a new address works at once.
    pub fn load_or_create(data_dir: &Path, sans: &[String]) -> Result<Pki> {
        let dir = tls_dir(data_dir);
        std::fs::create_dir_all(&dir).map_err(|source| PkiError::Io {
            path: dir.clone(),
            source,
        })?;
        let ca = load_or_mint(&dir, "server-ca", mint_ca)?;
        let ca_key = key_from_pem(&dir.join("server-ca.key"), &ca.key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, &ca_key).map_err(|source| {
            PkiError::Invalid {
                path: dir.join("server-ca.crt"),
                source,
            }
        })?;

        let serving_path = dir.join("serving-kube-apiserver.crt");
        let stale = std::fs::read_to_string(&serving_path)
            .map(|pem| sans.iter().any(|san| !covers(&pem, san)))
            .unwrap_or(false);
        if stale {
            let _ = std::fs::remove_file(&serving_path);
        }
        let serving = load_or_mint(&dir, "serving-kube-apiserver", || {
            mint_leaf(
                &issuer,
                "kube-apiserver",
                &[],
                sans,
                ExtendedKeyUsagePurpose::ServerAuth,
            )
        })?;
        let admin = load_or_mint(&dir, "client-admin", || {
            mint_leaf(
                &issuer,
                "system:admin",
                &["system:masters"],
                &[],
                ExtendedKeyUsagePurpose::ClientAuth,
            )
        })?;
        Ok(Pki { ca, serving, admin })
    }

    /// Mints a client certificate for `user` in `groups` (at most one today), signed by the
    /// cluster CA.
    pub fn mint_client(&self, user: &str, groups: &[&str]) -> Result<CertPair> {
        if groups.len() > 1 {
            return Err(PkiError::TooManyGroups {
                groups: groups.iter().map(|g| g.to_string()).collect(),
            });
        }
        let ca_key = KeyPair::from_pem(&self.ca.key_pem).map_err(|source| PkiError::Mint {
            what: "client",
            source,
        })?;
        let issuer = Issuer::from_ca_cert_pem(&self.ca.cert_pem, &ca_key).map_err(|source| {
            PkiError::Mint {
                what: "client",
                source,
            }
        })?;
        mint_leaf(
            &issuer,
            user,
            groups,
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }
}

/// Whether the certificate PEM names `san` among its subject alternative names. An unparsable
/// certificate covers nothing, so it gets reissued.
fn covers(cert_pem: &str, san: &str) -> bool {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let Ok(der) = CertificateDer::from_pem_slice(cert_pem.as_bytes()) else {
        return false;
    };
    let Ok((_, cert)) = X509Certificate::from_der(&der) else {
        return false;
    };
    let Ok(Some(names)) = cert.subject_alternative_name() else {
        return false;
    };
    let ip = san.parse::<IpAddr>().ok();
    names
        .value
        .general_names
        .iter()
        .any(|name| match (name, ip) {
            (GeneralName::DNSName(dns), None) => dns.eq_ignore_ascii_case(san),
            (GeneralName::IPAddress(bytes), Some(IpAddr::V4(v4))) => *bytes == v4.octets(),
            (GeneralName::IPAddress(bytes), Some(IpAddr::V6(v6))) => *bytes == v6.octets(),
            _ => false,
        })
}

fn key_from_pem(path: &Path, pem: &str) -> Result<KeyPair> {
    KeyPair::from_pem(pem).map_err(|source| PkiError::Invalid {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads `<name>.crt` and `<name>.key`, or mints and writes them (key mode 0600).
fn load_or_mint(
    dir: &Path,
    name: &str,
    mint: impl FnOnce() -> Result<CertPair>,
) -> Result<CertPair> {
    let cert_path = dir.join(format!("{name}.crt"));
    let key_path = dir.join(format!("{name}.key"));
    if cert_path.exists() && key_path.exists() {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| PkiError::Io {
                path: path.to_path_buf(),
                source,
            })
        };
        let pair = CertPair {
            cert_pem: read(&cert_path)?,
            key_pem: read(&key_path)?,
        };
        key_from_pem(&key_path, &pair.key_pem)?;
        return Ok(pair);
    }
    let pair = mint()?;
    // The key first, the certificate last: a pair is complete once its certificate exists.
    for (path, contents, mode) in [
        (&key_path, &pair.key_pem, 0o600),
        (&cert_path, &pair.cert_pem, 0o644),
    ] {
        write_atomically(path, contents, mode).map_err(|source| PkiError::Io {
            path: path.clone(),
            source,
        })?;
    }
    Ok(pair)
}

/// Writes `contents` to `path` with `mode` through a temporary file, synced, then renamed over
/// it: a reader (a client picking up its certificate while the server starts) or a crash in
/// the middle never leaves a half-written key or certificate behind.
pub(crate) fn write_atomically(path: &Path, contents: &str, mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn validity(params: &mut CertificateParams, years: i32) {
    let now = time_now();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(365 * years as i64);
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn mint_ca() -> Result<CertPair> {
    let err = |source| PkiError::Mint { what: "CA", source };
    let key = KeyPair::generate().map_err(err)?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "rkube-server-ca");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, 10);
    let cert = params.self_signed(&key).map_err(err)?;
    Ok(CertPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn mint_leaf(
    issuer: &Issuer<'_, impl rcgen::SigningKey>,
    common_name: &str,
    organizations: &[&str],
    sans: &[String],
    usage: ExtendedKeyUsagePurpose,
) -> Result<CertPair> {
    let what = match usage {
        ExtendedKeyUsagePurpose::ServerAuth => "serving",
        _ => "client",
    };
    let err = |source| PkiError::Mint { what, source };
    let key = KeyPair::generate().map_err(err)?;
    let mut params = CertificateParams::new(sans.to_vec()).map_err(err)?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    for org in organizations {
        name.push(DnType::OrganizationName, *org);
    }
    params.distinguished_name = name;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, 1);
    let cert = params.signed_by(&key, issuer).map_err(err)?;
    Ok(CertPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_start_reuses_the_pki_and_a_new_address_reissues_only_the_serving_cert() {
        let dir = tempfile::tempdir().unwrap();
        let first =
            Pki::load_or_create(dir.path(), &["127.0.0.1".into(), "localhost".into()]).unwrap();
        assert!(covers(&first.serving.cert_pem, "127.0.0.1"));
        assert!(covers(&first.serving.cert_pem, "LOCALHOST"));
        assert!(!covers(&first.serving.cert_pem, "10.0.0.1"));

        let again = Pki::load_or_create(dir.path(), &["127.0.0.1".into()]).unwrap();
        assert_eq!(again.ca.cert_pem, first.ca.cert_pem);
        assert_eq!(again.serving.cert_pem, first.serving.cert_pem);
        assert_eq!(again.admin.cert_pem, first.admin.cert_pem);

        let moved = Pki::load_or_create(dir.path(), &["10.0.0.1".into()]).unwrap();
        assert_eq!(moved.ca.cert_pem, first.ca.cert_pem, "the CA must survive");
        assert_eq!(
            moved.admin.cert_pem, first.admin.cert_pem,
            "kubeconfigs must stay valid"
        );
        assert!(covers(&moved.serving.cert_pem, "10.0.0.1"));
    }

    #[test]
    fn a_corrupt_key_file_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        Pki::load_or_create(dir.path(), &[]).unwrap();
        let key = tls_dir(dir.path()).join("client-admin.key");
        std::fs::write(&key, "garbage").unwrap();
        let err = Pki::load_or_create(dir.path(), &[])
            .err()
            .expect("corrupt key accepted");
        assert!(err.to_string().contains("client-admin.key"), "{err}");
    }

    #[test]
    fn files_are_replaced_whole_with_their_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("a.key");
        write_atomically(&key, "one", 0o600).unwrap();
        write_atomically(&key, "two", 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(&key).unwrap(), "two");
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!dir.path().join("a.key.tmp").exists());
    }
}
