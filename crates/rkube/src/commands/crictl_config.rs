//! Reading crictl's pod and container config files (JSON or YAML, snake_case field names as
//! crictl's own examples write them) into the CRI types.
//!
//! The CRI types derive `Deserialize` but every field is required, while crictl's files give
//! only what they set. [`Lenient`] deserializes a JSON value so that a field left out takes its
//! protobuf default (empty, zero, false, absent), at any depth; unknown fields are refused, so a
//! typo is an error rather than a setting silently ignored.

use serde::de::{
    self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};
use serde_json::Value;

/// Reads `T` from a crictl config file's text (JSON, or YAML when it does not parse as JSON).
pub fn parse<T: de::DeserializeOwned>(text: &str) -> anyhow::Result<T> {
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(_) => {
            serde_yaml::from_str(text).map_err(|e| anyhow::anyhow!("not JSON and not YAML: {e}"))?
        }
    };
    T::deserialize(Lenient(value)).map_err(|e| anyhow::anyhow!("{e}"))
}

/// A JSON value whose missing struct fields read as their defaults.
struct Lenient(Value);

/// A field that is not there: every type reads it as its default.
struct Missing;

type Error = serde_json::Error;

impl<'de> Deserializer<'de> for Lenient {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Array(items) => visitor.visit_seq(Items(items.into_iter())),
            Value::Object(map) => visitor.visit_map(Fields {
                given: map.into_iter().collect(),
                missing: Vec::new(),
                pending: None,
            }),
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let Value::Object(map) = self.0 else {
            return Err(de::Error::custom(format!("{name}: expected an object")));
        };
        if let Some(unknown) = map.keys().find(|k| !fields.contains(&k.as_str())) {
            return Err(de::Error::custom(format!(
                "{name}: unknown field {unknown:?} (known: {})",
                fields.join(", ")
            )));
        }
        let missing = fields
            .iter()
            .filter(|f| !map.contains_key(**f))
            .copied()
            .collect();
        visitor.visit_map(Fields {
            given: map.into_iter().collect(),
            missing,
            pending: None,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

struct Items(std::vec::IntoIter<Value>);

impl<'de> SeqAccess<'de> for Items {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        self.0
            .next()
            .map(|v| seed.deserialize(Lenient(v)))
            .transpose()
    }
}

/// An object's fields as given, then the struct's fields left out.
struct Fields {
    given: Vec<(String, Value)>,
    missing: Vec<&'static str>,
    pending: Option<Option<Value>>,
}

impl<'de> MapAccess<'de> for Fields {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        if let Some((key, value)) = self.given.pop() {
            self.pending = Some(Some(value));
            return seed.deserialize(key.into_deserializer()).map(Some);
        }
        if let Some(key) = self.missing.pop() {
            self.pending = Some(None);
            return seed.deserialize(key.into_deserializer()).map(Some);
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        match self.pending.take() {
            Some(Some(value)) => seed.deserialize(Lenient(value)),
            Some(None) => seed.deserialize(Missing),
            None => Err(de::Error::custom("a value without a key")),
        }
    }
}

struct NoItems;

impl<'de> SeqAccess<'de> for NoItems {
    type Error = Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        _: T,
    ) -> Result<Option<T::Value>, Error> {
        Ok(None)
    }
}

impl<'de> MapAccess<'de> for NoItems {
    type Error = Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, _: K) -> Result<Option<K::Value>, Error> {
        Ok(None)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, _: V) -> Result<V::Value, Error> {
        Err(de::Error::custom("a value without a key"))
    }
}

macro_rules! zero {
    ($($method:ident => $visit:ident($value:expr);)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
                visitor.$visit($value)
            }
        )*
    };
}

impl<'de> Deserializer<'de> for Missing {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    zero! {
        deserialize_bool => visit_bool(false);
        deserialize_i8 => visit_i8(0);
        deserialize_i16 => visit_i16(0);
        deserialize_i32 => visit_i32(0);
        deserialize_i64 => visit_i64(0);
        deserialize_u8 => visit_u8(0);
        deserialize_u16 => visit_u16(0);
        deserialize_u32 => visit_u32(0);
        deserialize_u64 => visit_u64(0);
        deserialize_f32 => visit_f32(0.0);
        deserialize_f64 => visit_f64(0.0);
        deserialize_str => visit_str("");
        deserialize_string => visit_str("");
        deserialize_bytes => visit_bytes(&[]);
        deserialize_byte_buf => visit_bytes(&[]);
        deserialize_seq => visit_seq(NoItems);
        deserialize_map => visit_map(NoItems);
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_none()
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_map(Fields {
            given: Vec::new(),
            missing: fields.to_vec(),
            pending: None,
        })
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char unit unit_struct newtype_struct tuple
        tuple_struct enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1 as cri;

    #[test]
    fn crictl_pod_and_container_files_read_with_defaults_for_what_they_leave_out() {
        let pod: cri::PodSandboxConfig = parse(
            r#"{"metadata": {"name": "nginx-sandbox", "namespace": "default", "attempt": 1, "uid": "hdishd83djaidwnduwk28bcsb"},
                "log_directory": "/tmp", "linux": {}}"#,
        )
        .unwrap();
        let metadata = pod.metadata.unwrap();
        assert_eq!(
            (metadata.name.as_str(), metadata.attempt),
            ("nginx-sandbox", 1)
        );
        assert_eq!(pod.log_directory, "/tmp");
        assert!(pod.hostname.is_empty() && pod.labels.is_empty());
        assert!(pod.linux.unwrap().security_context.is_none());

        let container: cri::ContainerConfig = parse(
            "metadata:\n  name: busybox\nimage:\n  image: busybox\ncommand: [top]\nlog_path: busybox.log\nlinux:\n  security_context:\n    run_as_user: {value: 0}\n",
        )
        .unwrap();
        assert_eq!(container.command, ["top"]);
        assert_eq!(container.image.unwrap().image, "busybox");
        let security = container.linux.unwrap().security_context.unwrap();
        assert_eq!(security.run_as_user.unwrap().value, 0);
        assert!(!security.privileged);
    }

    #[test]
    fn unknown_fields_and_wrong_types_are_errors_that_name_them() {
        let err =
            parse::<cri::ContainerConfig>(r#"{"metadata": {"name": "x"}, "comand": ["top"]}"#)
                .unwrap_err()
                .to_string();
        assert!(err.contains("comand"), "{err}");
        let err = parse::<cri::ContainerConfig>(r#"{"command": "top"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("sequence"), "{err}");
        assert!(parse::<cri::ContainerConfig>("[: not yaml").is_err());
    }
}
