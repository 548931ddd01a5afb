//! Patches the handlers apply to stored objects (unstructured JSON): strategic merge patch
//! ([`strategic`]), driven by the schema's merge extensions. JSON patch and JSON merge patch
//! come from the `json-patch` crate.

pub mod strategic;

pub use strategic::{StrategicMergeError, apply_strategic_merge_patch};
