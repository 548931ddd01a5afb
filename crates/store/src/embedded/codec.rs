//! Byte layouts of the embedded store's tables. Decoding never trusts the file: a short or
//! inconsistent record is a [`DecodeError`], which the caller reports as corruption.

use bytes::Bytes;

use crate::{Event, EventType, KeyValue, Revision};

/// A record that does not have the layout this module writes.
#[derive(Debug, thiserror::Error)]
#[error("malformed {what} record")]
pub(crate) struct DecodeError {
    what: &'static str,
}

const KV_HEADER: usize = 16;

/// `kv` table value: create revision, mod revision (both little-endian i64), then the value.
pub(crate) fn encode_kv(create: Revision, modified: Revision, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(KV_HEADER + value.len());
    out.extend_from_slice(&create.to_le_bytes());
    out.extend_from_slice(&modified.to_le_bytes());
    out.extend_from_slice(value);
    out
}

/// Decodes a `kv` table value for `key`.
pub(crate) fn decode_kv(key: &[u8], raw: &[u8]) -> Result<KeyValue, DecodeError> {
    let err = DecodeError { what: "key" };
    let key = std::str::from_utf8(key).map_err(|_| DecodeError { what: "key name" })?;
    let create = read_i64(raw, 0).ok_or(err)?;
    let modified = read_i64(raw, 8).ok_or(DecodeError { what: "key" })?;
    Ok(KeyValue {
        key: key.to_owned(),
        value: Bytes::copy_from_slice(&raw[KV_HEADER..]),
        create_revision: create,
        mod_revision: modified,
    })
}

const PUT: u8 = 1;
const DELETE: u8 = 2;

/// `log` table value (keyed by revision):
/// `kind u8 | key_len u32 | key | create_rev i64 | value_len u32 | value | has_prev u8 |
/// [prev_create i64 | prev_mod i64 | prev_value...]`.
pub(crate) fn encode_event(event: &Event) -> Vec<u8> {
    let prev_len = event.prev.as_ref().map_or(0, |p| 16 + p.value.len());
    let mut out = Vec::with_capacity(encoded_len(event) + prev_len);
    encode_event_to(&mut out, event, true);
    out
}

/// Bytes [`encode_event_to`] appends for `event` without its previous value.
pub(crate) fn encoded_len(event: &Event) -> usize {
    1 + 4 + event.kv.key.len() + 8 + 4 + event.kv.value.len() + 1
}

/// Appends the `log` layout of `event` to `out`; without `with_prev` it is recorded as having no
/// previous value (the write-ahead log's form: replay finds the previous value in `kv`).
pub(crate) fn encode_event_to(out: &mut Vec<u8>, event: &Event, with_prev: bool) {
    let kv = &event.kv;
    out.push(match event.kind {
        EventType::Put => PUT,
        EventType::Delete => DELETE,
    });
    push_bytes(out, kv.key.as_bytes());
    out.extend_from_slice(&kv.create_revision.to_le_bytes());
    push_bytes(out, &kv.value);
    match event.prev.as_ref().filter(|_| with_prev) {
        None => out.push(0),
        Some(prev) => {
            out.push(1);
            out.extend_from_slice(&prev.create_revision.to_le_bytes());
            out.extend_from_slice(&prev.mod_revision.to_le_bytes());
            out.extend_from_slice(&prev.value);
        }
    }
}

/// Only the key of a `log` value: lets a watch or a past-revision list skip other prefixes cheaply.
pub(crate) fn event_key(raw: &[u8]) -> Result<&[u8], DecodeError> {
    let err = || DecodeError { what: "history" };
    let len = read_u32(raw, 1).ok_or_else(err)? as usize;
    raw.get(5..5 + len).ok_or_else(err)
}

/// Decodes a `log` value written at `revision`.
pub(crate) fn decode_event(revision: Revision, raw: &[u8]) -> Result<Event, DecodeError> {
    let err = || DecodeError { what: "history" };
    let kind = match raw.first() {
        Some(&PUT) => EventType::Put,
        Some(&DELETE) => EventType::Delete,
        _ => return Err(err()),
    };
    let key = event_key(raw)?;
    let key = std::str::from_utf8(key).map_err(|_| err())?.to_owned();
    let mut at = 5 + key.len();
    let create = read_i64(raw, at).ok_or_else(err)?;
    at += 8;
    let value_len = read_u32(raw, at).ok_or_else(err)? as usize;
    at += 4;
    let value = raw.get(at..at + value_len).ok_or_else(err)?;
    at += value_len;
    let prev = match raw.get(at) {
        Some(0) => None,
        Some(1) => {
            let prev_create = read_i64(raw, at + 1).ok_or_else(err)?;
            let prev_mod = read_i64(raw, at + 9).ok_or_else(err)?;
            Some(KeyValue {
                key: key.clone(),
                value: Bytes::copy_from_slice(&raw[at + 17..]),
                create_revision: prev_create,
                mod_revision: prev_mod,
            })
        }
        _ => return Err(err()),
    };
    Ok(Event {
        kind,
        kv: KeyValue {
            key,
            value: Bytes::copy_from_slice(value),
            create_revision: create,
            mod_revision: revision,
        },
        prev,
    })
}

fn push_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Values are bounded far below 4 GiB by the apiserver (and redb refuses > 3 GiB).
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

pub(crate) fn read_i64(raw: &[u8], at: usize) -> Option<i64> {
    Some(i64::from_le_bytes(raw.get(at..at + 8)?.try_into().ok()?))
}

pub(crate) fn read_u32(raw: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(raw.get(at..at + 4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str, create: i64, modified: i64) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Bytes::from(value.to_owned()),
            create_revision: create,
            mod_revision: modified,
        }
    }

    #[test]
    fn events_round_trip_with_and_without_prev() {
        for event in [
            Event {
                kind: EventType::Put,
                kv: kv("/a", "v1", 2, 2),
                prev: None,
            },
            Event {
                kind: EventType::Put,
                kv: kv("/a", "v2", 2, 3),
                prev: Some(kv("/a", "v1", 2, 2)),
            },
            Event {
                kind: EventType::Delete,
                kv: kv("/a", "", 2, 4),
                prev: Some(kv("/a", "v2", 2, 3)),
            },
        ] {
            let raw = encode_event(&event);
            assert_eq!(event_key(&raw).unwrap(), b"/a");
            assert_eq!(decode_event(event.kv.mod_revision, &raw).unwrap(), event);
        }
    }

    #[test]
    fn truncated_records_are_errors_not_panics() {
        let raw = encode_event(&Event {
            kind: EventType::Put,
            kv: kv("/registry/x", "value", 5, 7),
            prev: Some(kv("/registry/x", "old", 5, 6)),
        });
        for len in 0..raw.len() {
            // Every prefix either fails to decode or decodes without panicking.
            let _ = decode_event(7, &raw[..len]);
            let _ = event_key(&raw[..len]);
        }
        for len in 0..16 {
            assert!(decode_kv(b"/k", &vec![0; len]).is_err());
        }
        assert!(decode_event(1, &[9, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn kv_round_trip() {
        let raw = encode_kv(3, 9, b"hello");
        assert_eq!(decode_kv(b"/k", &raw).unwrap(), kv("/k", "hello", 3, 9));
    }
}
