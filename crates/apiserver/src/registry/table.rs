//! Helpers for printer cells: names, ages as kubectl shows them (`5m3s`), label selectors and
//! container lists as strings.

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// `metadata.name`.
pub fn name(obj: &Value) -> String {
    super::str_at(obj, "/metadata/name").to_owned()
}

/// The age of an object as upstream prints it, from `metadata.creationTimestamp`.
pub fn age(obj: &Value) -> Value {
    let created = super::str_at(obj, "/metadata/creationTimestamp");
    Value::String(since(created))
}

thread_local! {
    /// Whether [`since`] leaves a marker instead of the age (see [`with_deferred_ages`]).
    static DEFER_AGES: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// What a deferred age cell holds before [`AGE_MARKER`]'s timestamp; control characters, so no
/// real cell can look like it.
pub const AGE_MARKER: &str = "\u{1}age\u{1}";

/// Runs `render` with every [`since`] cell left as [`AGE_MARKER`] + the timestamp, for rows
/// that are kept and shown again later (the watch cache's): the age is filled in each time the
/// row is shown, or it would stay what it was when first rendered.
pub fn with_deferred_ages<T>(render: impl FnOnce() -> T) -> T {
    DEFER_AGES.with(|d| d.set(true));
    let out = render();
    DEFER_AGES.with(|d| d.set(false));
    out
}

/// How long ago an RFC 3339 timestamp was, as kubectl shows durations; `<unknown>` if unset.
pub fn since(timestamp: &str) -> String {
    if DEFER_AGES.with(std::cell::Cell::get) {
        return format!("{AGE_MARKER}{timestamp}");
    }
    match OffsetDateTime::parse(timestamp, &Rfc3339) {
        Ok(t) => human_duration((OffsetDateTime::now_utc() - t).whole_seconds()),
        Err(_) => "<unknown>".into(),
    }
}

/// Upstream's `HumanDuration`: the coarser the longer ago.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    let s = seconds.max(0);
    if s < 120 {
        return format!("{s}s");
    }
    let m = s / 60;
    if m < 10 {
        return if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        };
    }
    if m < 180 {
        return format!("{m}m");
    }
    let h = s / 3600;
    if h < 8 {
        return if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        };
    }
    if h < 48 {
        return format!("{h}h");
    }
    let d = h / 24;
    if h < 24 * 8 {
        return if h % 24 == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        };
    }
    if d < 365 * 2 {
        return format!("{d}d");
    }
    let y = d / 365;
    if d < 365 * 8 {
        return if d % 365 == 0 {
            format!("{y}y")
        } else {
            format!("{y}y{}d", d % 365)
        };
    }
    format!("{y}y")
}

/// A label selector (`matchLabels` + `matchExpressions`) as kubectl prints it.
pub fn selector_string(selector: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in labels {
            parts.push(format!("{k}={}", v.as_str().unwrap_or_default()));
        }
    }
    if let Some(exprs) = selector.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
            let values: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|v| v.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            match e
                .get("operator")
                .and_then(Value::as_str)
                .unwrap_or_default()
            {
                "In" => parts.push(format!("{key} in ({})", values.join(","))),
                "NotIn" => parts.push(format!("{key} notin ({})", values.join(","))),
                "Exists" => parts.push(key.to_owned()),
                "DoesNotExist" => parts.push(format!("!{key}")),
                _ => {}
            }
        }
    }
    if parts.is_empty() {
        "<none>".into()
    } else {
        parts.join(",")
    }
}

/// A `map[string]string` selector (services) as `a=b,c=d`.
pub fn map_selector_string(selector: Option<&Value>) -> String {
    match selector.and_then(Value::as_object) {
        Some(map) if !map.is_empty() => map
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(","),
        _ => "<none>".into(),
    }
}

/// The names and images of a pod template's containers, comma-joined.
pub fn containers_and_images(pod_spec: Option<&Value>) -> (String, String) {
    let containers = pod_spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = containers
        .iter()
        .map(|c| c.get("name").and_then(Value::as_str).unwrap_or_default())
        .collect();
    let images: Vec<&str> = containers
        .iter()
        .map(|c| c.get("image").and_then(Value::as_str).unwrap_or_default())
        .collect();
    (names.join(","), images.join(","))
}

/// An integer at a pointer, 0 if absent.
pub fn int_at(obj: &Value, pointer: &str) -> i64 {
    obj.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_read_like_kubectls() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(183), "3m3s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 60), "3h1m");
        assert_eq!(human_duration(30 * 3600), "30h");
        assert_eq!(human_duration(3 * 86400 + 3600), "3d1h");
        assert_eq!(human_duration(100 * 86400), "100d");
        assert_eq!(human_duration(-5), "<invalid>");
    }

    #[test]
    fn selectors_print_like_kubectls() {
        let sel = json!({"matchLabels": {"app": "web"}, "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["a", "b"]},
            {"key": "x", "operator": "DoesNotExist"}]});
        assert_eq!(selector_string(&sel), "app=web,tier in (a,b),!x");
        assert_eq!(selector_string(&json!({})), "<none>");
    }
}
