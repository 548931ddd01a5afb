//! The controller-manager of rkube: control loops that are ordinary API clients (kube-rs
//! watches and writes over HTTPS, never the store), as DESIGN.md's "one road" asks.
//!
//! Controllers here today: the [`garbagecollector`] (owner references; `orphan` and
//! `foregroundDeletion` finalizers) and the [`namespace`] controller (emptying namespaces being
//! deleted). The workload controllers (Deployment, ReplicaSet, ...) come with their issue.

pub mod discovery;
pub mod garbagecollector;
pub mod namespace;
pub mod workqueue;

use kube::Client;

/// A controller's failure to do one piece of work; the piece is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("{step}")]
    Api {
        /// What the controller was doing.
        step: &'static str,
        /// The client's error.
        #[source]
        source: Box<kube::Error>,
    },
    /// An owner reference names a kind the server does not (yet) serve.
    #[error("owner kind {kind} of {api_version} is not served (yet)")]
    UnknownKind {
        /// The reference's `apiVersion`.
        api_version: String,
        /// The reference's `kind`.
        kind: String,
    },
}

/// The controllers `rkube controller-manager` (and `rkube server`) can run.
pub const CONTROLLERS: &[&str] = &["garbagecollector", "namespace"];

/// Runs the named controllers (all of them for an empty list) until the future is dropped.
pub async fn run(client: Client, enabled: &[String]) {
    let on = |name: &str| enabled.is_empty() || enabled.iter().any(|e| e == name);
    let mut tasks = tokio::task::JoinSet::new();
    if on("garbagecollector") {
        tasks.spawn(garbagecollector::run(client.clone()));
    }
    if on("namespace") {
        tasks.spawn(namespace::run(client.clone()));
    }
    tracing::info!(controllers = ?CONTROLLERS.iter().filter(|c| on(c)).collect::<Vec<_>>(), "controller-manager running");
    while tasks.join_next().await.is_some() {}
}

/// A 404 (gone) or 409 (precondition: another object now has the name) answer, which for a
/// controller's delete or edit means there is nothing left to do.
pub fn is_gone(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404 || s.code == 409)
}
