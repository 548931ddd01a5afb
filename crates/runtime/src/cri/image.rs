//! CRI `ImageService` over the image store and the puller.
//!
//! An image's CRI id is its config digest (as containerd reports it); `repo_tags` are the names
//! pointing at it, `repo_digests` `repository@<manifest digest>`. An image may be named in a
//! request by any of those, by its id, or by an unambiguous prefix of the id's hex.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_server::ImageService;
use oci_client::secrets::RegistryAuth;
use tonic::{Request, Response, Status};

use crate::image::archive::{ImageStore, normalize_reference};
use crate::image::blobs::{BlobError, Digest};
use crate::image::pull::{PullError, Puller};

/// The `ImageService` implementation.
pub struct Images {
    puller: Arc<Puller>,
}

impl Images {
    /// Serves the images of `puller`'s store, pulling with it.
    pub fn new(puller: Arc<Puller>) -> Images {
        Images { puller }
    }

    fn store(&self) -> &Arc<ImageStore> {
        self.puller.store()
    }
}

/// One image as CRI sees it: everything the store knows, grouped by config digest.
struct Known {
    id: String,
    names: Vec<String>,
    manifests: Vec<Digest>,
    size: u64,
    user: Option<String>,
}

fn internal(what: &str, err: impl std::fmt::Display) -> Status {
    Status::internal(format!("{what}: {err}"))
}

/// Every stored image, by CRI id.
fn known_images(store: &ImageStore) -> Result<BTreeMap<String, Known>, Status> {
    let mut by_id: BTreeMap<String, Known> = BTreeMap::new();
    for (name, manifest) in store
        .images()
        .map_err(|e| internal("reading the image index", e))?
    {
        let parsed = match store.manifest(&manifest) {
            Ok(parsed) => parsed,
            Err(err) => {
                tracing::warn!(image = %name, error = %err, "skipping an unreadable image");
                continue;
            }
        };
        let id = parsed.config().digest().to_string();
        let size = parsed.config().size() + parsed.layers().iter().map(|l| l.size()).sum::<u64>();
        let user = store.config(&manifest).ok().and_then(|c| c.user);
        let entry = by_id.entry(id.clone()).or_insert_with(|| Known {
            id,
            names: Vec::new(),
            manifests: Vec::new(),
            size,
            user,
        });
        entry.names.push(name);
        if !entry.manifests.contains(&manifest) {
            entry.manifests.push(manifest);
        }
    }
    Ok(by_id)
}

impl Known {
    fn to_cri(&self) -> cri::Image {
        let repo_tags = self
            .names
            .iter()
            .filter(|n| !n.contains('@'))
            .cloned()
            .collect();
        let mut repo_digests: Vec<String> = Vec::new();
        for name in &self.names {
            let repo = repository(name);
            for manifest in &self.manifests {
                let digest = format!("{repo}@{manifest}");
                if !repo_digests.contains(&digest) {
                    repo_digests.push(digest);
                }
            }
        }
        // A numeric user is a uid; anything else a name (CRI takes one or the other).
        let (uid, username) = match self
            .user
            .as_deref()
            .map(|u| u.split(':').next().unwrap_or(u))
        {
            Some(user) if !user.is_empty() => match user.parse::<i64>() {
                Ok(uid) => (Some(cri::Int64Value { value: uid }), String::new()),
                Err(_) => (None, user.to_owned()),
            },
            _ => (None, String::new()),
        };
        cri::Image {
            id: self.id.clone(),
            repo_tags,
            repo_digests,
            size: self.size.max(1),
            uid,
            username,
            spec: Some(cri::ImageSpec {
                image: self.id.clone(),
                ..Default::default()
            }),
            pinned: false,
        }
    }

    /// Whether `reference` (a name, id, id prefix or repo digest) means this image.
    fn matches(&self, reference: &str) -> bool {
        let hex = self.id.trim_start_matches("sha256:");
        if reference == self.id || (reference.len() >= 6 && hex.starts_with(reference)) {
            return true;
        }
        let Ok(normal) = normalize_reference(reference) else {
            return false;
        };
        if self.names.contains(&normal) {
            return true;
        }
        match normal.split_once('@') {
            Some((repo, digest)) => {
                self.manifests.iter().any(|m| m.as_str() == digest)
                    && self.names.iter().any(|n| repository(n) == repository(repo))
            }
            None => false,
        }
    }
}

/// `registry/repo` of a normalised `registry/repo:tag` or `registry/repo@digest`.
fn repository(name: &str) -> &str {
    let name = name.split_once('@').map_or(name, |(repo, _)| repo);
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_slash..].rfind(':') {
        Some(i) => &name[..last_slash + i],
        None => name,
    }
}

fn find<'a>(images: &'a BTreeMap<String, Known>, reference: &str) -> Option<&'a Known> {
    images.values().find(|k| k.matches(reference))
}

fn spec_image(spec: Option<&cri::ImageSpec>) -> Result<&str, Status> {
    match spec.map(|s| s.image.as_str()) {
        Some(image) if !image.is_empty() => Ok(image),
        _ => Err(Status::invalid_argument(
            "image spec with an image reference is required",
        )),
    }
}

fn auth_of(auth: Option<cri::AuthConfig>) -> Option<RegistryAuth> {
    let auth = auth?;
    if !auth.registry_token.is_empty() {
        return Some(RegistryAuth::Bearer(auth.registry_token));
    }
    if !auth.identity_token.is_empty() {
        return Some(RegistryAuth::Bearer(auth.identity_token));
    }
    if !auth.username.is_empty() {
        return Some(RegistryAuth::Basic(auth.username, auth.password));
    }
    if !auth.auth.is_empty() {
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(&auth.auth)
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, password) = text.split_once(':')?;
        return Some(RegistryAuth::Basic(user.into(), password.into()));
    }
    None
}

/// The gRPC status of a failed pull: what the kubelet shows as the `ErrImagePull` message.
/// Content that does not match its digest is `DataLoss`; the node's own store failing is
/// `ResourceExhausted` when its disk is full, else `Internal`.
fn pull_status(err: &PullError) -> Status {
    let message = crate::error_chain(err);
    if super::out_of_space(err) {
        return Status::resource_exhausted(message);
    }
    match err {
        PullError::InvalidReference { .. } | PullError::Config { .. } => {
            Status::invalid_argument(message)
        }
        PullError::NotFound { .. } | PullError::NoPlatform { .. } => Status::not_found(message),
        PullError::Unauthorized { .. } => Status::permission_denied(message),
        PullError::Registry { .. } => Status::unavailable(message),
        PullError::BadContent { .. }
        | PullError::Blob {
            source:
                BlobError::InvalidDigest { .. }
                | BlobError::ReadContent { .. }
                | BlobError::DigestMismatch { .. },
            ..
        } => Status::data_loss(message),
        PullError::Blob { .. } | PullError::Store { .. } => Status::internal(message),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| internal("image store task", e))?
}

#[tonic::async_trait]
impl ImageService for Images {
    async fn list_images(
        &self,
        request: Request<cri::ListImagesRequest>,
    ) -> Result<Response<cri::ListImagesResponse>, Status> {
        let filter = request
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|s| s.image)
            .filter(|s| !s.is_empty());
        let store = self.store().clone();
        let images = blocking(move || known_images(&store)).await?;
        let images = images
            .values()
            .filter(|k| filter.as_deref().is_none_or(|f| k.matches(f)))
            .map(Known::to_cri)
            .collect();
        Ok(Response::new(cri::ListImagesResponse { images }))
    }

    async fn image_status(
        &self,
        request: Request<cri::ImageStatusRequest>,
    ) -> Result<Response<cri::ImageStatusResponse>, Status> {
        let request = request.into_inner();
        let reference = spec_image(request.image.as_ref())?.to_owned();
        let store = self.store().clone();
        let verbose = request.verbose;
        blocking(move || {
            let images = known_images(&store)?;
            let Some(known) = find(&images, &reference) else {
                return Ok(Response::new(cri::ImageStatusResponse::default()));
            };
            let mut info = std::collections::HashMap::new();
            if verbose
                && let Some(manifest) = known.manifests.first()
                && let Ok(config) = store
                    .manifest(manifest)
                    .map(|m| m.config().digest().to_string())
                && let Ok(digest) = Digest::parse(&config)
                && let Ok(bytes) = store.blobs().read(&digest)
            {
                let image_config: serde_json::Value =
                    serde_json::from_slice(&bytes).unwrap_or_default();
                info.insert(
                    "info".to_owned(),
                    serde_json::json!({"imageSpec": image_config, "manifest": manifest.as_str()})
                        .to_string(),
                );
            }
            Ok(Response::new(cri::ImageStatusResponse {
                image: Some(known.to_cri()),
                info,
            }))
        })
        .await
    }

    async fn pull_image(
        &self,
        request: Request<cri::PullImageRequest>,
    ) -> Result<Response<cri::PullImageResponse>, Status> {
        let request = request.into_inner();
        let reference = spec_image(request.image.as_ref())?.to_owned();
        let pulled = self
            .puller
            .pull(&reference, auth_of(request.auth))
            .await
            .map_err(|err| pull_status(&err))?;
        Ok(Response::new(cri::PullImageResponse {
            image_ref: pulled.config.to_string(),
        }))
    }

    async fn remove_image(
        &self,
        request: Request<cri::RemoveImageRequest>,
    ) -> Result<Response<cri::RemoveImageResponse>, Status> {
        let reference = spec_image(request.get_ref().image.as_ref())?.to_owned();
        let store = self.store().clone();
        blocking(move || {
            let images = known_images(&store)?;
            // Idempotent: an image already gone is not an error.
            if let Some(known) = find(&images, &reference) {
                // A name alone removes that name; an id or digest removes the whole image.
                let only_name = normalize_reference(&reference)
                    .ok()
                    .filter(|n| known.names.contains(n) && !n.contains('@'));
                let names = match only_name {
                    Some(name) if known.names.len() > 1 => vec![name],
                    _ => known.names.clone(),
                };
                for name in names {
                    store
                        .remove_name(&name)
                        .map_err(|e| internal("removing the image name", e))?;
                }
                store
                    .gc()
                    .map_err(|e| internal("deleting unused blobs", e))?;
            }
            Ok(Response::new(cri::RemoveImageResponse {}))
        })
        .await
    }

    async fn image_fs_info(
        &self,
        _request: Request<cri::ImageFsInfoRequest>,
    ) -> Result<Response<cri::ImageFsInfoResponse>, Status> {
        let root = self.store().root().to_owned();
        blocking(move || {
            let (bytes, inodes) = crate::image::disk_usage(&root)
                .map_err(|e| internal(&format!("measuring {}", root.display()), e))?;
            let timestamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as i64)
                .unwrap_or(1);
            Ok(Response::new(cri::ImageFsInfoResponse {
                image_filesystems: vec![cri::FilesystemUsage {
                    timestamp,
                    fs_id: Some(cri::FilesystemIdentifier {
                        mountpoint: root.display().to_string(),
                    }),
                    used_bytes: Some(cri::UInt64Value { value: bytes }),
                    inodes_used: Some(cri::UInt64Value { value: inodes }),
                }],
                container_filesystems: Vec::new(),
            }))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> Known {
        Known {
            id: format!("sha256:{}", "ab".repeat(32)),
            names: vec!["docker.io/library/busybox:latest".into()],
            manifests: vec![Digest::parse(&format!("sha256:{}", "cd".repeat(32))).unwrap()],
            size: 10,
            user: Some("1000:1000".into()),
        }
    }

    #[test]
    fn images_are_found_by_name_id_prefix_and_repo_digest() {
        let k = known();
        for reference in [
            "busybox",
            "busybox:latest",
            "docker.io/library/busybox:latest",
            &k.id,
            "ababab",
            &format!("busybox@sha256:{}", "cd".repeat(32)),
        ] {
            assert!(k.matches(reference), "{reference}");
        }
        for reference in [
            "busybox:1.0",
            "abab",
            "alpine",
            &format!("busybox@sha256:{}", "ef".repeat(32)),
        ] {
            assert!(!k.matches(reference), "{reference}");
        }
    }

    #[test]
    fn a_full_disk_is_resource_exhausted_and_bad_content_data_loss() {
        let digest = || Digest::parse(&format!("sha256:{}", "ab".repeat(32))).unwrap();
        let blob = |source| PullError::Blob {
            image: "busybox".into(),
            digest: digest().to_string(),
            source,
        };
        let write = |kind| BlobError::WriteTemp {
            path: "/var/lib/rkube/agent/images/blobs/tmp/x".into(),
            source: std::io::Error::new(kind, "writing"),
        };
        let full = pull_status(&blob(write(std::io::ErrorKind::StorageFull)));
        assert_eq!(full.code(), tonic::Code::ResourceExhausted);
        assert!(full.message().contains("blobs/tmp/x"), "{full:?}");
        assert_eq!(
            pull_status(&blob(write(std::io::ErrorKind::PermissionDenied))).code(),
            tonic::Code::Internal
        );
        let mismatch = BlobError::DigestMismatch {
            expected: digest(),
            actual: Digest::parse(&format!("sha256:{}", "cd".repeat(32))).unwrap(),
        };
        assert_eq!(pull_status(&blob(mismatch)).code(), tonic::Code::DataLoss);
    }

    #[test]
    fn cri_images_carry_tags_digests_and_the_uid() {
        let image = known().to_cri();
        assert_eq!(image.repo_tags, ["docker.io/library/busybox:latest"]);
        assert_eq!(
            image.repo_digests,
            [format!(
                "docker.io/library/busybox@sha256:{}",
                "cd".repeat(32)
            )]
        );
        assert_eq!(image.uid, Some(cri::Int64Value { value: 1000 }));
        assert!(image.username.is_empty());
    }
}
