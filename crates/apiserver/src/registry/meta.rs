//! Object metadata rules every resource shares, in one place: names and `generateName`, the
//! namespace, `uid`, `creationTimestamp`, `generation`, labels, annotations, finalizers, owner
//! references, and what an update may not change. Mirrors upstream's `rest.BeforeCreate`,
//! `rest.BeforeUpdate` and `ValidateObjectMeta[Update]`.

use rand::Rng;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::validation::{self, FieldError, FieldErrors};
use super::{NameRule, ResourceInfo};
use crate::status::ApiError;

/// Now as Kubernetes writes timestamps: RFC 3339, UTC, whole seconds.
pub fn now() -> String {
    let t = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| OffsetDateTime::now_utc());
    t.format(&Rfc3339).unwrap_or_default()
}

/// A random (version 4) UUID for `metadata.uid`.
pub fn new_uid() -> String {
    let mut b: [u8; 16] = rand::rng().random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The characters upstream draws `generateName` suffixes from (no vowels, no look-alikes).
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// `prefix` plus five random characters.
pub fn generate_name(prefix: &str) -> String {
    let mut rng = rand::rng();
    let suffix: String = (0..5)
        .map(|_| SUFFIX_ALPHABET[rng.random_range(0..SUFFIX_ALPHABET.len())] as char)
        .collect();
    format!("{prefix}{suffix}")
}

/// The `metadata` map of an object, created when missing. The object must be a JSON object.
pub fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata was made an object above")
}

/// Checks `apiVersion`/`kind` of a body against the resource (filling them when absent) and that
/// the body is an object with an object `metadata`: what upstream's decoder refuses with 400.
pub fn check_type(obj: &mut Value, info: &ResourceInfo) -> Result<(), ApiError> {
    let Some(map) = obj.as_object_mut() else {
        return Err(ApiError::bad_request(format!(
            "the body of the request is not a {} object",
            info.kind
        )));
    };
    let want = info.api_version();
    match map.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("apiVersion".into(), Value::String(want));
        }
        Some(v) if v == want => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({want})"
            )));
        }
    }
    match map.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("kind".into(), Value::String(info.kind.into()));
        }
        Some(k) if k == info.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                info.kind
            )));
        }
    }
    match map.get("metadata") {
        None | Some(Value::Null) => {
            map.insert("metadata".into(), json!({}));
        }
        Some(Value::Object(_)) => {}
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: metadata must be an object",
                info.kind, info.version, info.kind
            )));
        }
    }
    Ok(())
}

/// Sets the namespace from the URL, refusing a body that names another (400, as upstream).
pub fn set_namespace(
    obj: &mut Value,
    info: &ResourceInfo,
    url_namespace: Option<&str>,
) -> Result<(), ApiError> {
    let meta = metadata_mut(obj);
    if !info.namespaced {
        meta.remove("namespace");
        return Ok(());
    }
    let url = url_namespace.unwrap_or_default();
    match meta.get("namespace").and_then(Value::as_str) {
        None | Some("") => {
            meta.insert("namespace".into(), Value::String(url.to_owned()));
        }
        Some(ns) if ns == url => {}
        Some(_) => {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
    }
    Ok(())
}

/// System fields of a new object: name from `generateName`, uid, creationTimestamp,
/// generation; clears what a client may not set on create.
pub fn prepare_for_create(obj: &mut Value, uses_generation: bool) {
    let meta = metadata_mut(obj);
    let name_missing = meta
        .get("name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty);
    if name_missing
        && let Some(prefix) = meta.get("generateName").and_then(Value::as_str)
        && !prefix.is_empty()
    {
        let name = generate_name(prefix);
        meta.insert("name".into(), Value::String(name));
    }
    meta.insert("uid".into(), Value::String(new_uid()));
    meta.insert("creationTimestamp".into(), Value::String(now()));
    for field in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
    ] {
        meta.remove(field);
    }
    if uses_generation {
        meta.insert("generation".into(), json!(1));
    } else {
        meta.remove("generation");
    }
}

/// Validates the metadata of any object (create and update).
pub fn validate(obj: &Value, info: &ResourceInfo) -> FieldErrors {
    let mut errors = Vec::new();
    let meta = obj.get("metadata").cloned().unwrap_or(json!({}));
    let name = meta.get("name").and_then(Value::as_str).unwrap_or_default();
    let rule = info.strategy.name_rule();
    if name.is_empty() {
        errors.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else {
        for problem in check_name(rule, name) {
            errors.push(FieldError::invalid(
                "metadata.name",
                Value::String(name.into()),
                problem,
            ));
        }
    }
    if let Some(prefix) = meta.get("generateName").and_then(Value::as_str)
        && !prefix.is_empty()
    {
        // A prefix may end in '-': check it as if a character followed.
        let probe = format!("{prefix}a");
        for problem in check_name(rule, &probe) {
            errors.push(FieldError::invalid(
                "metadata.generateName",
                Value::String(prefix.into()),
                problem,
            ));
        }
    }
    let namespace = meta
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if info.namespaced {
        if namespace.is_empty() {
            errors.push(FieldError::required("metadata.namespace", ""));
        } else {
            for problem in validation::dns1123_label(namespace) {
                errors.push(FieldError::invalid(
                    "metadata.namespace",
                    Value::String(namespace.into()),
                    problem,
                ));
            }
        }
    } else if !namespace.is_empty() {
        errors.push(FieldError::forbidden(
            "metadata.namespace",
            "not allowed on this type",
        ));
    }
    validation::validate_labels(
        meta.get("labels").unwrap_or(&Value::Null),
        "metadata.labels",
        &mut errors,
    );
    validation::validate_annotations(
        meta.get("annotations").unwrap_or(&Value::Null),
        "metadata.annotations",
        &mut errors,
    );
    validate_finalizers(meta.get("finalizers"), &mut errors);
    validate_owner_references(meta.get("ownerReferences"), &mut errors);
    errors
}

fn check_name(rule: NameRule, name: &str) -> Vec<String> {
    match rule {
        NameRule::Subdomain => validation::dns1123_subdomain(name),
        NameRule::Label => validation::dns1123_label(name),
        NameRule::PathSegment => validation::path_segment_name(name),
    }
}

fn validate_finalizers(finalizers: Option<&Value>, errors: &mut FieldErrors) {
    let Some(list) = finalizers else { return };
    let Some(list) = list.as_array() else {
        if !list.is_null() {
            errors.push(FieldError::invalid(
                "metadata.finalizers",
                list.clone(),
                "must be a list of strings",
            ));
        }
        return;
    };
    let mut seen = std::collections::HashSet::new();
    for (i, f) in list.iter().enumerate() {
        let field = format!("metadata.finalizers[{i}]");
        let Some(name) = f.as_str() else {
            errors.push(FieldError::invalid(field, f.clone(), "must be a string"));
            continue;
        };
        for problem in validation::qualified_name(name) {
            errors.push(FieldError::invalid(&field, f.clone(), problem));
        }
        if !seen.insert(name) {
            errors.push(FieldError::duplicate(&field, f.clone()));
        }
    }
    let has = |n: &str| list.iter().any(|f| f.as_str() == Some(n));
    if has("orphan") && has("foregroundDeletion") {
        errors.push(FieldError::invalid(
            "metadata.finalizers",
            Value::Array(list.clone()),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
}

fn validate_owner_references(refs: Option<&Value>, errors: &mut FieldErrors) {
    let Some(list) = refs.and_then(Value::as_array) else {
        return;
    };
    let mut controllers = 0;
    for (i, r) in list.iter().enumerate() {
        let field = format!("metadata.ownerReferences[{i}]");
        for key in ["apiVersion", "kind", "name", "uid"] {
            if r.get(key).and_then(Value::as_str).is_none_or(str::is_empty) {
                errors.push(FieldError::invalid(
                    format!("{field}.{key}"),
                    r.get(key).cloned().unwrap_or(Value::String(String::new())),
                    format!("{key} must not be empty"),
                ));
            }
        }
        if r.get("controller").and_then(Value::as_bool) == Some(true) {
            controllers += 1;
        }
    }
    if controllers > 1 {
        errors.push(FieldError::invalid(
            "metadata.ownerReferences",
            Value::Array(list.clone()),
            "Only one reference can have Controller set to true",
        ));
    }
}

/// Carries system fields over from the stored object on update: uid (when the client left it
/// out), creationTimestamp, generation, deletion fields; bumps the generation on spec changes.
pub fn prepare_for_update(new: &mut Value, old: &Value, uses_generation: bool) {
    let old_meta = old.get("metadata").cloned().unwrap_or(json!({}));
    let spec_changed = super::spec_changed(new, old);
    let meta = metadata_mut(new);
    if meta
        .get("uid")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
        && let Some(uid) = old_meta.get("uid")
    {
        meta.insert("uid".into(), uid.clone());
    }
    for field in [
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generateName",
    ] {
        match old_meta.get(field) {
            Some(v) => meta.insert(field.into(), v.clone()),
            None => meta.remove(field),
        };
    }
    meta.remove("selfLink");
    if uses_generation {
        let generation = old_meta
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let bumped = if spec_changed {
            generation + 1
        } else {
            generation
        };
        meta.insert("generation".into(), json!(bumped));
    } else {
        meta.remove("generation");
    }
}

/// What an update may not change in metadata (name, namespace, uid).
pub fn validate_update(new: &Value, old: &Value) -> FieldErrors {
    let mut errors = Vec::new();
    for (pointer, field) in [
        ("/metadata/name", "metadata.name"),
        ("/metadata/namespace", "metadata.namespace"),
        ("/metadata/uid", "metadata.uid"),
    ] {
        validation::immutable(old, new, pointer, field, &mut errors);
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::catalog::find;

    #[test]
    fn create_fills_system_fields_and_generates_names() {
        let mut obj = json!({"metadata": {"generateName": "web-", "resourceVersion": "9",
            "deletionTimestamp": "2020-01-01T00:00:00Z"}});
        prepare_for_create(&mut obj, true);
        let meta = &obj["metadata"];
        let name = meta["name"].as_str().unwrap();
        assert!(name.starts_with("web-") && name.len() == 9, "{name}");
        assert_eq!(meta["uid"].as_str().unwrap().len(), 36);
        assert!(meta["creationTimestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(meta["generation"], 1);
        assert!(meta.get("resourceVersion").is_none());
        assert!(meta.get("deletionTimestamp").is_none());
    }

    #[test]
    fn uids_are_version_4_and_distinct() {
        let a = new_uid();
        assert_eq!(&a[14..15], "4");
        assert_ne!(a, new_uid());
    }

    #[test]
    fn names_follow_the_rule_of_the_kind() {
        let cm = find("", "v1", "configmaps").unwrap();
        let obj = json!({"metadata": {"name": "a.b", "namespace": "default"}});
        assert!(validate(&obj, cm).is_empty());
        let ns = find("", "v1", "namespaces").unwrap();
        let errors = validate(&json!({"metadata": {"name": "a.b"}}), ns);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "metadata.name");
        let role = find("rbac.authorization.k8s.io", "v1", "clusterroles").unwrap();
        assert!(validate(&json!({"metadata": {"name": "system:x"}}), role).is_empty());
        let errors = validate(&json!({"metadata": {"namespace": "default"}}), cm);
        assert_eq!(
            errors[0].to_string(),
            "metadata.name: Required value: name or generateName is required"
        );
    }

    #[test]
    fn labels_annotations_finalizers_and_owners_are_checked() {
        let cm = find("", "v1", "configmaps").unwrap();
        let obj = json!({"metadata": {"name": "a", "namespace": "default",
            "labels": {"ok": "v", "bad key": "v", "k": "x".repeat(64)},
            "finalizers": ["example.com/f", "example.com/f"],
            "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "n", "uid": "u", "controller": true},
                                {"apiVersion": "v1", "kind": "X", "name": "m", "uid": "v", "controller": true}]}});
        let fields: Vec<String> = validate(&obj, cm).into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "metadata.labels",
                "metadata.labels",
                "metadata.finalizers[1]",
                "metadata.ownerReferences"
            ]
        );
    }

    #[test]
    fn updates_keep_system_fields_and_bump_generation_on_spec_change() {
        let old = json!({"metadata": {"name": "a", "uid": "u1", "creationTimestamp": "t", "generation": 3},
            "spec": {"replicas": 1}});
        let mut new = json!({"metadata": {"name": "a", "creationTimestamp": "other"}, "spec": {"replicas": 2}});
        prepare_for_update(&mut new, &old, true);
        assert_eq!(new["metadata"]["uid"], "u1");
        assert_eq!(new["metadata"]["creationTimestamp"], "t");
        assert_eq!(new["metadata"]["generation"], 4);
        let mut same =
            json!({"metadata": {"name": "a", "labels": {"x": "y"}}, "spec": {"replicas": 1}});
        prepare_for_update(&mut same, &old, true);
        assert_eq!(same["metadata"]["generation"], 3);
        let mut renamed = new.clone();
        renamed["metadata"]["name"] = json!("b");
        renamed["metadata"]["uid"] = json!("u2");
        assert_eq!(validate_update(&renamed, &old).len(), 2);
    }

    #[test]
    fn cluster_scoped_objects_have_no_namespace() {
        let ns = find("", "v1", "namespaces").unwrap();
        let mut obj = json!({"metadata": {"name": "a", "namespace": "x"}});
        set_namespace(&mut obj, ns, Some("y")).unwrap();
        assert!(obj["metadata"].get("namespace").is_none());
        let cm = find("", "v1", "configmaps").unwrap();
        let mut obj = json!({"metadata": {"name": "a", "namespace": "x"}});
        assert!(set_namespace(&mut obj, cm, Some("y")).is_err());
    }
}
