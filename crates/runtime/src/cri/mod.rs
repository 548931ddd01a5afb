//! The runtime behind the real CRI v1 gRPC API (`runtime.v1`, types from `k8s-cri`), on a unix
//! socket, so the kubelet speaks only CRI and can be pointed at containerd instead.
//!
//! The `ImageService` is [`image`]; the `RuntimeService` ([`runtime`]) wraps [`crate::Runtime`]
//! for sandboxes, containers, `ExecSync` and stats; streaming exec, attach and port-forward go
//! through the WebSocket [`streaming`] server whose URLs those calls return.

pub mod client;
pub mod image;
pub mod runtime;
pub mod server;
pub mod streaming;
