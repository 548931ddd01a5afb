//! The road between REST handlers and the store: object encoding (JSON without
//! `resourceVersion`, which is the store revision and is filled in on the way out) and the read
//! path. Every read goes through [`Objects`], so a watch cache can replace its list and watch
//! without touching the handlers.

use std::sync::Arc;

use bytes::Bytes;
use rkube_store::{Error as StoreError, KeyValue, ListOptions, Revision, Store, WatchStream};
use serde_json::Value;

use crate::status::ApiError;

/// Objects in the store, and the schemas they are checked and patched against.
#[derive(Clone)]
pub struct Objects {
    store: Arc<dyn Store>,
    openapi: Arc<crate::openapi::OpenApi>,
    cache: Option<Arc<super::cache::WatchCache>>,
}

/// One page of a list.
pub struct Page {
    /// Keys and objects (with `resourceVersion` set), in key order.
    pub items: Vec<(String, Value)>,
    /// The revision the page was read at.
    pub revision: Revision,
    /// Where the next page starts.
    pub next_key: Option<String>,
}

/// The object stored under a key, with `metadata.resourceVersion` from the key's revision.
pub fn decode(kv: &KeyValue) -> Result<Value, ApiError> {
    let mut obj: Value = serde_json::from_slice(&kv.value).map_err(|e| {
        tracing::error!(key = %kv.key, error = %e, "stored object is not JSON");
        ApiError::internal(format!(
            "Internal error occurred: the object stored at {} is unreadable",
            kv.key
        ))
    })?;
    set_resource_version(&mut obj, kv.mod_revision);
    Ok(obj)
}

/// Sets `metadata.resourceVersion`.
pub fn set_resource_version(obj: &mut Value, revision: Revision) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "resourceVersion".into(),
            Value::String(revision.to_string()),
        );
    }
}

/// The bytes stored for an object: JSON without `resourceVersion`.
pub fn encode(obj: &Value) -> Bytes {
    let mut obj = obj.clone();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    Bytes::from(serde_json::to_vec(&obj).unwrap_or_default())
}

/// Maps a store failure that no handler expected to a 500, logging the cause.
pub fn internal(error: StoreError) -> ApiError {
    tracing::error!(error = %error, "store request failed");
    ApiError::internal(format!("Internal error occurred: {error}"))
}

impl Objects {
    /// Objects over `store`, with the schemas `openapi` publishes.
    pub fn new(store: Arc<dyn Store>, openapi: Arc<crate::openapi::OpenApi>) -> Self {
        Self {
            store,
            openapi,
            cache: None,
        }
    }

    /// These objects with a watch cache serving lists and watches from memory.
    pub fn with_cache(mut self, cache: Arc<super::cache::WatchCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The watch cache, when there is one.
    pub fn cache(&self) -> Option<&Arc<super::cache::WatchCache>> {
        self.cache.as_ref()
    }

    /// The OpenAPI documents and schema model (built-ins plus registered custom resources).
    pub fn openapi(&self) -> &Arc<crate::openapi::OpenApi> {
        &self.openapi
    }

    /// The store, for writes.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The current object under `key`, and its revision.
    pub async fn get(&self, key: &str) -> Result<Option<(Value, Revision)>, ApiError> {
        match self.store.get(key).await.map_err(internal)? {
            Some(kv) => Ok(Some((decode(&kv)?, kv.mod_revision))),
            None => Ok(None),
        }
    }

    /// One page of objects under `prefix` at `revision` (0 = current). A compacted revision is
    /// returned as the store's error for the caller to word.
    pub async fn list(
        &self,
        prefix: &str,
        start_key: Option<String>,
        limit: usize,
        revision: Revision,
    ) -> Result<Page, StoreError> {
        let result = self
            .store
            .list(ListOptions {
                prefix: prefix.to_owned(),
                start_key,
                limit,
                revision,
            })
            .await?;
        let mut items = Vec::with_capacity(result.items.len());
        for kv in &result.items {
            match decode(kv) {
                Ok(obj) => items.push((kv.key.clone(), obj)),
                Err(_) => continue, // logged by decode; one bad value must not hide the rest
            }
        }
        Ok(Page {
            items,
            revision: result.revision,
            next_key: result.next_key,
        })
    }

    /// Events under `prefix` after `after`.
    pub async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        self.store.watch(prefix, after).await
    }

    /// The current revision.
    pub async fn current_revision(&self) -> Result<Revision, ApiError> {
        self.store.current_revision().await.map_err(internal)
    }
}
