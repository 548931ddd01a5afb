//! Property tests ("fuzzing" with a bounded number of cases, so they run in `cargo test`): no
//! request body, however malformed, makes decoding or admission panic, for any resource.
//!
//! Bodies are random bytes, deeply nested documents, and random JSON objects built from the field
//! names the strategies look at (so the cases reach deep into validation rather than failing at
//! the first missing field). Admission runs the create path and then the update path on what it
//! produced, for every resource in the catalogue. managedFields recording and server-side apply
//! run over the same random objects.

use proptest::prelude::*;
use rkube_apiserver::openapi::{GroupVersionKind, Schemas};
use rkube_apiserver::patch::fieldpath::FieldSet;
use rkube_apiserver::patch::managedfields::{self, Context, Managed, Reset};
use rkube_apiserver::registry::catalog;
use rkube_apiserver::rest::negotiate::{Format, decode};
use rkube_apiserver::rest::{admit_create, admit_update};
use serde_json::{Map, Value, json};

/// Field names the strategies and metadata rules read, plus noise.
const KEYS: &[&str] = &[
    "metadata",
    "name",
    "namespace",
    "generateName",
    "labels",
    "annotations",
    "finalizers",
    "ownerReferences",
    "uid",
    "resourceVersion",
    "generation",
    "deletionTimestamp",
    "spec",
    "status",
    "data",
    "binaryData",
    "stringData",
    "type",
    "immutable",
    "containers",
    "initContainers",
    "image",
    "ports",
    "port",
    "targetPort",
    "nodePort",
    "protocol",
    "selector",
    "matchLabels",
    "matchExpressions",
    "key",
    "operator",
    "values",
    "replicas",
    "template",
    "strategy",
    "rollingUpdate",
    "maxSurge",
    "maxUnavailable",
    "clusterIP",
    "clusterIPs",
    "externalName",
    "nodeName",
    "volumes",
    "env",
    "value",
    "command",
    "args",
    "involvedObject",
    "reason",
    "message",
    "count",
    "holderIdentity",
    "leaseDurationSeconds",
    "podCIDR",
    "taints",
    "effect",
    "x",
    "",
    "ÿ",
    "a/b",
    "kubernetes.io/x",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(|f| json!(f)),
        prop::sample::select(KEYS).prop_map(Value::from),
        "[a-z0-9.-]{0,70}".prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|kvs| {
                Value::Object(
                    kvs.into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect::<Map<_, _>>(),
                )
            }),
        ]
    })
}

/// An object of resource `index` (into the catalogue) with random content, and random changes.
fn object() -> impl Strategy<Value = (usize, Value, Value)> {
    (0..catalog::RESOURCES.len(), value(), value(), value()).prop_map(
        |(index, metadata, body, change)| {
            let info = &catalog::RESOURCES[index];
            let api_version = if info.group.is_empty() {
                info.version.to_string()
            } else {
                format!("{}/{}", info.group, info.version)
            };
            let mut obj = match body {
                Value::Object(map) => Value::Object(map),
                other => json!({"spec": other}),
            };
            obj["apiVersion"] = api_version.into();
            obj["kind"] = info.kind.into();
            obj["metadata"] = match metadata {
                Value::Object(mut map) => {
                    map.entry("name").or_insert_with(|| "fuzzed".into());
                    Value::Object(map)
                }
                other => json!({"name": "fuzzed", "labels": other}),
            };
            (index, obj, change)
        },
    )
}

/// Schema keywords and the type names they take, for random CRD schemas.
const SCHEMA_KEYS: &[&str] = &[
    "type",
    "object",
    "array",
    "string",
    "integer",
    "number",
    "boolean",
    "properties",
    "items",
    "required",
    "enum",
    "default",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "multipleOf",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "uniqueItems",
    "maxProperties",
    "additionalProperties",
    "nullable",
    "anyOf",
    "oneOf",
    "allOf",
    "not",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
    "spec",
    "a",
    "[",
    "(a|",
    "^\\d+$",
];

fn schema_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-5i64..20).prop_map(Value::from),
        (-1e3f64..1e3).prop_map(|f| json!(f)),
        prop::sample::select(SCHEMA_KEYS).prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::vec((prop::sample::select(SCHEMA_KEYS), inner), 0..6).prop_map(
                |kvs| {
                    Value::Object(
                        kvs.into_iter()
                            .map(|(k, v)| (k.to_owned(), v))
                            .collect::<Map<_, _>>(),
                    )
                },
            ),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Custom resources: random schemas (checked as a CRD's would be) over random objects, and
    /// random printer-column paths; nothing panics.
    #[test]
    fn custom_resource_schemas_never_panic(
        schema in schema_value(),
        obj in schema_value(),
        path in "[.a-z\\[\\]()?@=*'\"0-9]{0,24}",
    ) {
        use rkube_apiserver::registry::apiextensions::schema::{self, JsonPath};
        let mut errors = Vec::new();
        schema::check_structural(&schema, "s", &mut errors);
        let mut obj = obj;
        schema::apply_defaults(&mut obj, &schema);
        let mut errors = Vec::new();
        schema::validate(&obj, &schema, "", &mut errors);
        if let Ok(p) = JsonPath::parse(&path) {
            let _ = p.find(&obj);
        }
    }

    #[test]
    fn admission_never_panics((index, obj, change) in object()) {
        let info = &catalog::RESOURCES[index];
        if let Ok(created) = admit_create(info, obj.clone()) {
            // An update with random changes merged over the created object.
            let mut updated = created.clone();
            if let (Some(target), Value::Object(changes)) = (updated.as_object_mut(), change) {
                for (key, value) in changes {
                    target.insert(key, value);
                }
            }
            let _ = admit_update(info, updated, &created);
            let _ = admit_update(info, obj, &created);
        }
    }

    #[test]
    fn managed_fields_and_apply_never_panic((index, obj, change) in object()) {
        let info = &catalog::RESOURCES[index];
        let schemas = Schemas::builtin();
        let gvk = GroupVersionKind::new(info.group, info.version, info.kind);
        let api_version = obj["apiVersion"].as_str().unwrap_or_default().to_owned();
        let cx = Context {
            schema: schemas.for_kind(&gvk),
            api_version: &api_version,
            subresource: "",
            reset: Reset::Status,
            now: "2026-01-01T00:00:00Z",
        };
        // A create records sets that survive their wire form.
        let mut live = obj.clone();
        let mut managed = Managed::default();
        managedfields::record_update(&mut managed, &json!({}), &obj, "creator", &cx);
        for entry in &managed.0 {
            let wire = entry.fields.to_fields_v1();
            prop_assert_eq!(&FieldSet::from_fields_v1(&wire).unwrap(), &entry.fields);
        }
        managed.write_to(&mut live);
        prop_assert_eq!(Managed::of(&live).unwrap(), managed);
        // Random changes applied, with and without force; what is written decodes.
        let mut config = match change.clone() {
            Value::Object(map) => Value::Object(map),
            other => json!({"spec": other}),
        };
        config["apiVersion"] = obj["apiVersion"].clone();
        config["kind"] = obj["kind"].clone();
        config["metadata"] = obj["metadata"].clone();
        let _ = managedfields::apply(Some(&live), &config, "applier", false, &cx);
        if let Ok(applied) = managedfields::apply(Some(&live), &config, "applier", true, &cx) {
            prop_assert!(Managed::of(&applied).is_ok());
        }
        // Random managedFields from a client decode or are refused, never panic.
        let _ = Managed::decode(&change);
        let _ = managedfields::for_update(&json!({"metadata": {"managedFields": change}}), Some(&live), false);
    }

    #[test]
    fn decoding_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes, Format::Json);
        let _ = decode(&bytes, Format::Yaml);
    }

    #[test]
    fn decoding_random_text_never_panics(text in "[\\[\\]{}:,\"a-z0-9 \n\\-&*!|>]{0,300}") {
        let _ = decode(text.as_bytes(), Format::Json);
        let _ = decode(text.as_bytes(), Format::Yaml);
    }
}

#[test]
fn deeply_nested_documents_are_refused_not_a_stack_overflow() {
    for depth in [1_000, 100_000] {
        let json_doc = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(decode(json_doc.as_bytes(), Format::Json).is_err());
        let yaml_flow = format!("a: {}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(decode(yaml_flow.as_bytes(), Format::Yaml).is_err());
        let mut yaml_block = String::new();
        for level in 0..depth.min(1_500) {
            yaml_block.push_str(&" ".repeat(level));
            yaml_block.push_str("a:\n");
        }
        let _ = decode(yaml_block.as_bytes(), Format::Yaml);
    }
    // Aliases that would expand exponentially ("billion laughs") are not expanded into memory.
    let mut laughs = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        laughs.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n",
            p = i - 1
        ));
    }
    let _ = decode(laughs.as_bytes(), Format::Yaml);
}
