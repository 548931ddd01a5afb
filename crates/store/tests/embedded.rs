//! The store contract (`tests/contract`) run against the embedded (redb) backend, each case on a
//! fresh data file in its own temp dir.

mod contract;

use std::any::Any;
use std::sync::Arc;

use rkube_store::Store;
use rkube_store::embedded::EmbeddedStore;

/// A fresh embedded store on a new data file; the temp dir lives as long as the guard.
async fn embedded_store() -> (Arc<dyn Store>, Box<dyn Any + Send>) {
    let dir = tempfile::tempdir().expect("creating a temp dir for the data file");
    let path = dir.path().join("server").join("db").join("state.redb");
    let store = EmbeddedStore::open(&path)
        .unwrap_or_else(|e| panic!("opening a fresh embedded store at {}: {e}", path.display()));
    (Arc::new(store), Box::new(dir))
}

contract::contract_tests!(embedded_store);
