//! Container root filesystems: image layers unpacked once each into shared directories, and a
//! per-container overlayfs on top of them.
//!
//! A layer directory holds what the layer *changes* in overlayfs' own format, so it can be an
//! overlay lower directory as is: layer N is unpacked through a temporary overlay mount whose
//! lower directories are layers 1..N-1 and whose upper directory becomes layer N. Writing
//! through the mount means the layer's symlinks resolve against what lies below, and its
//! whiteouts and opaque directories become overlay whiteouts, created by the kernel itself.
//! A layer is named by its chain ID (its digest chained with its parents'), so images that
//! share a base share its directories.
//!
//! Layers are unpacked into a staging directory and renamed into place only when complete: a
//! failed or interrupted unpack leaves no half-written layer visible. Each container gets
//! `upper/`, `work/` and the mount point `rootfs/` in its own directory; [`unmount_root`]
//! unmounts it, and the runtime's trash (`crate::trash`) deletes the directory.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::mount::{MntFlags, MsFlags};
use sha2::{Digest as _, Sha256};

use crate::image::archive::{ArchiveError, ImageStore};
use crate::image::blobs::Digest;
use crate::image::layer::{LayerError, apply_layer};

/// Errors while preparing or mounting a root filesystem.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// The image's manifest could not be read.
    #[error("reading the image")]
    Image(#[source] ArchiveError),
    /// Opening a layer blob failed.
    #[error("opening layer blob {digest}")]
    OpenLayer {
        /// The layer.
        digest: Digest,
        /// The cause.
        #[source]
        source: crate::image::blobs::BlobError,
    },
    /// Unpacking a layer failed.
    #[error("unpacking layer {digest}")]
    Unpack {
        /// The layer.
        digest: Digest,
        /// The cause.
        #[source]
        source: LayerError,
    },
    /// A filesystem operation on the layer or container directories failed.
    #[error("{step} {path}")]
    Io {
        /// What was being done.
        step: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Mounting an overlay failed.
    #[error("mounting overlay on {target}")]
    Mount {
        /// The mount point.
        target: PathBuf,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// Unmounting failed.
    #[error("unmounting {target}")]
    Unmount {
        /// The mount point.
        target: PathBuf,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// The overlay options for this many layers exceed what the kernel takes in one mount.
    #[error("image has too many layers for one overlay mount ({layers})")]
    TooManyLayers {
        /// The number of layers.
        layers: usize,
    },
}

fn io_err<'a>(step: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RootfsError + 'a {
    move |source| RootfsError::Io {
        step,
        path: path.to_owned(),
        source,
    }
}

/// The kernel copies mount data into one page.
const MAX_MOUNT_DATA: usize = 4096;

/// Unpacked layers, shared by every container.
#[derive(Debug)]
pub struct LayerStore {
    root: PathBuf,
    /// One unpack at a time in this process: two containers of a new image do the work once.
    unpack_lock: Mutex<()>,
}

impl LayerStore {
    /// Opens (creating) the layer directory `root`.
    pub fn open(root: &Path) -> Result<Self, RootfsError> {
        fs::create_dir_all(root).map_err(io_err("creating", root))?;
        Ok(Self {
            root: root.to_owned(),
            unpack_lock: Mutex::new(()),
        })
    }

    /// The directory of a layer by chain ID (hex), holding `fs/`.
    fn layer_dir(&self, chain: &str) -> PathBuf {
        self.root.join(chain)
    }

    /// Makes sure every layer of the image is unpacked; returns their `fs/` dirs, lowest first.
    pub fn prepare(
        &self,
        images: &ImageStore,
        manifest: &Digest,
    ) -> Result<Vec<PathBuf>, RootfsError> {
        let manifest = images.manifest(manifest).map_err(RootfsError::Image)?;
        let mut chain = String::new();
        let mut dirs: Vec<PathBuf> = Vec::new();
        for layer in manifest.layers() {
            let digest = Digest::parse(layer.digest().as_ref())
                .map_err(|source| RootfsError::Image(ArchiveError::DescriptorDigest { source }))?;
            chain = chain_id(&chain, &digest);
            let dir = self.layer_dir(&chain);
            if !dir.join("fs").is_dir() {
                let _guard = self.unpack_lock.lock().unwrap_or_else(|e| e.into_inner());
                if !dir.join("fs").is_dir() {
                    self.unpack(images, &digest, &dirs, &dir)?;
                }
            }
            dirs.push(dir.join("fs"));
        }
        Ok(dirs)
    }

    fn unpack(
        &self,
        images: &ImageStore,
        digest: &Digest,
        lowers: &[PathBuf],
        dest: &Path,
    ) -> Result<(), RootfsError> {
        let staging = tempfile::Builder::new()
            .prefix(".unpack-")
            .tempdir_in(&self.root)
            .map_err(io_err("creating a staging directory in", &self.root))?;
        let upper = staging.path().join("fs");
        fs::create_dir(&upper).map_err(io_err("creating", &upper))?;
        let blob = images
            .blobs()
            .open(digest)
            .map_err(|source| RootfsError::OpenLayer {
                digest: digest.clone(),
                source,
            })?;
        let unpack_err = |source| RootfsError::Unpack {
            digest: digest.clone(),
            source,
        };
        if lowers.is_empty() {
            apply_layer(blob, &upper).map_err(unpack_err)?;
        } else {
            let work = staging.path().join("work");
            let merged = staging.path().join("merged");
            for d in [&work, &merged] {
                fs::create_dir(d).map_err(io_err("creating", d))?;
            }
            mount_overlay(lowers, Some((&upper, &work)), &merged)?;
            let applied = apply_layer(blob, &merged);
            let unmounted = unmount_path(&merged);
            applied.map_err(unpack_err)?;
            unmounted?;
            fs::remove_dir_all(&work).map_err(io_err("removing", &work))?;
            fs::remove_dir(&merged).map_err(io_err("removing", &merged))?;
        }
        let staged = staging.keep();
        match fs::rename(&staged, dest) {
            Ok(()) => Ok(()),
            // Another process unpacked the same layer first: theirs is as good as ours.
            Err(_) if dest.join("fs").is_dir() => {
                fs::remove_dir_all(&staged).map_err(io_err("removing", &staged))
            }
            Err(source) => {
                let _ = fs::remove_dir_all(&staged);
                Err(RootfsError::Io {
                    step: "renaming the unpacked layer to",
                    path: dest.to_owned(),
                    source,
                })
            }
        }
    }

    /// Removes unpacked layers no image in `keep` (chain-ID lists from [`Self::prepare`]) uses,
    /// and staging leftovers of interrupted unpacks. Returns how many it removed.
    pub fn prune(&self, keep: &[PathBuf]) -> Result<usize, RootfsError> {
        let mut removed = 0;
        let entries = fs::read_dir(&self.root).map_err(io_err("reading", &self.root))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if !keep.iter().any(|k| k.parent() == Some(path.as_path())) {
                fs::remove_dir_all(&path).map_err(io_err("removing", &path))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Chain ID of a layer over its parent chain (hex), as OCI's ChainID but over layer digests.
pub fn chain_id(parent: &str, layer: &Digest) -> String {
    if parent.is_empty() {
        return layer.hex().to_owned();
    }
    hex::encode(Sha256::digest(format!(
        "sha256:{parent} {}",
        layer.as_str()
    )))
}

/// Mounts an overlay of `lowers` (lowest first) at `target`; with `upper_work`, writable.
fn mount_overlay(
    lowers: &[PathBuf],
    upper_work: Option<(&Path, &Path)>,
    target: &Path,
) -> Result<(), RootfsError> {
    let mut lower = String::new();
    for dir in lowers.iter().rev() {
        if !lower.is_empty() {
            lower.push(':');
        }
        lower.push_str(&dir.to_string_lossy());
    }
    let mut data = format!("lowerdir={lower}");
    if let Some((upper, work)) = upper_work {
        data.push_str(&format!(
            ",upperdir={},workdir={}",
            upper.display(),
            work.display()
        ));
    }
    if data.len() >= MAX_MOUNT_DATA {
        return Err(RootfsError::TooManyLayers {
            layers: lowers.len(),
        });
    }
    let mount = |data: &str| {
        nix::mount::mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(data),
        )
    };
    // A container's upper dir does not outlive the container (after a crash the container is
    // made anew), so overlay need not sync it to disk: `volatile` skips those syncs, the one at
    // unmount included (most of an unmount's time). Kernels before 5.10 do not know it.
    let volatile = format!("{data},volatile");
    let mounted = match upper_work {
        Some(_) if volatile.len() < MAX_MOUNT_DATA => match mount(&volatile) {
            Err(nix::Error::EINVAL) => mount(&data),
            other => other,
        },
        _ => mount(&data),
    };
    mounted.map_err(|source| RootfsError::Mount {
        target: target.to_owned(),
        source,
    })
}

fn unmount_path(target: &Path) -> Result<(), RootfsError> {
    match nix::mount::umount2(target, MntFlags::empty()) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => Ok(()),
        // Something still uses it: detach now, the kernel frees it when the last user goes.
        Err(nix::Error::EBUSY) => {
            nix::mount::umount2(target, MntFlags::MNT_DETACH).map_err(|source| {
                RootfsError::Unmount {
                    target: target.to_owned(),
                    source,
                }
            })
        }
        Err(source) => Err(RootfsError::Unmount {
            target: target.to_owned(),
            source,
        }),
    }
}

/// Creates `upper/`, `work/` and `rootfs/` in `container_dir` and mounts the container's
/// overlay on `rootfs/`. An image without layers gets an empty writable root. On error nothing
/// stays mounted; the caller removes the directory.
pub fn mount(lowers: &[PathBuf], container_dir: &Path) -> Result<PathBuf, RootfsError> {
    let upper = container_dir.join("upper");
    let work = container_dir.join("work");
    let rootfs = container_dir.join("rootfs");
    for d in [&upper, &work, &rootfs] {
        fs::create_dir_all(d).map_err(io_err("creating", d))?;
    }
    if lowers.is_empty() {
        // overlay needs a lower dir: an empty one of our own.
        let empty = container_dir.join("empty");
        fs::create_dir_all(&empty).map_err(io_err("creating", &empty))?;
        mount_overlay(&[empty], Some((&upper, &work)), &rootfs)?;
    } else {
        mount_overlay(lowers, Some((&upper, &work)), &rootfs)?;
    }
    Ok(rootfs)
}

/// Unmounts the container's root (`rootfs/`) only, if mounted: the directory itself goes to the
/// runtime's trash.
pub fn unmount_root(container_dir: &Path) -> Result<(), RootfsError> {
    // umount2 says EINVAL for a path that is no mount point: nothing to do.
    unmount_path(&container_dir.join("rootfs"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_depend_on_the_whole_chain() {
        let a = Digest::of_bytes(b"a");
        let b = Digest::of_bytes(b"b");
        let first = chain_id("", &a);
        assert_eq!(first, a.hex());
        let ab = chain_id(&first, &b);
        let bb = chain_id(&chain_id("", &b), &b);
        assert_ne!(ab, bb);
        assert_eq!(ab.len(), 64);
    }
}
