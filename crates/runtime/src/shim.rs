//! The per-container shim: a small process that owns one container, so the runtime (and later
//! the kubelet) can exit and start again without touching running workloads.
//!
//! The runtime starts `<helper> shim <container dir>` (the helper is the `rkube` binary). The
//! shim marks itself a child subreaper, creates the container with libcontainer (its init
//! process then waits for `start`), reports `{"pid":N}` or `{"error":...}` on its stdout, and
//! re-executes itself as `<helper> shim-monitor <container dir> <pid>`: a fresh, small process
//! image (nothing of libcontainer stays mapped) that still is the container's parent. The
//! monitor has the container's stdout pipe as its fd 0 and stderr pipe as its fd 1, writes them
//! to the CRI log, and when the container exits writes [`ExitRecord`] to `exit.json`
//! (atomically) and exits. `SIGUSR1` makes it reopen the log file.
//!
//! The shim is single-threaded and has no async runtime: its memory is the process image
//! plus two 64 KiB buffers.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::cgroups::parse_oom_kills;
use crate::logs::{LineSplitter, LogWriter, Stream};

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

/// Handles the helper subcommands `shim` and `shim-monitor`; `None` when `args` is neither.
/// `args` are the process arguments after the program name.
pub fn helper_main(args: &[OsString]) -> Option<i32> {
    let mode = args.first()?.to_str()?;
    match mode {
        "shim" => Some(match args.get(1) {
            Some(dir) => {
                init_logging();
                shim(Path::new(dir))
            }
            None => usage(),
        }),
        "shim-monitor" => Some(match (args.get(1), args.get(2).and_then(|p| p.to_str())) {
            (Some(dir), Some(pid)) => match pid.parse() {
                Ok(pid) => monitor(Path::new(dir), Pid::from_raw(pid)),
                Err(_) => usage(),
            },
            _ => usage(),
        }),
        _ => None,
    }
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
    eprintln!(
        "usage: shim <container-dir> | shim-monitor <container-dir> <pid> (started by the runtime, not by hand)"
    );
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
        Ok((pid, stdout_r, stderr_r)) => {
            report(&ShimReport::Created { pid: pid.as_raw() });
            // Become the monitor: fd 0 = container stdout, fd 1 = container stderr. The report
            // pipe (our old fd 1) closes here, which tells the runtime we are done talking.
            let err = Command::new("/proc/self/exe")
                .arg("shim-monitor")
                .arg(dir)
                .arg(pid.as_raw().to_string())
                .stdin(Stdio::from(stdout_r))
                .stdout(Stdio::from(stderr_r))
                .exec();
            // exec only returns on failure; the container stays created and the runtime will
            // see no exit record, so it reports the container as unknown.
            eprintln!("shim: re-executing as monitor: {err}");
            1
        }
        Err(message) => {
            report(&ShimReport::Error { message });
            1
        }
    }
}

fn create(dir: &Path) -> Result<(Pid, OwnedFd, OwnedFd), String> {
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
    Ok((pid, stdout_r, stderr_r))
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

fn monitor(dir: &Path, pid: Pid) -> i32 {
    match run_monitor(dir, pid) {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("shim-monitor: {message}");
            1
        }
    }
}

fn run_monitor(dir: &Path, pid: Pid) -> Result<(), String> {
    let config = load_config(dir)?;
    let dup = |fd: std::os::fd::BorrowedFd<'_>| {
        fd.try_clone_to_owned()
            .map(File::from)
            .map_err(|e| format!("duplicating a pipe: {e}"))
    };
    let mut pipes = [
        Some((
            dup(io::stdin().as_fd())?,
            Stream::Stdout,
            LineSplitter::default(),
        )),
        Some((
            dup(io::stdout().as_fd())?,
            Stream::Stderr,
            LineSplitter::default(),
        )),
    ];
    let mut log = LogWriter::open(&config.log_path, config.log_max_size, config.log_max_files)
        .map_err(|e| format!("opening log {}: {e}", config.log_path.display()))?;
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGUSR1);
    mask.thread_block()
        .map_err(|e| format!("blocking SIGUSR1: {e}"))?;
    let reopen = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| format!("creating a signalfd: {e}"))?;

    let mut buf = vec![0u8; 64 * 1024];
    let mut log_failed = false;
    while pipes.iter().any(Option::is_some) {
        let ready: Vec<(usize, bool)>;
        let signal_ready;
        {
            let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(3);
            let mut which = Vec::with_capacity(2);
            for (i, p) in pipes.iter().enumerate() {
                if let Some((file, _, _)) = p {
                    fds.push(PollFd::new(file.as_fd(), PollFlags::POLLIN));
                    which.push(i);
                }
            }
            fds.push(PollFd::new(reopen.as_fd(), PollFlags::POLLIN));
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(nix::Error::EINTR) => {}
                Err(e) => return Err(format!("poll: {e}")),
            }
            ready = which
                .iter()
                .zip(&fds)
                .filter(|(_, fd)| fd.revents().is_some_and(|r| !r.is_empty()))
                .map(|(i, _)| (*i, true))
                .collect();
            signal_ready = fds
                .last()
                .and_then(|fd| fd.revents())
                .is_some_and(|r| r.contains(PollFlags::POLLIN));
        }
        if signal_ready {
            while let Ok(Some(_)) = reopen.read_signal() {}
            if let Err(e) = log.reopen() {
                eprintln!("shim-monitor: reopening {}: {e}", config.log_path.display());
            }
        }
        for (i, _) in ready {
            let Some((file, stream, splitter)) = pipes[i].as_mut() else {
                continue;
            };
            let stream = *stream;
            let mut emit = |content: &[u8], partial: bool| {
                log.write_record(SystemTime::now(), stream, partial, content)
            };
            let n = match file.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => 0,
            };
            let result = if n == 0 {
                let r = splitter.finish(&mut emit);
                pipes[i] = None;
                r
            } else {
                splitter.feed(&buf[..n], &mut emit)
            };
            if let Err(e) = result
                && !log_failed
            {
                // Keep draining the pipes (a full pipe would block the container) even when
                // the log cannot be written, e.g. a full disk; say so once.
                eprintln!("shim-monitor: writing {}: {e}", config.log_path.display());
                log_failed = true;
            }
        }
    }

    let (exit_code, signal) = wait_for(pid);
    let oom_killed = config
        .oom_file
        .as_deref()
        .and_then(|f| fs::read_to_string(f).ok())
        .is_some_and(|text| parse_oom_kills(&text) > 0);
    let record = ExitRecord {
        exit_code,
        signal,
        oom_killed,
        finished_at_ns: now_ns(),
    };
    write_atomic(
        &config.exit_file,
        &serde_json::to_vec(&record).unwrap_or_default(),
    )
    .map_err(|e| format!("writing {}: {e}", config.exit_file.display()))
}

/// Reaps children until `pid` exits; other orphans reparented to us are reaped on the way.
fn wait_for(pid: Pid) -> (i32, Option<i32>) {
    loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::Exited(p, code)) if p == pid => return (code, None),
            Ok(WaitStatus::Signaled(p, sig, _)) if p == pid => {
                return (128 + sig as i32, Some(sig as i32));
            }
            Ok(_) | Err(nix::Error::EINTR) => {}
            // Not our child any more (should not happen): unknown, as containerd reports it.
            Err(_) => return (255, None),
        }
    }
}

/// Nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Writes a file via a temporary file and a rename, so readers see all of it or nothing.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, path)
}

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
    fn the_helper_ignores_other_subcommands_and_refuses_missing_arguments() {
        assert_eq!(helper_main(&["apiserver".into()]), None);
        assert_eq!(helper_main(&[]), None);
        assert_eq!(helper_main(&["shim".into()]), Some(2));
        assert_eq!(
            helper_main(&["shim-monitor".into(), "/x".into(), "nan".into()]),
            Some(2)
        );
    }

    #[test]
    fn reports_are_one_json_line() {
        let text = serde_json::to_string(&ShimReport::Created { pid: 42 }).unwrap();
        assert_eq!(text, r#"{"created":{"pid":42}}"#);
    }
}
