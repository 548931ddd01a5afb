//! The CRI streaming server: the URLs `Exec`, `Attach` and `PortForward` return, which the
//! kubelet (or `rkube crictl`) then opens to stream a command's stdin/stdout/stderr, a TTY, or
//! a TCP connection into the pod.
//!
//! As in upstream's streaming server, the gRPC call only validates the request and parks it
//! under a random single-use token (valid for a minute); the URL is
//! `http://<address>/{exec,attach,portforward}/<token>`. Streams are WebSockets speaking
//! Kubernetes' channel protocol (`v5.channel.k8s.io`, `v4.channel.k8s.io`; see [`protocol`]):
//! each binary message starts with a channel byte — 0 stdin, 1 stdout, 2 stderr, 3 the
//! final status (a `metav1.Status` in JSON), 4 terminal resizes; v5 adds 255 to close a
//! channel. Port forwarding uses two channels per port (data, error), each opened by the port
//! as two little-endian bytes. SPDY, the older transport, is refused with 501.
//!
//! Only loopback addresses are served by default: the kubelet, on the same node, proxies.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONNECTION, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::runtime::{ContainerState, Runtime, SandboxState};

pub mod client;
pub mod protocol;

use protocol::{
    ERROR_CHANNEL, RESIZE_CHANNEL, STDERR_CHANNEL, STDIN_CHANNEL, STDOUT_CHANNEL, TerminalSize,
    V4_PROTOCOL, V5_PROTOCOL,
};

/// How long a URL stays valid after the gRPC call that made it (upstream's default).
const TOKEN_TTL: Duration = Duration::from_secs(60);
/// How many URLs may wait at once (upstream's default).
const MAX_PENDING: usize = 1000;

/// Why the streaming server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StreamingError {
    /// The address could not be bound.
    #[error("cannot listen for CRI streams on {address}")]
    Bind {
        /// The address asked for.
        address: SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

/// A request parked until its URL is opened.
#[derive(Debug, Clone)]
enum Pending {
    Exec(cri::ExecRequest),
    Attach(cri::AttachRequest),
    PortForward(cri::PortForwardRequest),
}

impl Pending {
    fn kind(&self) -> &'static str {
        match self {
            Pending::Exec(_) => "exec",
            Pending::Attach(_) => "attach",
            Pending::PortForward(_) => "portforward",
        }
    }
}

/// The parked requests, shared by the gRPC service (which adds) and the HTTP server (which
/// takes each once).
#[derive(Clone)]
pub struct Streams {
    base: String,
    pending: Arc<Mutex<HashMap<String, (Instant, Pending)>>>,
}

/// The gRPC side could not park a request.
#[derive(Debug, thiserror::Error)]
#[error("too many streaming requests are waiting to be opened ({MAX_PENDING}); try again")]
pub struct TooManyPending;

impl Streams {
    /// The base URL (`http://127.0.0.1:PORT`).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Parks an exec request; returns its URL.
    pub fn exec(&self, request: cri::ExecRequest) -> Result<String, TooManyPending> {
        self.park(Pending::Exec(request))
    }

    /// Parks an attach request; returns its URL.
    pub fn attach(&self, request: cri::AttachRequest) -> Result<String, TooManyPending> {
        self.park(Pending::Attach(request))
    }

    /// Parks a port-forward request; returns its URL.
    pub fn port_forward(&self, request: cri::PortForwardRequest) -> Result<String, TooManyPending> {
        self.park(Pending::PortForward(request))
    }

    fn park(&self, request: Pending) -> Result<String, TooManyPending> {
        use rand::RngCore;
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        let token = hex::encode(bytes);
        let kind = request.kind();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.retain(|_, (at, _)| at.elapsed() < TOKEN_TTL);
        if pending.len() >= MAX_PENDING {
            return Err(TooManyPending);
        }
        pending.insert(token.clone(), (Instant::now(), request));
        Ok(format!("{}/{kind}/{token}", self.base))
    }

    /// Takes the request parked under `token` if it is of `kind` and still valid.
    fn take(&self, kind: &str, token: &str) -> Option<Pending> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let (at, request) = pending.remove(token)?;
        (at.elapsed() < TOKEN_TTL && request.kind() == kind).then_some(request)
    }
}

/// The bound streaming server.
pub struct StreamingServer {
    listener: TcpListener,
    streams: Streams,
}

impl StreamingServer {
    /// Binds `address` (port 0 picks a free port).
    pub async fn bind(address: SocketAddr) -> Result<StreamingServer, StreamingError> {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| StreamingError::Bind { address, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| StreamingError::Bind { address, source })?;
        Ok(StreamingServer {
            listener,
            streams: Streams {
                base: format!("http://{local}"),
                pending: Arc::default(),
            },
        })
    }

    /// The handle the gRPC service parks requests with.
    pub fn streams(&self) -> Streams {
        self.streams.clone()
    }

    /// Serves until the task is dropped.
    pub async fn serve(self, runtime: Arc<Runtime>) {
        loop {
            let (stream, _) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "accepting a CRI stream connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Keystrokes and prompts are small writes: without this each waits on the peer's
            // delayed ACK (Nagle), which an interactive exec feels.
            if let Err(err) = stream.set_nodelay(true) {
                tracing::debug!(error = %err, "TCP_NODELAY not set on a CRI stream");
            }
            let streams = self.streams.clone();
            let runtime = runtime.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let streams = streams.clone();
                    let runtime = runtime.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(request, &streams, runtime)) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades();
                if let Err(err) = connection.await {
                    tracing::debug!(error = %err, "CRI stream connection ended");
                }
            });
        }
    }
}

fn plain(status: StatusCode, text: impl Into<String>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text.into() + "\n")));
    *response.status_mut() = status;
    response
}

/// Answers one HTTP request: a WebSocket upgrade for a parked request, or an error.
fn handle(
    request: Request<Incoming>,
    streams: &Streams,
    runtime: Arc<Runtime>,
) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (Some(kind), Some(token)) = (parts.next(), parts.next()) else {
        return plain(StatusCode::NOT_FOUND, format!("no such stream: {path}"));
    };
    let header = |name| {
        request
            .headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let upgrade = header(UPGRADE);
    if upgrade.eq_ignore_ascii_case("SPDY/3.1") {
        return plain(
            StatusCode::NOT_IMPLEMENTED,
            "rkube's streaming server speaks WebSocket (v5.channel.k8s.io, v4.channel.k8s.io); SPDY is not implemented",
        );
    }
    let connection = header(CONNECTION).to_ascii_lowercase();
    let key = header(SEC_WEBSOCKET_KEY);
    if !upgrade.eq_ignore_ascii_case("websocket")
        || !connection.split(',').any(|c| c.trim() == "upgrade")
        || key.is_empty()
    {
        return plain(
            StatusCode::BAD_REQUEST,
            "a CRI stream must be opened as a WebSocket (Upgrade: websocket, Sec-WebSocket-Key, Sec-WebSocket-Protocol: v5.channel.k8s.io or v4.channel.k8s.io)",
        );
    }
    let Some(pending) = streams.take(kind, token) else {
        return plain(
            StatusCode::NOT_FOUND,
            format!("no {kind} stream {token}: unknown, already used, or older than a minute"),
        );
    };
    let offered: Vec<String> = header(hyper::header::SEC_WEBSOCKET_PROTOCOL)
        .split(',')
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    let supported: &[&str] = match pending {
        Pending::PortForward(_) => &[V4_PROTOCOL],
        _ => &[V5_PROTOCOL, V4_PROTOCOL],
    };
    let chosen = offered
        .iter()
        .find(|p| supported.contains(&p.as_str()))
        .cloned();
    // Port forwarding, like upstream's, also serves a client that names no protocol.
    let chosen = match (chosen, &pending) {
        (Some(p), _) => Some(p),
        (None, Pending::PortForward(_)) if offered.is_empty() => Some(String::new()),
        (None, _) => None,
    };
    let Some(protocol) = chosen else {
        return plain(
            StatusCode::BAD_REQUEST,
            format!("requested protocol(s) are not supported: {offered:?}; supports {supported:?}"),
        );
    };
    let pending = match pending {
        Pending::PortForward(mut pf) => {
            let query = request.uri().query().unwrap_or("");
            match ports_of(query) {
                Ok(ports) if !ports.is_empty() => pf.port = ports,
                Ok(_) if !pf.port.is_empty() => {}
                Ok(_) => {
                    return plain(
                        StatusCode::BAD_REQUEST,
                        "query parameter \"port\" is required",
                    );
                }
                Err(message) => return plain(StatusCode::BAD_REQUEST, message),
            }
            Pending::PortForward(pf)
        }
        other => other,
    };
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    }
    if !protocol.is_empty()
        && let Ok(p) = HeaderValue::from_str(&protocol)
    {
        headers.insert(hyper::header::SEC_WEBSOCKET_PROTOCOL, p);
    }
    tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(request).await {
            Ok(upgraded) => upgraded,
            Err(err) => {
                tracing::debug!(error = %err, "CRI stream upgrade failed");
                return;
            }
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        match pending {
            Pending::Exec(exec) => exec_session(ws, runtime, exec).await,
            Pending::Attach(attach) => attach_session(ws, runtime, attach).await,
            Pending::PortForward(pf) => port_forward_session(ws, runtime, pf).await,
        }
    });
    response
}

/// The ports of a port-forward URL's `port` query parameters (repeated or comma-separated).
fn ports_of(query: &str) -> Result<Vec<i32>, String> {
    let mut ports = Vec::new();
    for pair in query.split('&') {
        let Some(value) = pair.strip_prefix("port=") else {
            continue;
        };
        if value.is_empty() {
            return Err("query parameter \"port\" cannot be empty".to_owned());
        }
        for p in value.split(',').flat_map(|v| v.split("%2C")) {
            match p.parse::<u16>() {
                Ok(0) => return Err(format!("port {p:?} must be > 0")),
                Ok(port) => ports.push(i32::from(port)),
                Err(_) => return Err(format!("unable to parse {p:?} as a port")),
            }
        }
    }
    Ok(ports)
}

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Sends frames from many tasks through one writer; ends when every sender is gone.
fn frame_writer(
    mut sink: futures::stream::SplitSink<Ws, Message>,
) -> (mpsc::Sender<Message>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Message>(32);
    let task = tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            let close = matches!(message, Message::Close(_));
            if sink.send(message).await.is_err() || close {
                break;
            }
        }
        let _ = sink.close().await;
    });
    (tx, task)
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut bytes = Vec::with_capacity(data.len() + 1);
    bytes.push(channel);
    bytes.extend_from_slice(data);
    Message::Binary(bytes.into())
}

/// Copies `reader` to `channel` until EOF (or an error: a terminal's master reads EIO once
/// the last process holding it exits).
async fn pump_out(mut reader: impl AsyncRead + Unpin, channel: u8, tx: mpsc::Sender<Message>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx.send(frame(channel, &buf[..n])).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// What the client sent on the input channels.
enum Input {
    Stdin(Bytes),
    CloseStdin,
    Resize(TerminalSize),
}

/// Reads the client's frames until it closes, turning them into [`Input`].
async fn read_input(mut stream: futures::stream::SplitStream<Ws>, tx: mpsc::Sender<Input>) {
    while let Some(Ok(message)) = stream.next().await {
        let Message::Binary(data) = message else {
            if matches!(message, Message::Close(_)) {
                break;
            }
            continue;
        };
        let Some((&channel, rest)) = data.split_first() else {
            continue;
        };
        let input = match channel {
            STDIN_CHANNEL => Input::Stdin(data.slice(1..)),
            RESIZE_CHANNEL => match serde_json::from_slice::<TerminalSize>(rest) {
                Ok(size) => Input::Resize(size),
                Err(_) => continue,
            },
            protocol::CLOSE_CHANNEL if rest.first() == Some(&STDIN_CHANNEL) => Input::CloseStdin,
            _ => continue,
        };
        if tx.send(input).await.is_err() {
            return;
        }
    }
    let _ = tx.send(Input::CloseStdin).await;
}

/// Feeds [`Input`] to the process: stdin bytes to `stdin` (dropped at close), resizes to
/// `terminal`.
async fn feed_input(
    mut rx: mpsc::Receiver<Input>,
    mut stdin: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    terminal: Option<std::fs::File>,
) {
    while let Some(input) = rx.recv().await {
        match input {
            Input::Stdin(bytes) => {
                if let Some(w) = stdin.as_mut()
                    && (w.write_all(&bytes).await.is_err() || w.flush().await.is_err())
                {
                    stdin = None;
                }
            }
            Input::CloseStdin => {
                if let Some(mut w) = stdin.take() {
                    let _ = w.shutdown().await;
                }
            }
            Input::Resize(size) => {
                if let Some(t) = &terminal
                    && let Err(err) = crate::exec::resize_terminal(t, size.width, size.height)
                {
                    tracing::debug!(error = %err, "resizing an exec terminal");
                }
            }
        }
    }
}

/// Ends a session: the final status on the error channel, then a close frame.
async fn finish(tx: mpsc::Sender<Message>, writer: tokio::task::JoinHandle<()>, status: Vec<u8>) {
    let _ = tx.send(frame(ERROR_CHANNEL, &status)).await;
    let _ = tx.send(Message::Close(None)).await;
    drop(tx);
    let _ = writer.await;
}

/// One exec stream. v5's close signal and v4's lack of it need no difference here: stdin
/// closes at the signal or when the client goes.
async fn exec_session(ws: Ws, runtime: Arc<Runtime>, request: cri::ExecRequest) {
    let (sink, stream) = ws.split();
    let (tx, writer) = frame_writer(sink);
    let status = match run_exec(&tx, stream, runtime, request).await {
        Ok(0) => protocol::success(),
        Ok(code) => protocol::exit_code_failure(code),
        Err(message) => protocol::failure(&message),
    };
    finish(tx, writer, status).await;
}

/// Runs one streaming exec; its exit code, or why it could not run.
async fn run_exec(
    tx: &mpsc::Sender<Message>,
    stream: futures::stream::SplitStream<Ws>,
    runtime: Arc<Runtime>,
    request: cri::ExecRequest,
) -> Result<i32, String> {
    use std::process::Stdio;
    let id = request.container_id.clone();
    let cmd = request.cmd.clone();
    let tty = request.tty;
    let mut prepared =
        tokio::task::spawn_blocking(move || runtime.prepare_exec(&id, &cmd, None, tty))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| crate::error_chain(&e))?;
    let piped = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
    let console = prepared.take_console();
    let mut command = tokio::process::Command::from(prepared.command());
    if tty {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
    } else {
        command
            .stdin(piped(request.stdin))
            .stdout(piped(request.stdout))
            .stderr(piped(request.stderr));
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("starting the exec helper: {e}"))?;
    if request.stdout || request.stderr {
        // As upstream: an empty frame tells the client the streams are ready.
        let _ = tx
            .send(frame(
                if request.stdout {
                    STDOUT_CHANNEL
                } else {
                    STDERR_CHANNEL
                },
                &[],
            ))
            .await;
    }
    let (input_tx, input_rx) = mpsc::channel(16);
    let reader = tokio::spawn(read_input(stream, input_tx));
    let mut outputs = Vec::new();
    let mut helper_stderr = Vec::new();
    let feeder = if let Some(listener) = console {
        let master = receive_terminal(listener, &mut child).await;
        let master = match master {
            Ok(master) => master,
            Err(why) => {
                let status = child.wait().await.map_err(|e| e.to_string())?;
                if let Some(mut err) = child.stderr.take() {
                    let _ = err.read_to_end(&mut helper_stderr).await;
                }
                return match prepared.finish(status, &helper_stderr) {
                    Ok(_) => Err(why),
                    Err(e) => Err(crate::error_chain(&e)),
                };
            }
        };
        let clone = |f: &std::fs::File| f.try_clone().map_err(|e| e.to_string());
        let resize = clone(&master)?;
        let writer = clone(&master)?;
        if request.stdout {
            outputs.push(tokio::spawn(pump_out(
                tokio::fs::File::from_std(master),
                STDOUT_CHANNEL,
                tx.clone(),
            )));
        }
        let stdin: Option<Box<dyn AsyncWrite + Send + Unpin>> = request
            .stdin
            .then(|| Box::new(tokio::fs::File::from_std(writer)) as _);
        tokio::spawn(feed_input(input_rx, stdin, Some(resize)))
    } else {
        if let Some(out) = child.stdout.take() {
            outputs.push(tokio::spawn(pump_out(out, STDOUT_CHANNEL, tx.clone())));
        }
        if let Some(err) = child.stderr.take() {
            outputs.push(tokio::spawn(pump_out(err, STDERR_CHANNEL, tx.clone())));
        }
        let stdin: Option<Box<dyn AsyncWrite + Send + Unpin>> =
            child.stdin.take().map(|w| Box::new(w) as _);
        tokio::spawn(feed_input(input_rx, stdin, None))
    };
    let status = child.wait().await.map_err(|e| e.to_string())?;
    for output in outputs {
        let _ = output.await;
    }
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_end(&mut helper_stderr).await;
    }
    reader.abort();
    feeder.abort();
    prepared
        .finish(status, &helper_stderr)
        .map_err(|e| crate::error_chain(&e))
}

/// Waits for the exec's terminal to arrive on the console socket, or for the helper to end
/// without sending one.
async fn receive_terminal(
    listener: std::os::unix::net::UnixListener,
    child: &mut tokio::process::Child,
) -> Result<std::fs::File, String> {
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let listener = tokio::net::UnixListener::from_std(listener).map_err(|e| e.to_string())?;
    let connection = tokio::select! {
        accepted = listener.accept() => accepted.map_err(|e| e.to_string())?.0,
        _ = child.wait() => return Err("the exec helper ended before opening a terminal".to_owned()),
    };
    let connection = connection.into_std().map_err(|e| e.to_string())?;
    connection
        .set_nonblocking(false)
        .map_err(|e| e.to_string())?;
    tokio::task::spawn_blocking(move || crate::exec::receive_pty_master(&connection))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// Attach streams what the container writes from now on (read from its CRI log as the shim
/// writes it) until the container exits. Containers never get a stdin or a TTY here
/// (`CreateContainer` refuses both), so there is nothing to write to.
async fn attach_session(ws: Ws, runtime: Arc<Runtime>, request: cri::AttachRequest) {
    let (sink, mut stream) = ws.split();
    let (tx, writer) = frame_writer(sink);
    let running = |runtime: Arc<Runtime>, id: String| async move {
        tokio::task::spawn_blocking(move || runtime.status(&id))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| crate::error_chain(&e)))
    };
    let status = match running(runtime.clone(), request.container_id.clone()).await {
        Err(message) => protocol::failure(&message),
        Ok(status) => {
            let channel = if request.stdout {
                STDOUT_CHANNEL
            } else {
                STDERR_CHANNEL
            };
            let _ = tx.send(frame(channel, &[])).await;
            let mut tail = LogTail::at_end(status.log_path.clone());
            let mut done = status.state != ContainerState::Running;
            loop {
                for record in tail.poll() {
                    let (on, channel) = if record.stream == "stderr" {
                        (request.stderr, STDERR_CHANNEL)
                    } else {
                        (request.stdout, STDOUT_CHANNEL)
                    };
                    let mut text = record.content;
                    if !record.partial {
                        text.push(b'\n');
                    }
                    if on && tx.send(frame(channel, &text)).await.is_err() {
                        done = true;
                    }
                }
                if done {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    message = stream.next() => match message {
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                        Some(Ok(_)) => {}
                    },
                }
                // One more read after the container exits drains what it wrote last.
                done = !matches!(
                    running(runtime.clone(), request.container_id.clone()).await,
                    Ok(s) if s.state == ContainerState::Running
                );
            }
            protocol::success()
        }
    };
    finish(tx, writer, status).await;
}

/// Follows a CRI log file from where it ends now, record by record; starts over when the
/// file is rotated (replaced by a new, shorter one).
struct LogTail {
    path: std::path::PathBuf,
    offset: u64,
    pending: Vec<u8>,
}

impl LogTail {
    fn at_end(path: std::path::PathBuf) -> LogTail {
        let offset = std::fs::metadata(&path).map_or(0, |m| m.len());
        LogTail {
            path,
            offset,
            pending: Vec::new(),
        }
    }

    /// The whole records written since the last call.
    fn poll(&mut self) -> Vec<crate::logs::Record> {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        let len = file.metadata().map_or(0, |m| m.len());
        if len < self.offset {
            self.offset = 0;
            self.pending.clear();
        }
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut fresh = Vec::new();
        if let Ok(n) = file.read_to_end(&mut fresh) {
            self.offset += n as u64;
            self.pending.extend_from_slice(&fresh);
        }
        let Some(end) = self.pending.iter().rposition(|&b| b == b'\n') else {
            return Vec::new();
        };
        let whole: Vec<u8> = self.pending.drain(..=end).collect();
        crate::logs::parse_records(&whole).unwrap_or_default()
    }
}

async fn port_forward_session(ws: Ws, runtime: Arc<Runtime>, request: cri::PortForwardRequest) {
    let (sink, mut stream) = ws.split();
    let (tx, writer) = frame_writer(sink);
    let ports = request.port.clone();
    for (i, port) in ports.iter().enumerate() {
        let bytes = (*port as u16).to_le_bytes();
        let _ = tx.send(frame((2 * i) as u8, &bytes)).await;
        let _ = tx.send(frame((2 * i + 1) as u8, &bytes)).await;
    }
    let id = request.pod_sandbox_id.clone();
    let netns = tokio::task::spawn_blocking(move || runtime.sandbox_status(&id))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| crate::error_chain(&e)))
        .and_then(|s| {
            if s.state == SandboxState::Ready {
                Ok(s.netns)
            } else {
                Err(format!("pod sandbox {} is not ready", s.id))
            }
        });
    let mut writers: Vec<Option<tokio::net::tcp::OwnedWriteHalf>> = Vec::new();
    let mut readers = Vec::new();
    for (i, &port) in ports.iter().enumerate() {
        let connected = match &netns {
            Ok(netns) => connect_in(netns.clone(), port as u16).await,
            Err(message) => Err(message.clone()),
        };
        match connected {
            Ok(tcp) => {
                let (read, write) = tcp.into_split();
                readers.push(tokio::spawn(pump_out(read, (2 * i) as u8, tx.clone())));
                writers.push(Some(write));
            }
            Err(message) => {
                let text = format!(
                    "error forwarding port {port} to pod {}: {message}",
                    request.pod_sandbox_id
                );
                let _ = tx.send(frame((2 * i + 1) as u8, text.as_bytes())).await;
                writers.push(None);
            }
        }
    }
    let all_read = futures::future::join_all(readers);
    tokio::pin!(all_read);
    loop {
        tokio::select! {
            _ = &mut all_read => break,
            message = stream.next() => match message {
                Some(Ok(Message::Binary(data))) => {
                    let Some(&channel) = data.first() else { continue };
                    let index = usize::from(channel / 2);
                    if channel % 2 != 0 {
                        continue;
                    }
                    if let Some(Some(w)) = writers.get_mut(index)
                        && w.write_all(&data[1..]).await.is_err() {
                            writers[index] = None;
                        }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    for w in writers.iter_mut().flatten() {
                        let _ = w.shutdown().await;
                    }
                    break;
                }
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = tx.send(Message::Close(None)).await;
    drop(tx);
    let _ = writer.await;
}

/// Connects to `port` on the pod's loopback: from a thread that joins the pod's network
/// namespace (a socket keeps the namespace it was made in), or on the host for a pod on the
/// host's network.
async fn connect_in(
    netns: Option<std::path::PathBuf>,
    port: u16,
) -> Result<tokio::net::TcpStream, String> {
    let std_stream = tokio::task::spawn_blocking(move || {
        std::thread::spawn(move || -> Result<std::net::TcpStream, String> {
            if let Some(path) = &netns {
                let ns = std::fs::File::open(path)
                    .map_err(|e| format!("opening network namespace {}: {e}", path.display()))?;
                nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("entering network namespace {}: {e}", path.display()))?;
            }
            let v4 = SocketAddr::from(([127, 0, 0, 1], port));
            let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
            std::net::TcpStream::connect_timeout(&v4, Duration::from_secs(5))
                .or_else(|e4| {
                    std::net::TcpStream::connect_timeout(&v6, Duration::from_secs(5))
                        .map_err(|_| e4)
                })
                .map_err(|e| format!("dial tcp 127.0.0.1:{port}: {e}"))
        })
        .join()
        .map_err(|_| "the connecting thread panicked".to_owned())?
    })
    .await
    .map_err(|e| e.to_string())??;
    std_stream
        .set_nonblocking(true)
        .map_err(|e| e.to_string())?;
    tokio::net::TcpStream::from_std(std_stream).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_queries_parse_as_upstream_does() {
        assert_eq!(ports_of("port=80&port=8080"), Ok(vec![80, 8080]));
        assert_eq!(ports_of("port=80,81"), Ok(vec![80, 81]));
        assert_eq!(ports_of(""), Ok(vec![]));
        assert!(ports_of("port=").unwrap_err().contains("cannot be empty"));
        assert!(ports_of("port=0").unwrap_err().contains("must be > 0"));
        assert!(
            ports_of("port=http")
                .unwrap_err()
                .contains("unable to parse")
        );
        assert!(ports_of("port=70000").is_err());
    }

    #[test]
    fn a_token_is_single_use_and_of_one_kind() {
        let streams = Streams {
            base: "http://127.0.0.1:1".into(),
            pending: Arc::default(),
        };
        let url = streams.exec(cri::ExecRequest::default()).unwrap();
        let token = url.rsplit('/').next().unwrap().to_owned();
        assert!(url.starts_with("http://127.0.0.1:1/exec/"));
        assert!(streams.take("attach", &token).is_none(), "wrong kind");
        let url = streams.exec(cri::ExecRequest::default()).unwrap();
        let token = url.rsplit('/').next().unwrap().to_owned();
        assert!(streams.take("exec", &token).is_some());
        assert!(streams.take("exec", &token).is_none(), "used once");
    }

    #[test]
    fn parked_requests_are_bounded() {
        let streams = Streams {
            base: "http://127.0.0.1:1".into(),
            pending: Arc::default(),
        };
        for _ in 0..MAX_PENDING {
            streams
                .port_forward(cri::PortForwardRequest::default())
                .unwrap();
        }
        assert!(streams.attach(cri::AttachRequest::default()).is_err());
    }
}
