//! The API's schemas: the OpenAPI definition of every built-in type (and, registered at run
//! time, of custom resources), the model the patch and validation code walks, and the
//! `/openapi/v2` and `/openapi/v3` documents clients read (`kubectl explain`, client-side
//! validation, `kubectl apply`'s patch computation).
//!
//! Start at [`Schemas::builtin`] for the model and [`OpenApi`] for the served documents.

mod builtin;
pub mod documents;
mod field_meta;
pub mod handlers;
pub mod model;

pub use documents::{ServedResource, ServedSubresource};
pub use handlers::OpenApi;
pub use model::{GroupVersionKind, NodeShape, SchemaNode, Schemas};
