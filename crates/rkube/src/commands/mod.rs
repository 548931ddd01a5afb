//! One module per subcommand.

pub mod apiserver;
pub mod controller_manager;
pub mod crictl;
mod crictl_config;
pub mod datastore;
pub mod images;
pub mod runtime;
pub mod server;
pub mod shim;
