//! The CRI gRPC server on a unix socket.

use std::path::{Path, PathBuf};

use k8s_cri::v1::image_service_server::ImageServiceServer;
use k8s_cri::v1::runtime_service_server::RuntimeServiceServer;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use super::image::Images;
use super::runtime::CriRuntime;

/// Why the CRI server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address is not `unix:///path` (or a plain absolute path).
    #[error("unsupported CRI address {address:?}: expected unix:///path/to/socket")]
    Address {
        /// The address given.
        address: String,
    },
    /// The socket's directory could not be created or the socket bound.
    #[error("cannot listen on {}", .path.display())]
    Bind {
        /// The socket.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("the CRI server failed")]
    Transport(#[source] tonic::transport::Error),
}

/// The socket path of a CRI address: `unix:///run/rkube/cri.sock` or `/run/rkube/cri.sock`.
pub fn socket_path(address: &str) -> Result<PathBuf, ServeError> {
    let path = address.strip_prefix("unix://").unwrap_or(address);
    if !path.starts_with('/') {
        return Err(ServeError::Address {
            address: address.to_owned(),
        });
    }
    Ok(PathBuf::from(path))
}

/// A bound CRI socket, ready to serve.
pub struct CriServer {
    listener: UnixListener,
    path: PathBuf,
}

impl CriServer {
    /// Binds the socket at `path` (mode 0600; a stale socket file is replaced).
    pub fn bind(path: &Path) -> Result<CriServer, ServeError> {
        let bind_err = |source| ServeError::Bind {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(bind_err)?;
        }
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(bind_err(e)),
        }
        let listener = UnixListener::bind(path).map_err(bind_err)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
        Ok(CriServer {
            listener,
            path: path.to_owned(),
        })
    }

    /// Serves both CRI services until `shutdown` completes, then removes the socket.
    pub async fn serve(
        self,
        images: Images,
        runtime: CriRuntime,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), ServeError> {
        let result = tonic::transport::Server::builder()
            .add_service(ImageServiceServer::new(images))
            .add_service(RuntimeServiceServer::new(runtime))
            .serve_with_incoming_shutdown(UnixListenerStream::new(self.listener), shutdown)
            .await
            .map_err(ServeError::Transport);
        let _ = std::fs::remove_file(&self.path);
        result
    }
}
