//! A CRI client over a unix socket: what `rkube crictl` and the tests use, and what the kubelet
//! will use, against rkube's runtime or containerd alike.

use std::path::PathBuf;

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
        let path = path.into();
        let socket = path.clone();
        // The URI is a placeholder: the connector below always dials the socket.
        let channel = Endpoint::from_static("http://[::1]:50051")
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
