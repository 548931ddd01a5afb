//! The long-lived helper processes of rkube's container runtime, as a small executable, and the
//! creation of containers ([`create`]), which the process that becomes a container's monitor
//! does first.
//!
//! A node runs one shim monitor per container ([`monitor`]: CRI logs, the exit record) and one
//! holder per pod ([`pause`]: the pod's namespaces). Each lives as long as its container or pod,
//! so what each one keeps resident is paid per workload. As the `rkube` binary (tens of
//! megabytes of code, dynamically linked) every one of them kept about 4.5 MiB resident,
//! almost all of it file-backed code faulted in 64 KiB blocks and the C library. This crate is
//! that code alone, with std, `nix`, `libc` and `caps` only; `rkube` embeds its executable,
//! built statically (see `crates/rkube/build.rs`), and writes it under the data directory when
//! the runtime starts, as k3s ships its helpers inside its one binary.
//!
//! The same functions serve the `create-container`, `shim-monitor` and `pause` subcommands of
//! the `rkube` binary and of the runtime crate's test helper through [`helper_main`], so there
//! is one implementation.

pub mod create;
pub mod json;
pub mod logs;
pub mod monitor;
pub mod pause;

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Runs `shim-monitor <container dir> <pid>` or `pause ...` if `args` (the process arguments
/// after the program name) name one, returning the exit code; `None` for anything else.
pub fn helper_main(args: &[OsString]) -> Option<i32> {
    match args.first()?.to_str()? {
        "shim-monitor" => Some(match (args.get(1), args.get(2).and_then(|p| p.to_str())) {
            (Some(dir), Some(pid)) => match pid.parse::<i32>() {
                Ok(pid) if pid > 0 => monitor::main(Path::new(dir), pid),
                _ => usage(),
            },
            _ => usage(),
        }),
        "pause" => Some(pause::main(&args[1..])),
        "create-container" => Some(match args.get(1) {
            Some(dir) if args.len() == 2 => create::main(Path::new(dir)),
            _ => usage(),
        }),
        _ => None,
    }
}

fn usage() -> i32 {
    eprintln!(
        "usage: create-container <container-dir> | shim-monitor <container-dir> <pid> | pause [options] (started by the runtime, not by hand)"
    );
    2
}

/// The number of OOM kills in a cgroup's `memory.oom_control` (v1) or `memory.events` (v2).
pub fn parse_oom_kills(text: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.strip_prefix("oom_kill "))
        .filter_map(|v| v.trim().parse().ok())
        .next()
        .unwrap_or(0)
}

/// Nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Writes a file via a temporary file and a rename, so readers (and a process that crashed
/// midway and starts again) see all of it or nothing. Not synced to disk: for what matters only
/// while the machine runs (an exit record, a process ID), whose loss in a power cut goes with
/// the processes it describes. See [`write_durable`].
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_via_rename(path, bytes, false)
}

/// [`write_atomic`], and synced to disk before the rename: for records that must outlive a
/// machine crash (that a container exists, so its files can be found and removed).
pub fn write_durable(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_via_rename(path, bytes, true)
}

fn write_via_rename(path: &Path, bytes: &[u8], sync: bool) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        if sync {
            file.sync_all()?;
        }
    }
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_helper_ignores_other_subcommands_and_refuses_bad_arguments() {
        assert_eq!(helper_main(&["apiserver".into()]), None);
        assert_eq!(helper_main(&["shim".into()]), None);
        assert_eq!(helper_main(&[]), None);
        assert_eq!(helper_main(&["shim-monitor".into()]), Some(2));
        assert_eq!(
            helper_main(&["shim-monitor".into(), "/x".into(), "nan".into()]),
            Some(2)
        );
        assert_eq!(
            helper_main(&["shim-monitor".into(), "/x".into(), "0".into()]),
            Some(2)
        );
        // A missing shim.json is an error exit, not a panic.
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            helper_main(&["shim-monitor".into(), dir.path().into(), "1".into()]),
            Some(1)
        );
    }

    #[test]
    fn oom_kills_are_read_from_v1_and_v2_files() {
        assert_eq!(
            parse_oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"),
            2
        );
        assert_eq!(
            parse_oom_kills("low 0\nhigh 0\nmax 1\noom 1\noom_kill 1\n"),
            1
        );
        assert_eq!(parse_oom_kills(""), 0);
    }

    #[test]
    fn atomic_writes_leave_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exit.json");
        write_durable(&path, b"{}").unwrap();
        write_atomic(&path, b"{\"a\":1}").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"{\"a\":1}");
        assert!(!dir.path().join("exit.json.tmp").exists());
    }
}
