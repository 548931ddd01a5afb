//! Unpacking image layers (tar, optionally gzip-compressed) into a directory.
//!
//! Layers are applied in order into one directory to build a root filesystem, so a layer must be
//! able to delete what lower layers created: OCI whiteouts do that. A `.wh.<name>` entry deletes
//! `<name>`, and a `.wh..wh..opq` entry makes its directory opaque, hiding everything lower layers
//! put there. Whiteouts never delete what the same layer wrote, whatever the tar order.
//!
//! Layers come from the network, so every path is treated as hostile: absolute paths and `..`
//! components are refused, and symlinks met while resolving a parent directory are followed the
//! way the container will see them (an absolute target is relative to the root); a symlink that
//! would climb out of the root is refused. Nothing is ever written outside the destination.
//!
//! A failed layer leaves the destination partly written; callers unpack into a staging directory
//! and rename it into place once every layer applied.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use flate2::read::GzDecoder;

/// Resolving more symlinks than this for one path means a loop (Linux uses the same limit).
const MAX_SYMLINKS: usize = 40;
const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Errors from unpacking a layer, one variant per failing step.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// Reading the first bytes to detect the compression failed.
    #[error("reading the layer header: {source}")]
    DetectCompression {
        /// The cause.
        source: io::Error,
    },
    /// The layer uses a compression this runtime cannot read.
    #[error("unsupported layer compression: {kind}")]
    UnsupportedCompression {
        /// The detected format.
        kind: &'static str,
    },
    /// Reading the next tar header failed: a corrupt or truncated tar or gzip stream.
    #[error("reading layer entries: {source}")]
    ReadEntry {
        /// The cause.
        source: io::Error,
    },
    /// An entry's path is absolute or contains `..`.
    #[error("refusing layer entry {path}: absolute or parent-relative path")]
    UnsafePath {
        /// The path as found in the tar.
        path: PathBuf,
    },
    /// A symlink on the way to an entry points outside the root.
    #[error("refusing layer entry {path}: symlink {link} points outside the root")]
    SymlinkEscape {
        /// The entry's path.
        path: PathBuf,
        /// The symlink (relative to the root) that escapes.
        link: PathBuf,
    },
    /// Resolving an entry's parent went through too many symlinks.
    #[error("refusing layer entry {path}: too many levels of symlinks")]
    SymlinkLoop {
        /// The entry's path.
        path: PathBuf,
    },
    /// Something on the way to an entry exists but is not a directory.
    #[error("layer entry {path}: {parent} is not a directory")]
    NotADirectory {
        /// The entry's path.
        path: PathBuf,
        /// The host path that is not a directory.
        parent: PathBuf,
    },
    /// A whiteout entry names nothing usable (`.wh.`, `.wh..`).
    #[error("invalid whiteout entry {path}")]
    InvalidWhiteout {
        /// The entry's path.
        path: PathBuf,
    },
    /// Inspecting something already on disk failed.
    #[error("inspecting {path}: {source}")]
    Inspect {
        /// The host path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Removing an existing entry (replaced or whited out) failed.
    #[error("removing {path}: {source}")]
    Remove {
        /// The host path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Creating a directory failed.
    #[error("creating directory {path}: {source}")]
    CreateDir {
        /// The host path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Creating a regular file failed.
    #[error("creating file {path}: {source}")]
    CreateFile {
        /// The host path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Copying a file's content out of the layer failed (truncated data, full disk).
    #[error("writing file {path}: {source}")]
    WriteFile {
        /// The host path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Creating a symlink failed.
    #[error("creating symlink {path}: {source}")]
    Symlink {
        /// The host path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Creating a hard link failed (for instance, its target is not in the layer or below).
    #[error("creating hard link {path} to {target}: {source}")]
    Hardlink {
        /// The host path of the new link.
        path: PathBuf,
        /// The host path of the target.
        target: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A hard link's target is not in this layer or below it.
    #[error("layer entry {path} is a hard link to {target}, which does not exist")]
    HardlinkTargetMissing {
        /// The entry's path.
        path: PathBuf,
        /// The link's target as found in the tar.
        target: PathBuf,
    },
    /// A symlink or hard link entry has no link name.
    #[error("layer entry {path} is a link without a target")]
    MissingLinkName {
        /// The entry's path.
        path: PathBuf,
    },
    /// Setting a mode, owner or time failed.
    #[error("setting attributes of {path}: {source}")]
    SetAttributes {
        /// The host path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// What applying a layer did, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LayerStats {
    /// Entries written (directories, files, links).
    pub entries: u64,
    /// Whiteouts (including opaque markers) applied.
    pub whiteouts: u64,
    /// Device nodes and FIFOs skipped: creating them needs `mknod`, which this crate (no unsafe
    /// code) cannot call; the container runtime provides `/dev` itself.
    pub skipped: u64,
}

/// Applies a layer (plain or gzip tar, detected from its first bytes) on top of `dest`.
pub fn apply_layer(reader: impl Read, dest: &Path) -> Result<LayerStats, LayerError> {
    let mut reader = BufReader::new(reader);
    let head = reader
        .fill_buf()
        .map_err(|source| LayerError::DetectCompression { source })?;
    if head.starts_with(&[0x1f, 0x8b]) {
        apply_tar(GzDecoder::new(reader), dest)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Err(LayerError::UnsupportedCompression { kind: "zstd" })
    } else {
        apply_tar(reader, dest)
    }
}

fn apply_tar(reader: impl Read, dest: &Path) -> Result<LayerStats, LayerError> {
    let mut archive = tar::Archive::new(reader);
    let mut stats = LayerStats::default();
    // Host paths this layer created: whiteouts only hide lower layers' content.
    let mut written: HashSet<PathBuf> = HashSet::new();
    let entries = archive
        .entries()
        .map_err(|source| LayerError::ReadEntry { source })?;
    for entry in entries {
        let mut entry = entry.map_err(|source| LayerError::ReadEntry { source })?;
        let raw = entry
            .path()
            .map_err(|source| LayerError::ReadEntry { source })?
            .into_owned();
        let Some(rel) = clean_path(&raw)? else {
            continue; // the root itself ("./")
        };
        // Join with the raw bytes (names need not be UTF-8); the lossy text is only compared.
        let file_name = rel.file_name().map(OsString::from).unwrap_or_default();
        let name = file_name.to_string_lossy();
        let parent_rel = rel.parent().unwrap_or(Path::new(""));

        if name == OPAQUE_MARKER {
            let dir = resolve_dir(dest, parent_rel, &raw, Some(&mut written))?
                .ok_or_else(|| LayerError::InvalidWhiteout { path: raw.clone() })?;
            clear_dir_except(&dir, &written)?;
            stats.whiteouts += 1;
            continue;
        }
        if let Some(target) = name.strip_prefix(WHITEOUT_PREFIX) {
            if target.starts_with(WHITEOUT_PREFIX) {
                continue; // other aufs metadata (.wh..wh.plnk and such): not content
            }
            if target.is_empty() || target == "." || target == ".." || target.contains('/') {
                return Err(LayerError::InvalidWhiteout { path: raw });
            }
            if let Some(dir) = resolve_dir(dest, parent_rel, &raw, None)? {
                let victim = dir.join(OsStr::from_bytes(
                    &file_name.as_bytes()[WHITEOUT_PREFIX.len()..],
                ));
                if !written.contains(&victim) {
                    remove_any(&victim)?;
                }
            }
            stats.whiteouts += 1;
            continue;
        }

        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo
        ) {
            stats.skipped += 1;
            continue;
        }
        if !(kind.is_dir()
            || kind.is_file()
            || kind == tar::EntryType::Continuous
            || kind.is_symlink()
            || kind.is_hard_link())
        {
            continue; // global pax headers and other metadata-only entries
        }
        let dir = resolve_dir(dest, parent_rel, &raw, Some(&mut written))?
            .ok_or_else(|| LayerError::UnsafePath { path: raw.clone() })?;
        let host = dir.join(&file_name);
        let mode = entry
            .header()
            .mode()
            .map_err(|source| LayerError::ReadEntry { source })?
            & 0o7777;
        let owner = (
            entry
                .header()
                .uid()
                .ok()
                .and_then(|u| u32::try_from(u).ok()),
            entry
                .header()
                .gid()
                .ok()
                .and_then(|g| u32::try_from(g).ok()),
        );

        if kind.is_dir() {
            match fs::symlink_metadata(&host) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    remove_any(&host)?;
                    create_dir(&host)?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => create_dir(&host)?,
                Err(source) => return Err(LayerError::Inspect { path: host, source }),
            }
            set_owner(&host, owner, false)?;
            set_mode(&host, mode)?;
        } else if kind.is_symlink() {
            let target = entry
                .link_name()
                .map_err(|source| LayerError::ReadEntry { source })?
                .ok_or_else(|| LayerError::MissingLinkName { path: raw.clone() })?
                .into_owned();
            remove_any(&host)?;
            std::os::unix::fs::symlink(&target, &host).map_err(|source| LayerError::Symlink {
                path: host.clone(),
                source,
            })?;
            set_owner(&host, owner, true)?;
        } else if kind.is_hard_link() {
            let target_raw = entry
                .link_name()
                .map_err(|source| LayerError::ReadEntry { source })?
                .ok_or_else(|| LayerError::MissingLinkName { path: raw.clone() })?
                .into_owned();
            let target_rel = clean_path(&target_raw)?.ok_or_else(|| LayerError::UnsafePath {
                path: target_raw.clone(),
            })?;
            let target_dir = resolve_dir(
                dest,
                target_rel.parent().unwrap_or(Path::new("")),
                &target_raw,
                None,
            )?;
            // Only ever link to something resolved inside the root.
            let target = match (target_dir, target_rel.file_name()) {
                (Some(d), Some(n)) => d.join(n),
                _ => {
                    return Err(LayerError::HardlinkTargetMissing {
                        path: raw,
                        target: target_raw,
                    });
                }
            };
            remove_any(&host)?;
            fs::hard_link(&target, &host).map_err(|source| LayerError::Hardlink {
                path: host.clone(),
                target,
                source,
            })?;
        } else {
            remove_any(&host)?;
            let mut file = File::create(&host).map_err(|source| LayerError::CreateFile {
                path: host.clone(),
                source,
            })?;
            io::copy(&mut entry, &mut file).map_err(|source| LayerError::WriteFile {
                path: host.clone(),
                source,
            })?;
            if let Ok(mtime) = entry.header().mtime() {
                let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
                file.set_modified(time)
                    .map_err(|source| LayerError::SetAttributes {
                        path: host.clone(),
                        source,
                    })?;
            }
            drop(file);
            set_owner(&host, owner, false)?;
            set_mode(&host, mode)?;
        }
        written.insert(host);
        stats.entries += 1;
    }
    // The tar ends at its zero blocks, before gzip's trailer: read the rest so the decoder
    // checks the CRC and length, catching corruption that still inflated to a valid tar.
    io::copy(&mut archive.into_inner(), &mut io::sink())
        .map_err(|source| LayerError::ReadEntry { source })?;
    Ok(stats)
}

/// Normalises an entry path to plain relative components; `None` for the root itself.
fn clean_path(raw: &Path) -> Result<Option<PathBuf>, LayerError> {
    let mut out = PathBuf::new();
    for component in raw.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(LayerError::UnsafePath {
                    path: raw.to_owned(),
                });
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

enum Part {
    Root,
    Up,
    Name(OsString),
}

/// Resolves `rel` (already cleaned) to a host directory inside `root`, following symlinks as
/// the container would see them. Missing directories are created (and recorded as this layer's)
/// when `created` is given, otherwise the result is `None`.
fn resolve_dir(
    root: &Path,
    rel: &Path,
    entry: &Path,
    mut created: Option<&mut HashSet<PathBuf>>,
) -> Result<Option<PathBuf>, LayerError> {
    let mut pending: Vec<Part> = rel
        .components()
        .rev()
        .map(|c| Part::Name(c.as_os_str().to_owned()))
        .collect();
    let mut stack: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        let name = match part {
            Part::Root => {
                stack.clear();
                continue;
            }
            Part::Up => {
                if stack.pop().is_none() {
                    return Err(LayerError::SymlinkEscape {
                        path: entry.to_owned(),
                        link: rel.to_owned(),
                    });
                }
                continue;
            }
            Part::Name(name) => name,
        };
        let mut host = root.to_path_buf();
        host.extend(&stack);
        host.push(&name);
        match fs::symlink_metadata(&host) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(LayerError::SymlinkLoop {
                        path: entry.to_owned(),
                    });
                }
                let target = fs::read_link(&host).map_err(|source| LayerError::Inspect {
                    path: host.clone(),
                    source,
                })?;
                let mut link_rel: PathBuf = stack.iter().collect();
                link_rel.push(&name);
                for component in target.components().rev() {
                    pending.push(match component {
                        Component::RootDir | Component::Prefix(_) => Part::Root,
                        Component::ParentDir => Part::Up,
                        Component::CurDir => continue,
                        Component::Normal(n) => Part::Name(n.to_owned()),
                    });
                }
                // Climbing above the root through this link is an escape, not a clamp: refuse.
                let mut depth = stack.len() as isize;
                for part in pending.iter().rev() {
                    match part {
                        Part::Root => depth = 0,
                        Part::Up => depth -= 1,
                        Part::Name(_) => depth += 1,
                    }
                    if depth < 0 {
                        return Err(LayerError::SymlinkEscape {
                            path: entry.to_owned(),
                            link: link_rel,
                        });
                    }
                }
            }
            Ok(meta) if meta.is_dir() => stack.push(name),
            Ok(_) => {
                return Err(LayerError::NotADirectory {
                    path: entry.to_owned(),
                    parent: host,
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let Some(created) = created.as_deref_mut() else {
                    return Ok(None);
                };
                create_dir(&host)?;
                created.insert(host);
                stack.push(name);
            }
            Err(source) => return Err(LayerError::Inspect { path: host, source }),
        }
    }
    let mut host = root.to_path_buf();
    host.extend(&stack);
    Ok(Some(host))
}

fn create_dir(path: &Path) -> Result<(), LayerError> {
    fs::create_dir(path).map_err(|source| LayerError::CreateDir {
        path: path.to_owned(),
        source,
    })
}

/// Removes whatever is at `path` (file, symlink or whole directory); absent is fine.
fn remove_any(path: &Path) -> Result<(), LayerError> {
    let result = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
    };
    result.map_err(|source| LayerError::Remove {
        path: path.to_owned(),
        source,
    })
}

/// Empties `dir` of everything lower layers put there, keeping what this layer wrote.
fn clear_dir_except(dir: &Path, keep: &HashSet<PathBuf>) -> Result<(), LayerError> {
    let read = fs::read_dir(dir).map_err(|source| LayerError::Inspect {
        path: dir.to_owned(),
        source,
    })?;
    for child in read {
        let child = child.map_err(|source| LayerError::Inspect {
            path: dir.to_owned(),
            source,
        })?;
        let path = child.path();
        if !keep.contains(&path) {
            remove_any(&path)?;
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<(), LayerError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|source| {
        LayerError::SetAttributes {
            path: path.to_owned(),
            source,
        }
    })
}

/// Applies the entry's owner. Without privilege (a rootless unpack, tests) chown fails with
/// EPERM; the files then keep the unpacking user's ownership rather than failing the layer.
fn set_owner(
    path: &Path,
    (uid, gid): (Option<u32>, Option<u32>),
    link: bool,
) -> Result<(), LayerError> {
    let result = if link {
        std::os::unix::fs::lchown(path, uid, gid)
    } else {
        std::os::unix::fs::chown(path, uid, gid)
    };
    match result {
        Err(e) if e.kind() != io::ErrorKind::PermissionDenied => Err(LayerError::SetAttributes {
            path: path.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;

    /// One tar entry for the in-memory test layers.
    enum E<'a> {
        Dir(&'a str, u32),
        File(&'a str, &'a [u8], u32),
        Symlink(&'a str, &'a str),
        Hardlink(&'a str, &'a str),
        Fifo(&'a str),
    }

    /// Builds a tar with raw header names, so tests can write the hostile paths `tar::Builder`'s
    /// own path checks would refuse.
    fn tar_of(entries: &[E<'_>]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for entry in entries {
            let mut header = tar::Header::new_gnu();
            let (name, kind, mode, data, link): (&str, tar::EntryType, u32, &[u8], Option<&str>) =
                match *entry {
                    E::Dir(n, m) => (n, tar::EntryType::Directory, m, b"", None),
                    E::File(n, d, m) => (n, tar::EntryType::Regular, m, d, None),
                    E::Symlink(n, t) => (n, tar::EntryType::Symlink, 0o777, b"", Some(t)),
                    E::Hardlink(n, t) => (n, tar::EntryType::Link, 0o644, b"", Some(t)),
                    E::Fifo(n) => (n, tar::EntryType::Fifo, 0o644, b"", None),
                };
            let raw = &mut header.as_old_mut().name;
            raw[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(link) = link {
                let raw = &mut header.as_old_mut().linkname;
                raw[..link.len()].copy_from_slice(link.as_bytes());
            }
            header.set_entry_type(kind);
            header.set_mode(mode);
            header.set_size(data.len() as u64);
            header.set_mtime(1_700_000_000);
            header.set_uid(0);
            header.set_gid(0);
            header.set_cksum();
            builder.append(&header, data).expect("append");
        }
        builder.into_inner().expect("finish")
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).expect("gzip");
        enc.finish().expect("gzip")
    }

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).expect("stat").mode() & 0o7777
    }

    /// A scratch directory holding the root at `<tmp>/root`, so tests can check nothing was
    /// written next to it.
    fn scratch() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("root");
        fs::create_dir(&root).expect("root");
        (tmp, root)
    }

    fn only_root_exists(tmp: &tempfile::TempDir) -> bool {
        let names: Vec<_> = fs::read_dir(tmp.path())
            .expect("read")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names == [OsString::from("root")]
    }

    #[test]
    fn files_directories_symlinks_and_hardlinks_are_unpacked_with_their_modes() {
        let (_tmp, root) = scratch();
        let layer = tar_of(&[
            E::Dir("./", 0o755),
            E::Dir("bin/", 0o755),
            E::File("bin/tool", b"#!/bin/sh\n", 0o4755),
            E::File("etc/secret", b"s3cret", 0o600),
            E::Symlink("usr/bin", "../bin"),
            E::Hardlink("bin/tool2", "bin/tool"),
            E::Fifo("run/fifo"),
        ]);
        let stats = apply_layer(&layer[..], &root).expect("apply");
        assert_eq!(stats.entries, 5);
        assert_eq!(stats.skipped, 1);
        assert_eq!(
            fs::read(root.join("bin/tool")).expect("tool"),
            b"#!/bin/sh\n"
        );
        assert_eq!(mode_of(&root.join("bin/tool")), 0o4755);
        assert_eq!(mode_of(&root.join("etc/secret")), 0o600);
        assert_eq!(
            fs::read_link(root.join("usr/bin")).expect("link"),
            Path::new("../bin")
        );
        let tool = fs::metadata(root.join("bin/tool")).expect("tool");
        let tool2 = fs::metadata(root.join("bin/tool2")).expect("tool2");
        assert_eq!(tool.ino(), tool2.ino(), "a hard link shares the inode");
        assert_eq!(tool.mtime(), 1_700_000_000);
        assert!(!root.join("run/fifo").exists());
    }

    #[test]
    fn a_gzip_layer_is_detected_by_its_magic_bytes() {
        let (_tmp, root) = scratch();
        let layer = gzip(&tar_of(&[E::File("hello.txt", b"hi", 0o644)]));
        apply_layer(&layer[..], &root).expect("apply");
        assert_eq!(fs::read(root.join("hello.txt")).expect("read"), b"hi");
    }

    #[test]
    fn whiteouts_in_an_upper_layer_delete_files_and_directories_from_lower_layers() {
        let (_tmp, root) = scratch();
        let lower = tar_of(&[
            E::File("etc/keep", b"k", 0o644),
            E::File("etc/gone", b"g", 0o644),
            E::Dir("var/cache/", 0o755),
            E::File("var/cache/big", b"b", 0o644),
            E::File("tmp/replaced", b"old", 0o644),
        ]);
        // The upper layer also re-creates `tmp/replaced` before whiting it out in tar order:
        // a whiteout must only hide lower layers, never the same layer's content.
        let upper = tar_of(&[
            E::File("tmp/replaced", b"new", 0o644),
            E::File("etc/.wh.gone", b"", 0o644),
            E::File("var/.wh.cache", b"", 0o644),
            E::File("tmp/.wh.replaced", b"", 0o644),
            E::File("nowhere/.wh.absent", b"", 0o644),
        ]);
        apply_layer(&lower[..], &root).expect("lower");
        let stats = apply_layer(&upper[..], &root).expect("upper");
        assert_eq!(stats.whiteouts, 4);
        assert!(root.join("etc/keep").exists());
        assert!(!root.join("etc/gone").exists());
        assert!(
            !root.join("etc/.wh.gone").exists(),
            "whiteout markers are not unpacked"
        );
        assert!(!root.join("var/cache").exists());
        assert!(root.join("var").is_dir());
        assert_eq!(fs::read(root.join("tmp/replaced")).expect("read"), b"new");
        assert!(!root.join("nowhere").exists(), "a whiteout creates nothing");
    }

    #[test]
    fn an_opaque_directory_hides_everything_lower_layers_put_in_it() {
        let (_tmp, root) = scratch();
        let lower = tar_of(&[
            E::File("app/old.conf", b"o", 0o644),
            E::File("app/sub/deep", b"d", 0o644),
            E::File("other/stays", b"s", 0o644),
        ]);
        let upper = tar_of(&[
            E::Dir("app/", 0o750),
            E::File("app/before.conf", b"b", 0o644),
            E::File("app/.wh..wh..opq", b"", 0o644),
            E::File("app/after.conf", b"a", 0o644),
        ]);
        apply_layer(&lower[..], &root).expect("lower");
        apply_layer(&upper[..], &root).expect("upper");
        let mut names: Vec<_> = fs::read_dir(root.join("app"))
            .expect("read")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf8"))
            .collect();
        names.sort();
        assert_eq!(names, ["after.conf", "before.conf"]);
        assert_eq!(mode_of(&root.join("app")), 0o750);
        assert!(root.join("other/stays").exists());
    }

    #[test]
    fn parent_relative_and_absolute_paths_are_refused_and_nothing_is_written_outside() {
        for (path, layer) in [
            ("../outside", tar_of(&[E::File("../outside", b"x", 0o644)])),
            (
                "a/../../outside",
                tar_of(&[E::File("a/../../outside", b"x", 0o644)]),
            ),
            ("/outside", tar_of(&[E::File("/outside", b"x", 0o644)])),
            (
                "hardlink ../outside",
                tar_of(&[E::Hardlink("ok", "../outside")]),
            ),
        ] {
            let (tmp, root) = scratch();
            let err = apply_layer(&layer[..], &root).unwrap_err();
            assert!(
                matches!(err, LayerError::UnsafePath { .. }),
                "{path}: {err}"
            );
            assert!(only_root_exists(&tmp), "{path}");
        }
    }

    #[test]
    fn a_symlink_that_climbs_out_of_the_root_is_refused() {
        let (tmp, root) = scratch();
        let layer = tar_of(&[
            E::Symlink("evil", "../.."),
            E::File("evil/outside", b"x", 0o644),
        ]);
        let err = apply_layer(&layer[..], &root).unwrap_err();
        assert!(
            matches!(&err, LayerError::SymlinkEscape { link, .. } if link == Path::new("evil")),
            "{err}"
        );
        assert!(err.to_string().contains("evil/outside"), "{err}");
        assert!(only_root_exists(&tmp));
    }

    #[test]
    fn an_absolute_symlink_is_followed_inside_the_root_as_the_container_sees_it() {
        let (tmp, root) = scratch();
        let layer = tar_of(&[
            E::Dir("usr/lib/", 0o755),
            E::Symlink("lib", "/usr/lib"),
            E::File("lib/libc.so", b"elf", 0o755),
            E::Symlink("loop", "loop"),
        ]);
        apply_layer(&layer[..], &root).expect("apply");
        assert_eq!(
            fs::read(root.join("usr/lib/libc.so")).expect("read"),
            b"elf"
        );
        assert!(only_root_exists(&tmp));

        let looping = tar_of(&[E::File("loop/x", b"x", 0o644)]);
        let err = apply_layer(&looping[..], &root).unwrap_err();
        assert!(matches!(err, LayerError::SymlinkLoop { .. }), "{err}");
    }

    #[test]
    fn a_hard_link_to_a_missing_target_is_an_error() {
        let (_tmp, root) = scratch();
        let layer = tar_of(&[E::Hardlink("bin/sh", "bin/busybox")]);
        let err = apply_layer(&layer[..], &root).unwrap_err();
        assert!(matches!(err, LayerError::Hardlink { .. }), "{err}");
        let layer = tar_of(&[E::Hardlink("bin/sh", "nodir/busybox")]);
        let err = apply_layer(&layer[..], &root).unwrap_err();
        assert!(
            matches!(err, LayerError::HardlinkTargetMissing { .. }),
            "{err}"
        );
    }

    #[test]
    fn a_truncated_or_corrupt_gzip_layer_is_an_error_not_a_panic() {
        let big: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let layer = gzip(&tar_of(&[E::File("big", &big, 0o644)]));

        let (_tmp, root) = scratch();
        let truncated = &layer[..layer.len() / 2];
        let err = apply_layer(truncated, &root).unwrap_err();
        assert!(
            matches!(
                err,
                LayerError::ReadEntry { .. } | LayerError::WriteFile { .. }
            ),
            "{err}"
        );

        let (_tmp, root) = scratch();
        let mut corrupt = layer.clone();
        let middle = corrupt.len() / 2;
        for byte in &mut corrupt[middle..middle + 64] {
            *byte ^= 0x5a;
        }
        let err = apply_layer(&corrupt[..], &root).unwrap_err();
        assert!(
            matches!(
                err,
                LayerError::ReadEntry { .. } | LayerError::WriteFile { .. }
            ),
            "{err}"
        );

        let (_tmp, root) = scratch();
        let header_only = &layer[..10];
        assert!(apply_layer(header_only, &root).is_err());
    }

    #[test]
    fn a_zstd_layer_is_reported_as_unsupported() {
        let (_tmp, root) = scratch();
        let err = apply_layer(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0][..], &root).unwrap_err();
        assert!(
            matches!(err, LayerError::UnsupportedCompression { kind: "zstd" }),
            "{err}"
        );
    }

    #[test]
    fn names_that_are_not_utf8_are_kept_byte_for_byte_and_can_be_whited_out() {
        let (_tmp, root) = scratch();
        let mut lower = tar::Builder::new(Vec::new());
        let mut upper = tar::Builder::new(Vec::new());
        for (builder, name) in [
            (&mut lower, &b"caf\xe9"[..]),
            (&mut upper, &b".wh.caf\xe9"[..]),
        ] {
            let mut header = tar::Header::new_gnu();
            header.as_old_mut().name[..name.len()].copy_from_slice(name);
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(0o644);
            header.set_size(0);
            header.set_cksum();
            builder.append(&header, &b""[..]).expect("append");
        }
        let path = root.join(OsStr::from_bytes(b"caf\xe9"));
        apply_layer(&lower.into_inner().expect("tar")[..], &root).expect("lower");
        assert!(path.exists());
        apply_layer(&upper.into_inner().expect("tar")[..], &root).expect("upper");
        assert!(!path.exists());
    }

    #[test]
    fn invalid_whiteouts_are_refused() {
        let (_tmp, root) = scratch();
        let layer = tar_of(&[E::File("etc/.wh.", b"", 0o644)]);
        let err = apply_layer(&layer[..], &root).unwrap_err();
        assert!(matches!(err, LayerError::InvalidWhiteout { .. }), "{err}");
    }
}
