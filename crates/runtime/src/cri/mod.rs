//! The runtime behind the real CRI v1 gRPC API (`runtime.v1`, types from `k8s-cri`), on a unix
//! socket, so the kubelet speaks only CRI and can be pointed at containerd instead.
//!
//! The `ImageService` is [`image`]; the `RuntimeService` ([`runtime`]) wraps [`crate::Runtime`]
//! for sandboxes, containers, `ExecSync` and stats; streaming exec, attach and port-forward go
//! through the WebSocket [`streaming`] server whose URLs those calls return.

pub mod client;
pub mod events;
pub mod image;
pub mod runtime;
pub mod server;
pub mod streaming;

/// Whether an I/O error somewhere in `err`'s chain is a full disk or an exhausted quota: the
/// node's problem, not the request's, so the calls answer `ResourceExhausted` for it.
pub(crate) fn out_of_space(err: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(err), |e| e.source()).any(|e| {
        e.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            )
        })
    })
}
