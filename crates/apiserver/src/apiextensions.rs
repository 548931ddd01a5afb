//! The apiextensions controllers, in process as kube-apiserver runs them: they watch
//! CustomResourceDefinitions and
//!
//! * **publish** each accepted CRD's served versions as catalogue resources (routing,
//!   discovery) and their schemas in the OpenAPI documents, within moments of a change;
//! * keep each CRD's **status**: `acceptedNames`, the `NamesAccepted` and `Established`
//!   conditions (a kind or short name another CRD of the group already uses is refused), the
//!   `Terminating` condition and `storedVersions`;
//! * **clean up** a deleted CRD: every custom resource of it is deleted through the REST path
//!   (so their own finalizers hold them), then the `customresourcecleanup` finalizer is removed
//!   and the CRD goes.
//!
//! Its writes go through the same REST handlers a client's would ([`crate::rest::serve_with_hooks`]),
//! with optimistic concurrency: a write that loses a race is redone on the next change.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::openapi::handlers::CustomResourceSchema;
use crate::registry::apiextensions::customresource;
use crate::registry::apiextensions::customresourcedefinition::CLEANUP_FINALIZER;
use crate::registry::{ResourceInfo, catalog, str_at};
use crate::rest::hooks::Hooks;
use crate::rest::storage::Objects;

const CRDS: &str = "/registry/apiextensions.k8s.io/customresourcedefinitions/";
const CRD_PATH: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
/// How often a CRD being deleted is looked at again while its custom resources go.
const CLEANUP_EVERY: Duration = Duration::from_millis(500);

/// Starts the controllers; they run until the runtime stops. The flag turns true once the
/// CRDs stored at start are served (the apiserver is not ready before).
pub fn start(objects: Objects, hooks: Arc<Hooks>) -> Arc<AtomicBool> {
    let synced = Arc::new(AtomicBool::new(false));
    let flag = synced.clone();
    tokio::spawn(async move {
        loop {
            if let Err(e) = run(&objects, &hooks, &flag).await {
                tracing::warn!(error = %e, "apiextensions controller: restarting its watch");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    synced
}

async fn run(objects: &Objects, hooks: &Hooks, synced: &AtomicBool) -> Result<(), String> {
    let page = objects
        .list(CRDS, None, 0, 0)
        .await
        .map_err(|e| e.to_string())?;
    let mut cleaning = reconcile(objects, hooks, page.items).await;
    synced.store(true, Ordering::Release);
    let mut events = objects
        .watch(CRDS, page.revision)
        .await
        .map_err(|e| e.to_string())?;
    loop {
        tokio::select! {
            item = events.next() => match item {
                None => return Err("the CRD watch ended".into()),
                Some(Err(e)) => return Err(e.to_string()),
                Some(Ok(_)) => {}
            },
            _ = tokio::time::sleep(CLEANUP_EVERY), if cleaning => {}
        }
        let page = objects
            .list(CRDS, None, 0, 0)
            .await
            .map_err(|e| e.to_string())?;
        cleaning = reconcile(objects, hooks, page.items).await;
    }
}

/// Publishes the served custom resources of `crds` and brings their status up to date.
/// Returns whether a CRD is still being cleaned up.
async fn reconcile(objects: &Objects, hooks: &Hooks, items: Vec<(String, Value)>) -> bool {
    let mut crds: Vec<Value> = items.into_iter().map(|(_, crd)| crd).collect();
    // The older CRD keeps a contested name.
    crds.sort_by(|a, b| {
        (
            str_at(a, "/metadata/creationTimestamp"),
            str_at(a, "/metadata/name"),
        )
            .cmp(&(
                str_at(b, "/metadata/creationTimestamp"),
                str_at(b, "/metadata/name"),
            ))
    });
    let mut served: Vec<&'static ResourceInfo> = Vec::new();
    let mut schemas = Vec::new();
    let mut taken: HashMap<(String, String), String> = HashMap::new();
    let mut statuses = Vec::new();
    for crd in &crds {
        let name = str_at(crd, "/metadata/name").to_owned();
        let terminating = crd
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|t| !t.is_null());
        let conflict = name_conflict(crd, &taken);
        if conflict.is_none() {
            claim_names(crd, &name, &mut taken);
            for version in crd
                .pointer("/spec/versions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|v| v.get("served").and_then(Value::as_bool) == Some(true))
            {
                let info = customresource::intern(crd, version, terminating);
                schemas.push(CustomResourceSchema {
                    resource: catalog::served_resource(info),
                    schema: version
                        .pointer("/schema/openAPIV3Schema")
                        .cloned()
                        .unwrap_or_else(|| json!({"type": "object"})),
                });
                served.push(info);
            }
        }
        statuses.push((crd, desired_status(crd, conflict.as_ref(), terminating)));
    }
    served.sort_by_key(|r| (r.group, Reverse(version_priority(r.version))));
    schemas.sort_by(|a, b| {
        (
            &a.resource.group,
            Reverse(version_priority(&a.resource.version)),
        )
            .cmp(&(
                &b.resource.group,
                Reverse(version_priority(&b.resource.version)),
            ))
    });
    // Published before Established is written, so a client that waits for the condition can
    // use the resource at once.
    // Unchanged definitions are the same interned resources: a CRD status write (ours, after
    // every change) must not make clients' OpenAPI documents be rendered again.
    let unchanged = {
        let current = catalog::custom();
        current.len() == served.len()
            && current
                .iter()
                .zip(&served)
                .all(|(a, b)| std::ptr::eq(*a, *b))
    };
    if !unchanged {
        catalog::set_custom(served);
        objects.openapi().set_custom(schemas);
    }
    let mut cleaning = false;
    for (crd, status) in statuses {
        if !same_status(crd.get("status"), &status) {
            let mut updated = crd.clone();
            updated["status"] = status;
            let name = str_at(crd, "/metadata/name");
            if let Err(e) = send(
                objects,
                hooks,
                Method::PUT,
                &format!("{CRD_PATH}/{name}/status"),
                Some(&updated),
            )
            .await
            {
                tracing::debug!(crd = name, error = %e, "CRD status not written; retried on the next change");
            }
        }
        if has_cleanup_finalizer(crd) {
            cleaning |= clean_up(objects, hooks, crd).await;
        }
    }
    cleaning
}

/// The names a CRD asks for, each keyed by (group, name) so conflicts are found per group.
fn wanted_names(crd: &Value) -> Vec<(&'static str, String)> {
    let names = &crd["spec"]["names"];
    // Checked in upstream's order: plural, singular, short names, kind, list kind.
    let mut out = vec![
        ("Plural", str_at(names, "/plural").to_owned()),
        ("Singular", str_at(names, "/singular").to_owned()),
    ];
    for short in names
        .get("shortNames")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        out.push(("ShortNames", short.to_owned()));
    }
    out.push(("Kind", str_at(names, "/kind").to_owned()));
    out.push(("ListKind", str_at(names, "/listKind").to_owned()));
    out.retain(|(_, n)| !n.is_empty());
    out
}

/// Which name of `crd` another (older) CRD of its group holds: (reason, message).
fn name_conflict(
    crd: &Value,
    taken: &HashMap<(String, String), String>,
) -> Option<(String, String)> {
    let group = str_at(crd, "/spec/group").to_owned();
    let me = str_at(crd, "/metadata/name");
    for (what, name) in wanted_names(crd) {
        let class = if what.ends_with("Kind") {
            "kind"
        } else {
            "resource"
        };
        if let Some(owner) = taken.get(&(group.clone(), format!("{class}:{name}")))
            && owner != me
        {
            return Some((
                format!("{what}Conflict"),
                format!("{:?} is already in use", name),
            ));
        }
    }
    None
}

fn claim_names(crd: &Value, owner: &str, taken: &mut HashMap<(String, String), String>) {
    let group = str_at(crd, "/spec/group").to_owned();
    for (what, name) in wanted_names(crd) {
        let class = if what.ends_with("Kind") {
            "kind"
        } else {
            "resource"
        };
        taken.insert((group.clone(), format!("{class}:{name}")), owner.to_owned());
    }
}

fn condition(kind: &str, status: bool, reason: &str, message: &str) -> Value {
    json!({"type": kind, "status": if status { "True" } else { "False" }, "reason": reason,
        "message": message, "lastTransitionTime": crate::registry::meta::now()})
}

/// The status the CRD should have.
fn desired_status(crd: &Value, conflict: Option<&(String, String)>, terminating: bool) -> Value {
    let mut conditions = Vec::new();
    let accepted_names = match conflict {
        None => {
            conditions.push(condition(
                "NamesAccepted",
                true,
                "NoConflicts",
                "no conflicts found",
            ));
            conditions.push(condition(
                "Established",
                true,
                "InitialNamesAccepted",
                "the initial names have been accepted",
            ));
            crd["spec"]["names"].clone()
        }
        Some((reason, message)) => {
            conditions.push(condition("NamesAccepted", false, reason, message));
            conditions.push(condition(
                "Established",
                false,
                "NotAccepted",
                "not all names are accepted",
            ));
            crd.pointer("/status/acceptedNames")
                .cloned()
                .unwrap_or_else(|| json!({"plural": "", "kind": ""}))
        }
    };
    if terminating {
        conditions.push(condition(
            "Terminating",
            true,
            "InstanceDeletionInProgress",
            "CustomResource deletion is in progress",
        ));
    }
    let mut stored: Vec<Value> = crd
        .pointer("/status/storedVersions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(storage) = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .and_then(|v| v.get("name"))
        && !stored.contains(storage)
    {
        stored.push(storage.clone());
    }
    // A condition that did not change keeps the time it last changed.
    for c in &mut conditions {
        if let Some(old) = crd
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|o| o["type"] == c["type"])
            && old["status"] == c["status"]
        {
            c["lastTransitionTime"] = old["lastTransitionTime"].clone();
        }
    }
    json!({"acceptedNames": accepted_names, "conditions": conditions, "storedVersions": stored})
}

/// Equal but for the transition times of conditions.
fn same_status(current: Option<&Value>, desired: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        for c in v
            .get_mut("conditions")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(c) = c.as_object_mut() {
                c.remove("lastTransitionTime");
            }
        }
        v
    };
    current.is_some_and(|c| strip(c) == strip(desired))
}

fn has_cleanup_finalizer(crd: &Value) -> bool {
    crd.pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
        && crd
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| f.iter().any(|f| f == CLEANUP_FINALIZER))
}

/// Deletes the custom resources of a CRD being deleted; once none is left, removes the
/// finalizer. Returns whether resources remain.
async fn clean_up(objects: &Objects, hooks: &Hooks, crd: &Value) -> bool {
    let group = str_at(crd, "/spec/group");
    let plural = str_at(crd, "/spec/names/plural");
    let name = str_at(crd, "/metadata/name");
    let Some(version) = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|v| v.get("served").and_then(Value::as_bool) == Some(true))
        .and_then(|v| v.get("name"))
        .and_then(Value::as_str)
    else {
        return remove_finalizer(objects, hooks, crd).await;
    };
    let remaining = match objects
        .list(&format!("/registry/{group}/{plural}/"), None, 0, 0)
        .await
    {
        Ok(page) => page.items,
        Err(e) => {
            tracing::warn!(crd = name, error = %e, "listing custom resources to delete failed");
            return true;
        }
    };
    if remaining.is_empty() {
        return remove_finalizer(objects, hooks, crd).await;
    }
    for (_, obj) in &remaining {
        if obj
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|t| !t.is_null())
        {
            continue;
        }
        let ns = str_at(obj, "/metadata/namespace");
        let path = if ns.is_empty() {
            format!(
                "/apis/{group}/{version}/{plural}/{}",
                str_at(obj, "/metadata/name")
            )
        } else {
            format!(
                "/apis/{group}/{version}/namespaces/{ns}/{plural}/{}",
                str_at(obj, "/metadata/name")
            )
        };
        if let Err(e) = send(objects, hooks, Method::DELETE, &path, None).await {
            tracing::debug!(path, error = %e, "deleting a custom resource failed; retrying");
        }
    }
    true
}

async fn remove_finalizer(objects: &Objects, hooks: &Hooks, crd: &Value) -> bool {
    let mut updated = crd.clone();
    if let Some(list) = updated
        .pointer_mut("/metadata/finalizers")
        .and_then(Value::as_array_mut)
    {
        list.retain(|f| f != CLEANUP_FINALIZER);
    }
    let name = str_at(crd, "/metadata/name");
    match send(
        objects,
        hooks,
        Method::PUT,
        &format!("{CRD_PATH}/{name}"),
        Some(&updated),
    )
    .await
    {
        Ok(()) => false,
        Err(e) => {
            tracing::debug!(crd = name, error = %e, "removing the clean-up finalizer failed; retrying");
            true
        }
    }
}

/// One request through the REST handlers, as this controller's own client.
async fn send(
    objects: &Objects,
    hooks: &Hooks,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<(), String> {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json")
        .header(header::USER_AGENT, "rkube-apiextensions-controller")
        .body(match body {
            Some(v) => Body::from(serde_json::to_vec(v).unwrap_or_default()),
            None => Body::empty(),
        })
        .map_err(|e| e.to_string())?;
    let response = crate::rest::serve_with_hooks(objects, hooks, request).await;
    if response.status().is_success() || response.status() == StatusCode::NOT_FOUND {
        return Ok(());
    }
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)))
}

/// Kubernetes' version order: GA before beta before alpha, higher numbers first within each,
/// then anything else (alphabetically, by the caller's stable sort).
pub fn version_priority(version: &str) -> (u8, u64, u64) {
    let Some(rest) = version.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let Ok(major) = digits.parse::<u64>() else {
        return (0, 0, 0);
    };
    let tail = &rest[digits.len()..];
    if tail.is_empty() {
        return (3, major, 0);
    }
    for (word, class) in [("beta", 2), ("alpha", 1)] {
        if let Some(n) = tail.strip_prefix(word)
            && let Ok(minor) = n.parse::<u64>()
        {
            return (class, major, minor);
        }
    }
    (0, 0, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_as_kubernetes_sorts_them() {
        let mut v = vec![
            "v1alpha1",
            "v1",
            "foo",
            "v2beta1",
            "v1beta2",
            "v2",
            "v11alpha2",
        ];
        v.sort_by_key(|v| Reverse(version_priority(v)));
        assert_eq!(
            v,
            [
                "v2",
                "v1",
                "v2beta1",
                "v1beta2",
                "v11alpha2",
                "v1alpha1",
                "foo"
            ]
        );
    }

    fn crd(name: &str, kind: &str, short: &[&str], created: &str) -> Value {
        let plural = name.split('.').next().unwrap();
        json!({"metadata": {"name": name, "creationTimestamp": created},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": plural, "singular": plural.trim_end_matches('s'), "kind": kind,
                    "listKind": format!("{kind}List"), "shortNames": short},
                "versions": [{"name": "v1", "served": true, "storage": true}]}})
    }

    #[test]
    fn an_older_crd_keeps_a_contested_name() {
        let a = crd(
            "widgets.example.com",
            "Widget",
            &["wd"],
            "2024-01-01T00:00:00Z",
        );
        let b = crd(
            "gadgets.example.com",
            "Gadget",
            &["wd"],
            "2024-01-02T00:00:00Z",
        );
        let c = crd("things.example.com", "Widget", &[], "2024-01-03T00:00:00Z");
        let mut taken = HashMap::new();
        assert!(name_conflict(&a, &taken).is_none());
        claim_names(&a, "widgets.example.com", &mut taken);
        assert_eq!(
            name_conflict(&b, &taken),
            Some((
                "ShortNamesConflict".into(),
                "\"wd\" is already in use".into()
            ))
        );
        assert_eq!(name_conflict(&c, &taken).unwrap().0, "KindConflict");
        // Its own names are no conflict on the next pass.
        assert!(name_conflict(&a, &taken).is_none());
    }

    #[test]
    fn status_names_conditions_and_stored_versions() {
        let a = crd("widgets.example.com", "Widget", &[], "2024-01-01T00:00:00Z");
        let status = desired_status(&a, None, false);
        assert_eq!(status["acceptedNames"]["kind"], "Widget");
        assert_eq!(status["storedVersions"], json!(["v1"]));
        let types: Vec<&str> = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["NamesAccepted", "Established"]);
        let mut written = a.clone();
        written["status"] = status.clone();
        let again = desired_status(&written, None, false);
        assert!(same_status(written.get("status"), &again));
        let closing = desired_status(&written, None, true);
        assert!(!same_status(written.get("status"), &closing));
        let conflicted = desired_status(
            &written,
            Some(&("KindConflict".into(), "\"Widget\" is already in use".into())),
            false,
        );
        assert_eq!(conflicted["conditions"][1]["status"], "False");
    }
}
