//! Importing image archives (OCI image layouts and `docker save` tars) into the node's image
//! store, and the small reference index that names the imported images.
//!
//! Archives are streamed once: blobs named by digest (`blobs/sha256/<hex>`) go straight into the
//! blob store and are verified while written, other files (a legacy `docker save` layer or
//! config) are stored under the digest they hash to, and the small metadata files are kept in
//! memory. Only when the whole archive is read and every image in it checks out (manifest,
//! config and layers present with the sizes their descriptors promise, config parseable) is the
//! reference index updated, in one atomic rename: a bad archive never makes a half-imported
//! image visible. Blobs a failed import already stored stay unreferenced until garbage
//! collection removes them.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use flate2::read::GzDecoder;
use oci_spec::OciSpecError;
use oci_spec::image::{
    ANNOTATION_REF_NAME, Arch, DescriptorBuilder, ImageConfiguration, ImageIndex, ImageManifest,
    ImageManifestBuilder, MediaType, Os,
};

use super::blobs::{BlobError, BlobStore, Digest, sync_dir};

/// The reference index's file name under the store root.
pub const INDEX_FILE: &str = "images.json";
/// The annotation containerd and Docker (25+) put the full image name in.
const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
/// Metadata files (index.json, manifest.json) larger than this are refused rather than read
/// into memory: real ones are a few KiB.
const MAX_METADATA_BYTES: u64 = 4 << 20;
const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Errors from the image store and archive import, one variant per failing step.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Opening the blob store under the root failed.
    #[error("opening the blob store under {root}: {source}")]
    OpenStore {
        /// The store root.
        root: PathBuf,
        /// The cause.
        source: BlobError,
    },
    /// Reading the archive's tar stream failed: truncated or corrupt.
    #[error("reading the image archive: {source}")]
    ReadArchive {
        /// The cause.
        source: io::Error,
    },
    /// A metadata file is too large to be real.
    #[error("archive file {path} is larger than {MAX_METADATA_BYTES} bytes")]
    MetadataTooLarge {
        /// The path inside the archive.
        path: String,
    },
    /// A file under `blobs/` is not named by a valid digest.
    #[error("archive file {path} is not named by a sha256 digest: {source}")]
    BlobName {
        /// The path inside the archive.
        path: String,
        /// The cause.
        source: BlobError,
    },
    /// Storing an archive file as a blob failed (including a digest mismatch).
    #[error("storing archive file {path}: {source}")]
    StoreBlob {
        /// The path inside the archive.
        path: String,
        /// The cause.
        source: BlobError,
    },
    /// The archive ends inside a file: a partial download or copy.
    #[error("the archive ends inside {path} ({read} of {size} bytes): it is truncated")]
    Truncated {
        /// The path inside the archive.
        path: String,
        /// The bytes of it the archive holds.
        read: u64,
        /// Its size in the tar header.
        size: u64,
    },
    /// The archive has neither an `index.json` nor a `manifest.json`.
    #[error("the archive has no index.json (OCI layout) or manifest.json (docker save)")]
    NoManifest,
    /// `index.json` is not a valid OCI image index.
    #[error("parsing the archive's index.json: {source}")]
    ParseIndex {
        /// The cause.
        source: OciSpecError,
    },
    /// `manifest.json` is not a valid `docker save` manifest.
    #[error("parsing the archive's manifest.json: {source}")]
    ParseDockerManifest {
        /// The cause.
        source: serde_json::Error,
    },
    /// `manifest.json` names a file the archive does not contain.
    #[error("the archive's manifest.json names {path}, which the archive does not contain")]
    MissingFile {
        /// The path inside the archive.
        path: String,
    },
    /// A descriptor holds a digest that is not valid.
    #[error("invalid digest in a descriptor: {source}")]
    DescriptorDigest {
        /// The cause.
        source: BlobError,
    },
    /// A manifest, config or layer the archive refers to is not in it.
    #[error("blob {digest} is referenced but missing from the archive")]
    MissingBlob {
        /// The missing digest.
        digest: Digest,
    },
    /// A blob's size differs from what its descriptor says.
    #[error("blob {digest} is {actual} bytes, its descriptor says {expected}")]
    SizeMismatch {
        /// The blob.
        digest: Digest,
        /// The descriptor's size.
        expected: u64,
        /// The stored size.
        actual: u64,
    },
    /// Reading a stored blob failed.
    #[error("reading blob {digest}: {source}")]
    ReadBlob {
        /// The blob.
        digest: Digest,
        /// The cause.
        source: BlobError,
    },
    /// A manifest or nested index blob does not parse.
    #[error("parsing manifest {digest}: {source}")]
    ParseManifest {
        /// The blob.
        digest: Digest,
        /// The cause.
        source: OciSpecError,
    },
    /// A config blob does not parse as an OCI image configuration.
    #[error("parsing image config {digest}: {source}")]
    ParseConfig {
        /// The blob.
        digest: Digest,
        /// The cause.
        source: OciSpecError,
    },
    /// A nested index has no manifest for this node's platform.
    #[error("image index {digest} has no manifest for {os}/{arch}")]
    NoPlatformManifest {
        /// The index blob.
        digest: Digest,
        /// This node's OS.
        os: String,
        /// This node's architecture.
        arch: String,
    },
    /// A manifest descriptor has a media type that is neither a manifest nor an index.
    #[error("descriptor {digest} has unsupported media type {media_type}")]
    UnsupportedMediaType {
        /// The descriptor's digest.
        digest: Digest,
        /// Its media type.
        media_type: String,
    },
    /// Building the OCI manifest for a `docker save` image failed.
    #[error("building a manifest for docker-save image with config {config}: {source}")]
    BuildManifest {
        /// The image's config digest.
        config: Digest,
        /// The cause.
        source: OciSpecError,
    },
    /// An image name is not a usable reference.
    #[error("invalid image reference {name:?}")]
    InvalidReference {
        /// The rejected name.
        name: String,
    },
    /// Reading or parsing the reference index failed.
    #[error("reading the image index {path}: {source}")]
    ReadIndex {
        /// The index file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Taking the store's garbage-collection lock failed.
    #[error("locking the image store at {path}: {source}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Writing the reference index failed; the previous index is still in place.
    #[error("writing the image index {path}: {source}")]
    WriteIndex {
        /// The index file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// The parts of an image config that decide how a container starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// The entrypoint (`ENTRYPOINT`).
    pub entrypoint: Vec<String>,
    /// The default arguments (`CMD`).
    pub cmd: Vec<String>,
    /// `KEY=value` environment entries.
    pub env: Vec<String>,
    /// The working directory, if set.
    pub working_dir: Option<String>,
    /// The user (`name`, `uid`, `uid:gid`...), if set.
    pub user: Option<String>,
    /// Exposed ports such as `80/tcp`.
    pub exposed_ports: Vec<String>,
}

impl From<&ImageConfiguration> for ImageConfig {
    fn from(image: &ImageConfiguration) -> Self {
        let Some(config) = image.config() else {
            return Self::default();
        };
        Self {
            entrypoint: config.entrypoint().clone().unwrap_or_default(),
            cmd: config.cmd().clone().unwrap_or_default(),
            env: config.env().clone().unwrap_or_default(),
            working_dir: config.working_dir().clone().filter(|w| !w.is_empty()),
            user: config.user().clone().filter(|u| !u.is_empty()),
            exposed_ports: config.exposed_ports().clone().unwrap_or_default(),
        }
    }
}

/// One image an import made available.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedImage {
    /// The manifest digest, which identifies the image.
    pub manifest: Digest,
    /// The normalised names now pointing at it (empty for an unnamed image).
    pub names: Vec<String>,
}

/// Held by [`ImageStore::lock`]; the lock goes with it.
#[derive(Debug)]
pub struct StoreLock {
    _file: fs::File,
}

/// The on-disk reference index.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct RefIndex {
    images: BTreeMap<String, Digest>,
}

/// The node's image store: blobs plus the names that point at manifests.
#[derive(Debug)]
pub struct ImageStore {
    root: PathBuf,
    blobs: BlobStore,
    /// Serialises read-modify-write cycles of the index file within this process.
    index_lock: Mutex<()>,
    /// Parsed manifests and start-up configs by manifest digest, read for every container
    /// made: content-addressed, so an entry is never stale (an image removed since is refused
    /// by name before these are asked for).
    parsed: Mutex<HashMap<Digest, (ImageManifest, Option<ImageConfig>)>>,
}

/// How many manifests [`ImageStore`] keeps parsed; past it the cache starts again.
const PARSED_CACHE: usize = 256;

impl ImageStore {
    /// Opens (creating if needed) the store under `root`.
    pub fn open(root: &Path) -> Result<Self, ArchiveError> {
        let blobs = BlobStore::new(root).map_err(|source| ArchiveError::OpenStore {
            root: root.to_owned(),
            source,
        })?;
        let store = Self {
            root: root.to_owned(),
            blobs,
            index_lock: Mutex::new(()),
            parsed: Mutex::new(HashMap::new()),
        };
        store.read_index()?; // fail at open, not later, on a corrupt index
        Ok(store)
    }

    /// The directory the store lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The underlying blob store.
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// Every name and the manifest it points at.
    pub fn images(&self) -> Result<BTreeMap<String, Digest>, ArchiveError> {
        Ok(self.read_index()?.images)
    }

    /// The manifest digest `name` (normalised first) points at, if any.
    pub fn resolve(&self, name: &str) -> Result<Option<Digest>, ArchiveError> {
        let name = normalize_reference(name)?;
        Ok(self.read_index()?.images.remove(&name))
    }

    /// Reads and parses a stored manifest.
    pub fn manifest(&self, digest: &Digest) -> Result<ImageManifest, ArchiveError> {
        if let Some((manifest, _)) = self.cached(digest) {
            return Ok(manifest);
        }
        let bytes = self.read_blob(digest)?;
        let manifest = ImageManifest::from_reader(&bytes[..]).map_err(|source| {
            ArchiveError::ParseManifest {
                digest: digest.clone(),
                source,
            }
        })?;
        self.remember(digest, manifest.clone(), None);
        Ok(manifest)
    }

    /// The start-up config of the image whose manifest is `manifest`.
    pub fn config(&self, manifest: &Digest) -> Result<ImageConfig, ArchiveError> {
        if let Some((_, Some(config))) = self.cached(manifest) {
            return Ok(config);
        }
        let parsed = self.manifest(manifest)?;
        let digest = descriptor_digest(parsed.config().digest())?;
        let config = ImageConfig::from(&self.parse_config(&digest)?);
        self.remember(manifest, parsed, Some(config.clone()));
        Ok(config)
    }

    fn cached(&self, manifest: &Digest) -> Option<(ImageManifest, Option<ImageConfig>)> {
        let parsed = self.parsed.lock().unwrap_or_else(|e| e.into_inner());
        parsed.get(manifest).cloned()
    }

    fn remember(&self, digest: &Digest, manifest: ImageManifest, config: Option<ImageConfig>) {
        let mut parsed = self.parsed.lock().unwrap_or_else(|e| e.into_inner());
        if parsed.len() >= PARSED_CACHE {
            parsed.clear();
        }
        let entry = parsed.entry(digest.clone()).or_insert((manifest, None));
        if config.is_some() {
            entry.1 = config;
        }
    }

    /// Imports an OCI image-layout tar or a `docker save` tar (either may be gzip-compressed).
    /// The index changes only if every image in the archive is complete and valid.
    pub fn import(&self, reader: impl Read) -> Result<Vec<ImportedImage>, ArchiveError> {
        let _in_use = self.lock(false)?;
        let contents = self.ingest(reader)?;
        let imported = if let Some(index) = contents.metadata.get("index.json") {
            self.import_oci_layout(index)?
        } else if let Some(manifest) = contents.metadata.get("manifest.json") {
            self.import_docker_save(manifest, &contents)?
        } else {
            return Err(ArchiveError::NoManifest);
        };
        self.add_names(&imported)?;
        Ok(imported)
    }

    /// Streams the archive once, storing blobs and keeping metadata files in memory.
    fn ingest(&self, reader: impl Read) -> Result<ArchiveContents, ArchiveError> {
        let read_err = |source| ArchiveError::ReadArchive { source };
        let mut reader = BufReader::new(reader);
        let gzip = reader
            .fill_buf()
            .map_err(read_err)?
            .starts_with(&[0x1f, 0x8b]);
        let reader: Box<dyn Read> = if gzip {
            Box::new(GzDecoder::new(reader))
        } else {
            Box::new(reader)
        };
        let mut archive = tar::Archive::new(reader);
        let mut contents = ArchiveContents::default();
        for entry in archive.entries().map_err(read_err)? {
            let mut entry = entry.map_err(read_err)?;
            let raw = entry.path().map_err(read_err)?.into_owned();
            let path = clean(&raw);
            let kind = entry.header().entry_type();
            if kind.is_symlink() || kind.is_hard_link() {
                // Legacy `docker save` links a repeated layer to its first copy.
                if let Some(target) = entry.link_name().map_err(read_err)? {
                    let target = if kind.is_symlink() {
                        clean(&raw.parent().unwrap_or(Path::new("")).join(target))
                    } else {
                        clean(&target)
                    };
                    contents.links.insert(path, target);
                }
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            if let Some(hex) = path.strip_prefix("blobs/sha256/") {
                let digest = Digest::from_hex(hex).map_err(|source| ArchiveError::BlobName {
                    path: path.clone(),
                    source,
                })?;
                store_entry(&mut entry, &path, |r| self.blobs.write(&digest, r))?;
                contents.files.insert(path, digest);
            } else if matches!(
                path.as_str(),
                "index.json" | "manifest.json" | "oci-layout" | "repositories"
            ) {
                if entry.size() > MAX_METADATA_BYTES {
                    return Err(ArchiveError::MetadataTooLarge { path });
                }
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes).map_err(read_err)?;
                contents.metadata.insert(path, bytes);
            } else {
                let (digest, _) = store_entry(&mut entry, &path, |r| self.blobs.put(r))?;
                contents.files.insert(path, digest);
            }
        }
        // Read past the tar's end so a gzip trailer (CRC, length) is checked.
        io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(read_err)?;
        Ok(contents)
    }

    fn import_oci_layout(&self, index: &[u8]) -> Result<Vec<ImportedImage>, ArchiveError> {
        let index =
            ImageIndex::from_reader(index).map_err(|source| ArchiveError::ParseIndex { source })?;
        let mut imported = Vec::new();
        for descriptor in index.manifests() {
            let mut digest = descriptor_digest(descriptor.digest())?;
            self.check_size(&digest, descriptor.size())?;
            let media_type = descriptor.media_type().to_string();
            if *descriptor.media_type() == MediaType::ImageIndex
                || media_type == DOCKER_MANIFEST_LIST
            {
                digest = self.platform_manifest(&digest)?;
            } else if *descriptor.media_type() != MediaType::ImageManifest
                && media_type != "application/vnd.docker.distribution.manifest.v2+json"
            {
                return Err(ArchiveError::UnsupportedMediaType { digest, media_type });
            }
            self.check_image(&digest)?;
            let annotations = descriptor.annotations().clone().unwrap_or_default();
            // A bare tag in ref.name ("latest", as Docker writes it) names no repository.
            let name = annotations.get(ANNOTATION_CONTAINERD_NAME).or_else(|| {
                annotations
                    .get(ANNOTATION_REF_NAME)
                    .filter(|n| n.contains(':') || n.contains('/'))
            });
            let names = name
                .map(|n| normalize_reference(n))
                .transpose()?
                .into_iter()
                .collect();
            imported.push(ImportedImage {
                manifest: digest,
                names,
            });
        }
        Ok(imported)
    }

    /// Picks this node's manifest from a nested image index.
    fn platform_manifest(&self, index_digest: &Digest) -> Result<Digest, ArchiveError> {
        let bytes = self.read_blob(index_digest)?;
        let index =
            ImageIndex::from_reader(&bytes[..]).map_err(|source| ArchiveError::ParseManifest {
                digest: index_digest.clone(),
                source,
            })?;
        let (os, arch) = (Os::default(), Arch::default());
        let chosen = index.manifests().iter().find(|m| {
            m.platform()
                .as_ref()
                .is_some_and(|p| *p.os() == os && *p.architecture() == arch)
        });
        let Some(chosen) = chosen else {
            return Err(ArchiveError::NoPlatformManifest {
                digest: index_digest.clone(),
                os: os.to_string(),
                arch: arch.to_string(),
            });
        };
        let digest = descriptor_digest(chosen.digest())?;
        self.check_size(&digest, chosen.size())?;
        Ok(digest)
    }

    fn import_docker_save(
        &self,
        manifest: &[u8],
        contents: &ArchiveContents,
    ) -> Result<Vec<ImportedImage>, ArchiveError> {
        let entries: Vec<DockerSaveEntry> = serde_json::from_slice(manifest)
            .map_err(|source| ArchiveError::ParseDockerManifest { source })?;
        let mut imported = Vec::new();
        for entry in entries {
            let config = contents.digest_of(&entry.config)?;
            self.parse_config(&config)?;
            let config_size = self.stored_size(&config)?;
            let mut layers = Vec::new();
            for layer in &entry.layers {
                let digest = contents.digest_of(layer)?;
                let size = self.stored_size(&digest)?;
                let media_type = if self.is_gzip(&digest)? {
                    MediaType::ImageLayerGzip
                } else {
                    MediaType::ImageLayer
                };
                layers.push(descriptor(media_type, &digest, size, &config)?);
            }
            let built = ImageManifestBuilder::default()
                .schema_version(2u32)
                .media_type(MediaType::ImageManifest)
                .config(descriptor(
                    MediaType::ImageConfig,
                    &config,
                    config_size,
                    &config,
                )?)
                .layers(layers)
                .build()
                .map_err(|source| ArchiveError::BuildManifest {
                    config: config.clone(),
                    source,
                })?;
            let json = built
                .to_string()
                .map_err(|source| ArchiveError::BuildManifest {
                    config: config.clone(),
                    source,
                })?;
            let (digest, _) =
                self.blobs
                    .put(json.as_bytes())
                    .map_err(|source| ArchiveError::StoreBlob {
                        path: "manifest.json".to_owned(),
                        source,
                    })?;
            let names = entry
                .repo_tags
                .iter()
                .flatten()
                .map(|n| normalize_reference(n))
                .collect::<Result<_, _>>()?;
            imported.push(ImportedImage {
                manifest: digest,
                names,
            });
        }
        Ok(imported)
    }

    /// Checks that an image's manifest, config and layers are all stored as described.
    fn check_image(&self, manifest_digest: &Digest) -> Result<(), ArchiveError> {
        let manifest = self.manifest(manifest_digest)?;
        let config = descriptor_digest(manifest.config().digest())?;
        self.check_size(&config, manifest.config().size())?;
        self.parse_config(&config)?;
        for layer in manifest.layers() {
            let digest = descriptor_digest(layer.digest())?;
            self.check_size(&digest, layer.size())?;
        }
        Ok(())
    }

    fn check_size(&self, digest: &Digest, expected: u64) -> Result<(), ArchiveError> {
        let actual = self.stored_size(digest)?;
        if actual != expected {
            return Err(ArchiveError::SizeMismatch {
                digest: digest.clone(),
                expected,
                actual,
            });
        }
        Ok(())
    }

    fn stored_size(&self, digest: &Digest) -> Result<u64, ArchiveError> {
        if !self.blobs.has(digest) {
            return Err(ArchiveError::MissingBlob {
                digest: digest.clone(),
            });
        }
        self.blobs
            .size(digest)
            .map_err(|source| ArchiveError::ReadBlob {
                digest: digest.clone(),
                source,
            })
    }

    fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, ArchiveError> {
        if !self.blobs.has(digest) {
            return Err(ArchiveError::MissingBlob {
                digest: digest.clone(),
            });
        }
        self.blobs
            .read(digest)
            .map_err(|source| ArchiveError::ReadBlob {
                digest: digest.clone(),
                source,
            })
    }

    fn parse_config(&self, digest: &Digest) -> Result<ImageConfiguration, ArchiveError> {
        let bytes = self.read_blob(digest)?;
        ImageConfiguration::from_reader(&bytes[..]).map_err(|source| ArchiveError::ParseConfig {
            digest: digest.clone(),
            source,
        })
    }

    fn is_gzip(&self, digest: &Digest) -> Result<bool, ArchiveError> {
        let read_err = |source| ArchiveError::ReadBlob {
            digest: digest.clone(),
            source,
        };
        let mut file = self.blobs.open(digest).map_err(read_err)?;
        let mut magic = [0u8; 2];
        match file.read_exact(&mut magic) {
            Ok(()) => Ok(magic == [0x1f, 0x8b]),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
            Err(source) => Err(read_err(BlobError::Open {
                digest: digest.clone(),
                source,
            })),
        }
    }

    fn index_path(&self) -> PathBuf {
        self.root.join(INDEX_FILE)
    }

    fn read_index(&self) -> Result<RefIndex, ArchiveError> {
        let path = self.index_path();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(RefIndex::default()),
            Err(source) => return Err(ArchiveError::ReadIndex { path, source }),
        };
        serde_json::from_slice(&bytes).map_err(|e| ArchiveError::ReadIndex {
            path,
            source: e.into(),
        })
    }

    /// Points the imported names at their manifests: one atomic replace of the index file.
    /// Holds the store against garbage collection (`exclusive = false`: pulls and imports, whose
    /// blobs no name references yet) or for it (`exclusive = true`), across processes, until the
    /// returned guard is dropped.
    pub fn lock(&self, exclusive: bool) -> Result<StoreLock, ArchiveError> {
        let path = self.root.join("gc.lock");
        let err = |source: io::Error| ArchiveError::Lock {
            path: path.clone(),
            source,
        };
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(err)?;
        let operation = if exclusive {
            rustix::fs::FlockOperation::LockExclusive
        } else {
            rustix::fs::FlockOperation::LockShared
        };
        rustix::fs::flock(&file, operation).map_err(|e| err(e.into()))?;
        Ok(StoreLock { _file: file })
    }

    /// Removes `name` (normalised first) from the index; returns the manifest it pointed at.
    /// Blobs stay until [`ImageStore::gc`].
    pub fn remove_name(&self, name: &str) -> Result<Option<Digest>, ArchiveError> {
        let name = normalize_reference(name)?;
        let _guard = self
            .index_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut index = self.read_index()?;
        let removed = index.images.remove(&name);
        if removed.is_some() {
            self.write_index(&index)?;
        }
        Ok(removed)
    }

    /// Deletes every blob no named image uses (manifest, config, layers); returns how many and
    /// their bytes. Waits for pulls and imports under way, in any process, to finish first.
    pub fn gc(&self) -> Result<(usize, u64), ArchiveError> {
        let _exclusive = self.lock(true)?;
        let mut used = std::collections::HashSet::new();
        for manifest in self.read_index()?.images.into_values() {
            if let Ok(parsed) = self.manifest(&manifest) {
                used.insert(descriptor_digest(parsed.config().digest())?);
                for layer in parsed.layers() {
                    used.insert(descriptor_digest(layer.digest())?);
                }
            }
            used.insert(manifest);
        }
        let dir = self.root.join("blobs").join("sha256");
        let read_err = |source| ArchiveError::ReadIndex {
            path: dir.clone(),
            source,
        };
        let (mut removed, mut bytes) = (0, 0);
        for entry in fs::read_dir(&dir).map_err(read_err)? {
            let entry = entry.map_err(read_err)?;
            let Some(digest) = entry
                .file_name()
                .to_str()
                .and_then(|hex| Digest::from_hex(hex).ok())
            else {
                continue;
            };
            if used.contains(&digest) {
                continue;
            }
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            if self
                .blobs
                .remove(&digest)
                .map_err(|source| ArchiveError::ReadBlob {
                    digest: digest.clone(),
                    source,
                })?
            {
                removed += 1;
                bytes += size;
            }
        }
        Ok((removed, bytes))
    }

    /// Points each image's names at its manifest (the manifest and its blobs must be stored).
    /// The index file is replaced atomically.
    pub fn add_names(&self, imported: &[ImportedImage]) -> Result<(), ArchiveError> {
        let _guard = self
            .index_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut index = self.read_index()?;
        for image in imported {
            for name in &image.names {
                index.images.insert(name.clone(), image.manifest.clone());
            }
        }
        self.write_index(&index)
    }

    /// Replaces the index file atomically. The caller holds `index_lock`.
    fn write_index(&self, index: &RefIndex) -> Result<(), ArchiveError> {
        let path = self.index_path();
        let write_err = |source| ArchiveError::WriteIndex {
            path: path.clone(),
            source,
        };
        let json = serde_json::to_vec_pretty(index).map_err(|e| write_err(e.into()))?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.root).map_err(write_err)?;
        tmp.write_all(&json).map_err(write_err)?;
        tmp.as_file().sync_all().map_err(write_err)?;
        tmp.persist(&path).map_err(|e| write_err(e.error))?;
        sync_dir(&self.root).map_err(write_err)
    }
}

/// What streaming an archive found.
#[derive(Default)]
struct ArchiveContents {
    /// Small metadata files by path.
    metadata: HashMap<String, Vec<u8>>,
    /// Every other regular file: its path and the digest it was stored under.
    files: HashMap<String, Digest>,
    /// Links: path → target path.
    links: HashMap<String, String>,
}

impl ArchiveContents {
    /// The digest stored for `path`, following links (a bounded number of times).
    fn digest_of(&self, path: &str) -> Result<Digest, ArchiveError> {
        let mut current = clean(Path::new(path));
        for _ in 0..16 {
            if let Some(digest) = self.files.get(&current) {
                return Ok(digest.clone());
            }
            match self.links.get(&current) {
                Some(target) => current = target.clone(),
                None => break,
            }
        }
        Err(ArchiveError::MissingFile {
            path: path.to_owned(),
        })
    }
}

/// One image in a `docker save` manifest.json.
#[derive(serde::Deserialize)]
struct DockerSaveEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// An archive path as a plain `a/b/c` key (`./`, `.` and `..` resolved lexically), so the
/// spellings `./manifest.json` and `manifest.json` find the same file.
fn clean(path: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop();
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    parts.join("/")
}

fn descriptor_digest(digest: &oci_spec::image::Digest) -> Result<Digest, ArchiveError> {
    Digest::parse(digest.as_ref()).map_err(|source| ArchiveError::DescriptorDigest { source })
}

fn descriptor(
    media_type: MediaType,
    digest: &Digest,
    size: u64,
    config: &Digest,
) -> Result<oci_spec::image::Descriptor, ArchiveError> {
    let build_err = |source| ArchiveError::BuildManifest {
        config: config.clone(),
        source,
    };
    let oci_digest: oci_spec::image::Digest = digest.as_str().parse().map_err(build_err)?;
    DescriptorBuilder::default()
        .media_type(media_type)
        .digest(oci_digest)
        .size(size)
        .build()
        .map_err(build_err)
}

/// Normalises an image name the way Docker and the kubelet do: `busybox` is
/// `docker.io/library/busybox:latest`, `me/app:1` is `docker.io/me/app:1`, and a name whose first
/// component looks like a host (has a `.` or `:`, or is `localhost`) keeps it.
pub fn normalize_reference(name: &str) -> Result<String, ArchiveError> {
    let invalid = || ArchiveError::InvalidReference {
        name: name.to_owned(),
    };
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid());
    }
    let (repo, digest) = match name.split_once('@') {
        Some((repo, digest)) => (repo, Some(digest)),
        None => (name, None),
    };
    let last_slash = repo.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match repo[last_slash..].rfind(':') {
        Some(i) => (&repo[..last_slash + i], Some(&repo[last_slash + i + 1..])),
        None => (repo, None),
    };
    if repo.is_empty() || repo.starts_with('/') || repo.ends_with('/') || tag == Some("") {
        return Err(invalid());
    }
    let repo = match repo.split_once('/') {
        Some((host, _)) if host.contains('.') || host.contains(':') || host == "localhost" => {
            repo.to_owned()
        }
        Some(_) => format!("docker.io/{repo}"),
        None => format!("docker.io/library/{repo}"),
    };
    Ok(match (tag, digest) {
        (_, Some(digest)) => {
            Digest::parse(digest).map_err(|_| invalid())?;
            match tag {
                Some(tag) => format!("{repo}:{tag}@{digest}"),
                None => format!("{repo}@{digest}"),
            }
        }
        (Some(tag), None) => format!("{repo}:{tag}"),
        (None, None) => format!("{repo}:latest"),
    })
}

/// Stores one archive file with `store`, telling a file that the end of the archive cut short
/// (whose content would otherwise just fail its digest) from one that is whole but wrong.
fn store_entry<R: Read, T>(
    entry: &mut tar::Entry<'_, R>,
    path: &str,
    store: impl FnOnce(&mut EofReader<&mut tar::Entry<'_, R>>) -> Result<T, BlobError>,
) -> Result<T, ArchiveError> {
    let size = entry.size();
    let mut reader = EofReader {
        inner: entry,
        read: 0,
        ended: false,
    };
    let stored = store(&mut reader);
    if reader.ended && reader.read < size {
        return Err(ArchiveError::Truncated {
            path: path.to_owned(),
            read: reader.read,
            size,
        });
    }
    stored.map_err(|source| ArchiveError::StoreBlob {
        path: path.to_owned(),
        source,
    })
}

/// A reader that counts what it read and notes when its source ended.
struct EofReader<R> {
    inner: R,
    read: u64,
    ended: bool,
}

impl<R: Read> Read for EofReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(0) if !buf.is_empty() => {
                self.ended = true;
                Ok(0)
            }
            Ok(n) => {
                self.read += n as u64;
                Ok(n)
            }
            Err(e) => {
                self.ended |= e.kind() == io::ErrorKind::UnexpectedEof;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Files for an in-memory archive: a path and its bytes, or a symlink.
    enum F {
        File(String, Vec<u8>),
        Symlink(String, String),
    }

    fn file(path: impl Into<String>, bytes: impl Into<Vec<u8>>) -> F {
        F::File(path.into(), bytes.into())
    }

    fn tar_of(files: &[F]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for f in files {
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o644);
            match f {
                F::File(path, bytes) => {
                    header.set_size(bytes.len() as u64);
                    builder
                        .append_data(&mut header, path, &bytes[..])
                        .expect("append");
                }
                F::Symlink(path, target) => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_size(0);
                    builder
                        .append_link(&mut header, path, target)
                        .expect("append");
                }
            }
        }
        builder.into_inner().expect("finish")
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).expect("gzip");
        enc.finish().expect("gzip")
    }

    fn layer(name: &str, content: &[u8]) -> Vec<u8> {
        tar_of(&[file(name, content)])
    }

    fn config_json() -> Vec<u8> {
        serde_json::to_vec(&json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Entrypoint": ["/bin/app"],
                "Cmd": ["--serve"],
                "Env": ["PATH=/bin", "MODE=prod"],
                "WorkingDir": "/srv",
                "User": "1000:1000",
                "ExposedPorts": {"8080/tcp": {}}
            },
            "rootfs": {"type": "layers", "diff_ids": []}
        }))
        .expect("config")
    }

    fn blob_path(bytes: &[u8]) -> String {
        format!("blobs/sha256/{}", Digest::of_bytes(bytes).hex())
    }

    fn desc(media_type: &str, bytes: &[u8]) -> serde_json::Value {
        json!({
            "mediaType": media_type,
            "digest": Digest::of_bytes(bytes).as_str(),
            "size": bytes.len(),
        })
    }

    /// An OCI image layout with one gzip layer, named by `ref_name`; returns the archive and
    /// the manifest bytes.
    fn oci_archive(ref_name: &str) -> (Vec<u8>, Vec<u8>) {
        let layer = gzip(&layer("hello.txt", b"hi"));
        let config = config_json();
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": desc("application/vnd.oci.image.config.v1+json", &config),
            "layers": [desc("application/vnd.oci.image.layer.v1.tar+gzip", &layer)],
        }))
        .expect("manifest");
        let mut manifest_desc = desc("application/vnd.oci.image.manifest.v1+json", &manifest);
        manifest_desc["annotations"] = json!({ ANNOTATION_REF_NAME: ref_name });
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "manifests": [manifest_desc],
        }))
        .expect("index");
        let archive = tar_of(&[
            file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
            file(blob_path(&layer), layer.clone()),
            file(blob_path(&config), config.clone()),
            file(blob_path(&manifest), manifest.clone()),
            file("index.json", index),
        ]);
        (archive, manifest)
    }

    /// A legacy `docker save` archive: layers as `<id>/layer.tar`, the second image layer a
    /// symlink to the first (as Docker writes repeated layers).
    fn docker_archive() -> Vec<u8> {
        let manifest = serde_json::to_vec(&json!([{
            "Config": "cafe.json",
            "RepoTags": ["busybox:latest", "registry.local:5000/tools/busybox:1.36"],
            "Layers": ["aaa/layer.tar", "bbb/layer.tar", "ccc/layer.tar"],
        }]))
        .expect("manifest");
        tar_of(&[
            file("aaa/layer.tar", layer("bin/busybox", b"elf")),
            F::Symlink("bbb/layer.tar".into(), "../aaa/layer.tar".into()),
            file("ccc/layer.tar", gzip(&layer("etc/motd", b"hello"))),
            file("cafe.json", config_json()),
            file("manifest.json", manifest),
            file("repositories", b"{}".to_vec()),
        ])
    }

    fn store() -> (tempfile::TempDir, ImageStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ImageStore::open(dir.path()).expect("open");
        (dir, store)
    }

    fn expected_config() -> ImageConfig {
        ImageConfig {
            entrypoint: vec!["/bin/app".into()],
            cmd: vec!["--serve".into()],
            env: vec!["PATH=/bin".into(), "MODE=prod".into()],
            working_dir: Some("/srv".into()),
            user: Some("1000:1000".into()),
            exposed_ports: vec!["8080/tcp".into()],
        }
    }

    #[test]
    fn an_oci_layout_archive_is_imported_named_and_its_config_parsed() {
        let (dir, store) = store();
        let (archive, manifest) = oci_archive("example.com/team/app:v1");
        let imported = store.import(&archive[..]).expect("import");
        let digest = Digest::of_bytes(&manifest);
        assert_eq!(
            imported,
            [ImportedImage {
                manifest: digest.clone(),
                names: vec!["example.com/team/app:v1".into()],
            }]
        );
        assert_eq!(
            store.resolve("example.com/team/app:v1").expect("resolve"),
            Some(digest.clone())
        );
        assert_eq!(store.config(&digest).expect("config"), expected_config());
        let parsed = store.manifest(&digest).expect("manifest");
        let layer = descriptor_digest(parsed.layers()[0].digest()).expect("digest");
        assert!(store.blobs().has(&layer));

        // The index survives a reopen: it is on disk, not in memory.
        let reopened = ImageStore::open(dir.path()).expect("reopen");
        assert_eq!(
            reopened.images().expect("images"),
            BTreeMap::from([("example.com/team/app:v1".to_owned(), digest)])
        );
    }

    #[test]
    fn a_gzip_compressed_oci_archive_imports_the_same_image() {
        let (_dir, store) = store();
        let (archive, manifest) = oci_archive("busybox:1.36");
        let imported = store.import(&gzip(&archive)[..]).expect("import");
        assert_eq!(imported[0].manifest, Digest::of_bytes(&manifest));
        assert_eq!(imported[0].names, ["docker.io/library/busybox:1.36"]);
    }

    /// An OCI layout whose index.json points at a nested image index with a manifest for a
    /// foreign platform and, when `include_ours`, one for this node's platform.
    fn multi_platform_archive(include_ours: bool) -> (Vec<u8>, Vec<u8>) {
        let config = config_json();
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "config": desc("application/vnd.oci.image.config.v1+json", &config),
            "layers": [],
        }))
        .expect("manifest");
        let ours = Arch::default().to_string();
        let foreign = if ours == "s390x" { "ppc64le" } else { "s390x" };
        let mut foreign_desc = desc("application/vnd.oci.image.manifest.v1+json", b"elsewhere");
        foreign_desc["platform"] = json!({"os": "linux", "architecture": foreign});
        let mut our_desc = desc("application/vnd.oci.image.manifest.v1+json", &manifest);
        our_desc["platform"] = json!({"os": Os::default().to_string(), "architecture": ours});
        let mut manifests = vec![foreign_desc];
        if include_ours {
            manifests.push(our_desc);
        }
        let nested = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        }))
        .expect("nested");
        let mut nested_desc = desc("application/vnd.oci.image.index.v1+json", &nested);
        nested_desc["annotations"] = json!({ ANNOTATION_CONTAINERD_NAME: "example.com/multi:1" });
        let index = serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [nested_desc]}))
            .expect("index");
        let archive = tar_of(&[
            file(blob_path(&config), config.clone()),
            file(blob_path(&manifest), manifest.clone()),
            file(blob_path(&nested), nested),
            file("index.json", index),
        ]);
        (archive, manifest)
    }

    #[test]
    fn a_multi_platform_index_imports_the_manifest_for_this_platform() {
        let (_dir, store) = store();
        let (archive, manifest) = multi_platform_archive(true);
        let imported = store.import(&archive[..]).expect("import");
        assert_eq!(imported[0].manifest, Digest::of_bytes(&manifest));
        assert_eq!(imported[0].names, ["example.com/multi:1"]);
        assert_eq!(
            store.config(&imported[0].manifest).expect("config"),
            expected_config()
        );
    }

    #[test]
    fn a_multi_platform_index_without_this_platform_is_refused() {
        let (archive, _) = multi_platform_archive(false);
        assert_rejected(&archive, |e| {
            matches!(e, ArchiveError::NoPlatformManifest { .. })
        });
    }

    #[test]
    fn a_bare_tag_in_ref_name_imports_the_image_without_naming_it() {
        let (_dir, store) = store();
        let (archive, manifest) = oci_archive("latest");
        let imported = store.import(&archive[..]).expect("import");
        assert_eq!(imported[0].manifest, Digest::of_bytes(&manifest));
        assert!(imported[0].names.is_empty());
        assert!(store.images().expect("images").is_empty());
        assert!(store.blobs().has(&Digest::of_bytes(&manifest)));
    }

    #[test]
    fn a_docker_save_archive_is_imported_with_a_synthesised_oci_manifest() {
        let (_dir, store) = store();
        let imported = store.import(&docker_archive()[..]).expect("import");
        assert_eq!(imported.len(), 1);
        assert_eq!(
            imported[0].names,
            [
                "docker.io/library/busybox:latest",
                "registry.local:5000/tools/busybox:1.36"
            ]
        );
        let digest = store.resolve("busybox").expect("resolve").expect("named");
        assert_eq!(digest, imported[0].manifest);
        assert_eq!(store.config(&digest).expect("config"), expected_config());

        let manifest = store.manifest(&digest).expect("manifest");
        let kinds: Vec<_> = manifest
            .layers()
            .iter()
            .map(|l| l.media_type().clone())
            .collect();
        assert_eq!(
            kinds,
            [
                MediaType::ImageLayer,
                MediaType::ImageLayer,
                MediaType::ImageLayerGzip
            ]
        );
        let first = layer("bin/busybox", b"elf");
        assert_eq!(
            manifest.layers()[0].digest().as_ref(),
            Digest::of_bytes(&first).as_str()
        );
        assert_eq!(manifest.layers()[0].digest(), manifest.layers()[1].digest());

        // Importing again yields the same manifest digest: the synthesised manifest is stable.
        let again = store.import(&docker_archive()[..]).expect("reimport");
        assert_eq!(again[0].manifest, digest);
    }

    /// Imports a good image, then `bad`, and checks the error and that the index is untouched.
    fn assert_rejected(bad: &[u8], check: impl Fn(&ArchiveError) -> bool) {
        let (dir, store) = store();
        let (good, _) = oci_archive("example.com/good:1");
        store.import(&good[..]).expect("good import");
        let before = fs::read(dir.path().join(INDEX_FILE)).expect("index");
        let err = store.import(bad).unwrap_err();
        assert!(check(&err), "unexpected error: {err}");
        let after = fs::read(dir.path().join(INDEX_FILE)).expect("index");
        assert_eq!(before, after, "the index is unchanged after: {err}");
    }

    #[test]
    fn an_archive_without_a_manifest_is_refused_and_the_index_is_unchanged() {
        let bad = tar_of(&[file("oci-layout", b"{}".to_vec())]);
        assert_rejected(&bad, |e| matches!(e, ArchiveError::NoManifest));
    }

    #[test]
    fn a_blob_whose_content_does_not_match_its_name_is_refused() {
        let bad = tar_of(&[
            file(blob_path(b"promised"), b"delivered".to_vec()),
            file("index.json", b"{}".to_vec()),
        ]);
        assert_rejected(&bad, |e| {
            matches!(
                e,
                ArchiveError::StoreBlob {
                    source: BlobError::DigestMismatch { .. },
                    ..
                }
            )
        });
    }

    #[test]
    fn a_truncated_archive_is_refused_and_the_index_is_unchanged() {
        let (archive, _) = oci_archive("example.com/cut:1");
        for cut in [archive.len() / 3, archive.len() / 2, archive.len() - 1536] {
            assert_rejected(&archive[..cut], |e| {
                matches!(
                    e,
                    ArchiveError::ReadArchive { .. }
                        | ArchiveError::StoreBlob { .. }
                        | ArchiveError::NoManifest
                )
            });
        }
        assert_rejected(&gzip(&archive)[..100], |e| {
            matches!(
                e,
                ArchiveError::ReadArchive { .. } | ArchiveError::StoreBlob { .. }
            )
        });
    }

    #[test]
    fn an_archive_cut_inside_a_blob_says_it_is_truncated() {
        let big = vec![7; 64 << 10];
        let archive = tar_of(&[file(blob_path(&big), big.clone())]);
        for bad in [archive[..32 << 10].to_vec(), gzip(&archive[..32 << 10])] {
            assert_rejected(&bad, |e| {
                matches!(e, ArchiveError::Truncated { path, size, .. }
                    if *path == blob_path(&big) && *size == 64 << 10)
            });
        }
    }

    #[test]
    fn an_index_naming_a_missing_manifest_is_refused() {
        let missing = json!({
            "schemaVersion": 2,
            "manifests": [desc("application/vnd.oci.image.manifest.v1+json", b"absent")],
        });
        let bad = tar_of(&[file(
            "index.json",
            serde_json::to_vec(&missing).expect("json"),
        )]);
        assert_rejected(&bad, |e| matches!(e, ArchiveError::MissingBlob { .. }));
    }

    #[test]
    fn a_descriptor_with_the_wrong_size_is_refused() {
        let config = config_json();
        let mut config_desc = desc("application/vnd.oci.image.config.v1+json", &config);
        config_desc["size"] = json!(config.len() + 1);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "config": config_desc,
            "layers": [],
        }))
        .expect("manifest");
        let index = json!({
            "schemaVersion": 2,
            "manifests": [desc("application/vnd.oci.image.manifest.v1+json", &manifest)],
        });
        let bad = tar_of(&[
            file(blob_path(&config), config.clone()),
            file(blob_path(&manifest), manifest.clone()),
            file("index.json", serde_json::to_vec(&index).expect("json")),
        ]);
        assert_rejected(&bad, |e| matches!(e, ArchiveError::SizeMismatch { .. }));
    }

    #[test]
    fn a_docker_manifest_naming_a_missing_layer_is_refused() {
        let manifest =
            json!([{ "Config": "c.json", "RepoTags": ["x:1"], "Layers": ["gone/layer.tar"] }]);
        let bad = tar_of(&[
            file("c.json", config_json()),
            file(
                "manifest.json",
                serde_json::to_vec(&manifest).expect("json"),
            ),
        ]);
        assert_rejected(
            &bad,
            |e| matches!(e, ArchiveError::MissingFile { path } if path == "gone/layer.tar"),
        );
    }

    #[test]
    fn malformed_metadata_and_configs_are_typed_errors() {
        let bad = tar_of(&[file("manifest.json", b"not json".to_vec())]);
        assert_rejected(&bad, |e| {
            matches!(e, ArchiveError::ParseDockerManifest { .. })
        });
        let bad = tar_of(&[file("index.json", b"[1,2".to_vec())]);
        assert_rejected(&bad, |e| matches!(e, ArchiveError::ParseIndex { .. }));
        let manifest = json!([{ "Config": "c.json", "Layers": [] }]);
        let bad = tar_of(&[
            file("c.json", b"{\"os\": 5}".to_vec()),
            file(
                "manifest.json",
                serde_json::to_vec(&manifest).expect("json"),
            ),
        ]);
        assert_rejected(&bad, |e| matches!(e, ArchiveError::ParseConfig { .. }));
        let bad = tar_of(&[file("blobs/sha256/not-a-digest", b"x".to_vec())]);
        assert_rejected(&bad, |e| matches!(e, ArchiveError::BlobName { .. }));
    }

    #[test]
    fn a_corrupt_index_file_is_reported_when_the_store_opens() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(INDEX_FILE), b"{broken").expect("write");
        let err = ImageStore::open(dir.path()).unwrap_err();
        assert!(matches!(err, ArchiveError::ReadIndex { .. }), "{err}");
    }

    #[test]
    fn image_names_are_normalised_like_docker_does() {
        let digest = format!("sha256:{}", "a".repeat(64));
        for (input, expected) in [
            ("busybox", "docker.io/library/busybox:latest".to_owned()),
            ("busybox:1.36", "docker.io/library/busybox:1.36".to_owned()),
            ("me/app", "docker.io/me/app:latest".to_owned()),
            (
                "docker.io/library/busybox:1",
                "docker.io/library/busybox:1".to_owned(),
            ),
            ("localhost/app", "localhost/app:latest".to_owned()),
            ("registry:5000/app:2", "registry:5000/app:2".to_owned()),
            (
                &*format!("quay.io/x/y@{digest}"),
                format!("quay.io/x/y@{digest}"),
            ),
        ] {
            assert_eq!(
                normalize_reference(input).expect(input),
                expected,
                "{input}"
            );
        }
        for bad in ["", "has space", "app:", "/app", "app@sha256:nope"] {
            assert!(
                matches!(
                    normalize_reference(bad),
                    Err(ArchiveError::InvalidReference { .. })
                ),
                "{bad:?}"
            );
        }
    }
}
