//! Backups of the embedded store.
//!
//! A snapshot is itself a store file holding the live keys and the revision of one read
//! transaction (history is not kept: it is compacted to the snapshot's revision), so restoring it is
//! a file copy and the restored store continues from the snapshot's revision. Both directions write
//! a temporary file, fsync it and rename it into place, so a crash leaves the old file or the
//! complete new one, never half of one.
//!
//! A snapshot can be taken of a store another process is using: that process writes it, asked over
//! the store's admin socket ([`super::admin`]).

use std::fs::File;
use std::path::{Path, PathBuf};

use redb::{Builder, Database, DatabaseError, ReadableDatabase, ReadableTableMetadata, TableError};

use super::{
    FORMAT_VERSION, FORMAT_VERSION_1, KV, LOG, META, META_COMPACTED, META_FORMAT, META_REVISION,
    META_STORE_ID, admin, map_open_error, new_store_id, read_revisions, stats_of,
};
use crate::{Error, Result, Revision, Stats};

/// What a snapshot holds.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SnapshotInfo {
    /// The snapshot file.
    pub path: PathBuf,
    /// The store revision it was taken at.
    pub revision: Revision,
    /// Live keys in it.
    pub keys: u64,
    /// Its size in bytes.
    pub size_bytes: u64,
}

/// Copies the state of one read transaction of `db` (the store at `source`) to `dest`.
pub(crate) fn save_from(
    db: &dyn ReadableDatabase,
    source: &Path,
    dest: &Path,
) -> Result<SnapshotInfo> {
    let err = |detail: String| Error::Snapshot {
        path: dest.to_path_buf(),
        detail,
    };
    let txn = db.begin_read().map_err(crate::error::read_failed)?;
    let (revision, _) = read_revisions(&txn)?;
    let kv = txn.open_table(KV).map_err(crate::error::read_failed)?;

    let tmp = temp_path(dest);
    let _ = std::fs::remove_file(&tmp);
    let out = Database::builder()
        .create(&tmp)
        .map_err(|e| err(format!("cannot create {}: {e}", tmp.display())))?;
    let mut keys = 0u64;
    let mut write = || -> std::result::Result<(), redb::Error> {
        let wtxn = out.begin_write()?;
        {
            let mut out_kv = wtxn.open_table(KV)?;
            for entry in kv.range::<&[u8]>(..)? {
                let (k, v) = entry?;
                out_kv.insert(k.value(), v.value())?;
                keys += 1;
            }
            wtxn.open_table(LOG)?;
            let mut meta = wtxn.open_table(META)?;
            meta.insert(META_FORMAT, FORMAT_VERSION)?;
            meta.insert(META_REVISION, revision as u64)?;
            // History is not copied: the snapshot starts compacted at its own revision.
            meta.insert(META_COMPACTED, revision as u64)?;
            meta.insert(META_STORE_ID, new_store_id())?;
        }
        wtxn.commit()?;
        Ok(())
    };
    let written = write();
    drop(out);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(format!(
            "copying from {} failed: {e}",
            source.display()
        )));
    }
    persist(&tmp, dest).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(format!("cannot write: {e}"))
    })?;
    let size_bytes = std::fs::metadata(dest).map(|m| m.len()).unwrap_or_default();
    Ok(SnapshotInfo {
        path: dest.to_path_buf(),
        revision,
        keys,
        size_bytes,
    })
}

/// Saves a snapshot of the store file at `db_path`, whether or not another process is using it.
pub fn save(db_path: &Path, dest: &Path) -> Result<SnapshotInfo> {
    match super::EmbeddedStore::open(db_path) {
        Ok(store) => save_from(&store.core.db, db_path, dest),
        Err(Error::Locked { .. }) => admin::remote_snapshot(db_path, dest),
        Err(err) => Err(err),
    }
}

/// Stats of the store file at `db_path`, whether or not another process is using it.
pub fn stats(db_path: &Path) -> Result<Stats> {
    match super::EmbeddedStore::open(db_path) {
        Ok(store) => stats_of(&store.core.db, db_path),
        Err(Error::Locked { .. }) => admin::remote_stats(db_path),
        Err(err) => Err(err),
    }
}

/// Whether a live process holds the store open.
fn is_locked_by_writer(db_path: &Path) -> Result<bool> {
    match Builder::new().open(db_path) {
        Ok(db) => {
            drop(db);
            Ok(false)
        }
        Err(DatabaseError::DatabaseAlreadyOpen) => Ok(true),
        Err(e) => Err(map_open_error(db_path, e)),
    }
}

/// Replaces the store file at `db_path` with the snapshot at `snapshot`. Refused while a process
/// has the store open.
pub fn restore(snapshot: &Path, db_path: &Path) -> Result<SnapshotInfo> {
    let err = |detail: String| Error::Snapshot {
        path: snapshot.to_path_buf(),
        detail,
    };
    // Validate the snapshot before touching anything.
    let info = {
        let db = Builder::new().open_read_only(snapshot).map_err(|e| {
            match map_open_error(snapshot, e) {
                Error::DataPath { source, .. } => err(format!("cannot read: {source}")),
                Error::Corrupt { detail, .. } => err(format!("not a valid snapshot: {detail}")),
                other => err(other.to_string()),
            }
        })?;
        let txn = db.begin_read().map_err(crate::error::read_failed)?;
        let meta = txn.open_table(META).map_err(|e| match e {
            TableError::TableDoesNotExist(_) => err("not an rkube snapshot (no meta table)".into()),
            other => err(other.to_string()),
        })?;
        let format = meta
            .get(META_FORMAT)
            .map_err(crate::error::read_failed)?
            .map(|v| v.value());
        if format != Some(FORMAT_VERSION) && format != Some(FORMAT_VERSION_1) {
            return Err(err(format!(
                "not an rkube snapshot of format {FORMAT_VERSION} (found {format:?})"
            )));
        }
        let (revision, _) = read_revisions(&txn)?;
        let keys = txn
            .open_table(KV)
            .map_err(crate::error::read_failed)?
            .len()
            .map_err(crate::error::read_failed)?;
        SnapshotInfo {
            path: db_path.to_path_buf(),
            revision,
            keys,
            size_bytes: std::fs::metadata(snapshot)
                .map(|m| m.len())
                .unwrap_or_default(),
        }
    };
    if let Some(dir) = db_path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| Error::DataPath {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    if db_path.exists() && is_locked_by_writer(db_path).unwrap_or(false) {
        return Err(Error::Locked {
            path: db_path.to_path_buf(),
        });
    }
    let tmp = temp_path(db_path);
    std::fs::copy(snapshot, &tmp).map_err(|source| Error::DataPath {
        path: tmp.clone(),
        source,
    })?;
    // A new identity: the log beside the file it replaces (or beside an earlier restore of the
    // same snapshot) must never be replayed onto it.
    let renamed = (|| -> std::result::Result<(), redb::Error> {
        let db = Builder::new().open(&tmp)?;
        let txn = db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            meta.insert(META_FORMAT, FORMAT_VERSION)?;
            meta.insert(META_STORE_ID, new_store_id())?;
        }
        txn.commit()?;
        Ok(())
    })();
    if let Err(e) = renamed {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(format!("cannot prepare the restored copy: {e}")));
    }
    persist(&tmp, db_path).map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        Error::DataPath {
            path: db_path.to_path_buf(),
            source,
        }
    })?;
    Ok(info)
}

fn temp_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    dest.with_file_name(name)
}

/// fsyncs `tmp`, renames it to `dest` and fsyncs the directory, so the rename survives a crash.
fn persist(tmp: &Path, dest: &Path) -> std::io::Result<()> {
    File::open(tmp)?.sync_all()?;
    std::fs::rename(tmp, dest)?;
    let dir = match dest.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}
