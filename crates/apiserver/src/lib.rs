//! The rkube apiserver: the only component that touches the store; everything else talks to it
//! over HTTPS the way it talks to kube-apiserver.
//!
//! What exists today: the cluster PKI ([`pki`]), the admin kubeconfig ([`kubeconfig`]), HTTPS with
//! client-certificate authentication ([`server`], [`authn`]), and the version and health
//! endpoints. Every REST path of the Kubernetes API answers with a Kubernetes `Status`: 401 for
//! anonymous callers, 404 `NotFound` for resources not served yet. Start reading at
//! [`server::serve`].
//!
//! For the REST handlers, not yet wired: the schemas and OpenAPI documents ([`openapi`]),
//! strategic merge patch ([`patch`]) and field validation ([`fieldvalidation`]).

pub mod authn;
pub mod fieldvalidation;
pub mod kubeconfig;
pub mod openapi;
pub mod patch;
pub mod pki;
pub mod server;
pub mod status;
