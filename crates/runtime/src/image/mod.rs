//! The node's image store: content-addressed blobs, layer unpacking, and archive import.
//!
//! This is the storage half of the runtime's image service. It knows nothing about registries
//! or containers; pulls and the CRI `ImageService` build on it.

pub mod archive;
pub mod blobs;
pub mod layer;
