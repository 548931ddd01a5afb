//! A content-addressed blob store: every manifest, config and layer lives once under
//! `<root>/blobs/sha256/<hex>`, named by the sha256 of its bytes.
//!
//! Naming blobs by their digest is what lets images share layers and lets a reader trust what it
//! opens: a blob only becomes visible after its bytes were hashed while being written and the
//! hash matched the digest the caller expected. Writes go to a temporary file in the same
//! directory tree, are fsynced, and are then renamed into place, so a crash or a bad download
//! never leaves a truncated or wrong blob under a digest name.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// Errors from the blob store, one variant per failing step.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The digest string is not `sha256:` followed by 64 lowercase hex digits.
    #[error("invalid digest {digest:?}: expected sha256:<64 lowercase hex digits>")]
    InvalidDigest {
        /// The rejected text.
        digest: String,
    },
    /// Creating one of the store's directories failed.
    #[error("creating blob directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Creating the temporary file a blob is written through failed.
    #[error("creating temporary blob file in {path}: {source}")]
    CreateTemp {
        /// The directory the temporary file was to go in.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Reading the blob's content from the caller's reader failed.
    #[error("reading content for blob {digest}: {source}")]
    ReadContent {
        /// The digest being written (or `sha256:?` when it is computed).
        digest: String,
        /// The cause.
        source: io::Error,
    },
    /// Writing or fsyncing the temporary file failed (for instance, a full disk).
    #[error("writing temporary blob file {path}: {source}")]
    WriteTemp {
        /// The temporary file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The content's sha256 is not the digest the caller asked to store it under.
    #[error("digest mismatch: expected {expected}, content hashes to {actual}")]
    DigestMismatch {
        /// The digest the caller expected.
        expected: Digest,
        /// The digest of the bytes actually read.
        actual: Digest,
    },
    /// Renaming the finished temporary file into place failed.
    #[error("moving blob {digest} into place at {path}: {source}")]
    Commit {
        /// The blob's digest.
        digest: Digest,
        /// The final path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Opening or statting a stored blob failed (including: it does not exist).
    #[error("opening blob {digest}: {source}")]
    Open {
        /// The blob's digest.
        digest: Digest,
        /// The cause.
        source: io::Error,
    },
    /// Removing a stored blob failed.
    #[error("removing blob {digest}: {source}")]
    Remove {
        /// The blob's digest.
        digest: Digest,
        /// The cause.
        source: io::Error,
    },
}

/// A validated `sha256:<hex>` content digest.
///
/// Only sha256 is accepted: it is what every registry and archive format in use produces, and a
/// single algorithm keeps the on-disk layout and the comparisons simple.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    /// Parses `sha256:<64 lowercase hex>`.
    pub fn parse(text: &str) -> Result<Self, BlobError> {
        match text.strip_prefix("sha256:") {
            Some(hex) if is_sha256_hex(hex) => Ok(Self(text.to_owned())),
            _ => Err(BlobError::InvalidDigest {
                digest: text.to_owned(),
            }),
        }
    }

    /// Builds a digest from the 64 hex digits alone, as blob file names store them.
    pub fn from_hex(hex: &str) -> Result<Self, BlobError> {
        Self::parse(&format!("sha256:{hex}"))
    }

    /// The sha256 digest of `bytes`.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        Self(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
    }

    /// The hex part, without the algorithm prefix.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    /// The full `sha256:<hex>` text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_sha256_hex(hex: &str) -> bool {
    hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl TryFrom<String> for Digest {
    type Error = BlobError;
    fn try_from(text: String) -> Result<Self, BlobError> {
        Self::parse(&text)
    }
}

impl From<Digest> for String {
    fn from(digest: Digest) -> String {
        digest.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The blob store rooted at one directory.
#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
    tmp: PathBuf,
}

impl BlobStore {
    /// Opens (creating if needed) the store under `root`, using `<root>/blobs/sha256` for blobs
    /// and `<root>/blobs/tmp` for in-flight writes (same filesystem, so the final rename is
    /// atomic).
    pub fn new(root: &Path) -> Result<Self, BlobError> {
        let dir = root.join("blobs").join("sha256");
        let tmp = root.join("blobs").join("tmp");
        for path in [&dir, &tmp] {
            fs::create_dir_all(path).map_err(|source| BlobError::CreateDir {
                path: path.clone(),
                source,
            })?;
        }
        Ok(Self { dir, tmp })
    }

    /// Where the blob with `digest` lives (whether or not it exists).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
    }

    /// Whether the blob is stored.
    pub fn has(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// The stored blob's size in bytes.
    pub fn size(&self, digest: &Digest) -> Result<u64, BlobError> {
        fs::metadata(self.path(digest))
            .map(|m| m.len())
            .map_err(|source| BlobError::Open {
                digest: digest.clone(),
                source,
            })
    }

    /// Opens the stored blob for reading.
    pub fn open(&self, digest: &Digest) -> Result<File, BlobError> {
        File::open(self.path(digest)).map_err(|source| BlobError::Open {
            digest: digest.clone(),
            source,
        })
    }

    /// Reads a whole (small) blob, such as a manifest or config, into memory.
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>, BlobError> {
        fs::read(self.path(digest)).map_err(|source| BlobError::Open {
            digest: digest.clone(),
            source,
        })
    }

    /// Removes the blob; returns whether it existed.
    pub fn remove(&self, digest: &Digest) -> Result<bool, BlobError> {
        match fs::remove_file(self.path(digest)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(BlobError::Remove {
                digest: digest.clone(),
                source,
            }),
        }
    }

    /// Stores the content of `reader` under `expected`, verifying the digest while writing.
    /// Returns the size. On a mismatch (or any failure) nothing becomes visible under the digest.
    ///
    /// A blob already stored is not read or rewritten: its content is known to match, and this
    /// is what makes a layer shared by many images cost one copy and one download.
    pub fn write(&self, expected: &Digest, reader: impl Read) -> Result<u64, BlobError> {
        if let Ok(meta) = fs::metadata(self.path(expected))
            && meta.is_file()
        {
            return Ok(meta.len());
        }
        let (actual, size) = self.write_inner(Some(expected), reader)?;
        debug_assert_eq!(&actual, expected);
        Ok(size)
    }

    /// Stores the content of `reader` under whatever digest it hashes to, for content whose
    /// digest nobody told us in advance (a `docker save` layer, a manifest we synthesise).
    pub fn put(&self, reader: impl Read) -> Result<(Digest, u64), BlobError> {
        self.write_inner(None, reader)
    }

    fn write_inner(
        &self,
        expected: Option<&Digest>,
        mut reader: impl Read,
    ) -> Result<(Digest, u64), BlobError> {
        let label = expected.map_or_else(|| "sha256:?".to_owned(), ToString::to_string);
        let mut tmp =
            tempfile::NamedTempFile::new_in(&self.tmp).map_err(|source| BlobError::CreateTemp {
                path: self.tmp.clone(),
                source,
            })?;
        let write_err = |path: &Path, source| BlobError::WriteTemp {
            path: path.to_owned(),
            source,
        };
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(BlobError::ReadContent {
                        digest: label,
                        source,
                    });
                }
            };
            hasher.update(&buf[..n]);
            tmp.write_all(&buf[..n])
                .map_err(|e| write_err(tmp.path(), e))?;
            size += n as u64;
        }
        let actual = Digest(format!("sha256:{}", hex::encode(hasher.finalize())));
        if let Some(expected) = expected
            && *expected != actual
        {
            // Dropping `tmp` deletes the temporary file: nothing becomes visible.
            return Err(BlobError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        tmp.as_file()
            .sync_all()
            .map_err(|e| write_err(tmp.path(), e))?;
        let path = self.path(&actual);
        tmp.persist(&path).map_err(|e| BlobError::Commit {
            digest: actual.clone(),
            path: path.clone(),
            source: e.error,
        })?;
        sync_dir(&self.dir).map_err(|source| BlobError::Commit {
            digest: actual.clone(),
            path,
            source,
        })?;
        Ok((actual, size))
    }
}

/// Fsyncs a directory so a rename into it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, BlobStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BlobStore::new(dir.path()).expect("store");
        (dir, store)
    }

    #[test]
    fn a_blob_written_under_its_digest_can_be_found_opened_and_removed() {
        let (_dir, store) = store();
        let digest = Digest::of_bytes(b"hello");
        assert!(!store.has(&digest));
        assert_eq!(store.write(&digest, &b"hello"[..]).expect("write"), 5);
        assert!(store.has(&digest));
        assert_eq!(store.size(&digest).expect("size"), 5);
        let mut content = String::new();
        store
            .open(&digest)
            .expect("open")
            .read_to_string(&mut content)
            .expect("read");
        assert_eq!(content, "hello");
        assert!(
            store
                .path(&digest)
                .ends_with(format!("blobs/sha256/{}", digest.hex()))
        );
        assert!(store.remove(&digest).expect("remove"));
        assert!(!store.has(&digest));
        assert!(!store.remove(&digest).expect("second remove"));
    }

    #[test]
    fn a_digest_mismatch_is_an_error_and_leaves_nothing_visible() {
        let (dir, store) = store();
        let claimed = Digest::of_bytes(b"what the registry promised");
        let err = store.write(&claimed, &b"something else"[..]).unwrap_err();
        match err {
            BlobError::DigestMismatch { expected, actual } => {
                assert_eq!(expected, claimed);
                assert_eq!(actual, Digest::of_bytes(b"something else"));
            }
            other => panic!("unexpected error {other}"),
        }
        assert!(!store.has(&claimed));
        assert!(!store.has(&Digest::of_bytes(b"something else")));
        let leftovers = fs::read_dir(dir.path().join("blobs/tmp"))
            .expect("tmp")
            .count();
        assert_eq!(leftovers, 0, "the temporary file is cleaned up");
    }

    #[test]
    fn writing_a_blob_that_is_already_stored_keeps_the_stored_copy() {
        let (_dir, store) = store();
        let digest = Digest::of_bytes(b"shared layer");
        store.write(&digest, &b"shared layer"[..]).expect("first");
        assert_eq!(store.write(&digest, &b""[..]).expect("second"), 12);
        assert_eq!(store.read(&digest).expect("read"), b"shared layer");
    }

    #[test]
    fn put_stores_content_under_the_digest_it_hashes_to() {
        let (_dir, store) = store();
        let (digest, size) = store.put(&b"layer bytes"[..]).expect("put");
        assert_eq!(digest, Digest::of_bytes(b"layer bytes"));
        assert_eq!(size, 11);
        assert_eq!(store.read(&digest).expect("read"), b"layer bytes");
    }

    #[test]
    fn a_failing_reader_is_reported_and_stores_nothing() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("connection reset"))
            }
        }
        let (_dir, store) = store();
        let digest = Digest::of_bytes(b"x");
        let err = store.write(&digest, Failing).unwrap_err();
        assert!(matches!(err, BlobError::ReadContent { .. }), "{err}");
        assert!(!store.has(&digest));
    }

    #[test]
    fn opening_a_missing_blob_names_its_digest() {
        let (_dir, store) = store();
        let digest = Digest::of_bytes(b"absent");
        let err = store.open(&digest).unwrap_err();
        assert!(err.to_string().contains(digest.as_str()), "{err}");
    }

    #[test]
    fn digests_are_validated() {
        let hex = "a".repeat(64);
        assert!(Digest::parse(&format!("sha256:{hex}")).is_ok());
        assert!(Digest::from_hex(&hex).is_ok());
        for bad in [
            "sha256:abc".to_owned(),
            format!("sha512:{hex}"),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:../../{}", "a".repeat(58)),
            hex.clone(),
        ] {
            assert!(
                matches!(Digest::parse(&bad), Err(BlobError::InvalidDigest { .. })),
                "{bad}"
            );
        }
        let json = serde_json::to_string(&Digest::from_hex(&hex).expect("digest")).expect("ser");
        assert_eq!(json, format!("\"sha256:{hex}\""));
        assert!(serde_json::from_str::<Digest>("\"sha256:nope\"").is_err());
    }
}
