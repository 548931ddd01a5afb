//! Translation between protobuf messages and the JSON form Kubernetes gives the same Go types.
//!
//! Field names are the JSON names (go-to-protobuf names fields after their `json` tag), except
//! the few listed in [`json_name`]. On top of the descriptors, Go's rules that the wire does not
//! carry:
//! * Types with their own JSON form: `Time`/`MicroTime` (RFC 3339 strings; an empty message is
//!   the zero time, `null`), `Duration` (Go's `1h2m3s`), `Quantity` (a string), `IntOrString`,
//!   `RawExtension`/`FieldsV1`/apiextensions `JSON` (embedded JSON), the `Verbs`/`ExtraValue`
//!   string lists, and the `JSONSchemaPropsOr*` unions.
//! * Inlined structs (`Volume.volumeSource`, `Probe.handler`, ...): a nested message on the wire,
//!   flattened into the parent in JSON.
//! * Zero values: Go writes every non-pointer field, so a zero there means "unset" (JSON's
//!   `omitempty` drops it); a pointer field is written only when set, so its zero is kept
//!   (`replicas: 0`). The pointer fields come from `proto/pointer-fields.txt`.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use base64::Engine;
use prost_reflect::{
    DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, ReflectMessage,
    Value as PValue,
};
use serde_json::{Map, Value};

use super::ProtoError;

const META: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.";
const APIEXT: &str = "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.";

/// `(message, field)` of every Go pointer field.
static POINTERS: LazyLock<HashSet<(String, String)>> = LazyLock::new(|| {
    include_str!("../../proto/pointer-fields.txt")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .map(|(m, f)| (m.to_owned(), f.to_owned()))
        .collect()
});

/// Embedded Go structs whose fields JSON lifts into the parent (`json:",inline"` or `json:""`).
const INLINE: &[(&str, &str)] = &[
    ("k8s.io.api.core.v1.Volume", "volumeSource"),
    (
        "k8s.io.api.core.v1.PersistentVolumeSpec",
        "persistentVolumeSource",
    ),
    ("k8s.io.api.core.v1.Probe", "handler"),
    (
        "k8s.io.api.core.v1.EphemeralContainer",
        "ephemeralContainerCommon",
    ),
    (
        "k8s.io.api.core.v1.SecretProjection",
        "localObjectReference",
    ),
    (
        "k8s.io.api.core.v1.ConfigMapVolumeSource",
        "localObjectReference",
    ),
    (
        "k8s.io.api.core.v1.ConfigMapProjection",
        "localObjectReference",
    ),
    (
        "k8s.io.api.core.v1.ConfigMapKeySelector",
        "localObjectReference",
    ),
    (
        "k8s.io.api.core.v1.SecretKeySelector",
        "localObjectReference",
    ),
    (
        "k8s.io.api.core.v1.ConfigMapEnvSource",
        "localObjectReference",
    ),
    ("k8s.io.api.core.v1.SecretEnvSource", "localObjectReference"),
    ("k8s.io.api.networking.v1.IngressRule", "ingressRuleValue"),
];

pub(crate) fn is_inline(message: &str, field: &str) -> bool {
    INLINE.iter().any(|(m, f)| *m == message && *f == field)
}

fn is_pointer(message: &str, field: &str) -> bool {
    POINTERS.contains(&(message.to_owned(), field.to_owned()))
}

/// The JSON name of a field: the proto name but for go-to-protobuf's odd spellings and the
/// JSON-schema keywords of CRD schemas.
pub(crate) fn json_name(message: &str, field: &str) -> String {
    match field {
        "aPIGroup" => return "apiGroup".into(),
        "uID" => return "uid".into(),
        _ => {}
    }
    if message == format!("{APIEXT}JSONSchemaProps") {
        match field {
            "ref" => return "$ref".into(),
            "schema" => return "$schema".into(),
            f if f.starts_with("xKubernetes") => {
                let mut out = String::from("x");
                for c in f[1..].chars() {
                    if c.is_ascii_uppercase() {
                        out.push('-');
                        out.push(c.to_ascii_lowercase());
                    } else {
                        out.push(c);
                    }
                }
                return out;
            }
            _ => {}
        }
    }
    field.to_owned()
}

/// The message's fields by JSON name, and its inlined fields.
struct Layout {
    by_json: HashMap<String, FieldDescriptor>,
    inline: Vec<FieldDescriptor>,
}

fn layout(desc: &MessageDescriptor) -> Layout {
    let mut by_json = HashMap::new();
    let mut inline = Vec::new();
    for field in desc.fields() {
        if is_inline(desc.full_name(), field.name()) {
            inline.push(field);
        } else {
            by_json.insert(json_name(desc.full_name(), field.name()), field);
        }
    }
    Layout { by_json, inline }
}

fn field_error(path: &str, problem: impl Into<String>) -> ProtoError {
    ProtoError::Field {
        path: if path.is_empty() {
            "(object)".into()
        } else {
            path.to_owned()
        },
        problem: problem.into(),
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

// ---------------------------------------------------------------------------------------------
// protobuf -> JSON

/// The JSON form of a message.
pub fn message_to_json(msg: &DynamicMessage) -> Result<Value, ProtoError> {
    Ok(message_value(msg, "")?.unwrap_or_else(|| Value::Object(Map::new())))
}

/// `None` when the value is absent in JSON (the zero time).
fn message_value(msg: &DynamicMessage, path: &str) -> Result<Option<Value>, ProtoError> {
    let desc = msg.descriptor();
    let name = desc.full_name();
    if let Some(special) = special_to_json(msg, name, path)? {
        return Ok(special);
    }
    let mut out = Map::new();
    for (field, value) in msg.fields() {
        let key = json_name(name, field.name());
        let here = join(path, &key);
        let Some(v) = field_value(&field, value, &here)? else {
            continue;
        };
        let scalar =
            !field.is_list() && !field.is_map() && !matches!(field.kind(), Kind::Message(_));
        if scalar && is_zero(&v) && !is_pointer(name, field.name()) {
            continue;
        }
        if is_inline(name, field.name()) {
            if let Value::Object(inner) = v {
                out.extend(inner);
            }
            continue;
        }
        out.insert(key, v);
    }
    Ok(Some(Value::Object(out)))
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

fn field_value(
    field: &FieldDescriptor,
    value: &PValue,
    path: &str,
) -> Result<Option<Value>, ProtoError> {
    match value {
        PValue::List(items) => {
            if items.is_empty() {
                return Ok(None);
            }
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let here = format!("{path}[{i}]");
                out.push(single_value(item, &here)?.unwrap_or(Value::Null));
            }
            Ok(Some(Value::Array(out)))
        }
        PValue::Map(entries) => {
            if entries.is_empty() {
                return Ok(None);
            }
            let mut out = Map::new();
            for (k, v) in entries {
                let key = match k {
                    MapKey::String(s) => s.clone(),
                    MapKey::Bool(b) => b.to_string(),
                    MapKey::I32(n) => n.to_string(),
                    MapKey::I64(n) => n.to_string(),
                    MapKey::U32(n) => n.to_string(),
                    MapKey::U64(n) => n.to_string(),
                };
                let here = join(path, &key);
                out.insert(key, single_value(v, &here)?.unwrap_or(Value::Null));
            }
            Ok(Some(Value::Object(out)))
        }
        other => {
            let _ = field;
            single_value(other, path)
        }
    }
}

fn single_value(value: &PValue, path: &str) -> Result<Option<Value>, ProtoError> {
    Ok(Some(match value {
        PValue::Bool(b) => Value::Bool(*b),
        PValue::I32(n) => (*n).into(),
        PValue::I64(n) => (*n).into(),
        PValue::U32(n) => (*n).into(),
        PValue::U64(n) => (*n).into(),
        PValue::EnumNumber(n) => (*n).into(),
        PValue::F32(f) => float(f64::from(*f), path)?,
        PValue::F64(f) => float(*f, path)?,
        PValue::String(s) => Value::String(s.clone()),
        PValue::Bytes(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        PValue::Message(m) => return message_value(m, path),
        PValue::List(_) | PValue::Map(_) => {
            return Err(field_error(path, "a list or map nested directly in a list"));
        }
    }))
}

fn float(f: f64, path: &str) -> Result<Value, ProtoError> {
    serde_json::Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| field_error(path, format!("{f} is not a JSON number")))
}

fn get<'a>(msg: &'a DynamicMessage, name: &str) -> Option<std::borrow::Cow<'a, PValue>> {
    let field = msg.descriptor().get_field_by_name(name)?;
    msg.has_field(&field).then(|| msg.get_field(&field))
}

fn get_i64(msg: &DynamicMessage, name: &str) -> i64 {
    match get(msg, name).as_deref() {
        Some(PValue::I64(n)) => *n,
        Some(PValue::I32(n)) => i64::from(*n),
        _ => 0,
    }
}

fn get_str(msg: &DynamicMessage, name: &str) -> Option<String> {
    match get(msg, name).as_deref() {
        Some(PValue::String(s)) => Some(s.clone()),
        _ => None,
    }
}

fn get_bytes(msg: &DynamicMessage, name: &str) -> Option<Vec<u8>> {
    match get(msg, name).as_deref() {
        Some(PValue::Bytes(b)) => Some(b.to_vec()),
        _ => None,
    }
}

/// Embedded JSON (`RawExtension.raw` and friends). A protobuf-enveloped object is decoded too.
fn raw_json(raw: &[u8], path: &str) -> Result<Option<Value>, ProtoError> {
    if raw.is_empty() {
        return Ok(None);
    }
    if raw.starts_with(super::MAGIC) {
        return super::decode_object(raw).map(Some);
    }
    serde_json::from_slice(raw)
        .map(Some)
        .map_err(|e| field_error(path, format!("embedded JSON is invalid: {e}")))
}

/// The JSON of a message with its own JSON form: `Some(value)` when `name` is one.
#[allow(clippy::type_complexity)] // Option<Option<..>>: "not special" vs "special and absent"
fn special_to_json(
    msg: &DynamicMessage,
    name: &str,
    path: &str,
) -> Result<Option<Option<Value>>, ProtoError> {
    let short = name.rsplit('.').next().unwrap_or_default();
    let value = match name {
        _ if name == format!("{META}Time") || name == format!("{META}MicroTime") => {
            if get(msg, "seconds").is_none() && get(msg, "nanos").is_none() {
                None
            } else {
                let micros = short == "MicroTime";
                Some(Value::String(format_time(
                    get_i64(msg, "seconds"),
                    get_i64(msg, "nanos"),
                    micros,
                    path,
                )?))
            }
        }
        _ if name == format!("{META}Duration") => {
            Some(Value::String(format_duration(get_i64(msg, "duration"))))
        }
        "k8s.io.apimachinery.pkg.api.resource.Quantity"
        | "k8s.io.apimachinery.pkg.api.resource.QuantityValue" => {
            get_str(msg, "string").map(Value::String)
        }
        "k8s.io.apimachinery.pkg.util.intstr.IntOrString" => Some(if get_i64(msg, "type") == 1 {
            Value::String(get_str(msg, "strVal").unwrap_or_default())
        } else {
            Value::from(get_i64(msg, "intVal"))
        }),
        "k8s.io.apimachinery.pkg.runtime.RawExtension" => {
            raw_json(&get_bytes(msg, "raw").unwrap_or_default(), path)?
        }
        _ if name == format!("{META}FieldsV1") => {
            raw_json(&get_bytes(msg, "Raw").unwrap_or_default(), path)?
        }
        _ if name == format!("{APIEXT}JSON") => {
            raw_json(&get_bytes(msg, "raw").unwrap_or_default(), path)?
        }
        _ if name == format!("{META}Verbs")
            || name == "k8s.io.api.authentication.v1.ExtraValue" =>
        {
            let items = match get(msg, "items").as_deref() {
                Some(PValue::List(items)) => items
                    .iter()
                    .filter_map(|v| v.as_str().map(|s| Value::String(s.to_owned())))
                    .collect(),
                _ => Vec::new(),
            };
            Some(Value::Array(items))
        }
        _ if name == format!("{APIEXT}JSONSchemaPropsOrArray") => {
            match (get(msg, "schema"), get(msg, "jSONSchemas")) {
                (Some(s), _) => single_value(&s, path)?,
                (None, Some(list)) => {
                    let field = msg.descriptor().get_field_by_name("jSONSchemas");
                    match field {
                        Some(f) => field_value(&f, &list, path)?,
                        None => None,
                    }
                }
                (None, None) => None,
            }
        }
        _ if name == format!("{APIEXT}JSONSchemaPropsOrBool") => match get(msg, "schema") {
            Some(s) => single_value(&s, path)?,
            None => Some(Value::Bool(matches!(
                get(msg, "allows").as_deref(),
                Some(PValue::Bool(true))
            ))),
        },
        _ if name == format!("{APIEXT}JSONSchemaPropsOrStringArray") => {
            match get(msg, "property").as_deref() {
                Some(PValue::List(items)) if !items.is_empty() => Some(Value::Array(
                    items
                        .iter()
                        .filter_map(|v| v.as_str().map(|s| Value::String(s.to_owned())))
                        .collect(),
                )),
                _ => match get(msg, "schema") {
                    Some(s) => single_value(&s, path)?,
                    None => None,
                },
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(value))
}

fn format_time(seconds: i64, nanos: i64, micros: bool, path: &str) -> Result<String, ProtoError> {
    let at = time::OffsetDateTime::from_unix_timestamp(seconds)
        .map_err(|e| field_error(path, format!("time out of range: {e}")))?;
    let base = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    );
    Ok(if micros {
        format!("{base}.{:06}Z", nanos.clamp(0, 999_999_999) / 1000)
    } else {
        format!("{base}Z")
    })
}

/// Go's `time.Duration.String()`: `1h2m3.5s`, `150ms`, `0s`.
pub fn format_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let negative = nanos < 0;
    let n = nanos.unsigned_abs();
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    if n < 1_000_000_000 {
        let (unit, scale) = if n < 1_000 {
            ("ns", 1)
        } else if n < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        out.push_str(&decimal(n, scale));
        out.push_str(unit);
        return out;
    }
    let hours = n / 3_600_000_000_000;
    let minutes = (n / 60_000_000_000) % 60;
    let rest = n % 60_000_000_000;
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&decimal(rest, 1_000_000_000));
    out.push('s');
    out
}

/// `n / scale` with the fraction's trailing zeros dropped.
fn decimal(n: u64, scale: u64) -> String {
    let whole = n / scale;
    let frac = n % scale;
    if frac == 0 {
        return whole.to_string();
    }
    let width = scale.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Parses Go's duration syntax (`1h2m3.5s`, `300ms`, `-1.5h`).
pub fn parse_duration(text: &str) -> Option<i64> {
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    if total > i64::MAX as f64 {
        return None;
    }
    let n = total.round() as i64;
    Some(if negative { -n } else { n })
}

// ---------------------------------------------------------------------------------------------
// JSON -> protobuf

/// The message `desc` for a JSON object. Keys the message does not have (`apiVersion`, `kind`,
/// fields of newer versions) are dropped, as Go's decoder drops unknown fields.
pub fn json_to_message(
    desc: &MessageDescriptor,
    obj: &Value,
) -> Result<DynamicMessage, ProtoError> {
    to_message(desc, obj, "")
}

fn to_message(
    desc: &MessageDescriptor,
    value: &Value,
    path: &str,
) -> Result<DynamicMessage, ProtoError> {
    if let Some(msg) = special_from_json(desc, value, path)? {
        return Ok(msg);
    }
    let Value::Object(obj) = value else {
        return Err(field_error(
            path,
            format!("expected an object, got {}", type_name(value)),
        ));
    };
    let mut msg = DynamicMessage::new(desc.clone());
    let layout = layout(desc);
    let mut inline_parts: Vec<(FieldDescriptor, Map<String, Value>)> = layout
        .inline
        .iter()
        .map(|f| (f.clone(), Map::new()))
        .collect();
    for (key, v) in obj {
        if v.is_null() {
            continue;
        }
        if let Some(field) = layout.by_json.get(key) {
            let here = join(path, key);
            msg.set_field(field, to_field(field, v, &here)?);
            continue;
        }
        // A key of an inlined struct.
        for (field, part) in &mut inline_parts {
            if let Kind::Message(inner) = field.kind()
                && accepts(&inner, key)
            {
                part.insert(key.clone(), v.clone());
                break;
            }
        }
    }
    for (field, part) in inline_parts {
        if part.is_empty() {
            continue;
        }
        if let Kind::Message(inner) = field.kind() {
            let inner_msg = to_message(&inner, &Value::Object(part), path)?;
            msg.set_field(&field, PValue::Message(inner_msg));
        }
    }
    Ok(msg)
}

/// Whether a JSON key belongs to the message (directly or through its own inlined structs).
fn accepts(desc: &MessageDescriptor, key: &str) -> bool {
    let layout = layout(desc);
    layout.by_json.contains_key(key)
        || layout.inline.iter().any(|f| match f.kind() {
            Kind::Message(inner) => accepts(&inner, key),
            _ => false,
        })
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn to_field(field: &FieldDescriptor, v: &Value, path: &str) -> Result<PValue, ProtoError> {
    if field.is_map() {
        let Value::Object(entries) = v else {
            return Err(field_error(
                path,
                format!("expected an object, got {}", type_name(v)),
            ));
        };
        let Kind::Message(entry) = field.kind() else {
            return Err(field_error(path, "map without an entry message"));
        };
        let key_field = entry.map_entry_key_field();
        let value_field = entry.map_entry_value_field();
        let mut out = HashMap::new();
        for (k, item) in entries {
            if item.is_null() {
                continue;
            }
            let here = join(path, k);
            let key = match key_field.kind() {
                Kind::String => MapKey::String(k.clone()),
                Kind::Int32 => MapKey::I32(
                    k.parse()
                        .map_err(|_| field_error(&here, "not an int32 key"))?,
                ),
                Kind::Int64 => MapKey::I64(
                    k.parse()
                        .map_err(|_| field_error(&here, "not an int64 key"))?,
                ),
                _ => return Err(field_error(&here, "unsupported map key type")),
            };
            out.insert(key, to_single(&value_field.kind(), item, &here)?);
        }
        return Ok(PValue::Map(out));
    }
    if field.is_list() {
        let Value::Array(items) = v else {
            return Err(field_error(
                path,
                format!("expected an array, got {}", type_name(v)),
            ));
        };
        let kind = field.kind();
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            out.push(to_single(&kind, item, &format!("{path}[{i}]"))?);
        }
        return Ok(PValue::List(out));
    }
    to_single(&field.kind(), v, path)
}

fn to_single(kind: &Kind, v: &Value, path: &str) -> Result<PValue, ProtoError> {
    let wrong = |want: &str| field_error(path, format!("expected {want}, got {}", type_name(v)));
    let int = |v: &Value| -> Option<i64> {
        v.as_i64()
            .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
    };
    Ok(match kind {
        Kind::Bool => PValue::Bool(v.as_bool().ok_or_else(|| wrong("a boolean"))?),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => PValue::I32(
            int(v)
                .and_then(|n| i32::try_from(n).ok())
                .ok_or_else(|| wrong("a 32-bit integer"))?,
        ),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            PValue::I64(int(v).ok_or_else(|| wrong("an integer"))?)
        }
        Kind::Uint32 | Kind::Fixed32 => PValue::U32(
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| wrong("an unsigned 32-bit integer"))?,
        ),
        Kind::Uint64 | Kind::Fixed64 => {
            PValue::U64(v.as_u64().ok_or_else(|| wrong("an unsigned integer"))?)
        }
        Kind::Float => PValue::F32(v.as_f64().ok_or_else(|| wrong("a number"))? as f32),
        Kind::Double => PValue::F64(v.as_f64().ok_or_else(|| wrong("a number"))?),
        Kind::String => PValue::String(v.as_str().ok_or_else(|| wrong("a string"))?.to_owned()),
        Kind::Bytes => {
            let text = v.as_str().ok_or_else(|| wrong("a base64 string"))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| field_error(path, format!("invalid base64: {e}")))?;
            PValue::Bytes(bytes.into())
        }
        Kind::Enum(_) => PValue::EnumNumber(
            int(v)
                .and_then(|n| i32::try_from(n).ok())
                .ok_or_else(|| wrong("an enum number"))?,
        ),
        Kind::Message(desc) => PValue::Message(to_message(desc, v, path)?),
    })
}

fn set(msg: &mut DynamicMessage, name: &str, value: PValue) {
    if let Some(field) = msg.descriptor().get_field_by_name(name) {
        msg.set_field(&field, value);
    }
}

/// The message of a JSON value for the types with their own JSON form.
fn special_from_json(
    desc: &MessageDescriptor,
    v: &Value,
    path: &str,
) -> Result<Option<DynamicMessage>, ProtoError> {
    let name = desc.full_name();
    let mut msg = DynamicMessage::new(desc.clone());
    let wrong = |want: &str| field_error(path, format!("expected {want}, got {}", type_name(v)));
    match name {
        _ if name == format!("{META}Time") || name == format!("{META}MicroTime") => {
            let text = v.as_str().ok_or_else(|| wrong("an RFC 3339 time"))?;
            let at =
                time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                    .map_err(|e| field_error(path, format!("invalid time {text:?}: {e}")))?;
            set(&mut msg, "seconds", PValue::I64(at.unix_timestamp()));
            let nanos = if name.ends_with("MicroTime") {
                (at.nanosecond() / 1000 * 1000) as i32
            } else {
                0
            };
            set(&mut msg, "nanos", PValue::I32(nanos));
        }
        _ if name == format!("{META}Duration") => {
            let text = v.as_str().ok_or_else(|| wrong("a duration"))?;
            let nanos = parse_duration(text)
                .ok_or_else(|| field_error(path, format!("invalid duration {text:?}")))?;
            set(&mut msg, "duration", PValue::I64(nanos));
        }
        "k8s.io.apimachinery.pkg.api.resource.Quantity"
        | "k8s.io.apimachinery.pkg.api.resource.QuantityValue" => {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return Err(wrong("a quantity")),
            };
            set(&mut msg, "string", PValue::String(text));
        }
        "k8s.io.apimachinery.pkg.util.intstr.IntOrString" => match v {
            Value::String(s) => {
                set(&mut msg, "type", PValue::I64(1));
                set(&mut msg, "strVal", PValue::String(s.clone()));
            }
            Value::Number(_) => {
                let n = v
                    .as_i64()
                    .and_then(|n| i32::try_from(n).ok())
                    .ok_or_else(|| wrong("a 32-bit integer or a string"))?;
                set(&mut msg, "type", PValue::I64(0));
                set(&mut msg, "intVal", PValue::I32(n));
            }
            _ => return Err(wrong("an integer or a string")),
        },
        "k8s.io.apimachinery.pkg.runtime.RawExtension" => {
            set(&mut msg, "raw", PValue::Bytes(json_bytes(v).into()));
        }
        _ if name == format!("{META}FieldsV1") => {
            set(&mut msg, "Raw", PValue::Bytes(json_bytes(v).into()));
        }
        _ if name == format!("{APIEXT}JSON") => {
            set(&mut msg, "raw", PValue::Bytes(json_bytes(v).into()));
        }
        _ if name == format!("{META}Verbs")
            || name == "k8s.io.api.authentication.v1.ExtraValue" =>
        {
            let Value::Array(items) = v else {
                return Err(wrong("an array of strings"));
            };
            let mut out = Vec::new();
            for item in items {
                out.push(PValue::String(
                    item.as_str()
                        .ok_or_else(|| wrong("an array of strings"))?
                        .to_owned(),
                ));
            }
            set(&mut msg, "items", PValue::List(out));
        }
        _ if name == format!("{APIEXT}JSONSchemaPropsOrArray") => {
            let schema = schema_props(desc)?;
            match v {
                Value::Array(items) => {
                    let mut out = Vec::new();
                    for (i, item) in items.iter().enumerate() {
                        out.push(PValue::Message(to_message(
                            &schema,
                            item,
                            &format!("{path}[{i}]"),
                        )?));
                    }
                    set(&mut msg, "jSONSchemas", PValue::List(out));
                }
                _ => set(
                    &mut msg,
                    "schema",
                    PValue::Message(to_message(&schema, v, path)?),
                ),
            }
        }
        _ if name == format!("{APIEXT}JSONSchemaPropsOrBool") => match v {
            Value::Bool(b) => set(&mut msg, "allows", PValue::Bool(*b)),
            _ => {
                let schema = schema_props(desc)?;
                set(&mut msg, "allows", PValue::Bool(true));
                set(
                    &mut msg,
                    "schema",
                    PValue::Message(to_message(&schema, v, path)?),
                );
            }
        },
        _ if name == format!("{APIEXT}JSONSchemaPropsOrStringArray") => match v {
            Value::Array(items) => {
                let mut out = Vec::new();
                for item in items {
                    out.push(PValue::String(
                        item.as_str()
                            .ok_or_else(|| wrong("an array of strings"))?
                            .to_owned(),
                    ));
                }
                set(&mut msg, "property", PValue::List(out));
            }
            _ => {
                let schema = schema_props(desc)?;
                set(
                    &mut msg,
                    "schema",
                    PValue::Message(to_message(&schema, v, path)?),
                );
            }
        },
        _ => return Ok(None),
    }
    Ok(Some(msg))
}

fn schema_props(union: &MessageDescriptor) -> Result<MessageDescriptor, ProtoError> {
    union
        .parent_pool()
        .get_message_by_name(&format!("{APIEXT}JSONSchemaProps"))
        .ok_or_else(|| field_error("", "JSONSchemaProps is missing from the descriptors"))
}

fn json_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_and_parse_as_go_does() {
        for (nanos, text) in [
            (0, "0s"),
            (1_500_000_000, "1.5s"),
            (3_600_000_000_000, "1h0m0s"),
            (3_723_000_000_000, "1h2m3s"),
            (150_000_000, "150ms"),
            (-90_000_000_000, "-1m30s"),
            (1_500, "1.5µs"),
        ] {
            assert_eq!(format_duration(nanos), text);
            assert_eq!(parse_duration(text), Some(nanos), "{text}");
        }
        assert_eq!(parse_duration("1.5h"), Some(5_400_000_000_000));
        for bad in ["", "1", "h", "1x", "--1s", "1e400h"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn schema_keywords_keep_their_json_spelling() {
        let props = format!("{APIEXT}JSONSchemaProps");
        assert_eq!(json_name(&props, "ref"), "$ref");
        assert_eq!(
            json_name(&props, "xKubernetesPreserveUnknownFields"),
            "x-kubernetes-preserve-unknown-fields"
        );
        assert_eq!(json_name("k8s.io.api.core.v1.Pod", "schema"), "schema");
        assert_eq!(json_name("any", "uID"), "uid");
    }
}
