//! `ExecSync`: running a command inside a running container and collecting its output.
//!
//! libcontainer's tenant builder forks into the container's namespaces and cgroup. Forking
//! from the runtime itself (many threads) is not safe with a raw `clone`, so the runtime
//! starts the helper as `exec`: a single-threaded process that creates the tenant process with
//! the helper's own stdout/stderr (pipes the runtime reads), waits for it with the deadline,
//! kills it when the deadline passes, and writes an [`ExecOutcome`] file.

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};

use crate::shim::write_atomic;

/// How an exec ended, written by the helper.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecOutcome {
    /// The command exited (128 + signal for a signal death).
    Exited {
        /// Exit code.
        exit_code: i32,
    },
    /// The deadline passed; the command was killed.
    TimedOut,
    /// The command could not be started.
    Failed {
        /// Why.
        message: String,
    },
}

/// The helper's arguments for one exec.
pub fn exec_args(
    state_root: &Path,
    id: &str,
    timeout: Option<Duration>,
    outcome: &Path,
    cmd: &[String],
) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "exec".into(),
        state_root.into(),
        id.into(),
        timeout
            .map_or(0, |t| t.as_millis().max(1))
            .to_string()
            .into(),
        outcome.into(),
        "--".into(),
    ];
    args.extend(cmd.iter().map(OsString::from));
    args
}

/// Handles the `exec` helper subcommand; `None` for anything else.
pub fn helper_main(args: &[OsString]) -> Option<i32> {
    if args.first()?.to_str()? != "exec" {
        return None;
    }
    let (Some(root), Some(id), Some(ms), Some(outcome), Some(sep)) = (
        args.get(1),
        args.get(2).and_then(|a| a.to_str()),
        args.get(3).and_then(|a| a.to_str()?.parse::<u64>().ok()),
        args.get(4),
        args.get(5),
    ) else {
        eprintln!("usage: exec <state-root> <id> <timeout-ms> <outcome-file> -- <cmd>...");
        return Some(2);
    };
    if sep != "--" || args.len() < 7 {
        eprintln!("usage: exec <state-root> <id> <timeout-ms> <outcome-file> -- <cmd>...");
        return Some(2);
    }
    let cmd: Vec<String> = args[6..]
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let timeout = (ms > 0).then(|| Duration::from_millis(ms));
    let result = run(Path::new(root), id, timeout, cmd);
    let outcome_path = PathBuf::from(outcome);
    let _ = write_atomic(
        &outcome_path,
        &serde_json::to_vec(&result).unwrap_or_default(),
    );
    Some(0)
}

fn run(root: &Path, id: &str, timeout: Option<Duration>, cmd: Vec<String>) -> ExecOutcome {
    use libcontainer::container::builder::ContainerBuilder;
    use libcontainer::syscall::syscall::SyscallType;

    let fail = |message: String| ExecOutcome::Failed { message };
    let dup = |f: std::os::fd::BorrowedFd<'_>| f.try_clone_to_owned();
    let (Ok(stdout), Ok(stderr), Ok(null)) = (
        dup(std::os::fd::AsFd::as_fd(&std::io::stdout())),
        dup(std::os::fd::AsFd::as_fd(&std::io::stderr())),
        File::open("/dev/null"),
    ) else {
        return fail("setting up stdio".to_owned());
    };
    let builder =
        match ContainerBuilder::new(id.to_owned(), SyscallType::Linux).with_root_path(root) {
            Ok(b) => b,
            Err(e) => return fail(format!("libcontainer state root {}: {e}", root.display())),
        };
    let pid = match builder
        .with_stdin(OwnedFd::from(null))
        .with_stdout(stdout)
        .with_stderr(stderr)
        .as_tenant()
        .with_container_args(cmd)
        .with_detach(true)
        .build()
    {
        Ok(pid) => pid,
        Err(e) => return fail(format!("starting the process: {e}")),
    };
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let flags = if deadline.is_some() {
            Some(WaitPidFlag::WNOHANG)
        } else {
            None
        };
        match waitpid(pid, flags) {
            Ok(WaitStatus::Exited(_, code)) => return ExecOutcome::Exited { exit_code: code },
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                return ExecOutcome::Exited {
                    exit_code: 128 + sig as i32,
                };
            }
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => return fail(format!("waiting for the process: {e}")),
        }
        if let Some(deadline) = deadline {
            if Instant::now() >= deadline {
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                let _ = waitpid(pid, None);
                return ExecOutcome::TimedOut;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_arguments_round_trip_through_the_helper_parser() {
        let args = exec_args(
            Path::new("/run/x"),
            "abc",
            Some(Duration::from_secs(2)),
            Path::new("/tmp/o.json"),
            &["echo".into(), "hi".into()],
        );
        assert_eq!(args[3], OsString::from("2000"));
        assert_eq!(args[5], OsString::from("--"));
        assert_eq!(helper_main(&args[..5]), Some(2), "no command: usage");
        assert_eq!(helper_main(&["shim".into()]), None);
    }
}
