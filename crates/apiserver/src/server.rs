//! HTTPS serving: TLS with the cluster's serving certificate, client certificates verified
//! against the cluster CA (optional, as upstream: a request without one is anonymous), one hyper
//! connection per client with HTTP/2 and HTTP/1.1, and the router.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rkube_store::Store;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::allocator::{Cidr, ServiceAllocator, ensure_kubernetes_service};
use crate::authn::{UserInfo, is_public_path};
use crate::metrics::{MeteredStore, Metrics};
use crate::pki::Pki;
use crate::rest::hooks::Hooks;
use crate::rest::storage::Objects;
use crate::status::ApiError;
use crate::token::ServerToken;

/// The Kubernetes version whose API rkube serves (k8s-openapi's `latest`).
pub const KUBERNETES_MAJOR: &str = "1";
/// See [`KUBERNETES_MAJOR`].
pub const KUBERNETES_MINOR: &str = "37";

/// Failures of starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listening socket cannot be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The PKI's PEM files do not make a TLS configuration.
    #[error("the serving certificate or key is unusable")]
    Tls(#[source] rustls::Error),
    /// A PEM file could not be decoded.
    #[error("the serving certificate or key is not valid PEM")]
    Pem(#[source] rustls::pki_types::pem::Error),
    /// The system namespaces, the `kubernetes` Service or the allocations could not be set up.
    #[error("setting up the cluster's built-in objects failed: {0}")]
    Bootstrap(String),
    /// The client CA could not be turned into a verifier.
    #[error("the cluster CA cannot verify client certificates")]
    ClientVerifier(#[source] rustls::server::VerifierBuilderError),
}

#[derive(Clone)]
struct AppState {
    store: Arc<dyn Store>,
    objects: Objects,
    hooks: Arc<Hooks>,
    token: Option<Arc<ServerToken>>,
    metrics: Arc<Metrics>,
    /// Set once the apiextensions controller has published the stored CRDs.
    crds_synced: Arc<std::sync::atomic::AtomicBool>,
}

/// What the cluster's configuration gives the server.
#[derive(Clone, Debug)]
pub struct Options {
    /// The range Service cluster IPs come from (`--service-cidr`).
    pub service_cidr: Cidr,
    /// The address other clients reach this apiserver at: the `kubernetes` Service's endpoint.
    pub advertise_ip: std::net::IpAddr,
    /// The server token, accepted as a bearer token (see [`crate::token`]).
    pub token: Option<ServerToken>,
}

impl Options {
    /// The defaults of `rkube server`: services from 10.43.0.0/16, advertised on loopback.
    pub fn new(advertise_ip: std::net::IpAddr) -> Self {
        Self {
            service_cidr: Cidr::parse("10.43.0.0/16").expect("the default CIDR parses"),
            advertise_ip,
            token: None,
        }
    }
}

/// A bound apiserver, ready to [`Apiserver::run`].
pub struct Apiserver {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
}

impl Apiserver {
    /// Binds `addr` and prepares TLS from `pki`.
    pub async fn bind(
        addr: SocketAddr,
        pki: &Pki,
        store: Arc<dyn Store>,
        options: Options,
    ) -> Result<Apiserver, ServeError> {
        let acceptor = TlsAcceptor::from(Arc::new(tls_config(pki)?));
        let metrics = Metrics::new();
        let store: Arc<dyn Store> = Arc::new(MeteredStore::new(store, metrics.clone()));
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let openapi = Arc::new(crate::openapi::OpenApi::new(
            crate::registry::catalog::served_resources(),
        ));
        let objects = Objects::new(store.clone(), openapi.clone())
            .with_cache(crate::rest::cache::WatchCache::start(store.clone()));
        crate::rest::ensure_system_namespaces(&objects)
            .await
            .map_err(|e| ServeError::Bootstrap(e.message))?;
        let allocator = ServiceAllocator::new(options.service_cidr);
        allocator
            .repair(&objects)
            .await
            .map_err(|e| ServeError::Bootstrap(e.message))?;
        let port = listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or(addr.port());
        let advertise = SocketAddr::new(options.advertise_ip, port);
        ensure_kubernetes_service(&objects, &allocator, advertise)
            .await
            .map_err(|e| ServeError::Bootstrap(e.message))?;
        let mut hooks = Hooks::none();
        hooks.insert("", "services", allocator);
        let hooks = Arc::new(hooks);
        let crds_synced = crate::apiextensions::start(objects.clone(), hooks.clone());
        Ok(Apiserver {
            listener,
            acceptor,
            router: router(
                AppState {
                    store,
                    objects,
                    hooks,
                    crds_synced,
                    token: options.token.map(Arc::new),
                    metrics,
                },
                openapi,
            ),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves connections until the task is dropped.
    pub async fn run(self) {
        loop {
            let (tcp, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Answers go out as several small writes (TLS records, HTTP/2 frames); with Nagle's
            // algorithm each later one waits for the client's delayed ACK, up to 40 ms a
            // request. Go's servers (kube-apiserver) disable it too.
            if let Err(err) = tcp.set_nodelay(true) {
                tracing::debug!(%peer, error = %err, "TCP_NODELAY not set");
            }
            let acceptor = self.acceptor.clone();
            let router = self.router.clone();
            tokio::spawn(async move {
                // A client that never finishes the handshake must not hold a task forever.
                let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
                    .await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(err)) => {
                        tracing::debug!(%peer, error = %err, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
                let user = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|certs| certs.first())
                    .map(|cert| UserInfo::from_client_certificate(cert))
                    .unwrap_or_else(UserInfo::anonymous);
                let service = hyper::service::service_fn(
                    move |mut request: hyper::Request<hyper::body::Incoming>| {
                        request.extensions_mut().insert(user.clone());
                        router.clone().oneshot(request.map(axum::body::Body::new))
                    },
                );
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                if let Err(err) = builder
                    .serve_connection_with_upgrades(TokioIo::new(tls), service)
                    .await
                {
                    tracing::debug!(%peer, error = %err, "connection ended with an error");
                }
            });
        }
    }
}

fn tls_config(pki: &Pki) -> Result<rustls::ServerConfig, ServeError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(pki.ca.cert_pem.as_bytes()) {
        roots
            .add(ca.map_err(ServeError::Pem)?)
            .map_err(ServeError::Tls)?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(ServeError::ClientVerifier)?;
    let chain = CertificateDer::pem_slice_iter(pki.serving.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(ServeError::Pem)?;
    let key =
        PrivateKeyDer::from_pem_slice(pki.serving.key_pem.as_bytes()).map_err(ServeError::Pem)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ServeError::Tls)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(ServeError::Tls)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn router(state: AppState, openapi: Arc<crate::openapi::OpenApi>) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/healthz", get(live))
        .route("/livez", get(live))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .fallback(not_served)
        .with_state(state.clone())
        .merge(openapi.router())
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(middleware::from_fn_with_state(state, measure))
}

/// Authenticates a request without a client certificate by its bearer token (the server
/// token), and refuses anonymous requests outside the public paths with 401, as upstream does
/// when anonymous access is limited to `system:public-info-viewer`. A bearer token that is not
/// valid is 401 everywhere, as upstream's authenticator chain answers it.
async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let by_certificate = request
        .extensions()
        .get::<UserInfo>()
        .is_some_and(UserInfo::is_authenticated);
    if !by_certificate
        && let Some(bearer) = request
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
    {
        match state
            .token
            .as_ref()
            .and_then(|t| t.authenticate(bearer.trim()))
        {
            Some(user) => {
                request.extensions_mut().insert(user);
            }
            None => return ApiError::unauthorized().into_response(),
        }
    }
    let authenticated = request
        .extensions()
        .get::<UserInfo>()
        .is_some_and(UserInfo::is_authenticated);
    if !authenticated && !is_public_path(request.uri().path()) {
        return ApiError::unauthorized().into_response();
    }
    next.run(request).await
}

/// Counts and times every request (outermost, so 401s count too); a watch is counted as open
/// until its response body ends.
async fn measure(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let labels = crate::metrics::classify(
        request.method(),
        request.uri().path(),
        request.uri().query().unwrap_or_default(),
    );
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let code = response.status().as_u16();
    if labels.verb == "WATCH" && response.status().is_success() {
        state.metrics.observe(&labels, code, None);
        let guard = state.metrics.long_running(&labels);
        let (parts, body) = response.into_parts();
        let body = futures::StreamExt::map(body.into_data_stream(), move |chunk| {
            let _open = &guard;
            chunk
        });
        return Response::from_parts(parts, axum::body::Body::from_stream(body));
    }
    state
        .metrics
        .observe(&labels, code, Some(started.elapsed().as_secs_f64()));
    response
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut response = state.metrics.encode().into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    response
}

async fn version() -> impl IntoResponse {
    axum::Json(serde_json::json!({
        "major": KUBERNETES_MAJOR,
        "minor": KUBERNETES_MINOR,
        "gitVersion": format!("v{KUBERNETES_MAJOR}.{KUBERNETES_MINOR}.0+rkube-{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, go_arch()),
    }))
}

/// Go's name for this architecture, which clients print and compare.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

async fn live() -> &'static str {
    "ok"
}

/// `/readyz`: ready when the store answers and the stored CRDs are served (upstream's
/// `crd-informer-synced`). `?verbose` lists the checks as upstream does.
async fn ready(
    State(state): State<AppState>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let store_ok = matches!(
        tokio::time::timeout(Duration::from_secs(2), state.store.current_revision()).await,
        Ok(Ok(_))
    );
    let crds_ok = state.crds_synced.load(std::sync::atomic::Ordering::Acquire);
    let mut body = String::from("[+]ping ok\n");
    body.push_str(if store_ok {
        "[+]etcd ok\n"
    } else {
        "[-]etcd failed: reason withheld\n"
    });
    body.push_str(if crds_ok {
        "[+]poststarthook/crd-informer-synced ok\n"
    } else {
        "[-]poststarthook/crd-informer-synced failed: reason withheld\n"
    });
    let ok = store_ok && crds_ok;
    body.push_str(if ok {
        "readyz check passed\n"
    } else {
        "readyz check failed\n"
    });
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    if ok && !query.contains_key("verbose") {
        body = "ok".to_owned();
    }
    (code, body).into_response()
}

/// `/api...` and `/apis...` go to the REST API; anything else is not served.
async fn not_served(State(state): State<AppState>, request: Request) -> Response {
    let path = request.uri().path();
    let api = path == "/api"
        || path.starts_with("/api/")
        || path == "/apis"
        || path.starts_with("/apis/");
    if api {
        return crate::rest::serve_with_hooks(&state.objects, &state.hooks, request).await;
    }
    ApiError::not_served(path).into_response()
}
