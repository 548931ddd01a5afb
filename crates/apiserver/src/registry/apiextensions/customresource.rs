//! Custom resources: the [`ResourceInfo`] and [`Strategy`] of each served version of a
//! CustomResourceDefinition, built at run time from the CRD so that custom resources take the
//! same road as built-ins (defaulting and validation from the version's structural schema,
//! status and scale subresources, the CRD's printer columns).
//!
//! The catalogue hands out `&'static ResourceInfo`s, so a custom resource's definition is
//! leaked once per distinct CRD definition and kept for the process's life ([`intern`]): a CRD
//! written again unchanged (every status update, every restart of the controller) reuses it.
//! The cost is bounded by how many different definitions an administrator writes.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{Value, json};

use super::schema::{self, JsonPath};
use crate::registry::catalog::{ALL_VERBS, ResourceInfo, Subresource};
use crate::registry::validation::FieldErrors;
use crate::registry::{Column, Conversion, NameRule, ScalePaths, Strategy, str_at, table};

/// The rules of one version of a custom resource.
pub struct CustomResourceStrategy {
    schema: Value,
    status: bool,
    scale: Option<ScalePaths>,
    columns: Vec<(Column, JsonPath)>,
}

impl Strategy for CustomResourceStrategy {
    fn name_rule(&self) -> NameRule {
        NameRule::Subdomain
    }

    fn has_status(&self) -> bool {
        self.status
    }

    fn uses_generation(&self) -> bool {
        true
    }

    fn strategic_merge_patch(&self) -> bool {
        false
    }

    fn default(&self, obj: &mut Value) {
        schema::apply_defaults(obj, &self.schema);
    }

    fn validate(&self, obj: &Value) -> FieldErrors {
        let mut errors = Vec::new();
        schema::validate(obj, &self.schema, "", &mut errors);
        errors
    }

    fn validate_status(&self, obj: &Value) -> FieldErrors {
        self.validate(obj)
    }

    fn scale_paths(&self) -> Option<ScalePaths> {
        self.scale.clone()
    }

    fn columns(&self) -> Vec<Column> {
        let mut columns = vec![Column::NAME];
        columns.extend(self.columns.iter().map(|(c, _)| *c));
        columns
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let mut cells = vec![Value::String(table::name(obj))];
        for (column, path) in &self.columns {
            cells.push(cell(column, &path.find(obj)));
        }
        cells
    }
}

/// One printer cell as upstream's custom resource table convertor makes it: nothing found is
/// null, dates are shown as ages, several values are joined with commas.
fn cell(column: &Column, found: &[&Value]) -> Value {
    match found {
        [] => Value::Null,
        [one] if column.kind == "date" => match one.as_str() {
            Some(t) => Value::String(table::since(t)),
            None => (*one).clone(),
        },
        [one] => (*one).clone(),
        many => Value::String(
            many.iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(","),
        ),
    }
}

/// Leaks a string for the catalogue's `'static` tables (see the module's note).
fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

fn leak_list(items: &[String]) -> &'static [&'static str] {
    Box::leak(
        items
            .iter()
            .map(|s| leak(s))
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    )
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

/// The definitions made so far, by the text of what they were made from.
static INTERNED: Mutex<Option<HashMap<String, &'static ResourceInfo>>> = Mutex::new(None);

/// The resource of `version` of `crd` (an accepted, valid CRD): made once per distinct
/// definition. `terminating` drops `create` from its verbs, as upstream refuses new objects of
/// a CRD being deleted.
pub fn intern(crd: &Value, version: &Value, terminating: bool) -> &'static ResourceInfo {
    let fingerprint = format!(
        "{terminating}\n{}\n{}",
        crd.get("spec").unwrap_or(&Value::Null),
        version
    );
    let mut interned = INTERNED.lock().unwrap_or_else(|p| p.into_inner());
    let map = interned.get_or_insert_with(HashMap::new);
    if let Some(info) = map.get(&fingerprint) {
        return info;
    }
    let info: &'static ResourceInfo = Box::leak(Box::new(build(crd, version, terminating)));
    map.insert(fingerprint, info);
    info
}

const CREATE_REFUSED: &[&str] = &[
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn build(crd: &Value, version: &Value, terminating: bool) -> ResourceInfo {
    let spec = &crd["spec"];
    let names = &spec["names"];
    let group = str_at(spec, "/group");
    let kind = str_at(names, "/kind");
    let plural = str_at(names, "/plural");
    let singular = match str_at(names, "/singular") {
        "" => kind.to_lowercase(),
        s => s.to_owned(),
    };
    let schema = version
        .pointer("/schema/openAPIV3Schema")
        .cloned()
        .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
    let status = version.pointer("/subresources/status").is_some();
    let scale = version
        .pointer("/subresources/scale")
        .filter(|s| s.is_object())
        .map(|s| ScalePaths {
            spec_replicas: pointer_of(str_at(s, "/specReplicasPath")),
            status_replicas: pointer_of(str_at(s, "/statusReplicasPath")),
            label_selector: match str_at(s, "/labelSelectorPath") {
                "" => None,
                p => Some(pointer_of(p)),
            },
            selector_is_text: true,
        });
    let mut subresources = Vec::new();
    if status {
        subresources.push(Subresource {
            name: "status",
            kind: leak(kind),
            group: "",
            version: "",
            verbs: &["get", "patch", "update"],
        });
    }
    if scale.is_some() {
        subresources.push(Subresource {
            name: "scale",
            kind: "Scale",
            group: "autoscaling",
            version: "v1",
            verbs: &["get", "patch", "update"],
        });
    }
    let columns = match version
        .get("additionalPrinterColumns")
        .and_then(Value::as_array)
    {
        Some(cols) if !cols.is_empty() => cols
            .iter()
            .filter_map(|c| {
                let path = JsonPath::parse(str_at(c, "/jsonPath")).ok()?;
                let column = Column {
                    name: leak(str_at(c, "/name")),
                    kind: leak(str_at(c, "/type")),
                    format: leak(str_at(c, "/format")),
                    description: leak(str_at(c, "/description")),
                    priority: u8::try_from(c.get("priority").and_then(Value::as_i64).unwrap_or(0))
                        .unwrap_or(u8::MAX),
                };
                Some((column, path))
            })
            .collect(),
        // Upstream's default: the age.
        _ => vec![(
            Column {
                name: "Age",
                kind: "date",
                format: "",
                description: "Custom resource definition column (in JSONPath format): .metadata.creationTimestamp",
                priority: 0,
            },
            JsonPath::parse(".metadata.creationTimestamp").expect("a fixed valid path"),
        )],
    };
    let strategy: &'static CustomResourceStrategy = Box::leak(Box::new(CustomResourceStrategy {
        schema,
        status,
        scale,
        columns,
    }));
    ResourceInfo {
        group: leak(group),
        version: leak(str_at(version, "/name")),
        kind: leak(kind),
        plural: leak(plural),
        singular: leak(&singular),
        short_names: leak_list(&strings(names.get("shortNames"))),
        namespaced: str_at(spec, "/scope") != "Cluster",
        verbs: if terminating {
            CREATE_REFUSED
        } else {
            ALL_VERBS
        },
        categories: leak_list(&strings(names.get("categories"))),
        subresources: Box::leak(subresources.into_boxed_slice()),
        storage: leak(&format!("/registry/{group}/{plural}")),
        strategy,
        conversion: conversion(group, spec, version),
    }
}

/// The `None` conversion of a CRD with several versions: an object is the same in every
/// version but for its `apiVersion`, and is stored as the storage version.
struct ApiVersionOnly {
    served: &'static str,
    stored: &'static str,
}

impl Conversion for ApiVersionOnly {
    fn to_served(&self, mut obj: Value) -> Value {
        obj["apiVersion"] = json!(self.served);
        obj
    }

    fn to_stored(&self, mut obj: Value) -> Value {
        obj["apiVersion"] = json!(self.stored);
        obj
    }
}

/// The conversion of `version` when its CRD has more than one version (with one, objects are
/// stored and served as it). Objects written before the storage version changed are shown in
/// the requested version too.
fn conversion(group: &str, spec: &Value, version: &Value) -> Option<&'static dyn Conversion> {
    let versions = spec.get("versions").and_then(Value::as_array)?;
    if versions.len() < 2 {
        return None;
    }
    let stored = versions
        .iter()
        .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .map(|v| str_at(v, "/name"))?;
    let conversion: &'static ApiVersionOnly = Box::leak(Box::new(ApiVersionOnly {
        served: leak(&format!("{group}/{}", str_at(version, "/name"))),
        stored: leak(&format!("{group}/{stored}")),
    }));
    Some(conversion)
}

/// `.spec.replicas` as the JSON pointer `/spec/replicas`.
fn pointer_of(path: &str) -> String {
    path.trim_start_matches('.')
        .split('.')
        .fold(String::new(), |mut p, part| {
            p.push('/');
            p.push_str(part);
            p
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd() -> Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "crontabs.stable.example.com"},
            "spec": {
                "group": "stable.example.com",
                "scope": "Namespaced",
                "names": {"plural": "crontabs", "singular": "crontab", "kind": "CronTab",
                    "shortNames": ["ct"], "categories": ["all"]},
                "versions": [{
                    "name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                        "spec": {"type": "object", "properties": {
                            "cronSpec": {"type": "string"},
                            "replicas": {"type": "integer", "default": 1}}},
                        "status": {"type": "object", "properties": {
                            "replicas": {"type": "integer"}, "selector": {"type": "string"}}}}}},
                    "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas",
                        "statusReplicasPath": ".status.replicas", "labelSelectorPath": ".status.selector"}},
                    "additionalPrinterColumns": [
                        {"name": "Spec", "type": "string", "jsonPath": ".spec.cronSpec"},
                        {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]
                }]
            }
        })
    }

    #[test]
    fn a_crd_version_becomes_a_resource() {
        let crd = crd();
        let info = intern(&crd, &crd["spec"]["versions"][0], false);
        assert_eq!(info.api_version(), "stable.example.com/v1");
        assert_eq!(info.group_resource(), "crontabs.stable.example.com");
        assert_eq!(info.short_names, &["ct"]);
        assert_eq!(info.categories, &["all"]);
        assert!(info.namespaced && info.allows("create"));
        assert_eq!(
            info.key(Some("default"), "a"),
            "/registry/stable.example.com/crontabs/default/a"
        );
        assert!(info.subresource("status").is_some() && info.subresource("scale").is_some());
        let scale = info.strategy.scale_paths().unwrap();
        assert_eq!(scale.spec_replicas, "/spec/replicas");
        assert_eq!(scale.label_selector.as_deref(), Some("/status/selector"));
        // The same definition is made once; a terminating one is another.
        assert!(std::ptr::eq(
            info,
            intern(&crd, &crd["spec"]["versions"][0], false)
        ));
        let closing = intern(&crd, &crd["spec"]["versions"][0], true);
        assert!(!closing.allows("create") && closing.allows("delete"));
    }

    #[test]
    fn columns_defaults_and_validation_come_from_the_version() {
        let crd = crd();
        let info = intern(&crd, &crd["spec"]["versions"][0], false);
        let names: Vec<&str> = info.strategy.columns().iter().map(|c| c.name).collect();
        assert_eq!(names, ["Name", "Spec", "Replicas", "Age"]);
        let mut obj = json!({"metadata": {"name": "a", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"cronSpec": "* * * * *"}});
        info.strategy.default(&mut obj);
        assert_eq!(obj["spec"]["replicas"], json!(1));
        let cells = info.strategy.cells(&obj);
        assert_eq!(cells[..3], [json!("a"), json!("* * * * *"), json!(1)]);
        // A date column shows the age, not the timestamp.
        assert!(!cells[3].as_str().unwrap().contains('T'), "{cells:?}");
        let bad = json!({"metadata": {"name": "a"}, "spec": {"cronSpec": 5}});
        let errors = info.strategy.validate(&bad);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "spec.cronSpec");
    }

    #[test]
    fn without_printer_columns_a_resource_shows_its_age() {
        let mut crd = crd();
        crd["spec"]["versions"][0]
            .as_object_mut()
            .unwrap()
            .remove("additionalPrinterColumns");
        let info = intern(&crd, &crd["spec"]["versions"][0], false);
        let names: Vec<&str> = info.strategy.columns().iter().map(|c| c.name).collect();
        assert_eq!(names, ["Name", "Age"]);
    }
}
