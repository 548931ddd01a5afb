//! Answers other processes about a store this process holds open: `rkube datastore stats` and
//! `rkube datastore snapshot save` while a server runs.
//!
//! The store file is locked by the process that has it open (the write-ahead log needs redb's
//! exclusive mode), so another process cannot read it. Instead each open store listens on a unix
//! socket beside its file (`state.redb.sock`, mode 0600) for one-line JSON requests:
//! `{"op":"stats"}`, `{"op":"snapshot","path":"/abs/file"}` and `{"op":"compact","revision":N}`
//! (revision optional: the current one), answered with one JSON line holding the result or an
//! error message. The snapshot is written by the store's process, from one read transaction,
//! while writes go on; compaction goes through its writer like its own compactor's.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::snapshot::{self, SnapshotInfo};
use super::writer::Request as WriterRequest;
use super::{Core, stats_of};
use crate::{Error, Result, Revision, Stats};

/// Hands requests to the store's writer thread.
pub(crate) type Writer = std::sync::mpsc::Sender<WriterRequest>;

/// The admin socket of the store file `db_path`.
pub fn socket_path(db_path: &Path) -> PathBuf {
    let mut name = db_path.file_name().unwrap_or_default().to_os_string();
    name.push(".sock");
    db_path.with_file_name(name)
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Request {
    Stats,
    Snapshot { path: PathBuf },
    Compact { revision: Option<Revision> },
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Response {
    Stats(Stats),
    Snapshot(SnapshotInfo),
    Compacted(Revision),
    Error(String),
}

/// The listening side, owned by an open store; dropping it stops listening and removes the socket.
pub(crate) struct Server {
    path: PathBuf,
    /// The listening socket, shut down to wake the accept loop (connecting by path would not
    /// once the socket file is gone with its directory).
    wake: UnixListener,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Listens for `core`'s store. Without a socket (a path too long for one, say) the store still
    /// works; other processes then cannot ask it, which is logged.
    pub(crate) fn start(core: Weak<Core>, writer: Writer) -> Option<Server> {
        let db_path = core.upgrade()?.path.clone();
        let path = socket_path(&db_path);
        // This process holds the store's lock, so a socket file left here is a dead process's.
        let _ = std::fs::remove_file(&path);
        let listener = match UnixListener::bind(&path) {
            Ok(listener) => listener,
            Err(err) => {
                tracing::warn!(socket = %path.display(), error = %err,
                    "no admin socket: `rkube datastore stats` and `snapshot save` cannot reach this store while it runs");
                return None;
            }
        };
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        let wake = match listener.try_clone() {
            Ok(wake) => wake,
            Err(err) => {
                tracing::warn!(socket = %path.display(), error = %err, "no admin socket");
                let _ = std::fs::remove_file(&path);
                return None;
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("rkube-store-admin".into())
                .spawn(move || serve(listener, core, writer, stop))
                .ok()?
        };
        Some(Server {
            path,
            wake,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accept loop (a shut-down listener fails accept), then let the socket go.
        let _ = rustix::net::shutdown(&self.wake, rustix::net::Shutdown::Both);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve(listener: UnixListener, core: Weak<Core>, writer: Writer, stop: Arc<AtomicBool>) {
    for conn in listener.incoming() {
        if stop.load(Ordering::Acquire) {
            return;
        }
        let Ok(conn) = conn else { continue };
        let Some(core) = core.upgrade() else { return };
        if let Err(err) = answer(conn, &core, &writer) {
            tracing::debug!(error = %err, "admin socket request failed");
        }
    }
}

fn answer(conn: UnixStream, core: &Core, writer: &Writer) -> std::io::Result<()> {
    // A client that never sends must not hold the (sequential) admin thread forever.
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = String::new();
    BufReader::new(&conn).take_line(&mut line)?;
    let response = match serde_json::from_str::<Request>(&line) {
        Err(err) => Response::Error(format!("bad request: {err}")),
        Ok(Request::Stats) => match stats_of(&core.db, &core.path) {
            Ok(stats) => Response::Stats(stats),
            Err(err) => Response::Error(format!("{:#}", ErrorChain(&err))),
        },
        Ok(Request::Compact { revision }) => {
            let target = revision
                .unwrap_or_else(|| core.revision.load(std::sync::atomic::Ordering::Acquire));
            let (reply, rx) = tokio::sync::oneshot::channel();
            let sent = writer.send(WriterRequest::Compact {
                revision: target,
                reply,
            });
            match sent.ok().and_then(|()| rx.blocking_recv().ok()) {
                Some(Ok(())) => Response::Compacted(target),
                Some(Err(err)) => Response::Error(format!("{:#}", ErrorChain(&err))),
                None => Response::Error("the store is closing".into()),
            }
        }
        Ok(Request::Snapshot { path }) if path.is_relative() => {
            Response::Error(format!("snapshot path {} is not absolute", path.display()))
        }
        Ok(Request::Snapshot { path }) => match snapshot::save_from(&core.db, &core.path, &path) {
            Ok(info) => Response::Snapshot(info),
            Err(err) => Response::Error(format!("{:#}", ErrorChain(&err))),
        },
    };
    let mut out = serde_json::to_vec(&response).map_err(std::io::Error::other)?;
    out.push(b'\n');
    (&conn).write_all(&out)
}

/// Reads one line, refusing more than 64 KiB (requests are small).
trait TakeLine {
    fn take_line(&mut self, line: &mut String) -> std::io::Result<usize>;
}

impl<R: BufRead> TakeLine for R {
    fn take_line(&mut self, line: &mut String) -> std::io::Result<usize> {
        use std::io::Read;
        self.take(64 << 10).read_line(line)
    }
}

/// An error with its sources, on one line.
struct ErrorChain<'a>(&'a Error);

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = std::error::Error::source(self.0);
        while let Some(err) = source {
            write!(f, ": {err}")?;
            source = err.source();
        }
        Ok(())
    }
}

/// Asks the process holding the store at `db_path`.
fn request(db_path: &Path, request: &Request) -> Result<Response> {
    let socket = socket_path(db_path);
    let fail = |detail: String| Error::InUse {
        path: db_path.to_path_buf(),
        socket: socket.clone(),
        detail,
    };
    let conn = UnixStream::connect(&socket).map_err(|e| fail(e.to_string()))?;
    let mut line = serde_json::to_vec(request).map_err(|e| fail(e.to_string()))?;
    line.push(b'\n');
    (&conn).write_all(&line).map_err(|e| fail(e.to_string()))?;
    let mut answer = String::new();
    BufReader::new(&conn)
        .read_line(&mut answer)
        .map_err(|e| fail(e.to_string()))?;
    match serde_json::from_str::<Response>(&answer) {
        Ok(Response::Error(detail)) => Err(fail(detail)),
        Ok(response) => Ok(response),
        Err(_) if answer.is_empty() => {
            Err(fail("it closed the connection without an answer".into()))
        }
        Err(e) => Err(fail(format!("unreadable answer: {e}"))),
    }
}

/// Stats of the store at `db_path` from the process holding it.
pub fn remote_stats(db_path: &Path) -> Result<Stats> {
    match request(db_path, &Request::Stats)? {
        Response::Stats(stats) => Ok(stats),
        _ => Err(unexpected(db_path)),
    }
}

/// A snapshot of the store at `db_path`, written to `dest` by the process holding it.
pub fn remote_snapshot(db_path: &Path, dest: &Path) -> Result<SnapshotInfo> {
    let dest = std::path::absolute(dest).map_err(|source| Error::DataPath {
        path: dest.to_path_buf(),
        source,
    })?;
    match request(db_path, &Request::Snapshot { path: dest })? {
        Response::Snapshot(info) => Ok(info),
        _ => Err(unexpected(db_path)),
    }
}

/// Compacts the store at `db_path` to `revision` (default: its current one) through the process
/// holding it; returns the revision compacted to.
pub fn remote_compact(db_path: &Path, revision: Option<Revision>) -> Result<Revision> {
    match request(db_path, &Request::Compact { revision })? {
        Response::Compacted(revision) => Ok(revision),
        _ => Err(unexpected(db_path)),
    }
}

fn unexpected(db_path: &Path) -> Error {
    Error::InUse {
        path: db_path.to_path_buf(),
        socket: socket_path(db_path),
        detail: "it answered another question".into(),
    }
}
