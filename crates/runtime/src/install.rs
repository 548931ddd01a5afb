//! Writes an executable that `rkube` carries inside itself (the small `rkube-shim`) to disk, so
//! the runtime can start it.
//!
//! rkube ships as one binary, as k3s does; like k3s (which unpacks its helpers to
//! `<data-dir>/data/<hash>/bin`), the runtime writes an embedded executable to
//! `<data-dir>/data/<sha256 of its bytes>/bin/<name>` when it starts. The content-addressed
//! directory means an upgraded `rkube` writes its new helper beside the old one, which the
//! shims and pod holders still running keep using until their workloads end; a second start of
//! the same `rkube` finds its helper in place. A file already there is used only if it is a
//! regular file owned by this user, mode 0755, whose bytes hash to the name; anything else
//! (a crash half way, a modified file) is replaced: written to a temporary file, synced, made
//! 0755 and renamed over it, so the path never names a partial executable.
//!
//! The digest comes from the build (`build.rs` hashes what it embeds), so a start that finds
//! the helper in place never reads the embedded bytes. Writing them reads them from this
//! process's executable *file* (where `/proc/self/maps` says they are mapped from) rather than
//! through memory: touching the 1 MB through the mapping would leave every page of it resident
//! in the long-running runtime, as k3s likewise reads its payload from its own file. The bytes
//! written are hashed on the way and must match the digest; if they cannot be found in the file
//! (not mapped from it, or a mismatch) they are copied from memory instead.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// The mode of an installed executable.
const MODE: u32 = 0o755;

/// Installing an executable failed.
#[derive(Debug, thiserror::Error)]
#[error("{step} {path}")]
pub struct InstallError {
    /// What was being done.
    pub step: &'static str,
    /// To which file or directory.
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: io::Error,
}

fn fail(step: &'static str, path: &Path) -> impl FnOnce(io::Error) -> InstallError {
    let path = path.to_owned();
    move |source| InstallError { step, path, source }
}

/// Makes sure `<data_dir>/data/<sha256>/bin/<name>` holds exactly `bytes`, executable, and
/// returns its path. `sha256` is the lowercase hex digest of `bytes`, computed when they were
/// embedded; `bytes` are only read if the file must be written.
pub fn install_executable(
    data_dir: &Path,
    name: &str,
    bytes: &[u8],
    sha256: &str,
) -> Result<PathBuf, InstallError> {
    if sha256.len() != 64
        || !sha256
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(InstallError {
            step: "installing",
            path: data_dir.join("data").join(sha256).join("bin").join(name),
            source: io::Error::other("the digest is not 64 lowercase hex digits"),
        });
    }
    let bin = data_dir.join("data").join(sha256).join("bin");
    let path = bin.join(name);
    if is_installed(&path, bytes.len() as u64, sha256) {
        return Ok(path);
    }
    fs::create_dir_all(&bin).map_err(fail("creating", &bin))?;
    // Named per process: two runtimes starting at once on one data directory do not write
    // into each other's file (the last rename wins; both wrote the same bytes).
    let tmp = bin.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(MODE)
            .open(&tmp)?;
        let from_file = match exe_offset(bytes) {
            Some(offset) => copy_from_exe(offset, bytes.len() as u64, &mut file)
                .is_ok_and(|digest| digest == sha256),
            None => false,
        };
        if !from_file {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            file.write_all(bytes)?;
        }
        // The mode given to open is masked by the umask.
        file.set_permissions(fs::Permissions::from_mode(MODE))?;
        file.sync_all()
    })();
    if let Err(source) = written {
        let _ = fs::remove_file(&tmp);
        return Err(InstallError {
            step: "writing",
            path: tmp,
            source,
        });
    }
    if let Err(source) = fs::rename(&tmp, &path) {
        let _ = fs::remove_file(&tmp);
        return Err(InstallError {
            step: "renaming into place",
            path,
            source,
        });
    }
    File::open(&bin)
        .and_then(|d| d.sync_all())
        .map_err(fail("syncing", &bin))?;
    if !is_installed(&path, bytes.len() as u64, sha256) {
        return Err(InstallError {
            step: "verifying",
            path,
            source: io::Error::other("the file written does not hash to its digest"),
        });
    }
    Ok(path)
}

/// Whether `path` is a regular file owned by this user, mode 0755, `len` bytes long, whose
/// sha256 is `sha256`.
fn is_installed(path: &Path, len: u64, sha256: &str) -> bool {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return false;
    };
    if !meta.file_type().is_file()
        || meta.mode() & 0o7777 != MODE
        || meta.uid() != nix::unistd::geteuid().as_raw()
        || meta.len() != len
    {
        return false;
    }
    File::open(path).and_then(|f| hash(f, len)).ok().as_deref() == Some(sha256)
}

/// The hex sha256 of the first `len` bytes `from` gives (fewer is an error).
fn hash(from: impl Read, len: u64) -> io::Result<String> {
    let mut hasher = Sha256::new();
    copy_hashing(from, len, &mut hasher, &mut io::sink())?;
    Ok(hex::encode(hasher.finalize()))
}

/// Copies exactly `len` bytes from `from` to `to`, hashing them.
fn copy_hashing(
    from: impl Read,
    len: u64,
    hasher: &mut Sha256,
    to: &mut impl Write,
) -> io::Result<()> {
    let mut from = from.take(len);
    let mut buf = vec![0u8; 64 * 1024];
    let mut copied = 0;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        to.write_all(&buf[..n])?;
        copied += n as u64;
    }
    if copied != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{copied} of {len} bytes"),
        ));
    }
    Ok(())
}

/// Copies `len` bytes at `offset` of this process's executable to `to`; their hex sha256.
fn copy_from_exe(offset: u64, len: u64, to: &mut File) -> io::Result<String> {
    let mut exe = File::open("/proc/self/exe")?;
    exe.seek(SeekFrom::Start(offset))?;
    let mut hasher = Sha256::new();
    copy_hashing(exe, len, &mut hasher, to)?;
    Ok(hex::encode(hasher.finalize()))
}

/// Where in this process's executable file `bytes` are, if they lie in one mapping of it
/// (`/proc/self/maps`: `start-end perms offset dev inode path`).
fn exe_offset(bytes: &[u8]) -> Option<u64> {
    let start = bytes.as_ptr() as u64;
    let end = start.checked_add(bytes.len() as u64)?;
    let exe = fs::metadata("/proc/self/exe").ok()?;
    let maps = fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|line| {
        let mut fields = line.split_ascii_whitespace();
        let (from, to) = fields.next()?.split_once('-')?;
        let (from, to) = (
            u64::from_str_radix(from, 16).ok()?,
            u64::from_str_radix(to, 16).ok()?,
        );
        let _perms = fields.next()?;
        let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
        let _dev = fields.next()?;
        let inode: u64 = fields.next()?.parse().ok()?;
        (from <= start && end <= to && inode == exe.ino()).then(|| offset + (start - from))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Static, so it lies in this test binary's read-only data, mapped from its file.
    const BYTES: &[u8] = b"#!/bin/sh\necho installed\n";
    const SHA256: &str = "b71a5886df504d489c60289ab32076e8b66c35a9272f5309142edc19443c8068";

    #[test]
    fn installs_once_under_its_digest_with_mode_0755() {
        let dir = tempfile::tempdir().unwrap();
        let path = install_executable(dir.path(), "tool", BYTES, SHA256).unwrap();
        assert_eq!(path, dir.path().join(format!("data/{SHA256}/bin/tool")));
        assert_eq!(fs::read(&path).unwrap(), BYTES);
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o755);
        let out = std::process::Command::new(&path).output().unwrap();
        assert_eq!(out.stdout, b"installed\n");
        // The second install finds it in place: same file, not rewritten.
        assert_eq!(
            install_executable(dir.path(), "tool", BYTES, SHA256).unwrap(),
            path
        );
        assert_eq!(fs::metadata(&path).unwrap().ino(), meta.ino());
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["tool"], "no temporary file is left");
    }

    #[test]
    fn embedded_bytes_are_found_in_the_executable_file_and_others_are_not() {
        let offset = exe_offset(BYTES).expect("a constant is mapped from the executable");
        let mut exe = File::open("/proc/self/exe").unwrap();
        exe.seek(SeekFrom::Start(offset)).unwrap();
        let mut read = vec![0; BYTES.len()];
        exe.read_exact(&mut read).unwrap();
        assert_eq!(read, BYTES);
        // Heap bytes are in no file: installed from memory, just as well.
        let heap = BYTES.to_vec();
        assert_eq!(exe_offset(&heap), None);
        let dir = tempfile::tempdir().unwrap();
        let path = install_executable(dir.path(), "tool", &heap, SHA256).unwrap();
        assert_eq!(fs::read(path).unwrap(), BYTES);
    }

    #[test]
    fn a_modified_truncated_or_replaced_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = install_executable(dir.path(), "tool", BYTES, SHA256).unwrap();
        let mut tampered = BYTES.to_vec();
        tampered[0] = b'X';
        let breakers: [&dyn Fn(&Path); 4] = [
            &|p| fs::write(p, &tampered).unwrap(),
            &|p| fs::write(p, &BYTES[..4]).unwrap(),
            &|p| fs::set_permissions(p, fs::Permissions::from_mode(0o777)).unwrap(),
            &|p| {
                fs::remove_file(p).unwrap();
                std::os::unix::fs::symlink("/bin/sh", p).unwrap();
            },
        ];
        for break_it in breakers {
            break_it(&path);
            assert_eq!(
                install_executable(dir.path(), "tool", BYTES, SHA256).unwrap(),
                path
            );
            let meta = fs::symlink_metadata(&path).unwrap();
            assert!(meta.file_type().is_file());
            assert_eq!(meta.mode() & 0o7777, 0o755);
            assert_eq!(fs::read(&path).unwrap(), BYTES);
        }
    }

    #[test]
    fn bad_digests_and_unwritable_data_directories_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "../../etc", &SHA256.to_uppercase()] {
            let err = install_executable(dir.path(), "tool", BYTES, bad).unwrap_err();
            assert!(err.source.to_string().contains("64 lowercase hex"), "{err}");
        }
        // Bytes that do not hash to the digest: written, then refused.
        let err = install_executable(dir.path(), "tool", b"other", SHA256).unwrap_err();
        assert_eq!(err.step, "verifying", "{err}");
        let file = dir.path().join("not-a-dir");
        fs::write(&file, b"").unwrap();
        let err = install_executable(&file, "tool", BYTES, SHA256).unwrap_err();
        assert_eq!(err.step, "creating");
        assert!(err.to_string().contains("not-a-dir"), "{err}");
    }
}
