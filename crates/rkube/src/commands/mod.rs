//! One module per subcommand.

pub mod datastore;
