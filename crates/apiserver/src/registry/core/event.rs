//! Event (core/v1): the involved object's namespace must be the event's, PUT may create (as
//! upstream, for event sinks), and kubectl's columns. Many field selectors: `kubectl describe`
//! finds an object's events by `involvedObject.*`.

use k8s_openapi::api::core::v1::Event;
use serde_json::Value;

use crate::registry::validation::{FieldError, FieldErrors};
use crate::registry::{Column, Strategy, str_at, table};

/// The Event strategy.
pub struct EventStrategy;

const FIELDS: &[(&str, &str)] = &[
    ("involvedObject.kind", "/involvedObject/kind"),
    ("involvedObject.namespace", "/involvedObject/namespace"),
    ("involvedObject.name", "/involvedObject/name"),
    ("involvedObject.uid", "/involvedObject/uid"),
    ("involvedObject.apiVersion", "/involvedObject/apiVersion"),
    (
        "involvedObject.resourceVersion",
        "/involvedObject/resourceVersion",
    ),
    ("involvedObject.fieldPath", "/involvedObject/fieldPath"),
    ("reason", "/reason"),
    ("reportingComponent", "/reportingComponent"),
    ("source", "/source/component"),
    ("type", "/type"),
];

impl Strategy for EventStrategy {
    fn check_shape(&self, obj: &Value) -> Result<(), String> {
        crate::registry::check_typed_lenient::<Event>(obj)
    }

    fn has_status(&self) -> bool {
        false
    }

    fn allow_create_on_update(&self) -> bool {
        true
    }

    fn validate(&self, obj: &Value) -> FieldErrors {
        let mut errors = Vec::new();
        let ns = str_at(obj, "/metadata/namespace");
        let involved = str_at(obj, "/involvedObject/namespace");
        if !involved.is_empty() && involved != ns {
            errors.push(FieldError::invalid(
                "involvedObject.namespace",
                involved.into(),
                "does not match event.namespace",
            ));
        }
        errors
    }

    fn field_labels(&self, obj: &Value) -> Vec<(&'static str, String)> {
        FIELDS
            .iter()
            .map(|(name, pointer)| (*name, str_at(obj, pointer).to_owned()))
            .collect()
    }

    fn field_label_names(&self) -> &'static [&'static str] {
        &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ]
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::new("Last Seen", "string", "Time when last Event occurred"),
            Column::new(
                "Type",
                "string",
                "Type of this event (Normal, Warning), new types could be added in the future.",
            ),
            Column::new(
                "Reason",
                "string",
                "Reason why the action was taken. It is human-readable. This field can have at most 128 characters.",
            ),
            Column::new("Object", "string", "The object that this event is about."),
            Column::new(
                "Subobject",
                "string",
                "The subobject that this event is about.",
            )
            .wide(),
            Column::new("Source", "string", "The component reporting this event.").wide(),
            Column::new(
                "Message",
                "string",
                "A human-readable description of the status of this operation.",
            ),
            Column::new("First Seen", "string", "Time when first Event occurred").wide(),
            Column::new(
                "Count",
                "string",
                "The number of times this event has occurred.",
            )
            .wide(),
            Column {
                format: "name",
                ..Column::new("Name", "string", "Name must be unique within a namespace.")
            }
            .wide(),
        ]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let last = [
            str_at(obj, "/lastTimestamp"),
            str_at(obj, "/eventTime"),
            str_at(obj, "/metadata/creationTimestamp"),
        ]
        .into_iter()
        .find(|t| !t.is_empty())
        .unwrap_or_default();
        let first = [str_at(obj, "/firstTimestamp"), str_at(obj, "/eventTime")]
            .into_iter()
            .find(|t| !t.is_empty())
            .unwrap_or(last);
        let kind = str_at(obj, "/involvedObject/kind").to_ascii_lowercase();
        let source = match (
            str_at(obj, "/source/component"),
            str_at(obj, "/source/host"),
        ) {
            ("", _) => str_at(obj, "/reportingComponent").to_owned(),
            (c, "") => c.to_owned(),
            (c, h) => format!("{c}, {h}"),
        };
        vec![
            Value::String(table::since(last)),
            Value::String(str_at(obj, "/type").to_owned()),
            Value::String(str_at(obj, "/reason").to_owned()),
            Value::String(format!("{kind}/{}", str_at(obj, "/involvedObject/name"))),
            Value::String(str_at(obj, "/involvedObject/fieldPath").to_owned()),
            Value::String(source),
            Value::String(str_at(obj, "/message").trim().to_owned()),
            Value::String(table::since(first)),
            Value::String(
                obj.get("count")
                    .and_then(Value::as_i64)
                    .unwrap_or(1)
                    .to_string(),
            ),
            Value::String(table::name(obj)),
        ]
    }
}
