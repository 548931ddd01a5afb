//! Discovery: `/api`, `/api/v1`, `/apis`, `/apis/<group>`, `/apis/<group>/<version>`, and the
//! aggregated form (`apidiscovery.k8s.io/v2`, `APIGroupDiscoveryList`) that kubectl ≥ 1.30 asks
//! for first, all generated from the catalogue.

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use crate::registry::catalog::{self, ResourceInfo, Subresource};
use crate::rest::negotiate::{self, Accept, Shape};
use crate::status::ApiError;

/// Which discovery document.
pub enum Doc {
    /// `/api`.
    CoreVersions,
    /// `/apis`.
    Groups,
    /// `/apis/<group>`.
    Group(String),
    /// `/api/v1`, `/apis/<group>/<version>`.
    Resources(String, String),
}

fn group_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    }
}

fn api_group(group: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": group_version(group, v), "version": v}))
        .collect();
    json!({"name": group, "versions": versions, "preferredVersion": versions[0]})
}

fn resource_entry(r: &ResourceInfo) -> Value {
    let mut v = json!({"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
        "kind": r.kind, "verbs": r.verbs});
    if !r.short_names.is_empty() {
        v["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        v["categories"] = json!(r.categories);
    }
    v
}

fn subresource_entry(r: &ResourceInfo, s: &Subresource) -> Value {
    let mut v = json!({"name": format!("{}/{}", r.plural, s.name), "singularName": "",
        "namespaced": r.namespaced, "kind": s.kind, "verbs": s.verbs});
    if !s.group.is_empty() {
        v["group"] = json!(s.group);
        v["version"] = json!(s.version);
    }
    v
}

fn resource_list(group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for r in catalog::resources_of(group, version) {
        resources.push(resource_entry(r));
        for s in r.subresources {
            resources.push(subresource_entry(r, s));
        }
    }
    json!({"kind": "APIResourceList", "apiVersion": "v1",
        "groupVersion": group_version(group, version), "resources": resources})
}

/// One group's entry of an `APIGroupDiscoveryList`.
fn aggregated_group(group: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|version| {
            let resources: Vec<Value> = catalog::resources_of(group, version)
                .map(|r| {
                    let mut v = json!({
                        "resource": r.plural,
                        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                        "singularResource": r.singular,
                        "verbs": r.verbs,
                    });
                    if !r.short_names.is_empty() {
                        v["shortNames"] = json!(r.short_names);
                    }
                    if !r.categories.is_empty() {
                        v["categories"] = json!(r.categories);
                    }
                    if !r.subresources.is_empty() {
                        v["subresources"] = Value::Array(r.subresources.iter().map(|s| json!({
                            "subresource": s.name,
                            "responseKind": {
                                "group": if s.group.is_empty() { r.group } else { s.group },
                                "version": if s.version.is_empty() { r.version } else { s.version },
                                "kind": s.kind,
                            },
                            "verbs": s.verbs,
                        })).collect());
                    }
                    v
                })
                .collect();
            json!({"version": version, "resources": resources, "freshness": "Current"})
        })
        .collect();
    let mut entry = json!({"metadata": {"creationTimestamp": null}, "versions": versions});
    if !group.is_empty() {
        entry["metadata"]["name"] = json!(group);
    }
    entry
}

fn aggregated(core: bool, shape: Shape) -> Value {
    let items: Vec<Value> = catalog::groups()
        .into_iter()
        .filter(|(g, _)| g.is_empty() == core)
        .map(|(g, vs)| aggregated_group(g, &vs))
        .collect();
    let version = if shape == Shape::DiscoveryV2Beta1 {
        "v2beta1"
    } else {
        "v2"
    };
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {}, "items": items})
}

/// Answers a discovery request.
pub fn serve(doc: Doc, accept: Accept, headers: &HeaderMap) -> Result<Response, ApiError> {
    let aggregated_shape = matches!(accept.shape, Shape::DiscoveryV2 | Shape::DiscoveryV2Beta1);
    let plain = Accept {
        shape: Shape::Object,
        ..accept
    };
    let (body, accept) = match doc {
        Doc::CoreVersions if aggregated_shape => (aggregated(true, accept.shape), accept),
        Doc::Groups if aggregated_shape => (aggregated(false, accept.shape), accept),
        Doc::CoreVersions => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or_default();
            (
                json!({"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}]}),
                plain,
            )
        }
        Doc::Groups => {
            let groups: Vec<Value> = catalog::groups()
                .into_iter()
                .filter(|(g, _)| !g.is_empty())
                .map(|(g, vs)| api_group(g, &vs))
                .collect();
            (
                json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
                plain,
            )
        }
        Doc::Group(group) => {
            let Some((g, vs)) = catalog::groups()
                .into_iter()
                .find(|(g, _)| *g == group && !g.is_empty())
            else {
                return Err(ApiError::not_served(&format!("/apis/{group}")));
            };
            let mut body = api_group(g, &vs);
            body["kind"] = json!("APIGroup");
            body["apiVersion"] = json!("v1");
            (body, plain)
        }
        Doc::Resources(group, version) => (resource_list(&group, &version), plain),
    };
    Ok(negotiate::respond(StatusCode::OK, &body, accept))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_lists_resources_and_subresources() {
        let list = resource_list("", "v1");
        let names: Vec<&str> = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(
            names.contains(&"pods")
                && names.contains(&"pods/status")
                && names.contains(&"configmaps")
        );
    }

    #[test]
    fn aggregated_discovery_has_every_group_once() {
        let list = aggregated(false, Shape::DiscoveryV2);
        let names: Vec<&str> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["metadata"]["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"apps"));
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
        let core = aggregated(true, Shape::DiscoveryV2);
        assert_eq!(core["items"][0]["versions"][0]["version"], "v1");
    }
}
