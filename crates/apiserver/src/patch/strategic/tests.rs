//! Cases from Kubernetes' documented strategic merge patch semantics, on the real Pod and
//! Deployment schemas, plus a property test that no input panics.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::openapi::{GroupVersionKind, Schemas};

fn pod_schema(schemas: &Schemas) -> SchemaNode<'_> {
    schemas
        .for_kind(&GroupVersionKind::new("", "v1", "Pod"))
        .unwrap()
}

fn apply_pod(original: Value, patch: Value) -> Result<Value> {
    let schemas = Schemas::builtin();
    apply_strategic_merge_patch(&original, &patch, Some(pod_schema(&schemas)))
}

fn containers(names: &[&str]) -> Value {
    Value::Array(
        names
            .iter()
            .map(|n| json!({"name": n, "image": format!("{n}:1")}))
            .collect(),
    )
}

/// (name, original, patch, expected result)
fn ok_cases() -> Vec<(&'static str, Value, Value, Value)> {
    vec![
        (
            "null deletes a key",
            json!({"metadata": {"labels": {"a": "1", "b": "2"}}}),
            json!({"metadata": {"labels": {"a": null}}}),
            json!({"metadata": {"labels": {"b": "2"}}}),
        ),
        (
            "objects merge key by key",
            json!({"spec": {"nodeName": "n1", "hostname": "h"}}),
            json!({"spec": {"hostname": "h2", "subdomain": "s"}}),
            json!({"spec": {"nodeName": "n1", "hostname": "h2", "subdomain": "s"}}),
        ),
        (
            "a list with merge strategy merges by its key",
            json!({"spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}}),
            json!({"spec": {"containers": [{"name": "b", "image": "b:2"}]}}),
            json!({"spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:2"}]}}),
        ),
        (
            // Without $setElementOrder the patch's elements come first, as upstream orders them.
            "new elements of a merged list go before the server's",
            json!({"spec": {"containers": containers(&["a"])}}),
            json!({"spec": {"containers": [{"name": "c", "image": "c:1"}]}}),
            json!({"spec": {"containers": [{"name": "c", "image": "c:1"}, {"name": "a", "image": "a:1"}]}}),
        ),
        (
            "a list without merge strategy is replaced",
            json!({"spec": {"tolerations": [{"key": "a"}, {"key": "b"}]}}),
            json!({"spec": {"tolerations": [{"key": "c"}]}}),
            json!({"spec": {"tolerations": [{"key": "c"}]}}),
        ),
        (
            "a scalar list without strategy is replaced",
            json!({"spec": {"containers": [{"name": "a", "args": ["x", "y"]}]}}),
            json!({"spec": {"containers": [{"name": "a", "args": ["z"]}]}}),
            json!({"spec": {"containers": [{"name": "a", "args": ["z"]}]}}),
        ),
        (
            "a merged scalar list is a union (finalizers)",
            json!({"metadata": {"finalizers": ["a", "b"]}}),
            json!({"metadata": {"finalizers": ["c", "a"]}}),
            json!({"metadata": {"finalizers": ["c", "a", "b"]}}),
        ),
        (
            "$deleteFromPrimitiveList removes values",
            json!({"metadata": {"finalizers": ["a", "b", "c"]}}),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}}),
            json!({"metadata": {"finalizers": ["a", "c"]}}),
        ),
        (
            "$deleteFromPrimitiveList of a missing list adds nothing",
            json!({"metadata": {}}),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}}),
            json!({"metadata": {}}),
        ),
        (
            "$patch: delete removes an element by merge key",
            json!({"spec": {"containers": containers(&["a", "b"])}}),
            json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}),
            json!({"spec": {"containers": [{"name": "b", "image": "b:1"}]}}),
        ),
        (
            "$patch: replace in a list makes the patch elements the whole list",
            json!({"spec": {"containers": containers(&["a", "b"])}}),
            json!({"spec": {"containers": [{"name": "c", "image": "c:1"}, {"$patch": "replace"}]}}),
            json!({"spec": {"containers": [{"name": "c", "image": "c:1"}]}}),
        ),
        (
            "$patch: replace on an object replaces it",
            json!({"spec": {"securityContext": {"runAsUser": 1, "runAsGroup": 2}}}),
            json!({"spec": {"securityContext": {"$patch": "replace", "runAsUser": 3}}}),
            json!({"spec": {"securityContext": {"runAsUser": 3}}}),
        ),
        (
            "$patch: delete on an object empties it",
            json!({"spec": {"securityContext": {"runAsUser": 1}}}),
            json!({"spec": {"securityContext": {"$patch": "delete"}}}),
            json!({"spec": {"securityContext": {}}}),
        ),
        (
            "$retainKeys clears fields not listed",
            json!({"spec": {"volumes": [{"name": "v", "hostPath": {"path": "/x"}}]}}),
            json!({"spec": {"volumes": [{"name": "v", "emptyDir": {}, "$retainKeys": ["name", "emptyDir"]}]}}),
            json!({"spec": {"volumes": [{"name": "v", "emptyDir": {}}]}}),
        ),
        (
            "$setElementOrder orders a merged list of objects",
            json!({"spec": {"containers": containers(&["a", "b", "c"])}}),
            json!({"spec": {
                "$setElementOrder/containers": [{"name": "c"}, {"name": "a"}, {"name": "b"}],
                "containers": [{"name": "a", "image": "a:2"}],
            }}),
            json!({"spec": {"containers": [
                {"name": "c", "image": "c:1"}, {"name": "a", "image": "a:2"}, {"name": "b", "image": "b:1"},
            ]}}),
        ),
        (
            "$setElementOrder orders a merged scalar list",
            json!({"metadata": {"finalizers": ["a", "b", "c"]}}),
            json!({"metadata": {"$setElementOrder/finalizers": ["c", "b", "a"]}}),
            json!({"metadata": {"finalizers": ["c", "b", "a"]}}),
        ),
        (
            "an element only the server has keeps its place relative to the server order",
            json!({"spec": {"containers": containers(&["a", "b", "c"])}}),
            json!({"spec": {
                "$setElementOrder/containers": [{"name": "c"}, {"name": "a"}],
                "containers": [{"name": "c", "image": "c:2"}],
            }}),
            json!({"spec": {"containers": [
                {"name": "b", "image": "b:1"}, {"name": "c", "image": "c:2"}, {"name": "a", "image": "a:1"},
            ]}}),
        ),
        (
            "unknown fields merge as JSON merge patch does",
            json!({"spec": {"x": {"a": 1, "l": [1, 2]}}}),
            json!({"spec": {"x": {"b": 2, "l": [3]}}}),
            json!({"spec": {"x": {"a": 1, "b": 2, "l": [3]}}}),
        ),
        (
            "content added wholesale loses its directives and nulls",
            json!({}),
            json!({"spec": {"containers": [{"name": "a", "image": null, "$setElementOrder/env": []}]}}),
            json!({"spec": {"containers": [{"name": "a"}]}}),
        ),
        (
            "a new element of a merged list loses its directives too",
            json!({"spec": {"containers": containers(&["a"])}}),
            json!({"spec": {"containers": [{"name": "b", "env": [{"name": "x", "value": null}], "$retainKeys": ["name"]}]}}),
            json!({"spec": {"containers": [{"name": "b", "env": [{"name": "x"}]}, {"name": "a", "image": "a:1"}]}}),
        ),
        (
            "a value of another type replaces the original",
            json!({"spec": {"containers": "oops"}}),
            json!({"spec": {"containers": containers(&["a"])}}),
            json!({"spec": {"containers": containers(&["a"])}}),
        ),
        (
            "ports merge by containerPort",
            json!({"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 80}, {"containerPort": 443}]}]}}),
            json!({"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 80, "name": "http"}]}]}}),
            json!({"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 443}]}]}}),
        ),
        (
            "labels map values are merged (additionalProperties)",
            json!({"metadata": {"annotations": {"a": "1"}}}),
            json!({"metadata": {"annotations": {"b": "2"}}}),
            json!({"metadata": {"annotations": {"a": "1", "b": "2"}}}),
        ),
    ]
}

#[test]
fn documented_strategic_merge_patch_cases() {
    for (name, original, patch, expected) in ok_cases() {
        let got = apply_pod(original, patch).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got, expected, "{name}");
    }
}

#[test]
fn deployment_strategy_type_change_with_retain_keys() {
    // What kubectl sends when switching a Deployment from RollingUpdate to Recreate.
    let schemas = Schemas::builtin();
    let schema = schemas
        .for_kind(&GroupVersionKind::new("apps", "v1", "Deployment"))
        .unwrap();
    let original =
        json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
    let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
    let got = apply_strategic_merge_patch(&original, &patch, Some(schema)).unwrap();
    assert_eq!(got, json!({"spec": {"strategy": {"type": "Recreate"}}}));
}

#[test]
fn without_a_schema_lists_are_replaced_and_objects_merged() {
    let original = json!({"spec": {"a": [1, 2], "m": {"x": 1}}});
    let patch = json!({"spec": {"a": [3], "m": {"y": 2}}});
    let got = apply_strategic_merge_patch(&original, &patch, None).unwrap();
    assert_eq!(got, json!({"spec": {"a": [3], "m": {"x": 1, "y": 2}}}));
}

#[test]
fn malformed_patches_are_typed_errors_with_status() {
    let cases: Vec<(&str, Value, Value, u16)> = vec![
        (
            "unknown $patch",
            json!({"spec": {}}),
            json!({"spec": {"$patch": "explode"}}),
            400,
        ),
        (
            "retainKeys not a list",
            json!({"spec": {}}),
            json!({"spec": {"$retainKeys": "x"}}),
            400,
        ),
        (
            "retainKeys missing a patched field",
            json!({"spec": {}}),
            json!({"spec": {"$retainKeys": ["a"], "b": 1}}),
            400,
        ),
        (
            "setElementOrder without a field",
            json!({"spec": {}}),
            json!({"spec": {"$setElementOrder": []}}),
            400,
        ),
        (
            "setElementOrder not a list",
            json!({"spec": {}}),
            json!({"spec": {"$setElementOrder/containers": {}}}),
            400,
        ),
        (
            "deleteFromPrimitiveList without a field",
            json!({"metadata": {"finalizers": ["a"]}}),
            json!({"metadata": {"$deleteFromPrimitiveList": ["a"]}}),
            400,
        ),
        (
            "element without merge key",
            json!({"spec": {"containers": containers(&["a"])}}),
            json!({"spec": {"containers": [{"image": "x"}]}}),
            422,
        ),
        (
            "lists of lists",
            json!({"metadata": {"finalizers": ["a"]}}),
            json!({"metadata": {"finalizers": [["b"]]}}),
            422,
        ),
        (
            "mixed element types",
            json!({"metadata": {"finalizers": ["a"]}}),
            json!({"metadata": {"finalizers": [{"b": 1}]}}),
            422,
        ),
        (
            "patch order contradicts setElementOrder",
            json!({"spec": {"containers": containers(&["a", "b"])}}),
            json!({"spec": {
                "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
                "containers": [{"name": "b", "image": "b:2"}, {"name": "a", "image": "a:2"}],
            }}),
            400,
        ),
        ("a patch that is not an object", json!({}), json!([1]), 400),
    ];
    for (name, original, patch, status) in cases {
        let err = apply_pod(original, patch).expect_err(name);
        eprintln!("{name}: {err}");
        assert_eq!(err.http_status(), status, "{name}: {err}");
    }
}

#[test]
fn errors_name_the_field() {
    let err = apply_pod(
        json!({"spec": {"containers": containers(&["a"])}}),
        json!({"spec": {"containers": [{"image": "x"}]}}),
    )
    .unwrap_err();
    assert!(err.to_string().contains(".spec.containers"), "{err}");
    assert!(
        err.to_string()
            .contains("does not contain declared merge key: name"),
        "{err}"
    );
}

#[test]
fn a_patch_nested_too_deep_is_refused_not_recursed() {
    let mut patch = json!(1);
    for _ in 0..(MAX_DEPTH + 5) {
        patch = json!({ "a": patch });
    }
    let err = apply_strategic_merge_patch(&json!({}), &patch, None).unwrap_err();
    assert!(matches!(err, StrategicMergeError::TooDeep { .. }));
}

/// Arbitrary JSON biased toward what strategic merge patch interprets: field names of the Pod
/// schema, merge keys, and directives.
fn arb_json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("spec".to_owned()),
        Just("metadata".to_owned()),
        Just("containers".to_owned()),
        Just("finalizers".to_owned()),
        Just("name".to_owned()),
        Just("ports".to_owned()),
        Just("containerPort".to_owned()),
        Just("volumes".to_owned()),
        Just("$patch".to_owned()),
        Just("$retainKeys".to_owned()),
        Just("$setElementOrder/containers".to_owned()),
        Just("$setElementOrder/finalizers".to_owned()),
        Just("$deleteFromPrimitiveList/finalizers".to_owned()),
        Just("$deleteFromPrimitiveList".to_owned()),
        "[a-z]{1,3}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (0i64..4).prop_map(Value::from),
        prop_oneof![
            Just("a".to_owned()),
            Just("replace".to_owned()),
            Just("delete".to_owned()),
            Just("merge".to_owned()),
            Just("name".to_owned()),
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn no_patch_and_object_make_it_panic(original in arb_json(), patch in arb_json()) {
        let schemas = Schemas::builtin();
        let wrap = |v: Value| json!({"spec": v.clone(), "metadata": v});
        let _ = apply_strategic_merge_patch(&wrap(original.clone()), &wrap(patch.clone()), Some(pod_schema(&schemas)));
        let _ = apply_strategic_merge_patch(&original, &patch, Some(pod_schema(&schemas)));
        let _ = apply_strategic_merge_patch(&original, &patch, None);
    }
}
