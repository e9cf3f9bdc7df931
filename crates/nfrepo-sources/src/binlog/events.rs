//! Walking a binlog file's event headers: where the last complete event
//! ends, what it was, and the newest event time.
//!
//! A binlog file (format v4, every MySQL ≥ 5.0 and MariaDB) is the magic
//! `\xfe bin` followed by events, each starting with a 19-byte header:
//! timestamp (u32 LE, seconds), type (u8), server id (u32), event size
//! (u32 LE, header included), next position (u32), flags (u16). A file
//! that `mariadb-binlog --raw` is still writing may end inside an event;
//! only the prefix up to the last complete event is ever committed, so
//! every archived version of a file replays cleanly.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// The magic that opens every binlog file.
pub(crate) const MAGIC: [u8; 4] = [0xfe, b'b', b'i', b'n'];
const HEADER: u64 = 19;
/// The event a server writes before closing a file to continue in the next.
const ROTATE_EVENT: u8 = 4;
/// The event a server writes before closing a file at shutdown.
const STOP_EVENT: u8 = 3;

/// How far a file has been read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Scan {
    /// The end of the last complete event (0 before the magic is seen).
    pub(crate) len: u64,
    /// The type of that event.
    pub(crate) last_type: Option<u8>,
    /// The newest event timestamp seen (seconds since the epoch).
    pub(crate) newest_time: Option<u32>,
}

impl Scan {
    /// The file ends with a rotation or a shutdown: the server writes no
    /// more to it.
    pub(crate) fn complete(&self) -> bool {
        matches!(self.last_type, Some(ROTATE_EVENT | STOP_EVENT))
    }
}

/// Continues `from` over the `file_len` bytes of `file`.
///
/// # Errors
/// `InvalidData` for a file without the magic or an event shorter than a
/// header; I/O errors reading.
pub(crate) fn scan(file: &File, from: Scan, file_len: u64) -> std::io::Result<Scan> {
    let mut at = from;
    if at.len == 0 {
        if file_len < 4 {
            return Ok(at);
        }
        let mut magic = [0u8; 4];
        file.read_exact_at(&mut magic, 0)?;
        if magic != MAGIC {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "not a binlog file (no magic)",
            ));
        }
        at.len = 4;
    }
    let mut header = [0u8; HEADER as usize];
    while at.len + HEADER <= file_len {
        file.read_exact_at(&mut header, at.len)?;
        let [t0, t1, t2, t3, kind, _, _, _, _, s0, s1, s2, s3, ..] = header;
        let size = u64::from(u32::from_le_bytes([s0, s1, s2, s3]));
        if size < HEADER {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("an event at offset {} claims {size} bytes", at.len),
            ));
        }
        if at.len + size > file_len {
            break;
        }
        let time = u32::from_le_bytes([t0, t1, t2, t3]);
        if time > 0 {
            at.newest_time = Some(at.newest_time.map_or(time, |t| t.max(time)));
        }
        at.last_type = Some(kind);
        at.len += size;
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
    use std::io::Write;

    use super::*;

    fn event(time: u32, kind: u8, body: usize) -> Vec<u8> {
        let size = u32::try_from(19 + body).unwrap();
        let mut e = Vec::new();
        e.extend(time.to_le_bytes());
        e.push(kind);
        e.extend(1u32.to_le_bytes());
        e.extend(size.to_le_bytes());
        e.extend(0u32.to_le_bytes());
        e.extend(0u16.to_le_bytes());
        e.extend(vec![7u8; body]);
        e
    }

    // Issue 16: only whole events are committed, and a rotation marks a file complete.
    #[test]
    fn the_prefix_ends_at_the_last_whole_event() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend(event(100, 15, 50));
        bytes.extend(event(105, 2, 10));
        let whole = bytes.len() as u64;
        let rotate = event(106, ROTATE_EVENT, 20);
        bytes.extend(&rotate[..25]);
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&bytes).unwrap();
        let first = scan(&file, Scan::default(), bytes.len() as u64).unwrap();
        assert_eq!(first.len, whole);
        assert_eq!(first.newest_time, Some(105));
        assert!(!first.complete());
        file.write_all(&rotate[25..]).unwrap();
        let total = whole + rotate.len() as u64;
        let second = scan(&file, first, total).unwrap();
        assert_eq!(second.len, total);
        assert!(second.complete());
        assert_eq!(
            scan(&file, Scan::default(), total).unwrap(),
            second,
            "incremental = from scratch"
        );
        assert_eq!(scan(&file, Scan::default(), 3).unwrap().len, 0);

        let mut bad = tempfile::tempfile().unwrap();
        bad.write_all(b"\xfebin\x00\x00\x00\x00\x0f\x01\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00\x00\x00")
            .unwrap();
        assert!(
            scan(&bad, Scan::default(), 23).is_err(),
            "an event shorter than its header"
        );
        let mut alien = tempfile::tempfile().unwrap();
        alien.write_all(b"hello world").unwrap();
        assert!(scan(&alien, Scan::default(), 11).is_err());
    }
}
