//! `shim-monitor <container dir> <pid>`: the long-lived half of a container's shim.
//!
//! `create-container` ([`crate::create`]; on cgroup v2 only machines the `rkube` binary's `shim`,
//! with libcontainer) creates the container, marks itself a child subreaper and then executes
//! this monitor: still the
//! container's parent (a subreaper stays one across `execve`), with the container's stdout pipe
//! as fd 0 and its stderr pipe as fd 1. The monitor writes both to the CRI log (`P` records for
//! pieces of over-long lines, `F` otherwise, rotation by size), reopens the log on `SIGUSR1`
//! (`ReopenContainerLog`), reaps orphans reparented to it, and when the container's init exits
//! writes the exit record (`exit.json`: exit code, 128 + signal, the cgroup's OOM-kill count)
//! atomically and exits. A runtime that restarts finds monitors by their command line
//! (`shim-monitor <container dir>`) and containers by their records, so it re-adopts both.
//!
//! It is single-threaded, has no async runtime and reads its config with [`crate::json`]: its
//! memory is the process image plus a 64 KiB read buffer.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::json::{self, Value};
use crate::logs::{LineSplitter, LogWriter, Stream};

/// What the monitor needs of the runtime's `shim.json` (the runtime's `ShimConfig`; fields it
/// does not use are ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorConfig {
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

impl MonitorConfig {
    /// Reads the fields from `shim.json`'s text.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let value = json::parse(text).map_err(|e| e.to_string())?;
        if !matches!(value, Value::Object(_)) {
            return Err("expected an object".to_owned());
        }
        let path = |key: &str| -> Result<PathBuf, String> {
            value
                .get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .ok_or_else(|| format!("{key} must be a non-empty string"))
        };
        let number = |key: &str| -> Result<u64, String> {
            value
                .get(key)
                .and_then(Value::as_u64)
                .ok_or_else(|| format!("{key} must be a non-negative integer"))
        };
        let oom_file = match value.get("oom_file") {
            None | Some(Value::Null) => None,
            Some(_) => Some(path("oom_file")?),
        };
        Ok(Self {
            log_path: path("log_path")?,
            log_max_size: number("log_max_size")?,
            log_max_files: usize::try_from(number("log_max_files")?)
                .map_err(|_| "log_max_files is too large".to_owned())?,
            exit_file: path("exit_file")?,
            oom_file,
        })
    }

    /// Reads `<container dir>/shim.json`.
    pub fn load(dir: &Path) -> Result<Self, String> {
        let path = dir.join("shim.json");
        let text =
            fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        Self::from_json(&text).map_err(|e| format!("parsing {}: {e}", path.display()))
    }
}

/// How a container ended, as the monitor writes it to `exit.json` (the runtime reads it as its
/// `ExitRecord`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// Exit code; 128 + signal for a signal death (137 for SIGKILL), as shells report it.
    pub exit_code: i32,
    /// The signal that ended it, if any.
    pub signal: Option<i32>,
    /// The kernel's OOM killer killed a process of the container.
    pub oom_killed: bool,
    /// When the monitor saw the exit, in nanoseconds since the Unix epoch.
    pub finished_at_ns: u64,
}

impl Exit {
    /// The record as one JSON object.
    pub fn to_json(&self) -> String {
        let signal = self
            .signal
            .map_or_else(|| "null".to_owned(), |s| s.to_string());
        format!(
            r#"{{"exit_code":{},"signal":{signal},"oom_killed":{},"finished_at_ns":{}}}"#,
            self.exit_code, self.oom_killed, self.finished_at_ns
        )
    }
}

/// Runs the monitor; returns the process exit code (errors are reported on stderr, which the
/// runtime points at the container's `shim.log`).
pub fn main(dir: &Path, pid: i32) -> i32 {
    match run(dir, Pid::from_raw(pid)) {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("shim-monitor: {message}");
            1
        }
    }
}

fn run(dir: &Path, pid: Pid) -> Result<(), String> {
    let config = MonitorConfig::load(dir)?;
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
        let mut ready = [false; 2];
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
            for (i, fd) in which.iter().zip(&fds) {
                ready[*i] = fd.revents().is_some_and(|r| !r.is_empty());
            }
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
        for i in (0..pipes.len()).filter(|&i| ready[i]) {
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
        .is_some_and(|text| crate::parse_oom_kills(&text) > 0);
    let record = Exit {
        exit_code,
        signal,
        oom_killed,
        finished_at_ns: crate::now_ns(),
    };
    crate::write_atomic(&config.exit_file, record.to_json().as_bytes())
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

#[cfg(test)]
mod tests {
    use super::*;

    const SHIM_JSON: &str = r#"{"id":"c1","bundle":"/b","state_root":"/run/s",
        "log_path":"/var/log/pods/x/c/0.log","log_max_size":10485760,"log_max_files":5,
        "exit_file":"/d/exit.json","oom_file":"/sys/fs/cgroup/memory/p/c/memory.oom_control",
        "monitor":"/usr/bin/rkube-shim","a_later_field":{"nested":[1,2]}}"#;

    #[test]
    fn the_config_is_read_from_the_runtimes_shim_json() {
        let c = MonitorConfig::from_json(SHIM_JSON).unwrap();
        assert_eq!(
            c,
            MonitorConfig {
                log_path: "/var/log/pods/x/c/0.log".into(),
                log_max_size: 10 << 20,
                log_max_files: 5,
                exit_file: "/d/exit.json".into(),
                oom_file: Some("/sys/fs/cgroup/memory/p/c/memory.oom_control".into()),
            }
        );
        let no_oom = SHIM_JSON.replace(r#""/sys/fs/cgroup/memory/p/c/memory.oom_control""#, "null");
        assert_eq!(MonitorConfig::from_json(&no_oom).unwrap().oom_file, None);
    }

    #[test]
    fn a_bad_config_is_a_clear_error() {
        for (text, wanted) in [
            ("[]", "expected an object"),
            ("{", "at byte 1"),
            (r#"{"log_path":"/l"}"#, "log_max_size must be"),
            (
                &SHIM_JSON.replace("10485760", "-1"),
                "log_max_size must be a non-negative integer",
            ),
            (
                &SHIM_JSON.replace(r#""/d/exit.json""#, "7"),
                "exit_file must be a non-empty string",
            ),
            (
                &SHIM_JSON.replace(r#""/d/exit.json""#, r#""""#),
                "exit_file must be a non-empty string",
            ),
        ] {
            let err = MonitorConfig::from_json(text).unwrap_err();
            assert!(err.contains(wanted), "{text}: {err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let err = MonitorConfig::load(dir.path()).unwrap_err();
        assert!(
            err.starts_with("reading ") && err.contains("shim.json"),
            "{err}"
        );
    }

    #[test]
    fn exit_records_are_one_json_object() {
        let exit = Exit {
            exit_code: 137,
            signal: Some(9),
            oom_killed: true,
            finished_at_ns: 5,
        };
        assert_eq!(
            exit.to_json(),
            r#"{"exit_code":137,"signal":9,"oom_killed":true,"finished_at_ns":5}"#
        );
        let exit = Exit {
            exit_code: 0,
            signal: None,
            oom_killed: false,
            finished_at_ns: 1,
        };
        let parsed = json::parse(&exit.to_json()).unwrap();
        assert_eq!(parsed.get("signal"), Some(&Value::Null));
        assert_eq!(parsed.get("exit_code").and_then(Value::as_u64), Some(0));
    }
}
