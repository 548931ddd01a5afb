//! Container logs in the CRI format the kubelet reads:
//! `<RFC3339 time with nanoseconds> <stdout|stderr> <F|P> <content>\n`.
//!
//! The shim feeds each stream's bytes through a [`LineSplitter`]; a line longer than
//! [`MAX_LINE`] is cut into partial (`P`) records followed by a final (`F`) one, as containerd
//! does, so one huge line never needs one huge buffer. [`LogWriter`] rotates the file by size
//! (`<path>.1`, `<path>.2`, ...) and can be told to reopen it (`ReopenContainerLog`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The longest content one record carries; longer lines become `P` records (containerd's 16 KiB).
pub const MAX_LINE: usize = 16 * 1024;

/// Which output stream a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// The stream's name in a record.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Formats a time as RFC 3339 in UTC with nine fractional digits.
pub fn rfc3339_nano(time: SystemTime) -> String {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_nanos()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Cuts one stream's bytes into records: complete lines (`F`) and pieces of over-long lines
/// (`P`). Holds at most [`MAX_LINE`] bytes.
#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    /// Feeds bytes; `emit(content, partial)` is called for every record they complete.
    pub fn feed(
        &mut self,
        mut bytes: &[u8],
        emit: &mut dyn FnMut(&[u8], bool) -> io::Result<()>,
    ) -> io::Result<()> {
        while !bytes.is_empty() {
            match bytes.iter().position(|&b| b == b'\n') {
                Some(i) if self.buf.len() + i <= MAX_LINE => {
                    if self.buf.is_empty() {
                        emit(&bytes[..i], false)?;
                    } else {
                        self.buf.extend_from_slice(&bytes[..i]);
                        emit(&self.buf, false)?;
                        self.buf.clear();
                    }
                    bytes = &bytes[i + 1..];
                }
                _ => {
                    let room = MAX_LINE - self.buf.len();
                    let take = room.min(bytes.len());
                    self.buf.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if self.buf.len() == MAX_LINE && !bytes.is_empty() {
                        // Full, and more of this line follows: a partial record. (If a newline
                        // comes next, the full buffer is emitted as `F` by the branch above.)
                        if bytes[0] == b'\n' {
                            emit(&self.buf, false)?;
                            bytes = &bytes[1..];
                        } else {
                            emit(&self.buf, true)?;
                        }
                        self.buf.clear();
                    }
                }
            }
        }
        Ok(())
    }

    /// The stream ended: what is left is the last line, without its newline (`F`, as containerd).
    pub fn finish(
        &mut self,
        emit: &mut dyn FnMut(&[u8], bool) -> io::Result<()>,
    ) -> io::Result<()> {
        if !self.buf.is_empty() {
            emit(&self.buf, false)?;
            self.buf.clear();
        }
        Ok(())
    }
}

/// Appends CRI records to a log file, rotating it by size.
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    max_files: usize,
}

impl LogWriter {
    /// Opens (appending) `path`; `max_size` 0 never rotates; `max_files` counts the live file.
    pub fn open(path: &Path, max_size: u64, max_files: usize) -> io::Result<Self> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_owned(),
            file,
            size,
            max_size,
            max_files: max_files.max(1),
        })
    }

    /// Writes one record with the given time.
    pub fn write_record(
        &mut self,
        time: SystemTime,
        stream: Stream,
        partial: bool,
        content: &[u8],
    ) -> io::Result<()> {
        let head = format!(
            "{} {} {} ",
            rfc3339_nano(time),
            stream.as_str(),
            if partial { 'P' } else { 'F' }
        );
        let len = (head.len() + content.len() + 1) as u64;
        if self.max_size > 0 && self.size > 0 && self.size + len > self.max_size {
            self.rotate()?;
        }
        let mut record = Vec::with_capacity(len as usize);
        record.extend_from_slice(head.as_bytes());
        record.extend_from_slice(content);
        record.push(b'\n');
        self.file.write_all(&record)?;
        self.size += len;
        Ok(())
    }

    /// Reopens the file at its path (after someone moved it away), as `ReopenContainerLog`.
    pub fn reopen(&mut self) -> io::Result<()> {
        self.file = open_append(&self.path)?;
        self.size = self.file.metadata()?.len();
        Ok(())
    }

    /// `path` → `path.1` → `path.2` ..., dropping what falls past `max_files`.
    fn rotate(&mut self) -> io::Result<()> {
        let numbered = |n: usize| {
            let mut name = self.path.clone().into_os_string();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        if self.max_files == 1 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        let _ = fs::remove_file(numbered(self.max_files - 1));
        for n in (1..self.max_files - 1).rev() {
            match fs::rename(numbered(n), numbered(n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        fs::rename(&self.path, numbered(1))?;
        self.reopen()
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// One parsed CRI log record, for tests and `logs` readers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The timestamp as written.
    pub time: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// Whether this is a partial (`P`) record.
    pub partial: bool,
    /// The content, without the newline.
    pub content: Vec<u8>,
}

/// Parses a CRI log file's bytes into records; `None` on a malformed line.
pub fn parse_records(bytes: &[u8]) -> Option<Vec<Record>> {
    let mut out = Vec::new();
    for line in bytes.split(|&b| b == b'\n') {
        if line.is_empty() {
            continue;
        }
        let mut parts = line.splitn(4, |&b| b == b' ');
        let time = String::from_utf8(parts.next()?.to_vec()).ok()?;
        let stream = String::from_utf8(parts.next()?.to_vec()).ok()?;
        let tag = parts.next()?;
        let content = parts.next().unwrap_or_default().to_vec();
        let partial = match tag {
            b"P" => true,
            b"F" => false,
            _ => return None,
        };
        out.push(Record {
            time,
            stream,
            partial,
            content,
        });
    }
    Some(out)
}

/// Joins partial records into whole lines per stream, in order: `(stream, line)`.
pub fn join_lines(records: &[Record]) -> Vec<(String, Vec<u8>)> {
    let mut lines = Vec::new();
    let mut pending: Vec<(String, Vec<u8>)> = Vec::new();
    for r in records {
        let slot = match pending.iter_mut().find(|(s, _)| *s == r.stream) {
            Some(slot) => slot,
            None => {
                pending.push((r.stream.clone(), Vec::new()));
                pending.last_mut().expect("just pushed")
            }
        };
        slot.1.extend_from_slice(&r.content);
        if !r.partial {
            lines.push((r.stream.clone(), std::mem::take(&mut slot.1)));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn split(chunks: &[&[u8]]) -> Vec<(Vec<u8>, bool)> {
        let mut out = Vec::new();
        let mut s = LineSplitter::default();
        let mut emit = |c: &[u8], p: bool| {
            out.push((c.to_vec(), p));
            Ok(())
        };
        for chunk in chunks {
            s.feed(chunk, &mut emit).unwrap();
        }
        s.finish(&mut emit).unwrap();
        out
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_nine_fraction_digits() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_704_067_200, 5);
        assert_eq!(rfc3339_nano(t), "2024-01-01T00:00:00.000000005Z");
        let t = SystemTime::UNIX_EPOCH + Duration::new(951_825_599, 123_456_789);
        assert_eq!(rfc3339_nano(t), "2000-02-29T11:59:59.123456789Z");
    }

    #[test]
    fn lines_split_across_chunks_are_joined_and_the_last_unterminated_line_is_full() {
        let out = split(&[b"hel", b"lo\nwor", b"ld\n\ntail"]);
        assert_eq!(
            out,
            [
                (b"hello".to_vec(), false),
                (b"world".to_vec(), false),
                (b"".to_vec(), false),
                (b"tail".to_vec(), false),
            ]
        );
    }

    #[test]
    fn a_long_line_becomes_partial_records_then_a_full_one() {
        let line = vec![b'x'; MAX_LINE * 2 + 10];
        let mut input = line.clone();
        input.push(b'\n');
        let out = split(&[&input[..1000], &input[1000..]]);
        assert_eq!(out.len(), 3);
        assert!(out[0].1 && out[1].1 && !out[2].1);
        assert_eq!(out.iter().map(|o| o.0.len()).sum::<usize>(), line.len());
        // Exactly MAX_LINE then a newline: one full record, no empty partial.
        let mut exact = vec![b'y'; MAX_LINE];
        exact.push(b'\n');
        assert_eq!(split(&[&exact]), [(vec![b'y'; MAX_LINE], false)]);
    }

    #[test]
    fn records_round_trip_and_the_file_rotates_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut w = LogWriter::open(&path, 200, 3).unwrap();
        let t = SystemTime::UNIX_EPOCH;
        for i in 0..10 {
            w.write_record(
                t,
                Stream::Stdout,
                i % 2 == 0,
                format!("line {i}").as_bytes(),
            )
            .unwrap();
        }
        w.write_record(t, Stream::Stderr, false, b"err").unwrap();
        let live = fs::read(&path).unwrap();
        assert!(live.len() <= 200);
        assert!(path.with_extension("log.1").exists());
        assert!(path.with_extension("log.2").exists());
        assert!(!path.with_extension("log.3").exists(), "max 3 files");
        let recs = parse_records(&live).unwrap();
        let last = recs.last().unwrap();
        assert_eq!(last.stream, "stderr");
        assert_eq!(last.content, b"err");
        assert_eq!(last.time, "1970-01-01T00:00:00.000000000Z");
        assert!(parse_records(b"garbage\n").is_none());
    }

    #[test]
    fn reopen_starts_a_new_file_after_the_old_one_was_moved() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut w = LogWriter::open(&path, 0, 1).unwrap();
        w.write_record(SystemTime::now(), Stream::Stdout, false, b"a")
            .unwrap();
        fs::rename(&path, dir.path().join("moved")).unwrap();
        w.reopen().unwrap();
        w.write_record(SystemTime::now(), Stream::Stdout, false, b"b")
            .unwrap();
        let recs = parse_records(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(join_lines(&recs), [("stdout".to_owned(), b"b".to_vec())]);
    }
}
