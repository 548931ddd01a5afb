//! CustomResourceDefinition: names defaulted (`singular`, `listKind`), the definition checked
//! as upstream's apiextensions validation checks it (name = `<plural>.<group>`, one storage
//! version, a structural schema per version, printer columns and scale paths that make sense),
//! and a delete that first marks the CRD for clean-up: the `customresourcecleanup` finalizer,
//! which the apiextensions controller removes once every custom resource of it is gone.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};

use super::schema::{self, JsonPath};
use crate::registry::meta::{metadata_mut, now};
use crate::registry::validation::{FieldError, FieldErrors, dns1123_label, dns1123_subdomain};
use crate::registry::{Strategy, default_at, str_at};

/// The finalizer a CRD carries while its custom resources are being deleted.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// The CustomResourceDefinition strategy.
pub struct CustomResourceDefinitionStrategy;

const SCOPES: &[&str] = &["Cluster", "Namespaced"];
const COLUMN_TYPES: &[&str] = &["boolean", "date", "integer", "number", "string"];

impl Strategy for CustomResourceDefinitionStrategy {
    fn check_shape(&self, obj: &Value) -> Result<(), String> {
        crate::registry::check_typed_lenient::<CustomResourceDefinition>(obj)
    }

    fn uses_generation(&self) -> bool {
        true
    }

    fn default(&self, obj: &mut Value) {
        let kind = str_at(obj, "/spec/names/kind").to_owned();
        if !kind.is_empty() {
            default_at(obj, "/spec/names/singular", json!(kind.to_lowercase()));
            default_at(obj, "/spec/names/listKind", json!(format!("{kind}List")));
        }
        default_at(obj, "/spec/conversion/strategy", json!("None"));
    }

    fn validate(&self, obj: &Value) -> FieldErrors {
        let mut errors = Vec::new();
        let spec = &obj["spec"];
        let group = str_at(spec, "/group");
        let plural = str_at(spec, "/names/plural");
        let name = str_at(obj, "/metadata/name");
        if name != format!("{plural}.{group}") {
            errors.push(FieldError::invalid(
                "metadata.name",
                json!(name),
                "must be spec.names.plural+\".\"+spec.group",
            ));
        }
        if group.is_empty() {
            errors.push(FieldError::required("spec.group", ""));
        } else {
            for problem in dns1123_subdomain(group) {
                errors.push(FieldError::invalid("spec.group", json!(group), problem));
            }
            if !group.contains('.') {
                errors.push(FieldError::invalid(
                    "spec.group",
                    json!(group),
                    "should be a domain with at least one dot",
                ));
            }
        }
        // Kubernetes' own groups are reserved: a CRD there needs the approval annotation (as
        // upstream), so nobody shadows a built-in by accident.
        let protected = ["k8s.io", "kubernetes.io"]
            .iter()
            .any(|g| group == *g || group.ends_with(&format!(".{g}")));
        if protected && str_at(obj, "/metadata/annotations/api-approved.kubernetes.io").is_empty() {
            errors.push(FieldError::required(
                "metadata.annotations[api-approved.kubernetes.io]",
                "protected groups must have approval annotation \"api-approved.kubernetes.io\", see https://github.com/kubernetes/enhancements/pull/1111",
            ));
        }
        validate_names(&spec["names"], &mut errors);
        match str_at(spec, "/scope") {
            "" => errors.push(FieldError::required("spec.scope", "")),
            s if !SCOPES.contains(&s) => {
                errors.push(FieldError::not_supported("spec.scope", json!(s), SCOPES))
            }
            _ => {}
        }
        if spec
            .get("preserveUnknownFields")
            .and_then(Value::as_bool)
            .unwrap_or(false)
        {
            errors.push(FieldError::invalid(
                "spec.preserveUnknownFields",
                json!(true),
                "cannot set to true, set x-kubernetes-preserve-unknown-fields to true in spec.versions[*].schema instead",
            ));
        }
        match str_at(spec, "/conversion/strategy") {
            "" | "None" => {}
            "Webhook" => errors.push(FieldError::forbidden(
                "spec.conversion.strategy",
                "Webhook conversion is not implemented by rkube yet; use \"None\"",
            )),
            other => errors.push(FieldError::not_supported(
                "spec.conversion.strategy",
                json!(other),
                &["None", "Webhook"],
            )),
        }
        validate_versions(spec, &mut errors);
        errors
    }

    fn validate_update(&self, new: &Value, old: &Value) -> FieldErrors {
        let mut errors = self.validate(new);
        crate::registry::validation::immutable(old, new, "/spec/scope", "spec.scope", &mut errors);
        crate::registry::validation::immutable(old, new, "/spec/group", "spec.group", &mut errors);
        errors
    }

    fn warnings(&self, obj: &Value) -> Vec<String> {
        let mut out = Vec::new();
        for (i, version) in obj
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            if let Some(schema) = version.pointer("/schema/openAPIV3Schema")
                && mentions(schema, "x-kubernetes-validations")
            {
                out.push(format!(
                    "spec.versions[{i}].schema.openAPIV3Schema: x-kubernetes-validations (CEL) rules are not enforced by rkube yet; the rest of the schema is"
                ));
            }
        }
        out
    }

    fn begin_delete(&self, obj: &mut Value) -> bool {
        let meta = metadata_mut(obj);
        let mut finalizers: Vec<Value> = meta
            .get("finalizers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if !finalizers.iter().any(|f| f == CLEANUP_FINALIZER) {
            finalizers.push(json!(CLEANUP_FINALIZER));
        }
        meta.insert("finalizers".into(), Value::Array(finalizers));
        if !meta.contains_key("deletionTimestamp") {
            meta.insert("deletionTimestamp".into(), json!(now()));
            meta.insert("deletionGracePeriodSeconds".into(), json!(0));
        }
        true
    }
}

/// Whether `key` appears anywhere in `schema` (iteratively: schemas can nest deep).
fn mentions(schema: &Value, key: &str) -> bool {
    let mut stack = vec![schema];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(map) => {
                if map.contains_key(key) {
                    return true;
                }
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    false
}

fn validate_names(names: &Value, errors: &mut FieldErrors) {
    let plural = str_at(names, "/plural");
    if plural.is_empty() {
        errors.push(FieldError::required("spec.names.plural", ""));
    } else {
        for problem in dns1123_label(plural) {
            errors.push(FieldError::invalid(
                "spec.names.plural",
                json!(plural),
                problem,
            ));
        }
    }
    let singular = str_at(names, "/singular");
    for problem in dns1123_label(singular) {
        errors.push(FieldError::invalid(
            "spec.names.singular",
            json!(singular),
            problem,
        ));
    }
    for (field, value) in [
        ("spec.names.kind", str_at(names, "/kind")),
        ("spec.names.listKind", str_at(names, "/listKind")),
    ] {
        if value.is_empty() {
            errors.push(FieldError::required(field, ""));
        } else if !value
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
            || !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            errors.push(FieldError::invalid(
                field,
                json!(value),
                "may have mixed case, but should otherwise match: [a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?",
            ));
        }
    }
    if !str_at(names, "/kind").is_empty() && str_at(names, "/kind") == str_at(names, "/listKind") {
        errors.push(FieldError::invalid(
            "spec.names.listKind",
            json!(str_at(names, "/listKind")),
            "kind and listKind may not be the same",
        ));
    }
    for (i, short) in names
        .get("shortNames")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let s = short.as_str().unwrap_or_default();
        for problem in dns1123_label(s) {
            errors.push(FieldError::invalid(
                format!("spec.names.shortNames[{i}]"),
                json!(s),
                problem,
            ));
        }
    }
}

fn validate_versions(spec: &Value, errors: &mut FieldErrors) {
    let versions = spec
        .get("versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if versions.is_empty() {
        errors.push(FieldError::required(
            "spec.versions",
            "must have exactly one version marked as storage version",
        ));
        return;
    }
    let storage = versions
        .iter()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .count();
    if storage != 1 {
        errors.push(FieldError::invalid(
            "spec.versions",
            Value::Array(versions.clone()),
            "must have exactly one version marked as storage version",
        ));
    }
    let mut seen = Vec::new();
    for (i, version) in versions.iter().enumerate() {
        let path = format!("spec.versions[{i}]");
        let name = str_at(version, "/name");
        if name.is_empty() {
            errors.push(FieldError::required(format!("{path}.name"), ""));
        } else {
            for problem in dns1123_label(name) {
                errors.push(FieldError::invalid(
                    format!("{path}.name"),
                    json!(name),
                    problem,
                ));
            }
            if seen.contains(&name) {
                errors.push(FieldError::duplicate(format!("{path}.name"), json!(name)));
            }
            seen.push(name);
        }
        for flag in ["served", "storage"] {
            if !version.get(flag).is_some_and(Value::is_boolean) {
                errors.push(FieldError::required(format!("{path}.{flag}"), ""));
            }
        }
        match version.pointer("/schema/openAPIV3Schema") {
            Some(s) => {
                schema::check_structural(s, &format!("{path}.schema.openAPIV3Schema"), errors)
            }
            None => errors.push(FieldError::required(
                format!("{path}.schema.openAPIV3Schema"),
                "schemas are required",
            )),
        }
        validate_subresources(version, &path, errors);
        validate_columns(version, &path, errors);
    }
}

fn validate_subresources(version: &Value, path: &str, errors: &mut FieldErrors) {
    let Some(scale) = version.pointer("/subresources/scale") else {
        return;
    };
    let path = format!("{path}.subresources.scale");
    for (field, under) in [
        ("specReplicasPath", ".spec."),
        ("statusReplicasPath", ".status."),
    ] {
        let value = str_at(scale, &format!("/{field}"));
        if value.is_empty() {
            errors.push(FieldError::required(format!("{path}.{field}"), ""));
        } else if !value.starts_with(under) || !simple_path(value) {
            errors.push(FieldError::invalid(
                format!("{path}.{field}"),
                json!(value),
                format!(
                    "should be a json path under {}",
                    under.trim_end_matches('.')
                ),
            ));
        }
    }
    let selector = str_at(scale, "/labelSelectorPath");
    if !selector.is_empty()
        && (!(selector.starts_with(".spec.") || selector.starts_with(".status."))
            || !simple_path(selector))
    {
        errors.push(FieldError::invalid(
            format!("{path}.labelSelectorPath"),
            json!(selector),
            "should be a json path under either .spec or .status",
        ));
    }
}

/// `.a.b.c`: what scale paths may be (no subscripts).
fn simple_path(path: &str) -> bool {
    path.strip_prefix('.').is_some_and(|p| {
        p.split('.')
            .all(|part| !part.is_empty() && !part.contains(['[', ']', '*', '@']))
    })
}

fn validate_columns(version: &Value, path: &str, errors: &mut FieldErrors) {
    for (i, column) in version
        .get("additionalPrinterColumns")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let path = format!("{path}.additionalPrinterColumns[{i}]");
        if str_at(column, "/name").is_empty() {
            errors.push(FieldError::required(format!("{path}.name"), ""));
        }
        match str_at(column, "/type") {
            "" => errors.push(FieldError::required(format!("{path}.type"), "")),
            t if !COLUMN_TYPES.contains(&t) => errors.push(FieldError::not_supported(
                format!("{path}.type"),
                json!(t),
                COLUMN_TYPES,
            )),
            _ => {}
        }
        let json_path = str_at(column, "/jsonPath");
        if json_path.is_empty() {
            errors.push(FieldError::required(format!("{path}.jsonPath"), ""));
        } else if let Err(e) = JsonPath::parse(json_path) {
            errors.push(FieldError::invalid(
                format!("{path}.jsonPath"),
                json!(json_path),
                e,
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd() -> Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "crontabs.stable.example.com"},
            "spec": {"group": "stable.example.com", "scope": "Namespaced",
                "names": {"plural": "crontabs", "kind": "CronTab"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object"}}}]}
        })
    }

    fn errors(obj: &Value) -> Vec<String> {
        let mut obj = obj.clone();
        CustomResourceDefinitionStrategy.default(&mut obj);
        CustomResourceDefinitionStrategy
            .validate(&obj)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_good_crd_is_defaulted_and_valid() {
        let mut obj = crd();
        CustomResourceDefinitionStrategy.default(&mut obj);
        assert_eq!(obj["spec"]["names"]["singular"], "crontab");
        assert_eq!(obj["spec"]["names"]["listKind"], "CronTabList");
        assert_eq!(obj["spec"]["conversion"]["strategy"], "None");
        assert_eq!(errors(&crd()), Vec::<String>::new());
        assert!(CustomResourceDefinitionStrategy.check_shape(&obj).is_ok());
    }

    #[test]
    fn bad_crds_are_refused_as_upstream_words_it() {
        let mut bad = crd();
        bad["metadata"]["name"] = json!("crontab.stable.example.com");
        bad["spec"]["scope"] = json!("Global");
        bad["spec"]["versions"][0]["storage"] = json!(false);
        bad["spec"]["versions"][0]
            .as_object_mut()
            .unwrap()
            .remove("schema");
        let e = errors(&bad);
        assert!(e.contains(&"metadata.name: Invalid value: \"crontab.stable.example.com\": must be spec.names.plural+\".\"+spec.group".to_owned()), "{e:?}");
        assert!(e.contains(&"spec.scope: Unsupported value: \"Global\": supported values: \"Cluster\", \"Namespaced\"".to_owned()), "{e:?}");
        assert!(
            e.iter()
                .any(|x| x.ends_with("must have exactly one version marked as storage version")),
            "{e:?}"
        );
        assert!(
            e.contains(
                &"spec.versions[0].schema.openAPIV3Schema: Required value: schemas are required"
                    .to_owned()
            ),
            "{e:?}"
        );
        let mut nodot = crd();
        nodot["spec"]["group"] = json!("example");
        nodot["metadata"]["name"] = json!("crontabs.example");
        let e = errors(&nodot);
        assert_eq!(
            e,
            ["spec.group: Invalid value: \"example\": should be a domain with at least one dot"]
        );
        let mut cols = crd();
        cols["spec"]["versions"][0]["additionalPrinterColumns"] =
            json!([{"name": "X", "type": "float", "jsonPath": "spec"}]);
        cols["spec"]["versions"][0]["subresources"] =
            json!({"scale": {"specReplicasPath": ".status.x", "statusReplicasPath": ".status.r"}});
        let e = errors(&cols);
        assert_eq!(e.len(), 3, "{e:?}");
    }

    #[test]
    fn scope_and_group_are_immutable_and_delete_adds_the_cleanup_finalizer() {
        let old = crd();
        let mut new = crd();
        new["spec"]["scope"] = json!("Cluster");
        let e = CustomResourceDefinitionStrategy.validate_update(&new, &old);
        assert!(e.iter().any(|x| x.field == "spec.scope"), "{e:?}");
        let mut obj = crd();
        assert!(CustomResourceDefinitionStrategy.begin_delete(&mut obj));
        assert_eq!(obj["metadata"]["finalizers"], json!([CLEANUP_FINALIZER]));
        assert!(obj["metadata"]["deletionTimestamp"].is_string());
    }

    #[test]
    fn kubernetes_groups_need_the_approval_annotation() {
        let mut obj = crd();
        obj["spec"]["group"] = json!("networking.k8s.io");
        obj["metadata"]["name"] = json!("crontabs.networking.k8s.io");
        let e = errors(&obj);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("metadata.annotations[api-approved.kubernetes.io]: Required value"),
            "{e:?}"
        );
        obj["metadata"]["annotations"] = json!({"api-approved.kubernetes.io": "https://github.com/kubernetes/kubernetes/pull/1"});
        assert_eq!(errors(&obj), Vec::<String>::new());
        let mut other = crd();
        other["spec"]["group"] = json!("notk8s.io");
        other["metadata"]["name"] = json!("crontabs.notk8s.io");
        assert_eq!(errors(&other), Vec::<String>::new());
    }

    #[test]
    fn cel_rules_are_accepted_with_a_warning() {
        let mut obj = crd();
        assert!(CustomResourceDefinitionStrategy.warnings(&obj).is_empty());
        obj["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"] = json!({"spec":
            {"type": "object", "x-kubernetes-validations": [{"rule": "self.a > 0"}]}});
        let warnings = CustomResourceDefinitionStrategy.warnings(&obj);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("not enforced"), "{warnings:?}");
    }
}
