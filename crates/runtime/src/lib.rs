//! rkube's node runtime: images, pod sandboxes and containers behind the CRI v1 API.
//!
//! The kubelet only ever talks CRI, so this crate can be swapped for containerd. So far it holds
//! the image store and registry pulls ([`image`]) and the CRI server's image service ([`cri`]).

pub mod cri;
pub mod image;

/// An error and its sources on one line, for messages that travel as text (gRPC statuses).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let more = e.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = e.source();
    }
    text
}
