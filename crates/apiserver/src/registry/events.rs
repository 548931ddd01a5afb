//! events.k8s.io/v1 `Event`: the core events (stored at `/registry/events`) in the newer shape
//! upstream introduced for them. The fields are the same information under other names
//! (`regarding` is `involvedObject`, `note` is `message`, `reportingController` is
//! `reportingComponent`, the `deprecated*` fields are the old source, timestamps and count).

use serde_json::{Map, Value};

use super::Conversion;

/// events.k8s.io/v1 name, core/v1 name; the fields both have under one name are not listed.
const RENAMED: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// The conversion between events.k8s.io/v1 and core/v1 events.
pub struct EventsV1;

fn rename(obj: Value, api_version: &str, from_events: bool) -> Value {
    let Value::Object(map) = obj else {
        return obj;
    };
    let mut out = Map::new();
    for (key, value) in map {
        let renamed = RENAMED.iter().find_map(|(events, core)| {
            let (from, to) = if from_events {
                (events, core)
            } else {
                (core, events)
            };
            (key == *from).then_some(*to)
        });
        // A field the other side knows under another name would clash with the renamed one.
        let clashes = RENAMED
            .iter()
            .any(|(events, core)| key == if from_events { *core } else { *events });
        match renamed {
            Some(to) => {
                out.insert(to.to_owned(), value);
            }
            None if clashes => {}
            None => {
                out.insert(key, value);
            }
        }
    }
    out.insert("apiVersion".into(), Value::String(api_version.into()));
    Value::Object(out)
}

impl Conversion for EventsV1 {
    fn to_served(&self, obj: Value) -> Value {
        rename(obj, "events.k8s.io/v1", false)
    }

    fn to_stored(&self, obj: Value) -> Value {
        rename(obj, "v1", true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn core_and_events_v1_carry_the_same_event() {
        let core = json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "web.1", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web"}, "reason": "Started",
            "message": "Started container", "source": {"component": "kubelet", "host": "n1"},
            "firstTimestamp": "2024-01-01T00:00:00Z", "lastTimestamp": "2024-01-01T00:01:00Z",
            "count": 2, "type": "Normal", "reportingComponent": "kubelet",
            "reportingInstance": "n1"});
        let events = EventsV1.to_served(core.clone());
        assert_eq!(events["apiVersion"], "events.k8s.io/v1");
        assert_eq!(events["regarding"]["name"], "web");
        assert_eq!(events["note"], "Started container");
        assert_eq!(events["reportingController"], "kubelet");
        assert_eq!(events["deprecatedSource"]["host"], "n1");
        assert_eq!(events["deprecatedCount"], 2);
        assert!(events.get("involvedObject").is_none() && events.get("message").is_none());
        assert_eq!(EventsV1.to_stored(events), core);
        // A core field name sent to events.k8s.io/v1 is not a field there: it is dropped.
        let stray = EventsV1.to_stored(json!({"message": "x", "note": "y"}));
        assert_eq!(stray["message"], "y");
    }
}
