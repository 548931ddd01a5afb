//! Store-side work a few resources need around their writes, beyond the pure rules of their
//! [`Strategy`](crate::registry::Strategy): claiming and releasing shared resources that live in
//! the store too (a Service's cluster IP and node ports). The generic write path calls these at
//! fixed points; a resource without hooks skips them.
//!
//! Contract: `before_*` runs after admission (defaults, validation) and before the object is
//! written; it may fill in what it allocated and returns the store keys it claimed. When the
//! write then fails the caller passes those keys to [`StoreHooks::rollback`]. `after_*` run
//! once the write is durable and release what the old object held and the new one does not.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::storage::Objects;
use crate::registry::ResourceInfo;
use crate::status::ApiError;

/// Store keys claimed for an object that is about to be written.
pub type Claims = Vec<String>;

/// See the module documentation.
#[async_trait]
pub trait StoreHooks: Send + Sync {
    /// Before a create. With `dry_run` nothing is claimed, but conflicts are still reported.
    async fn before_create(
        &self,
        objects: &Objects,
        obj: &mut Value,
        dry_run: bool,
    ) -> Result<Claims, ApiError>;

    /// Before an update of the main resource.
    async fn before_update(
        &self,
        objects: &Objects,
        new: &mut Value,
        old: &Value,
        dry_run: bool,
    ) -> Result<Claims, ApiError>;

    /// Undoes claims after a failed write.
    async fn rollback(&self, objects: &Objects, claims: Claims);

    /// After an update was stored.
    async fn after_update(&self, objects: &Objects, new: &Value, old: &Value);

    /// After the object was removed from the store.
    async fn after_delete(&self, objects: &Objects, old: &Value);
}

/// The hooks of each resource that has any, by `(group, plural)`.
#[derive(Clone, Default)]
pub struct Hooks {
    by_resource: HashMap<(&'static str, &'static str), Arc<dyn StoreHooks>>,
}

impl Hooks {
    /// No hooks at all.
    pub fn none() -> Self {
        Self::default()
    }

    /// Registers `hooks` for a resource.
    pub fn insert(
        &mut self,
        group: &'static str,
        plural: &'static str,
        hooks: Arc<dyn StoreHooks>,
    ) {
        self.by_resource.insert((group, plural), hooks);
    }

    /// The hooks of `info`, if any.
    pub fn of(&self, info: &ResourceInfo) -> Option<&Arc<dyn StoreHooks>> {
        self.by_resource.get(&(info.group, info.plural))
    }
}
