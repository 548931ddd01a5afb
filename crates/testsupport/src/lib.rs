//! Helpers for tests and benchmarks that need real peer processes. Everything listens on
//! 127.0.0.1 only, on ports picked free at start, in a temporary directory removed on drop.
//!
//! [`EtcdServer`] runs a real single-member etcd (Debian's `etcd-server`) so the etcd store
//! backend is tested against the real thing: the same durability (fsync on every commit, no
//! `--unsafe-no-fsync`), the same gRPC API, real crashes and restarts.

pub mod containerd;
pub mod procs;
pub mod registry;
pub mod tls;

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// How long a start may take. etcd elects itself in about a second; a CI machine running many
/// tests at once, each with its own etcd, needs more.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How often a start is retried on fresh ports when another process took a port between our
/// probe and etcd's bind.
const START_ATTEMPTS: usize = 5;

/// util-linux's `setpriv`, which gives etcd a parent-death signal so it cannot outlive a test
/// process that is killed before its destructors run.
pub(crate) const SETPRIV: &str = "/usr/bin/setpriv";

/// The etcd binary: `$RKUBE_ETCD` or Debian's `/usr/bin/etcd` (package `etcd-server`).
pub fn etcd_binary() -> PathBuf {
    std::env::var_os("RKUBE_ETCD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"))
}

/// A real, durable (fsyncing) single-member etcd on loopback. Killed on drop.
///
/// [`stop`](Self::stop) and [`restart`](Self::restart) keep the ports and the data, so a client
/// keeps its endpoint across a restart and finds every acknowledged write again.
pub struct EtcdServer {
    child: Option<Child>,
    /// Holds `data/` (etcd's data dir) and `etcd.log`.
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
}

impl EtcdServer {
    /// Starts etcd and waits until it is healthy (has elected itself and serves reads).
    ///
    /// # Panics
    ///
    /// When it cannot: a test that needs etcd cannot go on without it. The message carries the
    /// end of etcd's log.
    pub fn start() -> EtcdServer {
        let binary = etcd_binary();
        assert!(
            binary.exists(),
            "{} is missing: install Debian's etcd-server package (or set RKUBE_ETCD)",
            binary.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("rkube-etcd-")
            .tempdir()
            .unwrap_or_else(|e| panic!("creating a temp dir for etcd: {e}"));
        let mut server = EtcdServer {
            child: None,
            dir,
            client_port: 0,
            peer_port: 0,
        };
        let mut last_failure = String::new();
        for _ in 0..START_ATTEMPTS {
            (server.client_port, server.peer_port) = two_free_ports();
            match server.launch() {
                Ok(()) => return server,
                Err(failure) => {
                    // Only a lost port race is worth another try; anything else is final.
                    let log = server.log();
                    if !log.contains("address already in use") {
                        panic!("{failure}\n--- end of etcd.log ---\n{}", tail(&log));
                    }
                    last_failure = failure;
                    let _ = std::fs::remove_dir_all(server.dir.path().join("data"));
                    let _ = std::fs::remove_file(server.log_path());
                }
            }
        }
        panic!("etcd did not start in {START_ATTEMPTS} attempts on fresh ports: {last_failure}");
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The client port.
    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    /// The etcd process id (to read its memory use), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The temporary directory holding etcd's data (`data/`) and its log (`etcd.log`).
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything etcd logged so far (warnings and errors), for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Whether the etcd process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Kills etcd (SIGKILL, like a crash) and waits for it to exit. Its data stays for
    /// [`EtcdServer::restart`]; etcd fsyncs every commit, so nothing it acknowledged is lost.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data (stopping it first if it runs), and waits
    /// until it is healthy.
    ///
    /// # Panics
    ///
    /// When it does not come back; the message carries the end of its log.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(failure) = self.launch() {
            panic!(
                "{failure} (restart on the same ports)\n--- end of etcd.log ---\n{}",
                tail(&self.log())
            );
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// Spawns etcd on the current ports and waits until it is healthy; on failure the process
    /// is gone and the error says why.
    fn launch(&mut self) -> Result<(), String> {
        let command = self.command()?;
        let child = spawn_from_keeper(command)
            .map_err(|e| format!("cannot start {}: {e}", etcd_binary().display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!(
                    "etcd on 127.0.0.1:{} exited during startup ({status})",
                    self.client_port
                ));
            }
            if healthy(self.client_port) {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!(
                    "etcd on 127.0.0.1:{} was not healthy within {START_TIMEOUT:?}",
                    self.client_port
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn command(&self) -> Result<Command, String> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("opening {}: {e}", self.log_path().display()))?;
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut command = if Path::new(SETPRIV).exists() {
            let mut command = Command::new(SETPRIV);
            command.args(["--pdeathsig", "KILL"]).arg(etcd_binary());
            command
        } else {
            Command::new(etcd_binary())
        };
        command
            .arg("--name=rkube-test")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=rkube-test={peer}"))
            .arg(format!(
                "--initial-cluster-token=rkube-test-{}",
                self.client_port
            ))
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // Settings meant for some other etcd must not leak into this one.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ETCD_") {
                command.env_remove(key);
            }
        }
        Ok(command)
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Two distinct free ports: both listeners are held at once so they cannot coincide.
fn two_free_ports() -> (u16, u16) {
    let bind = || TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
    let (a, b) = (bind(), bind());
    let port = |l: &TcpListener| l.local_addr().expect("a bound port").port();
    (port(&a), port(&b))
}

/// Whether etcd's `/health` on the client port says it is healthy: it has a leader and serves
/// reads. Accepting TCP is not enough: etcd listens before it has elected itself.
fn healthy(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(3)));
    let request = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200") && response.contains("\"health\":\"true\"")
}

/// The last lines of a log: enough to see why etcd failed.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `command` from one thread that lives as long as the process. etcd runs under
/// `setpriv --pdeathsig KILL`, and Linux sends that signal when the *thread* that forked it ends:
/// forking from a test's thread or a runtime worker would kill etcd when that thread finished,
/// while forking from this keeper kills it only when the test process dies.
fn spawn_from_keeper(command: Command) -> std::io::Result<Child> {
    static KEEPER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("etcd-keeper".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("starting the etcd keeper thread");
        Mutex::new(tx)
    });
    let gone = || std::io::Error::other("the etcd keeper thread is gone");
    let (reply_tx, reply_rx) = mpsc::channel();
    keeper
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .send((command, reply_tx))
        .map_err(|_| gone())?;
    reply_rx.recv().map_err(|_| gone())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_healthy_restarts_on_the_same_port_and_dies_with_its_handle() {
        let mut server = EtcdServer::start();
        let port = server.client_port();
        assert!(healthy(port), "healthy after start");
        assert!(server.data_dir().join("data").join("member").exists());

        server.stop();
        assert!(!server.is_running(), "running after stop");
        assert!(!healthy(port), "healthy after stop");

        server.restart();
        assert!(server.is_running(), "not running after restart");
        assert!(healthy(port), "not healthy after restart");
        assert_eq!(server.client_port(), port);

        drop(server);
        assert!(!healthy(port), "still answering after drop");
    }
}
