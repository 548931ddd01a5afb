//! The per-container shim: a small process that owns one container, so the runtime (and later
//! the kubelet) can exit and start again without touching running workloads.
//!
//! On a machine whose cgroups are v1 (or hybrid) the small `rkube-shim` executable creates the
//! container itself (`create-container`, `rkube_shim::create`). This module holds what the
//! runtime and that executable share ([`ShimConfig`], [`ExitRecord`]) and the other create path,
//! for cgroup v2 only machines, whose device rules need the eBPF program libcontainer loads:
//! the runtime starts `<helper> shim <container dir>` (the helper is the `rkube` binary). The
//! shim marks itself a child subreaper, creates the container with libcontainer (its init
//! process then waits for `start`), reports `{"created":{"pid":N}}` or `{"error":...}` on its
//! stdout, and re-executes itself as `<lean helper> shim-monitor <container dir> <pid>`
//! ([`ShimConfig::monitor`]): a fresh process image with nothing of libcontainer or of the big
//! binary mapped, still the container's parent. The monitor (`rkube_shim::monitor`) has the
//! container's stdout pipe as its fd 0 and stderr pipe as its fd 1, writes them to the CRI
//! log, and when the container exits writes [`ExitRecord`] to `exit.json` (atomically) and
//! exits. `SIGUSR1` makes it reopen the log file.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::fcntl::OFlag;
use nix::unistd::Pid;

/// The shim's instructions, written by the runtime to `<container dir>/shim.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ShimConfig {
    /// The container ID.
    pub id: String,
    /// The OCI bundle (holds `config.json`).
    pub bundle: PathBuf,
    /// libcontainer's state root.
    pub state_root: PathBuf,
    /// The CRI log file.
    pub log_path: PathBuf,
    /// Rotate the log past this many bytes (0: never).
    pub log_max_size: u64,
    /// Keep this many log files, the live one included.
    pub log_max_files: usize,
    /// Where the exit record goes.
    pub exit_file: PathBuf,
    /// The cgroup file whose `oom_kill` count tells whether the kernel OOM-killed the container.
    pub oom_file: Option<PathBuf>,
    /// The executable the shim becomes once the container is created, as `shim-monitor`
    /// (`RuntimeConfig::lean_helper`).
    pub monitor: PathBuf,
    /// For `rkube-shim create-container`: the `cgroup.procs` files its init joins.
    #[serde(default)]
    pub cgroup_procs: Vec<PathBuf>,
    /// For `rkube-shim create-container`: the compiled seccomp program its init loads.
    #[serde(default)]
    pub seccomp_program: Option<PathBuf>,
}

/// What the shim reports once the container is created.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShimReport {
    /// Created: the container's init process is waiting for `start`.
    Created {
        /// Its PID.
        pid: i32,
    },
    /// Creating failed; the message carries the whole cause chain.
    Error {
        /// The message.
        message: String,
    },
}

/// How a container ended, as the shim saw it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExitRecord {
    /// Exit code; 128 + signal for a signal death (137 for SIGKILL), as shells report it.
    pub exit_code: i32,
    /// The signal that ended it, if any.
    pub signal: Option<i32>,
    /// The kernel's OOM killer killed a process of the container.
    pub oom_killed: bool,
    /// When the shim saw the exit, in nanoseconds since the Unix epoch.
    pub finished_at_ns: u64,
}

/// The shim config file in a container directory.
pub fn config_path(dir: &Path) -> PathBuf {
    dir.join("shim.json")
}

/// Handles the helper subcommand `shim`; `None` when `args` is something else (the
/// `shim-monitor` subcommand is `rkube_shim::helper_main`'s). `args` are the process arguments
/// after the program name.
pub fn helper_main(args: &[OsString]) -> Option<i32> {
    if args.first()?.to_str()? != "shim" {
        return None;
    }
    Some(match args.get(1) {
        Some(dir) => {
            init_logging();
            shim(Path::new(dir))
        }
        None => usage(),
    })
}

/// libcontainer explains failures in its `tracing` logs: the shim keeps them (warnings and
/// worse, or `RUST_LOG`) on its stderr, which the runtime points at `shim.log`.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(false)
        .try_init();
}

fn usage() -> i32 {
    eprintln!("usage: shim <container-dir> (started by the runtime, not by hand)");
    2
}

fn load_config(dir: &Path) -> Result<ShimConfig, String> {
    let path = config_path(dir);
    let bytes = fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("parsing {}: {e}", path.display()))
}

fn report(report: &ShimReport) {
    let mut out = io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, report);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

/// Writes an error and its sources on one line.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn shim(dir: &Path) -> i32 {
    match create(dir) {
        Ok((monitor, pid, stdout_r, stderr_r)) => {
            report(&ShimReport::Created { pid: pid.as_raw() });
            // Become the monitor: fd 0 = container stdout, fd 1 = container stderr. The report
            // pipe (our old fd 1) closes here, which tells the runtime we are done talking.
            let err = Command::new(&monitor)
                .arg("shim-monitor")
                .arg(dir)
                .arg(pid.as_raw().to_string())
                .stdin(Stdio::from(stdout_r))
                .stdout(Stdio::from(stderr_r))
                .exec();
            // exec only returns on failure; the container stays created and the runtime will
            // see no exit record, so it reports the container as unknown.
            eprintln!("shim: executing {} as monitor: {err}", monitor.display());
            1
        }
        Err(message) => {
            report(&ShimReport::Error { message });
            1
        }
    }
}

fn create(dir: &Path) -> Result<(PathBuf, Pid, OwnedFd, OwnedFd), String> {
    use libcontainer::container::builder::ContainerBuilder;
    use libcontainer::syscall::syscall::SyscallType;

    let config = load_config(dir)?;
    // Orphans of the container (its init's parent is whoever created it) come to us.
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| format!("becoming a child subreaper: {e}"))?;
    let (stdout_r, stdout_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("creating a pipe: {e}"))?;
    let (stderr_r, stderr_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("creating a pipe: {e}"))?;
    let null = File::open("/dev/null").map_err(|e| format!("opening /dev/null: {e}"))?;
    let built = ContainerBuilder::new(config.id.clone(), SyscallType::Linux)
        .with_root_path(&config.state_root)
        .map_err(|e| {
            format!(
                "libcontainer state root {}: {}",
                config.state_root.display(),
                chain(&e)
            )
        })?
        .with_stdin(OwnedFd::from(null))
        .with_stdout(stdout_w)
        .with_stderr(stderr_w)
        .as_init(&config.bundle)
        .with_systemd(false)
        .with_detach(true)
        .build();
    let container = match built {
        Ok(c) => c,
        Err(e) => {
            // libcontainer's init logs why it failed to its stderr, which is already our pipe.
            let detail = drain(&stderr_r);
            let detail = detail
                .lines()
                .filter(|l| l.contains("ERROR"))
                .map(|l| l.split_once("ERROR ").map_or(l, |(_, m)| m).trim())
                .collect::<Vec<_>>()
                .join("; ");
            return Err(if detail.is_empty() {
                format!("creating the container: {}", chain(&e))
            } else {
                format!("creating the container: {}: {detail}", chain(&e))
            });
        }
    };
    let pid = container
        .pid()
        .ok_or_else(|| "creating the container: libcontainer reported no init pid".to_owned())?;
    Ok((config.monitor, pid, stdout_r, stderr_r))
}

/// Reads what is in a pipe without waiting for more.
fn drain(fd: &OwnedFd) -> String {
    use nix::fcntl::{FcntlArg, fcntl};
    use std::os::fd::AsRawFd;
    let _ = fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
    let Ok(dup) = fd.try_clone() else {
        return String::new();
    };
    let mut file = File::from(dup);
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while out.len() < 64 * 1024 {
        match file.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Nanoseconds since the Unix epoch; atomic file writes (the monitor's, shared).
pub use rkube_shim::{now_ns, write_atomic, write_durable};

/// Reads the exit record, if the container has exited.
pub fn read_exit(path: &Path) -> Option<ExitRecord> {
    fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_records_round_trip_through_an_atomic_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exit.json");
        assert!(read_exit(&path).is_none());
        let rec = ExitRecord {
            exit_code: 137,
            signal: Some(9),
            oom_killed: true,
            finished_at_ns: 5,
        };
        write_atomic(&path, &serde_json::to_vec(&rec).unwrap()).unwrap();
        assert_eq!(read_exit(&path), Some(rec));
        assert!(!dir.path().join("exit.json.tmp").exists());
    }

    #[test]
    fn the_monitors_exit_record_is_what_the_runtime_reads() {
        let exit = rkube_shim::monitor::Exit {
            exit_code: 137,
            signal: Some(9),
            oom_killed: true,
            finished_at_ns: 1_700_000_000_123_456_789,
        };
        let read: ExitRecord = serde_json::from_str(&exit.to_json()).unwrap();
        assert_eq!(
            read,
            ExitRecord {
                exit_code: 137,
                signal: Some(9),
                oom_killed: true,
                finished_at_ns: 1_700_000_000_123_456_789,
            }
        );
        let exit = rkube_shim::monitor::Exit {
            exit_code: 0,
            signal: None,
            oom_killed: false,
            finished_at_ns: 1,
        };
        let read: ExitRecord = serde_json::from_str(&exit.to_json()).unwrap();
        assert_eq!((read.exit_code, read.signal), (0, None));
    }

    #[test]
    fn the_monitor_reads_the_shim_config_the_runtime_writes() {
        let config = ShimConfig {
            id: "c1".into(),
            bundle: "/b".into(),
            state_root: "/run/s".into(),
            log_path: "/var/log/pods/ns_p_\"u\"/c/0.log".into(),
            log_max_size: 10 << 20,
            log_max_files: 5,
            exit_file: "/d/exit.json".into(),
            oom_file: None,
            monitor: "/var/lib/rkube/data/x/bin/rkube-shim".into(),
            cgroup_procs: vec!["/sys/fs/cgroup/pids/p/c/cgroup.procs".into()],
            seccomp_program: Some("/var/lib/rkube/seccomp/a.bpf".into()),
        };
        let read =
            rkube_shim::monitor::MonitorConfig::from_json(&serde_json::to_string(&config).unwrap())
                .unwrap();
        assert_eq!(read.log_path, config.log_path);
        assert_eq!(read.log_max_size, config.log_max_size);
        assert_eq!(read.log_max_files, config.log_max_files);
        assert_eq!(read.exit_file, config.exit_file);
        assert_eq!(read.oom_file, None);
    }

    #[test]
    fn the_helper_ignores_other_subcommands_and_refuses_missing_arguments() {
        assert_eq!(helper_main(&["apiserver".into()]), None);
        assert_eq!(helper_main(&["shim-monitor".into()]), None);
        assert_eq!(helper_main(&[]), None);
        assert_eq!(helper_main(&["shim".into()]), Some(2));
    }

    #[test]
    fn reports_are_one_json_line() {
        let text = serde_json::to_string(&ShimReport::Created { pid: 42 }).unwrap();
        assert_eq!(text, r#"{"created":{"pid":42}}"#);
    }
}
