//! The embedded store's write-ahead log: what makes a write durable.
//!
//! A durable redb commit costs several scattered page writes and syncs. Appending one record to a
//! preallocated file costs one sequential write and one `fdatasync` that changes no file metadata,
//! which is several times cheaper. So the writer appends each batch of writes here and syncs it,
//! then applies the batch to redb without syncing ([`redb::Durability::None`]); a durable redb
//! commit (a *checkpoint*) happens only when a segment fills up, at open, and on compaction. After
//! a crash, redb comes back at its last checkpoint and [`recover`] hands back the records after it
//! to replay, so every acknowledged write is there again and nothing else is.
//!
//! Layout: `<store file>.wal/` holds segments named by the first revision they may hold
//! (`00000000000000000042.wal`). A segment is created full-size with `fallocate` (so appends never
//! change its size or allocate blocks: a sync writes the data and at most an extent flag), then
//! renamed into place once its header is durable. It
//! starts with a 32-byte header: magic, layout version, the id of the store it belongs to (a
//! restored snapshot gets a new id, so an old log is never replayed onto it) and its first
//! revision. Records follow: `len u32 | crc32 u32 | payload`, the CRC covering `len` and the
//! payload; a zero `len` ends the log. A payload is one committed batch: `first revision u64 |
//! count u32 | count × (len u32 | event)`, each event in the `log` table's layout without its
//! previous value (replay reads that from `kv`). A record cut short by a crash fails its CRC and
//! ends the log; it was never acknowledged.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::codec;
use crate::{Error, Event, Revision};

const MAGIC: &[u8; 8] = b"RKUBEWAL";
const LAYOUT_VERSION: u32 = 1;
const HEADER_LEN: u64 = 32;
const RECORD_HEADER: usize = 8;
/// Size of a segment. Large enough that checkpoints are rare, small enough to replay quickly.
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// The directory of the write-ahead log of the store file `db_path`.
pub(crate) fn dir_of(db_path: &Path) -> PathBuf {
    let mut name = db_path.file_name().unwrap_or_default().to_os_string();
    name.push(".wal");
    db_path.with_file_name(name)
}

/// The log being appended to. Only the writer thread holds it.
pub(crate) struct Wal {
    dir: PathBuf,
    store_id: u64,
    file: File,
    path: PathBuf,
    /// The size new segments get.
    segment_bytes: u64,
    /// Where the next record goes.
    offset: u64,
    /// The segment's size; records never go past it.
    capacity: u64,
    buf: Vec<u8>,
}

/// A record read back by [`recover`]: events to replay, in revision order.
pub(crate) type Recovered = Vec<Event>;

fn wal_error(path: &Path, source: std::io::Error) -> Error {
    Error::Log {
        path: path.to_path_buf(),
        source: std::sync::Arc::new(source),
    }
}

fn corrupt(path: &Path, detail: impl Into<String>) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// Segments of `dir` in revision order (their names sort that way), with their first revisions.
fn segments(dir: &Path) -> crate::Result<Vec<(Revision, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(wal_error(dir, e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| wal_error(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(".wal")
            && let Ok(first) = stem.parse::<Revision>()
        {
            found.push((first, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Reads the records of the log in `dir` that belong to store `store_id` and come after revision
/// `after` (what redb already holds). They must continue `after` without a gap; a record cut
/// short ends the log.
pub(crate) fn recover(dir: &Path, store_id: u64, after: Revision) -> crate::Result<Recovered> {
    let mut events: Recovered = Vec::new();
    let mut expected = after + 1;
    for (_, path) in segments(dir)? {
        let mut data = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut data))
            .map_err(|e| wal_error(&path, e))?;
        let Some(header) = data.get(..HEADER_LEN as usize) else {
            return Err(corrupt(
                &path,
                "write-ahead log segment is shorter than its header",
            ));
        };
        if &header[..8] != MAGIC {
            return Err(corrupt(&path, "not a write-ahead log segment (bad magic)"));
        }
        let version = codec::read_u32(header, 8).unwrap_or_default();
        if version != LAYOUT_VERSION {
            return Err(corrupt(
                &path,
                format!("write-ahead log layout {version}, this rkube reads {LAYOUT_VERSION}"),
            ));
        }
        if codec::read_i64(header, 16).unwrap_or_default() as u64 != store_id {
            // Left by the store this file replaced (a restored snapshot): not ours to replay.
            continue;
        }
        let mut at = HEADER_LEN as usize;
        while let Some((payload, next)) = read_record(&data, at) {
            at = next;
            let bad = |detail: &str| {
                corrupt(
                    &path,
                    format!("write-ahead log record at byte {at}: {detail}"),
                )
            };
            let first = codec::read_i64(payload, 0).ok_or_else(|| bad("short batch header"))?;
            let count = codec::read_u32(payload, 8).ok_or_else(|| bad("short batch header"))?;
            let mut pos = 12;
            for i in 0..count as i64 {
                let len = codec::read_u32(payload, pos).ok_or_else(|| bad("short event"))? as usize;
                let raw = payload
                    .get(pos + 4..pos + 4 + len)
                    .ok_or_else(|| bad("short event"))?;
                pos += 4 + len;
                let revision = first + i;
                if revision < expected {
                    continue; // already in redb
                }
                if revision > expected {
                    return Err(corrupt(
                        &path,
                        format!(
                            "write-ahead log is missing revisions {expected} to {} (the store holds revisions up to {after})",
                            revision - 1
                        ),
                    ));
                }
                let event = codec::decode_event(revision, raw).map_err(|e| bad(&e.to_string()))?;
                events.push(event);
                expected += 1;
            }
        }
    }
    Ok(events)
}

/// The payload of the record at `at` and where the next one starts; `None` at the end of the log
/// (a zero length, the end of the file, or a record whose CRC does not match: cut short).
fn read_record(data: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let len = codec::read_u32(data, at)? as usize;
    if len == 0 {
        return None;
    }
    let crc = codec::read_u32(data, at + 4)?;
    let payload = data.get(at + RECORD_HEADER..at + RECORD_HEADER + len)?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&data[at..at + 4]);
    hasher.update(payload);
    (hasher.finalize() == crc).then_some((payload, at + RECORD_HEADER + len))
}

/// Bytes a record of `events` takes: a bound the writer checks before applying a batch.
pub(crate) fn record_len(events: impl Iterator<Item = (usize, usize)>) -> u64 {
    // Per event: its length prefix plus `codec::encoded_len` for (key, value) lengths.
    let body: usize = events
        .map(|(key, value)| 4 + 1 + 4 + key + 8 + 4 + value + 1)
        .sum();
    (RECORD_HEADER + 12 + body) as u64
}

/// Creates a segment file of `size` allocated bytes under a temporary name; the caller renames
/// it into place once its header is written.
fn prepare_segment(dir: &Path, name: &str, size: u64) -> std::io::Result<PathBuf> {
    let path = dir.join(name);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, size)?;
    file.sync_all()?;
    Ok(path)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Wal {
    /// Starts a new log for store `store_id` whose next write is `next_revision`, after a
    /// checkpoint made every existing segment obsolete (they are removed here).
    pub(crate) fn start(
        dir: &Path,
        store_id: u64,
        next_revision: Revision,
        segment_bytes: u64,
    ) -> crate::Result<Wal> {
        std::fs::create_dir_all(dir).map_err(|e| wal_error(dir, e))?;
        let old = segments(dir)?;
        let (file, path, capacity) = Self::install(dir, store_id, next_revision, segment_bytes)?;
        for (_, old) in old.iter().filter(|(_, p)| *p != path) {
            let _ = std::fs::remove_file(old);
        }
        // Segments whose creation a crash interrupted.
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().ends_with(".tmp") {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(Wal {
            dir: dir.to_path_buf(),
            store_id,
            file,
            path,
            segment_bytes,
            offset: HEADER_LEN,
            capacity,
            buf: Vec::new(),
        })
    }

    /// Creates the segment for `first` of `capacity` bytes, writes its header and makes its name
    /// durable.
    fn install(
        dir: &Path,
        store_id: u64,
        first: Revision,
        capacity: u64,
    ) -> crate::Result<(File, PathBuf, u64)> {
        let tmp = prepare_segment(dir, &format!("{first:020}.wal.tmp"), capacity)
            .map_err(|e| wal_error(dir, e))?;
        let path = dir.join(format!("{first:020}.wal"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&tmp)
            .map_err(|e| wal_error(&tmp, e))?;
        let mut header = [0u8; HEADER_LEN as usize];
        header[..8].copy_from_slice(MAGIC);
        header[8..12].copy_from_slice(&LAYOUT_VERSION.to_le_bytes());
        header[16..24].copy_from_slice(&store_id.to_le_bytes());
        header[24..32].copy_from_slice(&first.to_le_bytes());
        file.write_all_at(&header, 0)
            .and_then(|()| file.sync_data())
            .map_err(|e| wal_error(&tmp, e))?;
        std::fs::rename(&tmp, &path)
            .and_then(|()| sync_dir(dir))
            .map_err(|e| wal_error(&path, e))?;
        Ok((file, path, capacity))
    }

    /// Whether a record of `len` bytes fits in the current segment.
    pub(crate) fn fits(&self, len: u64) -> bool {
        self.offset + len < self.capacity
    }

    /// Starts the segment for `first` (big enough for a record of `len` bytes) and deletes the
    /// current one. The caller must have made every earlier revision durable in redb first.
    pub(crate) fn roll(&mut self, first: Revision, len: u64) -> crate::Result<()> {
        let capacity = self.segment_bytes.max(len + HEADER_LEN + 1);
        let (file, path, capacity) = Self::install(&self.dir, self.store_id, first, capacity)?;
        let old = std::mem::replace(&mut self.path, path);
        let _ = std::fs::remove_file(old);
        self.file = file;
        self.offset = HEADER_LEN;
        self.capacity = capacity;
        Ok(())
    }

    /// Appends one committed batch (consecutive revisions from `events[0]`) and syncs it. The
    /// caller checked [`Wal::fits`]. An error leaves the log's state unknown: the writer then
    /// refuses further writes.
    pub(crate) fn append(&mut self, events: &[Event]) -> crate::Result<()> {
        let Some(first) = events.first() else {
            return Ok(());
        };
        let buf = &mut self.buf;
        buf.clear();
        buf.extend_from_slice(&[0; RECORD_HEADER]);
        buf.extend_from_slice(&first.revision().to_le_bytes());
        buf.extend_from_slice(&(events.len() as u32).to_le_bytes());
        for event in events {
            let at = buf.len();
            buf.extend_from_slice(&[0; 4]);
            codec::encode_event_to(buf, event, false);
            let len = (buf.len() - at - 4) as u32;
            buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
        }
        let len = (buf.len() - RECORD_HEADER) as u32;
        buf[..4].copy_from_slice(&len.to_le_bytes());
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&buf[..4]);
        hasher.update(&buf[RECORD_HEADER..]);
        let crc = hasher.finalize();
        buf[4..8].copy_from_slice(&crc.to_le_bytes());
        if self.offset + buf.len() as u64 > self.capacity {
            return Err(corrupt(
                &self.path,
                "write-ahead log record does not fit its segment",
            ));
        }
        self.file
            .write_all_at(buf, self.offset)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| wal_error(&self.path, e))?;
        self.offset += buf.len() as u64;
        Ok(())
    }

    /// Bytes of the log on disk.
    pub(crate) fn disk_bytes(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::{EventType, KeyValue};

    fn put(key: &str, revision: Revision) -> Event {
        Event {
            kind: EventType::Put,
            kv: KeyValue {
                key: key.into(),
                value: Bytes::from(format!("value of {key}")),
                create_revision: revision,
                mod_revision: revision,
            },
            prev: None,
        }
    }

    fn keys(events: &[Event]) -> Vec<(Revision, String)> {
        events
            .iter()
            .map(|e| (e.revision(), e.kv.key.clone()))
            .collect()
    }

    /// A log holding revisions 2..=6 in two batches.
    fn written(dir: &Path, store_id: u64) -> PathBuf {
        let mut wal = Wal::start(dir, store_id, 2, 4096).unwrap();
        wal.append(&[put("/a", 2), put("/b", 3)]).unwrap();
        wal.append(&[put("/c", 4), put("/d", 5), put("/e", 6)])
            .unwrap();
        wal.path.clone()
    }

    #[test]
    fn records_after_the_stores_revision_come_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        written(dir.path(), 7);
        let all = recover(dir.path(), 7, 1).unwrap();
        assert_eq!(
            keys(&all),
            [(2, "/a"), (3, "/b"), (4, "/c"), (5, "/d"), (6, "/e")]
                .map(|(r, k)| (r, k.to_string()))
        );
        assert_eq!(all[1].kv.value, Bytes::from("value of /b"));
        // Revisions redb already holds are skipped, even inside a batch.
        assert_eq!(keys(&recover(dir.path(), 7, 4).unwrap()).len(), 2);
        assert!(recover(dir.path(), 7, 6).unwrap().is_empty());
    }

    #[test]
    fn a_record_cut_short_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let segment = written(dir.path(), 7);
        let mut data = std::fs::read(&segment).unwrap();
        // Damage the last byte of the second record's payload: its CRC no longer matches.
        let first_len = codec::read_u32(&data, HEADER_LEN as usize).unwrap() as usize;
        let second_at = HEADER_LEN as usize + RECORD_HEADER + first_len;
        let second_len = codec::read_u32(&data, second_at).unwrap() as usize;
        data[second_at + RECORD_HEADER + second_len - 1] ^= 0xff;
        std::fs::write(&segment, &data).unwrap();
        assert_eq!(keys(&recover(dir.path(), 7, 1).unwrap()).len(), 2);
    }

    #[test]
    fn a_gap_between_the_store_and_its_log_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        written(dir.path(), 7);
        // The store holds up to revision 0 but the log starts at 2: revision 1 is lost.
        let err = recover(dir.path(), 7, 0).unwrap_err();
        assert!(
            matches!(&err, Error::Corrupt { detail, .. } if detail.contains("missing revisions 1 to 1")),
            "{err}"
        );
    }

    #[test]
    fn a_log_of_another_store_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        written(dir.path(), 7);
        assert!(recover(dir.path(), 8, 0).unwrap().is_empty());
    }

    #[test]
    fn a_segment_that_is_not_a_log_is_corruption_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let segment = written(dir.path(), 7);
        std::fs::write(&segment, b"definitely not a log segment, but long enough").unwrap();
        let err = recover(dir.path(), 7, 1).unwrap_err();
        assert!(
            matches!(&err, Error::Corrupt { path, .. } if *path == segment),
            "{err}"
        );
        std::fs::write(&segment, b"short").unwrap();
        assert!(matches!(
            recover(dir.path(), 7, 1),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn rolling_starts_a_new_segment_and_deletes_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::start(dir.path(), 7, 2, 4096).unwrap();
        let mut revision = 2;
        for _ in 0..200 {
            let event = put(&format!("/key-{revision}"), revision);
            let len = record_len(std::iter::once((event.kv.key.len(), event.kv.value.len())));
            if !wal.fits(len) {
                wal.roll(revision, len).unwrap();
            }
            wal.append(std::slice::from_ref(&event)).unwrap();
            revision += 1;
        }
        assert_eq!(segments(dir.path()).unwrap().len(), 1);
        let first = segments(dir.path()).unwrap()[0].0;
        assert!(first > 2, "no roll happened");
        let events = recover(dir.path(), 7, first - 1).unwrap();
        assert_eq!(events.last().unwrap().revision(), revision - 1);
        // A record larger than a segment gets a segment of its own size.
        let big = Event {
            kv: KeyValue {
                value: Bytes::from(vec![7u8; 10_000]),
                ..put("/big", revision).kv
            },
            ..put("/big", revision)
        };
        let len = record_len(std::iter::once((4, 10_000)));
        assert!(!wal.fits(len));
        wal.roll(revision, len).unwrap();
        wal.append(&[big]).unwrap();
        let events = recover(dir.path(), 7, revision - 1).unwrap();
        assert_eq!(events[0].kv.value.len(), 10_000);
    }

    #[test]
    fn record_len_bounds_the_encoded_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::start(dir.path(), 7, 2, 4096).unwrap();
        let events = [put("/a", 2), put("/bbbb", 3)];
        let bound = record_len(events.iter().map(|e| (e.kv.key.len(), e.kv.value.len())));
        wal.append(&events).unwrap();
        assert_eq!(wal.offset - HEADER_LEN, bound);
    }
}
