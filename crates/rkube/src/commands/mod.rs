//! One module per subcommand.

pub mod apiserver;
pub mod datastore;
pub mod shim;
