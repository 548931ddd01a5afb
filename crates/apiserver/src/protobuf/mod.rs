//! Kubernetes' protobuf encoding (`application/vnd.kubernetes.protobuf`), which client-go's typed
//! clients (kubectl's `create configmap|deployment|...`, `scale`, most controllers) send and
//! prefer to receive.
//!
//! The handlers work on JSON; this module only translates at the edge. A body is the magic
//! `k8s\0` followed by a `runtime.Unknown` whose `typeMeta` names the kind and whose `raw` is the
//! object's message. Messages are read and written through descriptors compiled from upstream's
//! `generated.proto` files (vendored under `crates/apiserver/proto/`, see
//! `scripts/vendor-k8s-proto`), with [`prost_reflect`]: one generic translator instead of
//! generated Rust types per kind, so every built-in kind round-trips with no per-kind code. What
//! the descriptors cannot say is in [`json`]: Go's custom JSON forms (times, quantities,
//! int-or-string, raw extensions), inlined structs, and which fields are pointers (Go writes every
//! non-pointer field, so only for pointers does a zero on the wire mean an explicit zero).
//!
//! Custom resources have no messages: their protobuf bodies are refused (415), as upstream does.

pub mod json;

use std::sync::LazyLock;

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, Value as PValue};
use serde_json::Value;

/// The media type.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
/// The media type of a protobuf watch stream.
pub const WATCH_MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf;stream=watch";
/// The four bytes every protobuf body starts with.
pub const MAGIC: &[u8; 4] = b"k8s\0";

const META_V1: &str = "k8s.io.apimachinery.pkg.apis.meta.v1";
const UNKNOWN: &str = "k8s.io.apimachinery.pkg.runtime.Unknown";
const WATCH_EVENT: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.WatchEvent";

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(&include_bytes!(concat!(env!("OUT_DIR"), "/k8s-descriptors.pb"))[..])
        .expect("the descriptor set compiled by build.rs is valid")
});

/// Why a protobuf body could not be read or an object could not be written as protobuf.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The body does not start with `k8s\0`.
    #[error("the body does not start with the protobuf magic number")]
    NoMagic,
    /// The `runtime.Unknown` envelope is not valid protobuf.
    #[error("the protobuf envelope cannot be decoded")]
    Envelope(#[source] prost::DecodeError),
    /// The envelope names no kind.
    #[error("the protobuf envelope names no apiVersion and kind")]
    NoType,
    /// The envelope says the content is compressed or in another format.
    #[error("protobuf content encoding {0:?} is not supported")]
    ContentEncoding(String),
    /// No message exists for the kind (custom resources, unserved groups).
    #[error("{api_version}, Kind={kind} has no protobuf form")]
    UnknownType {
        /// `apps/v1`.
        api_version: String,
        /// `Deployment`.
        kind: String,
    },
    /// The object's message is not valid protobuf.
    #[error("the {kind} message cannot be decoded")]
    Message {
        /// The kind.
        kind: String,
        /// What prost said.
        #[source]
        source: prost::DecodeError,
    },
    /// A field's value cannot be translated.
    #[error("field {path}: {problem}")]
    Field {
        /// Where, as a JSON path (`spec.replicas`).
        path: String,
        /// What is wrong.
        problem: String,
    },
}

/// `(apiVersion, kind)` of a body, and the object's raw message bytes.
pub struct Envelope {
    /// `apps/v1`.
    pub api_version: String,
    /// `Deployment`.
    pub kind: String,
    /// The object's message.
    pub raw: Vec<u8>,
}

/// Reads the `k8s\0` + `runtime.Unknown` envelope.
pub fn decode_envelope(body: &[u8]) -> Result<Envelope, ProtoError> {
    let rest = body.strip_prefix(MAGIC).ok_or(ProtoError::NoMagic)?;
    let desc = message(UNKNOWN);
    let unknown = DynamicMessage::decode(desc, rest).map_err(ProtoError::Envelope)?;
    let text = |msg: &DynamicMessage, name: &str| -> String {
        msg.get_field_by_name(name)
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let encoding = text(&unknown, "contentEncoding");
    if !encoding.is_empty() {
        return Err(ProtoError::ContentEncoding(encoding));
    }
    let (api_version, kind) = match unknown.get_field_by_name("typeMeta").as_deref() {
        Some(PValue::Message(tm)) => (text(tm, "apiVersion"), text(tm, "kind")),
        _ => (String::new(), String::new()),
    };
    if api_version.is_empty() || kind.is_empty() {
        return Err(ProtoError::NoType);
    }
    let raw = match unknown.get_field_by_name("raw").as_deref() {
        Some(PValue::Bytes(b)) => b.to_vec(),
        _ => Vec::new(),
    };
    Ok(Envelope {
        api_version,
        kind,
        raw,
    })
}

/// Wraps an object's message bytes in the envelope.
pub fn encode_envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let desc = message(UNKNOWN);
    let mut unknown = DynamicMessage::new(desc.clone());
    let mut tm = DynamicMessage::new(message("k8s.io.apimachinery.pkg.runtime.TypeMeta"));
    tm.set_field_by_name("apiVersion", PValue::String(api_version.to_owned()));
    tm.set_field_by_name("kind", PValue::String(kind.to_owned()));
    unknown.set_field_by_name("typeMeta", PValue::Message(tm));
    unknown.set_field_by_name("raw", PValue::Bytes(raw.into()));
    unknown.set_field_by_name("contentEncoding", PValue::String(String::new()));
    unknown.set_field_by_name("contentType", PValue::String(String::new()));
    let mut out = MAGIC.to_vec();
    unknown
        .encode(&mut out)
        .expect("a Vec grows as needed, so encoding cannot run out of space");
    out
}

/// Decodes a protobuf body into the JSON object the handlers take (with `apiVersion`, `kind`).
pub fn decode_object(body: &[u8]) -> Result<Value, ProtoError> {
    let envelope = decode_envelope(body)?;
    let desc = message_for(&envelope.api_version, &envelope.kind)?;
    let msg = DynamicMessage::decode(desc, envelope.raw.as_slice()).map_err(|source| {
        ProtoError::Message {
            kind: envelope.kind.clone(),
            source,
        }
    })?;
    let mut obj = json::message_to_json(&msg)?;
    if let Value::Object(map) = &mut obj {
        map.insert("apiVersion".into(), Value::String(envelope.api_version));
        map.insert("kind".into(), Value::String(envelope.kind));
    }
    Ok(obj)
}

/// Encodes a JSON object (with `apiVersion` and `kind`) as a protobuf body.
pub fn encode_object(obj: &Value) -> Result<Vec<u8>, ProtoError> {
    let field = |name: &str| obj.get(name).and_then(Value::as_str).unwrap_or_default();
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    let desc = message_for(api_version, kind)?;
    let msg = json::json_to_message(&desc, obj)?;
    Ok(encode_envelope(api_version, kind, msg.encode_to_vec()))
}

/// An error and its sources on one line (`a: b: c`), for messages sent to clients.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Whether objects of this kind have a protobuf form.
pub fn supports(api_version: &str, kind: &str) -> bool {
    message_for(api_version, kind).is_ok()
}

/// One frame of a protobuf watch stream: a big-endian length, then a `WatchEvent` (not
/// enveloped) whose `object.raw` is the enveloped object.
pub fn encode_watch_event(kind: &str, object: &Value) -> Result<Vec<u8>, ProtoError> {
    let raw = encode_object(object)?;
    let desc = message(WATCH_EVENT);
    let mut event = DynamicMessage::new(desc.clone());
    event.set_field_by_name("type", PValue::String(kind.to_owned()));
    let ext_desc = message("k8s.io.apimachinery.pkg.runtime.RawExtension");
    let mut ext = DynamicMessage::new(ext_desc);
    ext.set_field_by_name("raw", PValue::Bytes(raw.into()));
    event.set_field_by_name("object", PValue::Message(ext));
    let bytes = event.encode_to_vec();
    let len = u32::try_from(bytes.len()).map_err(|_| ProtoError::Field {
        path: "object".into(),
        problem: "a watch event over 4 GiB".into(),
    })?;
    let mut frame = len.to_be_bytes().to_vec();
    frame.extend_from_slice(&bytes);
    Ok(frame)
}

/// The message of `kind` in `api_version`: the group's package, or `meta/v1` for the kinds every
/// group shares (`Status`, `DeleteOptions`, `WatchEvent`, ...).
pub fn message_for(api_version: &str, kind: &str) -> Result<MessageDescriptor, ProtoError> {
    let unknown = || ProtoError::UnknownType {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
    };
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    if kind.is_empty() || version.is_empty() || !kind.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(unknown());
    }
    if let Some(package) = package_of(group)
        && let Some(desc) = POOL.get_message_by_name(&format!("{package}.{version}.{kind}"))
    {
        return Ok(desc);
    }
    if version == "v1"
        && let Some(desc) = POOL.get_message_by_name(&format!("{META_V1}.{kind}"))
    {
        return Ok(desc);
    }
    Err(unknown())
}

/// The protobuf package (without version) of an API group's built-in types. Only Kubernetes'
/// own groups: a custom group that happens to start with `apps.` is not `apps`.
fn package_of(group: &str) -> Option<String> {
    match group {
        "" => Some("k8s.io.api.core".into()),
        "meta.k8s.io" => Some("k8s.io.apimachinery.pkg.apis.meta".into()),
        "apiextensions.k8s.io" => {
            Some("k8s.io.apiextensions_apiserver.pkg.apis.apiextensions".into())
        }
        g if !g.contains('.') => Some(format!("k8s.io.api.{g}")),
        g if g.ends_with(".k8s.io") => {
            let first = g.split('.').next().unwrap_or_default();
            Some(format!("k8s.io.api.{first}"))
        }
        _ => None,
    }
}

fn message(name: &str) -> MessageDescriptor {
    POOL.get_message_by_name(name)
        .unwrap_or_else(|| panic!("{name} is in the vendored protos"))
}

#[cfg(test)]
mod tests;
