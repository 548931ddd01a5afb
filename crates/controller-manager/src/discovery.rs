//! The resource types the server offers, read through discovery, for the controllers that act
//! on every type (garbage collector, namespace deleter) — custom resources included.

use kube::Client;
use kube::discovery::{ApiCapabilities, Discovery, Scope, verbs};

use crate::garbagecollector::graph::ResourceType;

/// Every resource type, at its group's preferred version, with what it supports.
pub async fn resource_types(
    client: &Client,
) -> Result<Vec<(ResourceType, ApiCapabilities)>, kube::Error> {
    let discovery = Discovery::new(client.clone()).run_aggregated().await?;
    let mut out = Vec::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            out.push((
                ResourceType {
                    group: ar.group.clone(),
                    version: ar.version.clone(),
                    kind: ar.kind.clone(),
                    plural: ar.plural.clone(),
                    namespaced: caps.scope == Scope::Namespaced,
                },
                caps,
            ));
        }
    }
    Ok(out)
}

/// Whether `caps` has every verb in `wanted`.
pub fn supports(caps: &ApiCapabilities, wanted: &[&str]) -> bool {
    wanted.iter().all(|v| caps.supports_operation(v))
}

/// The verbs the collector needs to watch and delete a type (as upstream's "deletable resources").
pub const DELETABLE: &[&str] = &[verbs::LIST, verbs::WATCH, verbs::DELETE];

/// Event types, which upstream's collector and namespace lister leave to their own TTL.
pub fn is_event(t: &ResourceType) -> bool {
    t.plural == "events" && (t.group.is_empty() || t.group == "events.k8s.io")
}

impl ResourceType {
    /// kube's dynamic address for this type.
    pub fn api_resource(&self) -> kube::discovery::ApiResource {
        kube::discovery::ApiResource {
            group: self.group.clone(),
            version: self.version.clone(),
            api_version: if self.group.is_empty() {
                self.version.clone()
            } else {
                format!("{}/{}", self.group, self.version)
            },
            kind: self.kind.clone(),
            plural: self.plural.clone(),
        }
    }

    /// An API handle for objects of this type in `namespace` (or cluster-wide).
    pub fn api(
        &self,
        client: &Client,
        namespace: Option<&str>,
    ) -> kube::Api<kube::core::DynamicObject> {
        let ar = self.api_resource();
        match (self.namespaced, namespace) {
            (true, Some(ns)) => kube::Api::namespaced_with(client.clone(), ns, &ar),
            _ => kube::Api::all_with(client.clone(), &ar),
        }
    }
}
