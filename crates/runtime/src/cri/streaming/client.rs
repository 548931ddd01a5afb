//! A client for the streaming URLs (ours or any CRI runtime's, such as containerd's): opens
//! the WebSocket with the channel subprotocol and reads and writes channel frames.

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::protocol::{
    CLOSE_CHANNEL, ERROR_CHANNEL, RESIZE_CHANNEL, STDERR_CHANNEL, STDIN_CHANNEL, STDOUT_CHANNEL,
    TerminalSize, V5_PROTOCOL, exit_code_of,
};

/// Why a stream could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum StreamClientError {
    /// The URL is not one a WebSocket can be opened to.
    #[error("bad stream URL {url:?}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: tungstenite::Error,
    },
    /// The server refused or the connection failed.
    #[error("opening stream {url}")]
    Connect {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: tungstenite::Error,
    },
    /// Reading or writing a frame failed.
    #[error("stream I/O")]
    Io(#[source] tungstenite::Error),
    /// The server ended the stream with a failure status.
    #[error("{0}")]
    Failed(String),
    /// Writing to this process's stdout or stderr failed.
    #[error("writing the output")]
    Output(#[source] std::io::Error),
}

/// An open stream.
pub struct Session {
    /// The WebSocket, for callers that split it to read and write at once.
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The subprotocol the server chose.
    pub protocol: String,
}

/// Everything a stream carried until it closed, by channel.
#[derive(Debug, Default, Clone)]
pub struct Collected {
    /// Bytes per channel, in arrival order (`channels[1]` is stdout).
    pub channels: std::collections::BTreeMap<u8, Vec<u8>>,
}

impl Collected {
    /// The bytes of `channel` (empty if none came).
    pub fn channel(&self, channel: u8) -> &[u8] {
        self.channels.get(&channel).map_or(&[], Vec::as_slice)
    }
}

impl Session {
    /// Opens `url` offering `protocols` in order of preference.
    pub async fn open(url: &str, protocols: &[&str]) -> Result<Session, StreamClientError> {
        let url = url
            .replacen("http://", "ws://", 1)
            .replacen("https://", "wss://", 1);
        let mut request =
            url.as_str()
                .into_client_request()
                .map_err(|source| StreamClientError::Url {
                    url: url.clone(),
                    source,
                })?;
        if !protocols.is_empty() {
            let offered = protocols.join(", ");
            if let Ok(value) = offered.parse() {
                request
                    .headers_mut()
                    .insert(tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL, value);
            }
        }
        let (ws, response) = tokio_tungstenite::connect_async(request)
            .await
            .map_err(|source| StreamClientError::Connect {
                url: url.clone(),
                source,
            })?;
        let protocol = response
            .headers()
            .get(tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        Ok(Session { ws, protocol })
    }

    /// Sends `data` on `channel`.
    pub async fn send(&mut self, channel: u8, data: &[u8]) -> Result<(), StreamClientError> {
        let mut frame = Vec::with_capacity(data.len() + 1);
        frame.push(channel);
        frame.extend_from_slice(data);
        self.ws
            .send(Message::Binary(frame.into()))
            .await
            .map_err(StreamClientError::Io)
    }

    /// Sends bytes to the process's stdin.
    pub async fn stdin(&mut self, data: &[u8]) -> Result<(), StreamClientError> {
        self.send(STDIN_CHANNEL, data).await
    }

    /// Tells the server the terminal's size.
    pub async fn resize(&mut self, size: TerminalSize) -> Result<(), StreamClientError> {
        let json = serde_json::to_vec(&size).unwrap_or_default();
        self.send(RESIZE_CHANNEL, &json).await
    }

    /// Closes stdin (v5 only; v4 has no way to say it, and `false` is returned).
    pub async fn close_stdin(&mut self) -> Result<bool, StreamClientError> {
        if self.protocol != V5_PROTOCOL {
            return Ok(false);
        }
        self.send(CLOSE_CHANNEL, &[STDIN_CHANNEL]).await?;
        Ok(true)
    }

    /// The next frame, `None` once the server closed.
    pub async fn next(&mut self) -> Option<Result<(u8, Bytes), StreamClientError>> {
        loop {
            match self.ws.next().await? {
                Ok(Message::Binary(data)) => {
                    let Some(&channel) = data.first() else {
                        continue;
                    };
                    return Some(Ok((channel, data.slice(1..))));
                }
                Ok(Message::Close(_)) => return None,
                Ok(_) => continue,
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::Protocol(_)) => {
                    return None;
                }
                Err(e) => return Some(Err(StreamClientError::Io(e))),
            }
        }
    }

    /// Reads every frame until the server closes.
    pub async fn collect(mut self) -> Result<Collected, StreamClientError> {
        let mut collected = Collected::default();
        while let Some(frame) = self.next().await {
            let (channel, data) = frame?;
            collected
                .channels
                .entry(channel)
                .or_default()
                .extend_from_slice(&data);
        }
        Ok(collected)
    }
}

impl Session {
    /// Connects the stream to this process's stdio until it ends and returns the remote
    /// command's exit code: stdin forwarded when `forward_stdin` (closed at EOF on v5), output
    /// written as it comes, and with `tty` this terminal put in raw mode (restored after) and
    /// its size sent. Stdin is read on its own thread, which a caller ends by exiting.
    pub async fn run_with_stdio(
        mut self,
        forward_stdin: bool,
        tty: bool,
    ) -> Result<i32, StreamClientError> {
        use std::io::Write;
        let _raw = if tty { RawMode::enter() } else { None };
        if let (true, Ok(size)) = (tty, rustix::termios::tcgetwinsize(std::io::stdout())) {
            self.resize(TerminalSize {
                width: size.ws_col,
                height: size.ws_row,
            })
            .await?;
        }
        let v5 = self.protocol == V5_PROTOCOL;
        let (mut sink, mut stream) = self.ws.split();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
        if forward_stdin {
            std::thread::spawn(move || {
                use std::io::Read;
                let mut buf = vec![0u8; 16 * 1024];
                let mut stdin = std::io::stdin();
                loop {
                    match stdin.read(&mut buf) {
                        Ok(0) | Err(_) => {
                            if v5 {
                                let _ = tx.blocking_send(vec![CLOSE_CHANNEL, STDIN_CHANNEL]);
                            }
                            return;
                        }
                        Ok(n) => {
                            let mut frame = vec![STDIN_CHANNEL];
                            frame.extend_from_slice(&buf[..n]);
                            if tx.blocking_send(frame).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        } else {
            drop(tx);
        }
        let mut status = None;
        let mut input_open = true;
        loop {
            tokio::select! {
                frame = rx.recv(), if input_open => match frame {
                    Some(frame) => sink
                        .send(Message::Binary(frame.into()))
                        .await
                        .map_err(StreamClientError::Io)?,
                    None => input_open = false,
                },
                message = stream.next() => match message {
                    Some(Ok(Message::Binary(data))) => match data.split_first() {
                        Some((&STDOUT_CHANNEL, rest)) => {
                            let mut out = std::io::stdout().lock();
                            out.write_all(rest).and_then(|()| out.flush()).map_err(StreamClientError::Output)?;
                        }
                        Some((&STDERR_CHANNEL, rest)) => {
                            std::io::stderr().write_all(rest).map_err(StreamClientError::Output)?;
                        }
                        Some((&ERROR_CHANNEL, rest)) => status = Some(rest.to_vec()),
                        _ => {}
                    },
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Ok(_)) => {}
                    Some(Err(tungstenite::Error::ConnectionClosed)) => break,
                    Some(Err(e)) => return Err(StreamClientError::Io(e)),
                },
            }
        }
        match status {
            Some(status) => exit_code_of(&status).map_err(StreamClientError::Failed),
            None => Err(StreamClientError::Failed(
                "the stream ended without a status".to_owned(),
            )),
        }
    }
}

/// This terminal in raw mode (keys go to the remote terminal as typed) until dropped.
struct RawMode {
    saved: rustix::termios::Termios,
}

impl RawMode {
    /// `None` when stdin is not a terminal (then there is nothing to put in raw mode).
    fn enter() -> Option<RawMode> {
        use rustix::termios::{OptionalActions, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(&stdin, OptionalActions::Now, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}
