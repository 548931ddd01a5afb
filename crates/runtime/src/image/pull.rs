//! Pulling images from OCI and Docker registries into the image store.
//!
//! A pull resolves the name (`busybox` is `docker.io/library/busybox:latest`), asks each endpoint
//! `registries.yaml` lists for that registry (then the registry itself), picks this platform's
//! manifest from an index, downloads every blob the store does not have yet (layers shared
//! between images are fetched once), verifies each against its digest while writing it, and only
//! then points the name at the manifest. So a failed pull never leaves a half image visible, and
//! two pulls of the same name at once share one download.
//!
//! `registries.yaml` has k3s's format: `mirrors.<registry>.endpoint` lists URLs tried in order
//! (`http://` ones are plain HTTP: the only way HTTP is ever used), `mirrors."*"` applies to every
//! registry, and `configs.<host>` holds `auth` (`username`/`password`, `auth`, `identitytoken`)
//! and `tls` (`ca_file`, `insecure_skip_verify`).

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use futures::future::{BoxFuture, FutureExt, Shared};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use oci_spec::image::{ImageIndex, ImageManifest};

use super::archive::{ArchiveError, ImageStore, ImportedImage, normalize_reference};
use super::blobs::{BlobError, Digest};
use crate::error_chain;

const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const ACCEPTED: [&str; 4] = [
    MEDIA_OCI_MANIFEST,
    MEDIA_OCI_INDEX,
    MEDIA_DOCKER_MANIFEST,
    MEDIA_DOCKER_LIST,
];
/// Manifests and indexes are small; a larger one is refused rather than held in memory.
const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// Why a pull failed. The messages are what a user sees in `ErrImagePull` events.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The name is not a valid image reference.
    #[error("invalid image name {name:?}")]
    InvalidReference {
        /// The name given.
        name: String,
    },
    /// `registries.yaml` cannot be read or parsed.
    #[error("registry configuration {}: {detail}", .path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// No endpoint has the image (or the tag or digest).
    #[error("image {image} not found (tried {tried})")]
    NotFound {
        /// The normalised name.
        image: String,
        /// The endpoints asked.
        tried: String,
    },
    /// The registry refused our credentials, or wants some.
    #[error(
        "pulling {image} from {endpoint}: unauthorized (check configs.{registry}.auth in registries.yaml)"
    )]
    Unauthorized {
        /// The normalised name.
        image: String,
        /// The endpoint.
        endpoint: String,
        /// The registry host.
        registry: String,
    },
    /// An endpoint could not be reached or answered with an error.
    #[error("pulling {image} from {endpoint}: {detail}")]
    Registry {
        /// The normalised name.
        image: String,
        /// The endpoint.
        endpoint: String,
        /// What happened.
        detail: String,
    },
    /// The image has no manifest for this platform.
    #[error("image {image} has no manifest for {platform} (it has: {available})")]
    NoPlatform {
        /// The normalised name.
        image: String,
        /// This node's platform.
        platform: String,
        /// The platforms the index lists.
        available: String,
    },
    /// What the registry sent is not what was asked for, or is not a valid manifest.
    #[error("pulling {image}: {detail}")]
    BadContent {
        /// The normalised name.
        image: String,
        /// What is wrong.
        detail: String,
    },
    /// A blob's content does not match its digest (or it could not be stored).
    #[error("pulling {image}: storing blob {digest}: {source}")]
    Blob {
        /// The normalised name.
        image: String,
        /// The blob.
        digest: String,
        /// The cause.
        #[source]
        source: BlobError,
    },
    /// The image store failed.
    #[error("pulling {image}")]
    Store {
        /// The normalised name.
        image: String,
        /// The cause.
        #[source]
        source: ArchiveError,
    },
}

/// `registries.yaml`, as k3s reads it.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistriesConfig {
    /// Registry host (or `*`) → where to pull its images from.
    #[serde(default)]
    pub mirrors: BTreeMap<String, Mirror>,
    /// Endpoint host → credentials and TLS settings.
    #[serde(default)]
    pub configs: BTreeMap<String, EndpointConfig>,
    /// Do not fall back to a registry itself after its mirrors (k3s's
    /// `--disable-default-registry-endpoint`): for air-gapped nodes, and tests that must not
    /// leave the machine.
    #[serde(skip)]
    pub disable_default_endpoint: bool,
}

/// `mirrors.<registry>`.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct Mirror {
    /// URLs tried in order before the registry itself.
    #[serde(default)]
    pub endpoint: Vec<String>,
}

/// `configs.<host>`.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct EndpointConfig {
    /// Credentials.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// TLS settings.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// `configs.<host>.auth`.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct AuthConfig {
    /// User name.
    #[serde(default)]
    pub username: Option<String>,
    /// Password.
    #[serde(default)]
    pub password: Option<String>,
    /// `base64(username:password)`.
    #[serde(default)]
    pub auth: Option<String>,
    /// A bearer token.
    #[serde(default)]
    pub identitytoken: Option<String>,
}

/// `configs.<host>.tls`.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct TlsConfig {
    /// A PEM CA bundle to trust for this host.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (not supported yet: refused when set).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Client key (not supported yet: refused when set).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Skip verifying the server's certificate.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

impl RegistriesConfig {
    /// Reads `path`; a missing file is the empty configuration (pull from registries directly).
    pub fn load(path: &Path) -> Result<Self, PullError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => {
                return Err(PullError::Config {
                    path: path.to_owned(),
                    detail: e.to_string(),
                });
            }
        };
        Self::parse(&text).map_err(|detail| PullError::Config {
            path: path.to_owned(),
            detail,
        })
    }

    /// Parses the YAML text of a `registries.yaml`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let config: Self = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        for (registry, mirror) in &config.mirrors {
            for url in &mirror.endpoint {
                Endpoint::parse(url)
                    .map_err(|e| format!("mirrors.{registry}.endpoint {url:?}: {e}"))?;
            }
        }
        for (host, endpoint) in &config.configs {
            if let Some(tls) = &endpoint.tls
                && (tls.cert_file.is_some() || tls.key_file.is_some())
            {
                return Err(format!(
                    "configs.{host}.tls: client certificates (cert_file, key_file) are not supported yet"
                ));
            }
        }
        Ok(config)
    }

    /// The endpoints to try for `registry`, in order: its mirrors (or the `*` mirrors), then the
    /// registry itself over HTTPS (unless that fallback is disabled and there are mirrors).
    fn endpoints(&self, registry: &str) -> Vec<Endpoint> {
        let mirror = self.mirrors.get(registry).or_else(|| self.mirrors.get("*"));
        let mut endpoints: Vec<Endpoint> = mirror
            .map(|m| {
                m.endpoint
                    .iter()
                    .filter_map(|u| Endpoint::parse(u).ok())
                    .collect()
            })
            .unwrap_or_default();
        if self.disable_default_endpoint && !endpoints.is_empty() {
            return endpoints;
        }
        let upstream = Endpoint {
            host: if registry == "docker.io" {
                "registry-1.docker.io".into()
            } else {
                registry.into()
            },
            http: false,
        };
        if !endpoints.contains(&upstream) {
            endpoints.push(upstream);
        }
        endpoints
    }

    fn auth_for(&self, host: &str) -> RegistryAuth {
        let Some(auth) = self.configs.get(host).and_then(|c| c.auth.as_ref()) else {
            return RegistryAuth::Anonymous;
        };
        if let Some(token) = &auth.identitytoken {
            return RegistryAuth::Bearer(token.clone());
        }
        if let (Some(user), Some(password)) = (&auth.username, &auth.password) {
            return RegistryAuth::Basic(user.clone(), password.clone());
        }
        if let Some(encoded) = &auth.auth {
            use base64::Engine as _;
            if let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded)
                && let Ok(text) = String::from_utf8(decoded)
                && let Some((user, password)) = text.split_once(':')
            {
                return RegistryAuth::Basic(user.into(), password.into());
            }
        }
        RegistryAuth::Anonymous
    }
}

/// One place to pull from: `host[:port]` and whether it is plain HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    host: String,
    http: bool,
}

impl Endpoint {
    fn parse(url: &str) -> Result<Endpoint, String> {
        let (http, rest) = if let Some(rest) = url.strip_prefix("http://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("https://") {
            (false, rest)
        } else {
            (false, url)
        };
        let host = rest.trim_end_matches('/');
        if host.is_empty() || host.contains('/') {
            return Err("expected scheme://host[:port] (a path is not supported)".into());
        }
        Ok(Endpoint {
            host: host.into(),
            http,
        })
    }

    fn url(&self) -> String {
        format!(
            "{}://{}",
            if self.http { "http" } else { "https" },
            self.host
        )
    }
}

/// What a pull made available.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledImage {
    /// The normalised name now pointing at the image.
    pub name: String,
    /// The manifest digest (this platform's).
    pub manifest: Digest,
    /// The config digest: the image id CRI reports.
    pub config: Digest,
    /// Bytes of every blob the image is made of.
    pub size: u64,
}

type SharedPull = Shared<BoxFuture<'static, Result<PulledImage, Arc<PullError>>>>;

/// The registry client's configuration from `registries.yaml`.
struct ClientSettings {
    /// Hosts reached over plain HTTP.
    http_hosts: Vec<String>,
    /// CA certificates trusted beside the system's.
    extra_roots: Vec<oci_client::client::Certificate>,
    /// Some registry's certificate is not verified.
    insecure: bool,
}

/// Pulls images into an [`ImageStore`]. Cheap to share (`Arc`); pulls run concurrently.
pub struct Puller {
    store: Arc<ImageStore>,
    config: RegistriesConfig,
    /// Made at the first pull: a runtime that pulls nothing keeps no TLS or HTTP client code
    /// resident.
    client: std::sync::OnceLock<Client>,
    /// What the client is made with.
    client_settings: ClientSettings,
    /// Pulls under way, by normalised name: a second pull of the same name waits for the first.
    in_flight: Mutex<HashMap<String, SharedPull>>,
}

impl Puller {
    /// A puller for `store` with the registry configuration `config`.
    pub fn new(store: Arc<ImageStore>, config: RegistriesConfig) -> Result<Arc<Puller>, PullError> {
        // The registry client's TLS needs a process-wide rustls provider; rkube uses ring
        // everywhere (one provider in the binary, no C crypto library to build). Installing it
        // again, or after another part of the process did, is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http_hosts: Vec<String> = config
            .mirrors
            .values()
            .flat_map(|m| m.endpoint.iter())
            .filter_map(|u| Endpoint::parse(u).ok())
            .filter(|e| e.http)
            .map(|e| e.host)
            .collect();
        let mut extra_roots = Vec::new();
        let mut insecure = false;
        for (host, endpoint) in &config.configs {
            let Some(tls) = &endpoint.tls else { continue };
            insecure |= tls.insecure_skip_verify;
            if let Some(ca) = &tls.ca_file {
                let data = std::fs::read(ca).map_err(|e| PullError::Config {
                    path: ca.clone(),
                    detail: format!("configs.{host}.tls.ca_file: {e}"),
                })?;
                extra_roots.push(oci_client::client::Certificate {
                    encoding: oci_client::client::CertificateEncoding::Pem,
                    data,
                });
            }
        }
        Ok(Arc::new(Puller {
            store,
            config,
            client: std::sync::OnceLock::new(),
            client_settings: ClientSettings {
                http_hosts,
                extra_roots,
                insecure,
            },
            in_flight: Mutex::new(HashMap::new()),
        }))
    }

    fn client(&self) -> &Client {
        self.client.get_or_init(|| {
            let settings = &self.client_settings;
            Client::new(ClientConfig {
                protocol: ClientProtocol::HttpsExcept(settings.http_hosts.clone()),
                extra_root_certificates: settings.extra_roots.clone(),
                accept_invalid_certificates: settings.insecure,
                // We pick the platform ourselves, from the raw index.
                platform_resolver: None,
                connect_timeout: Some(std::time::Duration::from_secs(10)),
                read_timeout: Some(std::time::Duration::from_secs(60)),
                ..Default::default()
            })
        })
    }

    /// The image store pulls go to.
    pub fn store(&self) -> &Arc<ImageStore> {
        &self.store
    }

    /// Pulls `name` (credentials from `registries.yaml` unless `auth` is given, as CRI's
    /// `PullImage` may). Concurrent pulls of the same name share one download.
    pub async fn pull(
        self: &Arc<Self>,
        name: &str,
        auth: Option<RegistryAuth>,
    ) -> Result<PulledImage, Arc<PullError>> {
        let image = normalize_reference(name).map_err(|_| {
            Arc::new(PullError::InvalidReference {
                name: name.to_owned(),
            })
        })?;
        let shared = {
            let mut in_flight = self
                .in_flight
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            in_flight
                .entry(image.clone())
                .or_insert_with(|| {
                    let this = self.clone();
                    let image = image.clone();
                    async move {
                        let result = this.pull_uncached(&image, auth).await.map_err(Arc::new);
                        this.in_flight
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .remove(&image);
                        result
                    }
                    .boxed()
                    .shared()
                })
                .clone()
        };
        shared.await
    }

    async fn pull_uncached(
        &self,
        image: &str,
        auth: Option<RegistryAuth>,
    ) -> Result<PulledImage, PullError> {
        // Blobs fetched here are referenced by no name until the end: keep GC away meanwhile.
        let store = self.store.clone();
        let _in_use = tokio::task::spawn_blocking(move || store.lock(false))
            .await
            .map_err(|e| PullError::BadContent {
                image: image.to_owned(),
                detail: format!("locking the image store: {e}"),
            })?
            .map_err(|source| PullError::Store {
                image: image.to_owned(),
                source,
            })?;
        let (registry, repository, tag, digest) = split_reference(image);
        let endpoints = self.config.endpoints(&registry);
        let mut tried = Vec::new();
        let mut last_error = None;
        for endpoint in &endpoints {
            let reference = match &digest {
                Some(d) => {
                    Reference::with_digest(endpoint.host.clone(), repository.clone(), d.clone())
                }
                None => Reference::with_tag(
                    endpoint.host.clone(),
                    repository.clone(),
                    tag.clone().unwrap_or_else(|| "latest".into()),
                ),
            };
            let auth = auth
                .clone()
                .unwrap_or_else(|| self.config.auth_for(&endpoint.host));
            tried.push(endpoint.url());
            match self
                .pull_from(image, endpoint, &reference, &auth, digest.as_deref())
                .await
            {
                Ok(pulled) => return Ok(pulled),
                // Another endpoint may have it: keep going, report the most telling failure.
                Err(
                    err @ (PullError::NotFound { .. }
                    | PullError::Registry { .. }
                    | PullError::Unauthorized { .. }),
                ) => {
                    tracing::debug!(image, endpoint = %endpoint.url(), error = %err, "pull from endpoint failed");
                    let keep = !matches!(err, PullError::NotFound { .. }) || last_error.is_none();
                    if keep {
                        last_error = Some(err);
                    }
                }
                Err(other) => return Err(other),
            }
        }
        Err(match last_error {
            Some(PullError::NotFound { .. }) | None => PullError::NotFound {
                image: image.to_owned(),
                tried: tried.join(", "),
            },
            Some(other) => other,
        })
    }

    async fn pull_from(
        &self,
        image: &str,
        endpoint: &Endpoint,
        reference: &Reference,
        auth: &RegistryAuth,
        pinned: Option<&str>,
    ) -> Result<PulledImage, PullError> {
        let fail = |err: OciDistributionError| classify(image, endpoint, err);
        let (bytes, _) = self
            .client()
            .pull_manifest_raw(reference, auth, &ACCEPTED)
            .await
            .map_err(fail)?;
        let bad = |detail: String| PullError::BadContent {
            image: image.to_owned(),
            detail,
        };
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(bad(format!(
                "manifest of {} bytes is too large",
                bytes.len()
            )));
        }
        let fetched = Digest::of_bytes(&bytes);
        if let Some(pinned) = pinned
            && fetched.as_str() != pinned
        {
            return Err(bad(format!(
                "the registry sent content hashing to {fetched} for {pinned}"
            )));
        }
        let (manifest_bytes, manifest_digest) = if is_index(&bytes) {
            let index = ImageIndex::from_reader(&bytes[..])
                .map_err(|e| bad(format!("unreadable image index: {e}")))?;
            let chosen = choose_platform(image, &index)?;
            let by_digest = Reference::with_digest(
                reference.registry().to_owned(),
                reference.repository().to_owned(),
                chosen.clone(),
            );
            let (bytes, _) = self
                .client()
                .pull_manifest_raw(&by_digest, auth, &ACCEPTED)
                .await
                .map_err(fail)?;
            let digest = Digest::of_bytes(&bytes);
            if digest.as_str() != chosen {
                return Err(bad(format!(
                    "the registry sent content hashing to {digest} for manifest {chosen}"
                )));
            }
            (bytes, digest)
        } else {
            (bytes, fetched)
        };
        let manifest = ImageManifest::from_reader(&manifest_bytes[..])
            .map_err(|e| bad(format!("unreadable image manifest: {e}")))?;

        let mut size = manifest_bytes.len() as u64;
        let blobs = std::iter::once(manifest.config()).chain(manifest.layers().iter());
        for descriptor in blobs {
            let digest =
                Digest::parse(descriptor.digest().as_ref()).map_err(|source| PullError::Blob {
                    image: image.to_owned(),
                    digest: descriptor.digest().to_string(),
                    source,
                })?;
            size += descriptor.size();
            if self.store.blobs().has(&digest) {
                continue;
            }
            self.fetch_blob(image, endpoint, reference, &digest, descriptor.size())
                .await?;
        }
        // The manifest last: its blobs are all present when it is.
        self.store
            .blobs()
            .write(&manifest_digest, &manifest_bytes[..])
            .map_err(|source| PullError::Blob {
                image: image.to_owned(),
                digest: manifest_digest.to_string(),
                source,
            })?;
        let config = Digest::parse(manifest.config().digest().as_ref()).map_err(|source| {
            PullError::Blob {
                image: image.to_owned(),
                digest: manifest.config().digest().to_string(),
                source,
            }
        })?;
        // Refuse an image whose config cannot start a container before naming it.
        self.store
            .config(&manifest_digest)
            .map_err(|source| PullError::Store {
                image: image.to_owned(),
                source,
            })?;
        self.store
            .add_names(&[ImportedImage {
                manifest: manifest_digest.clone(),
                names: vec![image.to_owned()],
            }])
            .map_err(|source| PullError::Store {
                image: image.to_owned(),
                source,
            })?;
        Ok(PulledImage {
            name: image.to_owned(),
            manifest: manifest_digest,
            config,
            size,
        })
    }

    /// Streams one blob into the store, verifying size and digest as it is written.
    async fn fetch_blob(
        &self,
        image: &str,
        endpoint: &Endpoint,
        reference: &Reference,
        digest: &Digest,
        size: u64,
    ) -> Result<(), PullError> {
        let stream = self
            .client()
            .pull_blob_stream(reference, digest.as_str())
            .await
            .map_err(|e| classify(image, endpoint, e))?;
        // The blob store writes synchronously; feed it from the network through a small queue.
        let (tx, rx) = std::sync::mpsc::sync_channel::<std::io::Result<bytes::Bytes>>(16);
        let store = self.store.clone();
        let expected = digest.clone();
        let writer = tokio::task::spawn_blocking(move || {
            store.blobs().write(
                &expected,
                ChannelReader {
                    rx,
                    current: bytes::Bytes::new(),
                    left: size,
                },
            )
        });
        let mut stream = stream.stream;
        let mut download_failed = None;
        while let Some(chunk) = stream.next().await {
            if let Err(err) = &chunk {
                download_failed = Some(download_error(image, endpoint, digest, err));
            }
            let failed = chunk.is_err();
            if tx.send(chunk).is_err() || failed {
                break; // the writer stopped (it reports why) or the download failed
            }
        }
        drop(tx);
        let written = writer.await.map_err(|e| PullError::Registry {
            image: image.to_owned(),
            endpoint: endpoint.url(),
            detail: format!("blob writer failed: {e}"),
        })?;
        match (written, download_failed) {
            (Ok(_), _) => Ok(()),
            // The writer only saw the download's error: say what it was.
            (Err(_), Some(err)) => Err(err),
            (Err(source), None) => Err(PullError::Blob {
                image: image.to_owned(),
                digest: digest.to_string(),
                source,
            }),
        }
    }
}

/// What a failed blob download means: content that does not hash to its digest (`oci-client`
/// checks at the end of the stream), or the registry failing mid-download.
fn download_error(
    image: &str,
    endpoint: &Endpoint,
    digest: &Digest,
    err: &std::io::Error,
) -> PullError {
    if let Some(DigestError::VerificationError { actual, .. }) =
        err.get_ref().and_then(|e| e.downcast_ref::<DigestError>())
        && let Ok(actual) = Digest::parse(actual)
    {
        return PullError::Blob {
            image: image.to_owned(),
            digest: digest.to_string(),
            source: BlobError::DigestMismatch {
                expected: digest.clone(),
                actual,
            },
        };
    }
    PullError::Registry {
        image: image.to_owned(),
        endpoint: endpoint.url(),
        detail: format!("downloading blob {digest}: {err}"),
    }
}

/// A `Read` over chunks sent from the async side, refusing more than the descriptor's size.
struct ChannelReader {
    rx: std::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
    current: bytes::Bytes,
    left: u64,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => self.current = chunk,
                Ok(Err(e)) => return Err(e),
                Err(_) if self.left == 0 => return Ok(0),
                Err(_) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!(
                            "download ended {} bytes short of the descriptor's size",
                            self.left
                        ),
                    ));
                }
            }
        }
        let n = buf.len().min(self.current.len());
        if n as u64 > self.left {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the registry sent more bytes than the descriptor's size",
            ));
        }
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        self.left -= n as u64;
        Ok(n)
    }
}

/// Registry, repository, tag and digest of a normalised name.
fn split_reference(image: &str) -> (String, String, Option<String>, Option<String>) {
    let (rest, digest) = match image.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest.to_owned())),
        None => (image, None),
    };
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (
            &rest[..last_slash + i],
            Some(rest[last_slash + i + 1..].to_owned()),
        ),
        None => (rest, None),
    };
    let (registry, repository) = repo.split_once('/').unwrap_or(("docker.io", repo));
    (registry.into(), repository.into(), tag, digest)
}

fn is_index(bytes: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    serde_json::from_slice::<Probe>(bytes).is_ok_and(|p| {
        matches!(
            p.media_type.as_deref(),
            Some(MEDIA_OCI_INDEX | MEDIA_DOCKER_LIST)
        ) || (p.media_type.is_none() && p.manifests.is_some())
    })
}

/// This node's platform in OCI's words.
pub fn this_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    ("linux", arch)
}

fn choose_platform(image: &str, index: &ImageIndex) -> Result<String, PullError> {
    let (os, arch) = this_platform();
    let mut available = Vec::new();
    for entry in index.manifests() {
        let Some(platform) = entry.platform() else {
            continue;
        };
        let (entry_os, entry_arch) = (
            platform.os().to_string(),
            platform.architecture().to_string(),
        );
        if entry_os == os && entry_arch == arch {
            return Ok(entry.digest().to_string());
        }
        available.push(format!("{entry_os}/{entry_arch}"));
    }
    Err(PullError::NoPlatform {
        image: image.to_owned(),
        platform: format!("{os}/{arch}"),
        available: if available.is_empty() {
            "none".into()
        } else {
            available.join(", ")
        },
    })
}

/// Turns oci-client's error into ours, keeping what a user can act on.
fn classify(image: &str, endpoint: &Endpoint, err: OciDistributionError) -> PullError {
    let registry = |detail: String| PullError::Registry {
        image: image.to_owned(),
        endpoint: endpoint.url(),
        detail,
    };
    match err {
        OciDistributionError::ImageManifestNotFoundError(_) => PullError::NotFound {
            image: image.to_owned(),
            tried: endpoint.url(),
        },
        OciDistributionError::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    oci_client::errors::OciErrorCode::ManifestUnknown
                        | oci_client::errors::OciErrorCode::NameUnknown
                        | oci_client::errors::OciErrorCode::NotFound
                )
            }) =>
        {
            PullError::NotFound {
                image: image.to_owned(),
                tried: endpoint.url(),
            }
        }
        OciDistributionError::ServerError { code: 404, .. } => PullError::NotFound {
            image: image.to_owned(),
            tried: endpoint.url(),
        },
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_)
        | OciDistributionError::ServerError {
            code: 401 | 403, ..
        } => PullError::Unauthorized {
            image: image.to_owned(),
            endpoint: endpoint.url(),
            registry: endpoint.host.clone(),
        },
        OciDistributionError::RequestError(e) if e.is_connect() || e.is_timeout() => {
            registry(format!("registry unreachable: {}", error_chain(&e)))
        }
        OciDistributionError::DigestError(e) => PullError::BadContent {
            image: image.to_owned(),
            detail: format!("digest mismatch: {e}"),
        },
        other => registry(error_chain(&other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_download_failing_is_a_digest_mismatch_or_the_registry_failing() {
        let endpoint = Endpoint {
            host: "127.0.0.1:5000".into(),
            http: true,
        };
        let digest = |hex: &str| Digest::parse(&format!("sha256:{}", hex.repeat(32))).unwrap();
        let mismatch = std::io::Error::other(DigestError::VerificationError {
            expected: digest("ab").to_string(),
            actual: digest("cd").to_string(),
        });
        let err = download_error("busybox", &endpoint, &digest("ab"), &mismatch);
        assert!(
            matches!(&err, PullError::Blob { source: BlobError::DigestMismatch { actual, .. }, .. }
                if *actual == digest("cd")),
            "{err:?}"
        );
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let err = download_error("busybox", &endpoint, &digest("ab"), &reset);
        assert!(matches!(err, PullError::Registry { .. }), "{err:?}");
        assert!(err.to_string().contains("http://127.0.0.1:5000"), "{err}");
    }

    #[test]
    fn names_split_into_registry_repository_tag_and_digest() {
        assert_eq!(
            split_reference("docker.io/library/busybox:1.36"),
            (
                "docker.io".into(),
                "library/busybox".into(),
                Some("1.36".into()),
                None
            )
        );
        assert_eq!(
            split_reference("127.0.0.1:5000/team/app@sha256:abc"),
            (
                "127.0.0.1:5000".into(),
                "team/app".into(),
                None,
                Some("sha256:abc".into())
            )
        );
    }

    #[test]
    fn registries_yaml_mirrors_come_first_then_the_registry_itself() {
        let config = RegistriesConfig::parse(
            "mirrors:\n  docker.io:\n    endpoint:\n      - http://127.0.0.1:5000\n      - https://mirror.example:8443/\n",
        )
        .unwrap();
        assert_eq!(
            config.endpoints("docker.io"),
            vec![
                Endpoint {
                    host: "127.0.0.1:5000".into(),
                    http: true
                },
                Endpoint {
                    host: "mirror.example:8443".into(),
                    http: false
                },
                Endpoint {
                    host: "registry-1.docker.io".into(),
                    http: false
                },
            ]
        );
        // Other registries are pulled from directly, over HTTPS only.
        assert_eq!(
            config.endpoints("quay.io"),
            vec![Endpoint {
                host: "quay.io".into(),
                http: false
            }]
        );
        let mut star = RegistriesConfig::parse(
            "mirrors:\n  \"*\":\n    endpoint: [\"http://10.0.0.1:5000\"]\n",
        )
        .unwrap();
        assert_eq!(star.endpoints("ghcr.io")[0].host, "10.0.0.1:5000");
        assert_eq!(star.endpoints("ghcr.io").len(), 2);
        star.disable_default_endpoint = true;
        assert_eq!(star.endpoints("ghcr.io").len(), 1);
    }

    #[test]
    fn registries_yaml_errors_name_the_problem() {
        for (text, expected) in [
            ("mirrors: [", "mirrors"),
            ("mirror:\n  docker.io: {}\n", "unknown field"),
            (
                "mirrors:\n  docker.io:\n    endpoint: [\"http://h:1/v2/x\"]\n",
                "path is not supported",
            ),
            (
                "configs:\n  h:\n    tls:\n      cert_file: /c\n",
                "not supported yet",
            ),
        ] {
            let err = RegistriesConfig::parse(text).unwrap_err();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
        assert!(RegistriesConfig::parse("").unwrap().mirrors.is_empty());
    }

    #[test]
    fn credentials_come_from_configs() {
        let config = RegistriesConfig::parse(
            "configs:\n  a:\n    auth: {username: u, password: p}\n  b:\n    auth: {auth: dTpw}\n  c:\n    auth: {identitytoken: t}\n",
        )
        .unwrap();
        assert!(matches!(config.auth_for("a"), RegistryAuth::Basic(u, p) if u == "u" && p == "p"));
        assert!(matches!(config.auth_for("b"), RegistryAuth::Basic(u, p) if u == "u" && p == "p"));
        assert!(matches!(config.auth_for("c"), RegistryAuth::Bearer(t) if t == "t"));
        assert!(matches!(config.auth_for("d"), RegistryAuth::Anonymous));
    }

    #[test]
    fn the_reader_refuses_short_and_long_downloads() {
        let reader = |chunks: Vec<&'static [u8]>, size| {
            let (tx, rx) = std::sync::mpsc::sync_channel(8);
            for c in chunks {
                tx.send(Ok(bytes::Bytes::from_static(c))).unwrap();
            }
            drop(tx);
            ChannelReader {
                rx,
                current: bytes::Bytes::new(),
                left: size,
            }
        };
        let mut out = Vec::new();
        reader(vec![b"ab", b"cd"], 4).read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abcd");
        assert!(reader(vec![b"ab"], 4).read_to_end(&mut Vec::new()).is_err());
        assert!(
            reader(vec![b"abcdef"], 4)
                .read_to_end(&mut Vec::new())
                .is_err()
        );
    }
}
