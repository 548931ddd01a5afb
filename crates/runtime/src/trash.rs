//! Deleting removed containers' directories in the background.
//!
//! A removed container leaves a directory tree (its writable layer, logs, records) whose
//! deletion is one `unlink` per file: most of a remove's time, and nothing a caller waits for
//! (containerd likewise deletes snapshots in its garbage collector, after `RemoveContainer` has
//! returned). [`Trash::discard`] renames the directory into `<root>/trash/` (one `rename`: the
//! container is gone from every listing at once) and a thread of its own deletes it. What a
//! stopped runtime left in the trash is deleted when the next one opens it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc::{Sender, channel};

/// The trash directory and the thread that empties it.
#[derive(Debug)]
pub struct Trash {
    dir: PathBuf,
    /// To the deleting thread; `None` if it could not be started (then deletion is inline).
    deleter: Mutex<Option<Sender<PathBuf>>>,
}

impl Trash {
    /// Opens (creating) `dir` and starts deleting what is already in it.
    pub fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let (send, receive) = channel::<PathBuf>();
        let deleter = std::thread::Builder::new()
            .name("rkube-trash".into())
            .spawn(move || {
                for path in receive {
                    if let Err(e) = remove(&path) {
                        tracing::warn!(path = %path.display(), error = %e, "emptying the trash");
                    }
                }
            })
            .ok()
            .map(|_| send);
        let trash = Self {
            dir: dir.to_owned(),
            deleter: Mutex::new(deleter),
        };
        for entry in fs::read_dir(dir)?.flatten() {
            trash.delete(entry.path());
        }
        Ok(trash)
    }

    /// Moves `path` (a directory on the same filesystem) into the trash, to be deleted soon.
    /// A `path` that does not exist is fine.
    pub fn discard(&self, path: &Path) -> io::Result<()> {
        let name = format!(
            "{}-{:016x}",
            path.file_name().unwrap_or_default().to_string_lossy(),
            rand::random::<u64>()
        );
        let target = self.dir.join(name);
        match fs::rename(path, &target) {
            Ok(()) => {
                self.delete(target);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            // Elsewhere (another filesystem) or refused: delete it where it is.
            Err(_) => remove(path),
        }
    }

    /// How many discarded directories are not deleted yet.
    pub fn pending(&self) -> io::Result<usize> {
        Ok(fs::read_dir(&self.dir)?.count())
    }

    fn delete(&self, path: PathBuf) {
        let deleter = self.deleter.lock().unwrap_or_else(|e| e.into_inner());
        let unsent = match deleter.as_ref() {
            Some(send) => send.send(path).err().map(|e| e.0),
            None => Some(path),
        };
        drop(deleter);
        if let Some(path) = unsent {
            let _ = remove(&path);
        }
    }
}

fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn wait_empty(trash: &Trash) {
        let started = Instant::now();
        while trash.pending().unwrap() > 0 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "trash not emptied"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn discarded_directories_leave_at_once_and_are_deleted_soon() {
        let root = tempfile::tempdir().unwrap();
        let trash = Trash::open(&root.path().join("trash")).unwrap();
        let victim = root.path().join("containers/abc");
        fs::create_dir_all(victim.join("upper/deep")).unwrap();
        fs::write(victim.join("upper/deep/file"), "x").unwrap();
        trash.discard(&victim).unwrap();
        assert!(!victim.exists());
        wait_empty(&trash);
        // Absent is fine.
        trash.discard(&victim).unwrap();
    }

    #[test]
    fn what_a_previous_runtime_left_in_the_trash_is_deleted_on_open() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("trash");
        fs::create_dir_all(dir.join("old-1/upper")).unwrap();
        fs::write(dir.join("old-1/upper/f"), "x").unwrap();
        let trash = Trash::open(&dir).unwrap();
        wait_empty(&trash);
    }
}
