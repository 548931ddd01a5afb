//! Running a command inside a running container: `ExecSync`, and the streaming `Exec` (with
//! stdin and a TTY) that the CRI streaming server serves.
//!
//! libcontainer's tenant builder forks into the container's namespaces and cgroup. Forking
//! from the runtime itself (many threads) is not safe with a raw `clone`, so the runtime
//! starts the helper as `exec`: a single-threaded process that creates the tenant process with
//! the helper's own stdin/stdout/stderr (pipes the runtime holds), waits for it with the
//! deadline, kills it when the deadline passes, and writes an [`ExecOutcome`] file.
//!
//! The tenant's process comes from a `process.json` the runtime writes from the container's
//! own OCI process (user, groups, capabilities, environment, working directory), with the
//! command replaced, so an exec runs as the container does. With a TTY, libcontainer opens a
//! pseudo-terminal inside the container and sends its master end over a console socket the
//! runtime listens on ([`receive_pty_master`]).

use std::ffi::OsString;
use std::fs::File;
use std::io::IoSliceMut;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
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

/// What the helper is asked to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecArgs {
    /// libcontainer's state root.
    pub state_root: PathBuf,
    /// The container.
    pub id: String,
    /// Kill the command after this long.
    pub timeout: Option<Duration>,
    /// Where the helper writes its [`ExecOutcome`].
    pub outcome: PathBuf,
    /// The OCI process (command, user, environment, terminal) to run.
    pub process: PathBuf,
    /// The socket to send a TTY's master end to, when the process has a terminal.
    pub console_socket: Option<PathBuf>,
}

impl ExecArgs {
    /// The helper's command line.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "exec".into(),
            self.state_root.clone().into(),
            self.id.clone().into(),
            self.timeout
                .map_or(0, |t| t.as_millis().max(1))
                .to_string()
                .into(),
            self.outcome.clone().into(),
            self.process.clone().into(),
        ];
        if let Some(socket) = &self.console_socket {
            args.push(socket.clone().into());
        }
        args
    }

    /// Parses the helper's command line (after the program name).
    fn parse(args: &[OsString]) -> Option<ExecArgs> {
        if args.len() < 6 || args.len() > 7 || args[0] != "exec" {
            return None;
        }
        let ms: u64 = args[3].to_str()?.parse().ok()?;
        Some(ExecArgs {
            state_root: PathBuf::from(&args[1]),
            id: args[2].to_str()?.to_owned(),
            timeout: (ms > 0).then(|| Duration::from_millis(ms)),
            outcome: PathBuf::from(&args[4]),
            process: PathBuf::from(&args[5]),
            console_socket: args.get(6).map(PathBuf::from),
        })
    }
}

/// Handles the `exec` helper subcommand; `None` for anything else.
pub fn helper_main(args: &[OsString]) -> Option<i32> {
    if args.first()?.to_str()? != "exec" {
        return None;
    }
    let Some(exec) = ExecArgs::parse(args) else {
        eprintln!(
            "usage: exec <state-root> <id> <timeout-ms> <outcome-file> <process.json> [<console-socket>]"
        );
        return Some(2);
    };
    let result = run(&exec);
    let _ = write_atomic(
        &exec.outcome,
        &serde_json::to_vec(&result).unwrap_or_default(),
    );
    Some(0)
}

fn run(exec: &ExecArgs) -> ExecOutcome {
    use libcontainer::container::builder::ContainerBuilder;
    use libcontainer::syscall::syscall::SyscallType;

    let fail = |message: String| ExecOutcome::Failed { message };
    let dup = |f: std::os::fd::BorrowedFd<'_>| f.try_clone_to_owned();
    let (Ok(stdin), Ok(stdout), Ok(stderr)) = (
        dup(std::os::fd::AsFd::as_fd(&std::io::stdin())),
        dup(std::os::fd::AsFd::as_fd(&std::io::stdout())),
        dup(std::os::fd::AsFd::as_fd(&std::io::stderr())),
    ) else {
        return fail("setting up stdio".to_owned());
    };
    let builder = match ContainerBuilder::new(exec.id.clone(), SyscallType::Linux)
        .with_root_path(&exec.state_root)
    {
        Ok(b) => b,
        Err(e) => {
            return fail(format!(
                "libcontainer state root {}: {e}",
                exec.state_root.display()
            ));
        }
    };
    let pid = match builder
        .with_stdin(stdin)
        .with_stdout(stdout)
        .with_stderr(stderr)
        .with_console_socket(exec.console_socket.as_ref())
        .as_tenant()
        .with_process(Some(&exec.process))
        .with_detach(true)
        .build()
    {
        Ok(pid) => pid,
        Err(e) => return fail(format!("starting the process: {e}")),
    };
    let deadline = exec.timeout.map(|t| Instant::now() + t);
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

/// Reads the outcome the helper wrote; `None` when it wrote none (it died first).
pub fn read_outcome(path: &Path) -> Option<ExecOutcome> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Receives the pseudo-terminal master libcontainer sends over the console socket
/// (`SCM_RIGHTS`). Blocks until it arrives; an error when the sender closed without one (the
/// process failed before opening its terminal).
pub fn receive_pty_master(stream: &UnixStream) -> std::io::Result<File> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let mut name = [0u8; 64];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    rustix::net::recvmsg(
        stream,
        &mut [IoSliceMut::new(&mut name)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = message
            && let Some(fd) = fds.next()
        {
            return Ok(File::from(fd));
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "the exec'd process closed its console socket without sending a terminal",
    ))
}

/// Sets a terminal's window size (`TIOCSWINSZ` on its master end).
pub fn resize_terminal(master: impl AsFd, width: u16, height: u16) -> std::io::Result<()> {
    let size = rustix::termios::Winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    rustix::termios::tcsetwinsize(master, size)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_arguments_round_trip_through_the_helper_parser() {
        let exec = ExecArgs {
            state_root: "/run/x".into(),
            id: "abc".into(),
            timeout: Some(Duration::from_secs(2)),
            outcome: "/tmp/o.json".into(),
            process: "/tmp/p.json".into(),
            console_socket: None,
        };
        let args = exec.to_args();
        assert_eq!(args[3], OsString::from("2000"));
        assert_eq!(ExecArgs::parse(&args), Some(exec.clone()));
        let tty = ExecArgs {
            timeout: None,
            console_socket: Some("/tmp/c.sock".into()),
            ..exec
        };
        assert_eq!(ExecArgs::parse(&tty.to_args()), Some(tty));
        assert_eq!(helper_main(&args[..5]), Some(2), "no process file: usage");
        assert_eq!(helper_main(&["shim".into()]), None);
    }

    #[test]
    fn a_console_socket_closed_without_a_terminal_is_an_error() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        let err = receive_pty_master(&a).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_terminal_sent_over_the_socket_arrives_and_can_be_resized() {
        use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
        let pty = nix::pty::openpty(None, None).unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        let fds = [pty.master.as_fd()];
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
        rustix::net::sendmsg(
            &b,
            &[std::io::IoSlice::new(b"/dev/ptmx")],
            &mut control,
            SendFlags::empty(),
        )
        .unwrap();
        let master = receive_pty_master(&a).unwrap();
        resize_terminal(&master, 120, 40).unwrap();
        let size = rustix::termios::tcgetwinsize(&pty.slave).unwrap();
        assert_eq!((size.ws_col, size.ws_row), (120, 40));
    }
}
