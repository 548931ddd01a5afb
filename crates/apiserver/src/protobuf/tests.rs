//! Every built-in kind round-trips through protobuf; hand-checked Go JSON forms; no panics on
//! bad bytes.

use super::json::{json_to_message, message_to_json};
use super::*;
use prost_reflect::Kind;
use serde_json::{Map, json};

/// A JSON object with every field of `desc` set to a non-zero sample (messages nested up to a
/// depth, so recursive schemas end).
fn sample(desc: &MessageDescriptor, depth: usize) -> Value {
    if let Some(v) = special_sample(desc.full_name()) {
        return v;
    }
    let mut out = Map::new();
    for field in desc.fields() {
        let kind = field.kind();
        if matches!(kind, Kind::Message(_)) && !field.is_map() && depth == 0 {
            continue;
        }
        let one = |kind: &Kind| -> Option<Value> {
            Some(match kind {
                Kind::Bool => json!(true),
                Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => json!(7),
                Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => json!(8_000_000_000i64),
                Kind::Uint32 | Kind::Fixed32 => json!(9),
                Kind::Uint64 | Kind::Fixed64 => json!(10),
                Kind::Float | Kind::Double => json!(1.5),
                Kind::String => json!(format!("s-{}", field.name())),
                Kind::Bytes => json!("Ynl0ZXM="),
                Kind::Enum(_) => json!(1),
                Kind::Message(m) if depth > 0 => sample(m, depth - 1),
                Kind::Message(_) => return None,
            })
        };
        let value = if field.is_map() {
            let Kind::Message(entry) = &kind else {
                unreachable!()
            };
            match one(&entry.map_entry_value_field().kind()) {
                Some(v) => json!({"k": v}),
                None => continue,
            }
        } else if field.is_list() {
            match one(&kind) {
                Some(v) => json!([v]),
                None => continue,
            }
        } else {
            match one(&kind) {
                Some(v) => v,
                None => continue,
            }
        };
        let inline = json::is_inline(desc.full_name(), field.name());
        match (inline, value) {
            (true, Value::Object(inner)) => out.extend(inner),
            (_, value) => {
                out.insert(json::json_name(desc.full_name(), field.name()), value);
            }
        }
    }
    Value::Object(out)
}

fn special_sample(name: &str) -> Option<Value> {
    let meta = |s: &str| format!("k8s.io.apimachinery.pkg.apis.meta.v1.{s}");
    let apiext = |s: &str| format!("k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.{s}");
    Some(match name {
        n if n == meta("Time") => json!("2024-01-02T03:04:05Z"),
        n if n == meta("MicroTime") => json!("2024-01-02T03:04:05.123456Z"),
        n if n == meta("Duration") => json!("1m30s"),
        n if n == meta("FieldsV1") => json!({"f:metadata": {"f:labels": {}}}),
        n if n == meta("Verbs") => json!(["get", "list"]),
        "k8s.io.api.authentication.v1.ExtraValue" => json!(["a"]),
        "k8s.io.apimachinery.pkg.api.resource.Quantity"
        | "k8s.io.apimachinery.pkg.api.resource.QuantityValue" => json!("100m"),
        "k8s.io.apimachinery.pkg.util.intstr.IntOrString" => json!("http"),
        "k8s.io.apimachinery.pkg.runtime.RawExtension" => json!({"apiVersion": "v1", "x": [1]}),
        n if n == apiext("JSON") => json!({"x": [1, "y"]}),
        n if n == apiext("JSONSchemaPropsOrArray") => json!([{"type": "string"}]),
        n if n == apiext("JSONSchemaPropsOrBool") => json!(true),
        n if n == apiext("JSONSchemaPropsOrStringArray") => json!(["a", "b"]),
        _ => return None,
    })
}

fn round_trip(desc: &MessageDescriptor, obj: &Value) -> Value {
    let msg = json_to_message(desc, obj).unwrap_or_else(|e| panic!("{}: {e}", desc.full_name()));
    let bytes = msg.encode_to_vec();
    let back = DynamicMessage::decode(desc.clone(), bytes.as_slice()).unwrap();
    message_to_json(&back).unwrap()
}

#[test]
fn every_built_in_kind_and_its_list_round_trips_with_every_field_set() {
    let mut kinds = 0;
    for info in crate::registry::catalog::RESOURCES {
        let api_version = info.api_version();
        for kind in [info.kind.to_owned(), format!("{}List", info.kind)] {
            let desc = message_for(&api_version, &kind)
                .unwrap_or_else(|e| panic!("{api_version} {kind}: {e}"));
            let obj = sample(&desc, 6);
            assert_eq!(round_trip(&desc, &obj), obj, "{api_version} {kind}");
            if kind == "Pod" {
                // The sample reaches inlined structs and special types.
                for pointer in [
                    "/spec/volumes/0/configMap/name",
                    "/spec/containers/0/livenessProbe/httpGet/port",
                    "/spec/containers/0/resources/limits/k",
                    "/metadata/creationTimestamp",
                    "/metadata/managedFields/0/fieldsV1",
                ] {
                    assert!(obj.pointer(pointer).is_some(), "{pointer}");
                }
            }
            kinds += 1;
        }
    }
    assert!(kinds >= 60, "{kinds}");
}

#[test]
fn whole_bodies_round_trip_through_the_envelope() {
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"},
                     "creationTimestamp": "2024-05-06T07:08:09Z", "resourceVersion": "42",
                     "managedFields": [{"manager": "kubectl", "operation": "Update",
                        "time": "2024-05-06T07:08:09Z", "fieldsType": "FieldsV1",
                        "fieldsV1": {"f:spec": {"f:replicas": {}}}}]},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx",
                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                    "resources": {"limits": {"cpu": "500m", "memory": "1Gi"}},
                    "livenessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 5},
                    "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                  "volumes": [{"name": "data", "configMap": {"name": "cm", "defaultMode": 420}},
                              {"name": "scratch", "emptyDir": {}}],
                  "terminationGracePeriodSeconds": 0}}}
    });
    let bytes = encode_object(&deployment).unwrap();
    assert!(bytes.starts_with(MAGIC));
    assert_eq!(decode_object(&bytes).unwrap(), deployment);

    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
        "type": "Opaque", "data": {"password": "aHVudGVyMg=="}, "immutable": false});
    assert_eq!(
        decode_object(&encode_object(&secret).unwrap()).unwrap(),
        secret
    );

    let status = json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
        "message": "nope", "reason": "NotFound", "code": 404,
        "details": {"name": "x", "kind": "configmaps"}});
    assert_eq!(
        decode_object(&encode_object(&status).unwrap()).unwrap(),
        status
    );
}

#[test]
fn go_zero_values_are_absent_but_pointer_zeros_stay() {
    let desc = message_for("apps/v1", "Deployment").unwrap();
    // What Go writes for `Replicas: ptr(0)`, `MinReadySeconds: 0`, `Paused: false`.
    let mut msg = DynamicMessage::new(desc.clone());
    let spec_desc = desc
        .get_field_by_name("spec")
        .map(|f| match f.kind() {
            Kind::Message(m) => m,
            _ => unreachable!(),
        })
        .unwrap();
    let mut spec = DynamicMessage::new(spec_desc);
    spec.set_field_by_name("replicas", PValue::I32(0));
    spec.set_field_by_name("minReadySeconds", PValue::I32(0));
    spec.set_field_by_name("paused", PValue::Bool(false));
    msg.set_field_by_name("spec", PValue::Message(spec));
    let bytes = msg.encode_to_vec();
    let back = DynamicMessage::decode(desc, bytes.as_slice()).unwrap();
    assert_eq!(
        message_to_json(&back).unwrap(),
        json!({"spec": {"replicas": 0}})
    );
}

#[test]
fn go_json_forms_of_special_types() {
    let desc = message_for("v1", "Pod").unwrap();
    let pod = json!({"metadata": {"name": "p", "creationTimestamp": "2024-01-02T03:04:05Z"},
        "spec": {"containers": [{"name": "c", "image": "i",
            "ports": [{"containerPort": 8080}],
            "readinessProbe": {"tcpSocket": {"port": 8080}}}]}});
    assert_eq!(round_trip(&desc, &pod), pod);
    // A zero time is an empty message on the wire and absent in JSON.
    let meta = message_for("meta.k8s.io/v1", "ObjectMeta").unwrap();
    let mut msg = DynamicMessage::new(meta.clone());
    let time = message("k8s.io.apimachinery.pkg.apis.meta.v1.Time");
    msg.set_field_by_name(
        "creationTimestamp",
        PValue::Message(DynamicMessage::new(time)),
    );
    msg.set_field_by_name("name", PValue::String("x".into()));
    let back = DynamicMessage::decode(meta, msg.encode_to_vec().as_slice()).unwrap();
    assert_eq!(message_to_json(&back).unwrap(), json!({"name": "x"}));
}

#[test]
fn kinds_outside_kubernetes_groups_have_no_protobuf_form() {
    assert!(supports("v1", "ConfigMap"));
    assert!(
        supports("apps/v1", "DeleteOptions"),
        "meta kinds are in every group"
    );
    assert!(supports("policy/v1", "Eviction"));
    assert!(supports("autoscaling/v1", "Scale"));
    assert!(supports(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition"
    ));
    assert!(!supports("apps.example.com/v1", "Deployment"));
    assert!(!supports("stable.example.com/v1", "CronTab"));
    assert!(!supports("v1", "../Pod"));
    let obj = json!({"apiVersion": "stable.example.com/v1", "kind": "CronTab"});
    assert!(matches!(
        encode_object(&obj),
        Err(ProtoError::UnknownType { .. })
    ));
}

#[test]
fn bad_bodies_are_errors() {
    assert!(matches!(decode_object(b"{}"), Err(ProtoError::NoMagic)));
    assert!(matches!(
        decode_object(b"k8s\0\xff\xff"),
        Err(ProtoError::Envelope(_))
    ));
    assert!(matches!(decode_object(b"k8s\0"), Err(ProtoError::NoType)));
    let body = encode_envelope("v1", "ConfigMap", vec![0x0a, 0xff]);
    assert!(matches!(
        decode_object(&body),
        Err(ProtoError::Message { .. })
    ));
    let body = encode_envelope("v1", "Nothing", vec![]);
    assert!(matches!(
        decode_object(&body),
        Err(ProtoError::UnknownType { .. })
    ));
    // A JSON value of the wrong type cannot be encoded.
    let bad = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": ["not", "a", "map"]});
    let err = encode_object(&bad).unwrap_err();
    assert_eq!(
        err.to_string(),
        "field data: expected an object, got an array"
    );
}

#[test]
fn watch_frames_are_length_prefixed_watch_events() {
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}});
    let frame = encode_watch_event("ADDED", &cm).unwrap();
    let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
    assert_eq!(len, frame.len() - 4);
    let event = DynamicMessage::decode(message(WATCH_EVENT), &frame[4..]).unwrap();
    assert_eq!(
        event.get_field_by_name("type").unwrap().as_str(),
        Some("ADDED")
    );
    let Some(PValue::Message(ext)) = event.get_field_by_name("object").as_deref().cloned() else {
        panic!("no object");
    };
    let raw = ext.get_field_by_name("raw").unwrap();
    assert_eq!(decode_object(raw.as_bytes().unwrap()).unwrap(), cm);
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn valid_pod() -> Vec<u8> {
        encode_object(&json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "i",
                "resources": {"requests": {"cpu": "1"}}}]}}))
        .unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_object(&bytes);
            let mut with_magic = MAGIC.to_vec();
            with_magic.extend_from_slice(&bytes);
            let _ = decode_object(&with_magic);
        }

        #[test]
        fn arbitrary_messages_in_a_valid_envelope_never_panic(
            raw in proptest::collection::vec(any::<u8>(), 0..512),
            kind in prop::sample::select(vec!["Pod", "Deployment", "CustomResourceDefinition", "Status", "Service"]),
        ) {
            let api_version = match kind {
                "Deployment" => "apps/v1",
                "CustomResourceDefinition" => "apiextensions.k8s.io/v1",
                _ => "v1",
            };
            let _ = decode_object(&encode_envelope(api_version, kind, raw));
        }

        #[test]
        fn mutated_valid_bodies_never_panic(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut body = valid_pod();
            for (at, byte) in edits {
                let i = at.index(body.len());
                body[i] = byte;
            }
            let _ = decode_object(&body);
            let n = cut.index(body.len());
            let _ = decode_object(&body[..n]);
        }
    }
}
