//! The runtime behind the real CRI v1 gRPC API (`runtime.v1`, types from `k8s-cri`), on a unix
//! socket, so the kubelet speaks only CRI and can be pointed at containerd instead.
//!
//! Served so far: the `ImageService` ([`image`]), and of the `RuntimeService` ([`runtime`]) the
//! version, status (not ready: no containers yet) and runtime configuration. Its sandbox and
//! container calls answer gRPC `Unimplemented`, saying what is missing.

pub mod client;
pub mod image;
pub mod runtime;
pub mod server;
