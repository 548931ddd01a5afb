//! Patches the handlers apply to stored objects (unstructured JSON): strategic merge patch
//! ([`strategic`]), driven by the schema's merge extensions, and server-side apply ([`apply`]
//! for the structural operations, [`managedfields`] for ownership and conflicts, [`fieldpath`]
//! for the `FieldsV1` sets). JSON patch and JSON merge patch come from the `json-patch` crate.

pub mod apply;
pub mod fieldpath;
pub mod managedfields;
pub mod strategic;

pub use strategic::{StrategicMergeError, apply_strategic_merge_patch};
