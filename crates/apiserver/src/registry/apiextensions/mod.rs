//! apiextensions.k8s.io: CustomResourceDefinitions, and the custom resources served from them.
//!
//! [`customresourcedefinition`] is the CRD's own strategy (defaults, validation, the clean-up
//! finalizer a delete adds); [`customresource`] makes each served CRD version a catalogue
//! resource with a strategy built from its schema ([`schema`]). The controller that watches
//! CRDs, publishes their resources and keeps their status is `crate::apiextensions`.

pub mod customresource;
pub mod customresourcedefinition;
pub mod schema;
