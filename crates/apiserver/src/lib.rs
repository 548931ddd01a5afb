//! The rkube apiserver: the only component that touches the store; everything else talks to it
//! over HTTPS the way it talks to kube-apiserver.
//!
//! What exists today: the cluster PKI ([`pki`]), the admin kubeconfig ([`kubeconfig`]), HTTPS with
//! client-certificate authentication ([`server`], [`authn`]), the version and health endpoints,
//! discovery ([`discovery`]) and the REST API for the built-in resources ([`rest`] over the
//! resource rules in [`registry`]), OpenAPI documents and the schema model ([`openapi`]),
//! patches ([`patch`]) and field validation ([`fieldvalidation`]). Start reading at
//! [`server::Apiserver`], then [`rest::serve`].

pub mod allocator;
pub mod apiextensions;
pub mod authn;
pub mod discovery;
pub mod fieldvalidation;
pub mod kubeconfig;
pub mod metrics;
pub mod openapi;
pub mod patch;
pub mod pki;
pub mod protobuf;
pub mod registry;
pub mod rest;
pub mod server;
pub mod status;
pub mod token;
