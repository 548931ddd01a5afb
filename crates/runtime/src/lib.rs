//! rkube's node runtime: images, pod sandboxes and containers behind the CRI v1 API.
//!
//! The kubelet only ever talks CRI, so this crate can be swapped for containerd. So far it holds
//! the image store ([`image`]): content-addressed blobs, layer unpacking with OCI whiteouts, and
//! importing OCI-layout and `docker save` archives. Registry pulls, containers and the CRI
//! server build on it.

pub mod image;
