//! A CRI client over a unix socket: what `rkube crictl` and the tests use, and what the kubelet
//! will use, against rkube's runtime or containerd alike.

use std::path::PathBuf;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

/// Connecting to a CRI socket failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to the CRI socket {}", .path.display())]
pub struct ConnectError {
    path: PathBuf,
    #[source]
    source: tonic::transport::Error,
}

/// Clients of both CRI services on one connection.
#[derive(Clone)]
pub struct CriClient {
    /// `runtime.v1.ImageService`.
    pub images: ImageServiceClient<Channel>,
    /// `runtime.v1.RuntimeService`.
    pub runtime: RuntimeServiceClient<Channel>,
}

impl CriClient {
    /// Connects to the socket at `path`.
    pub async fn connect(path: impl Into<PathBuf>) -> Result<CriClient, ConnectError> {
        Self::connect_to(path.into(), None).await
    }

    /// Connects to the socket at `path`, giving up on the connection and on every call after
    /// `timeout` (as the kubelet's `--runtime-request-timeout`), so a runtime that stops
    /// answering is an error rather than a wait for ever.
    pub async fn connect_with_timeout(
        path: impl Into<PathBuf>,
        timeout: Duration,
    ) -> Result<CriClient, ConnectError> {
        Self::connect_to(path.into(), Some(timeout)).await
    }

    async fn connect_to(
        path: PathBuf,
        timeout: Option<Duration>,
    ) -> Result<CriClient, ConnectError> {
        let socket = path.clone();
        // The URI is a placeholder: the connector below always dials the socket.
        let mut endpoint = Endpoint::from_static("http://[::1]:50051");
        if let Some(timeout) = timeout {
            endpoint = endpoint.connect_timeout(timeout).timeout(timeout);
        }
        let channel = endpoint
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(socket).await?,
                    ))
                }
            }))
            .await
            .map_err(|source| ConnectError {
                path: path.clone(),
                source,
            })?;
        Ok(CriClient {
            images: ImageServiceClient::new(channel.clone()),
            runtime: RuntimeServiceClient::new(channel),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn a_runtime_that_never_answers_is_an_error_after_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cri.sock");
        // The kernel accepts connections into the backlog; nothing ever answers them.
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let started = Instant::now();
        let call = async {
            let mut client = CriClient::connect_with_timeout(&path, Duration::from_millis(300))
                .await
                .map_err(|e| e.to_string())?;
            let version = client
                .runtime
                .version(k8s_cri::v1::VersionRequest::default());
            version.await.map(|_| ()).map_err(|e| e.to_string())
        };
        let outcome = tokio::time::timeout(Duration::from_secs(10), call).await;
        assert!(matches!(outcome, Ok(Err(_))), "{outcome:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
