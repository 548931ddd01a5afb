//! The runtime behind the real CRI v1 gRPC API (`runtime.v1`, types from `k8s-cri`), on a unix
//! socket, so the kubelet speaks only CRI and can be pointed at containerd instead.
//!
//! Served so far: the `ImageService` ([`image`]). The `RuntimeService` (sandboxes and containers)
//! is not registered yet, so its calls get gRPC `Unimplemented` from the server itself.

pub mod client;
pub mod image;
pub mod server;
