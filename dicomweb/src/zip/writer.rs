//! A streaming ZIP writer without IO (PKWARE APPNOTE 6.3.10): entries are
//! STOREd (no compression), each local header is followed by the entry's
//! bytes as they come and then a data descriptor (general purpose bit 3)
//! carrying the CRC-32 computed on the way, so nothing is buffered; the
//! central directory is written at the end. ZIP64 (APPNOTE 4.3.9, 4.5.3)
//! is used for an entry of 4 GiB or more, for offsets past 4 GiB and for
//! more than 65,535 entries.
//!
//! The writer returns the bytes to send; the caller sends them, then the
//! entry's data, then what [`ZipWriter::end_entry`] returns. Names are the
//! caller's (ASCII, `/`-separated).

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};

const LOCAL_HEADER: u32 = 0x0403_4b50;
const DATA_DESCRIPTOR: u32 = 0x0807_4b50;
const CENTRAL_HEADER: u32 = 0x0201_4b50;
const ZIP64_END: u32 = 0x0606_4b50;
const ZIP64_LOCATOR: u32 = 0x0706_4b50;
const END: u32 = 0x0605_4b50;
/// Version needed to extract: 2.0 (data descriptors), 4.5 (ZIP64).
const VERSION_20: u16 = 20;
const VERSION_45: u16 = 45;
/// Version made by: Unix (3), so external attributes carry a file mode.
const MADE_BY_UNIX: u16 = 3 << 8;
/// General purpose bit 3: CRC and sizes follow in a data descriptor.
const FLAG_DATA_DESCRIPTOR: u16 = 1 << 3;
/// Compression method 0: stored.
const STORED: u16 = 0;
/// Header ID of the ZIP64 extended information extra field.
const ZIP64_EXTRA: u16 = 0x0001;
/// Regular file, mode 0644, in the high half of the external attributes.
const EXTERNAL_ATTRS: u32 = 0o100_644 << 16;

/// Why an entry could not be written as announced.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ZipError {
    #[error("entry {name}: {written} bytes written, {announced} announced")]
    SizeMismatch {
        name: String,
        announced: u64,
        written: u64,
    },
    #[error("no entry is open")]
    NoEntry,
}

struct Entry {
    name: String,
    offset: u64,
    size: u64,
    crc: u32,
    zip64: bool,
}

/// Writes one ZIP archive as a sequence of byte runs. The sizes of entries
/// are announced when they begin (they decide ZIP64) and checked when
/// they end.
pub struct ZipWriter {
    /// Bytes produced so far.
    offset: u64,
    entries: Vec<Entry>,
    open: Option<Entry>,
    dos_time: u16,
    dos_date: u16,
    /// Values at or above it are written in ZIP64 form (u32::MAX, lower
    /// in tests to exercise ZIP64 with small entries).
    zip64_from: u64,
}

impl ZipWriter {
    /// A writer whose entries are dated `modified` (UTC).
    pub fn new(modified: SystemTime) -> ZipWriter {
        let (dos_date, dos_time) = dos_date_time(modified);
        ZipWriter {
            offset: 0,
            entries: Vec::new(),
            open: None,
            dos_time,
            dos_date,
            zip64_from: u64::from(u32::MAX),
        }
    }

    #[cfg(test)]
    fn with_zip64_from(mut self, threshold: u64) -> ZipWriter {
        self.zip64_from = threshold;
        self
    }

    fn big(&self, v: u64) -> bool {
        v >= self.zip64_from
    }

    /// Bytes written so far.
    #[cfg(test)]
    fn offset(&self) -> u64 {
        self.offset
    }

    /// The local file header of an entry of `size` bytes named `name`.
    /// CRC and sizes are zero here (bit 3): the data descriptor carries
    /// them (APPNOTE 4.3.9.1). An entry whose size needs ZIP64 gets the
    /// ZIP64 extra field with both sizes, as 4.5.3 requires.
    pub fn begin_entry(&mut self, name: &str, size: u64) -> Bytes {
        let zip64 = self.big(size);
        let name_bytes = name.as_bytes();
        let mut out = BytesMut::with_capacity(30 + name_bytes.len() + 20);
        out.put_u32_le(LOCAL_HEADER);
        out.put_u16_le(if zip64 { VERSION_45 } else { VERSION_20 });
        out.put_u16_le(FLAG_DATA_DESCRIPTOR);
        out.put_u16_le(STORED);
        out.put_u16_le(self.dos_time);
        out.put_u16_le(self.dos_date);
        out.put_u32_le(0); // CRC-32: in the data descriptor
        let sizes = if zip64 { u32::MAX } else { 0 };
        out.put_u32_le(sizes);
        out.put_u32_le(sizes);
        out.put_u16_le(len16(name_bytes.len()));
        out.put_u16_le(if zip64 { 20 } else { 0 });
        out.put_slice(name_bytes);
        if zip64 {
            out.put_u16_le(ZIP64_EXTRA);
            out.put_u16_le(16);
            out.put_u64_le(0);
            out.put_u64_le(0);
        }
        self.open = Some(Entry {
            name: name.to_owned(),
            offset: self.offset,
            size,
            crc: 0,
            zip64,
        });
        self.offset += out.len() as u64;
        out.freeze()
    }

    /// The data descriptor of the open entry, after its `written` bytes
    /// whose CRC-32 is `crc`. A size other than the announced one is an
    /// error (the local header and the planned length depend on it).
    pub fn end_entry(&mut self, crc: u32, written: u64) -> Result<Bytes, ZipError> {
        let mut entry = self.open.take().ok_or(ZipError::NoEntry)?;
        if written != entry.size {
            return Err(ZipError::SizeMismatch {
                name: entry.name,
                announced: entry.size,
                written,
            });
        }
        entry.crc = crc;
        self.offset += written;
        let mut out = BytesMut::with_capacity(24);
        out.put_u32_le(DATA_DESCRIPTOR);
        out.put_u32_le(crc);
        if entry.zip64 {
            out.put_u64_le(written);
            out.put_u64_le(written);
        } else {
            out.put_u32_le(len32(written));
            out.put_u32_le(len32(written));
        }
        self.offset += out.len() as u64;
        self.entries.push(entry);
        Ok(out.freeze())
    }

    /// The central directory and the end records (ZIP64 ones when the
    /// count, size or offset of the directory need them: APPNOTE 4.4.1.4).
    pub fn finish(self) -> Bytes {
        let cd_start = self.offset;
        let mut out = BytesMut::new();
        for e in &self.entries {
            let big_size = self.big(e.size);
            let big_offset = self.big(e.offset);
            let mut extra = BytesMut::new();
            if big_size || big_offset {
                let mut fields = BytesMut::new();
                if big_size {
                    fields.put_u64_le(e.size); // uncompressed
                    fields.put_u64_le(e.size); // compressed
                }
                if big_offset {
                    fields.put_u64_le(e.offset);
                }
                extra.put_u16_le(ZIP64_EXTRA);
                extra.put_u16_le(len16(fields.len()));
                extra.put_slice(&fields);
            }
            let needs_45 = e.zip64 || big_offset;
            let version = if needs_45 { VERSION_45 } else { VERSION_20 };
            out.put_u32_le(CENTRAL_HEADER);
            out.put_u16_le(MADE_BY_UNIX | version);
            out.put_u16_le(version);
            out.put_u16_le(FLAG_DATA_DESCRIPTOR);
            out.put_u16_le(STORED);
            out.put_u16_le(self.dos_time);
            out.put_u16_le(self.dos_date);
            out.put_u32_le(e.crc);
            let size = if big_size { u32::MAX } else { len32(e.size) };
            out.put_u32_le(size);
            out.put_u32_le(size);
            out.put_u16_le(len16(e.name.len()));
            out.put_u16_le(len16(extra.len()));
            out.put_u16_le(0); // comment length
            out.put_u16_le(0); // disk number start
            out.put_u16_le(0); // internal attributes
            out.put_u32_le(EXTERNAL_ATTRS);
            out.put_u32_le(if big_offset {
                u32::MAX
            } else {
                len32(e.offset)
            });
            out.put_slice(e.name.as_bytes());
            out.put_slice(&extra);
        }
        let cd_size = out.len() as u64;
        let count = self.entries.len() as u64;
        let zip64_end = count >= 0xFFFF || self.big(cd_size) || self.big(cd_start);
        if zip64_end {
            let zip64_end_at = cd_start + cd_size;
            out.put_u32_le(ZIP64_END);
            out.put_u64_le(44); // size of the rest of this record
            out.put_u16_le(MADE_BY_UNIX | VERSION_45);
            out.put_u16_le(VERSION_45);
            out.put_u32_le(0); // this disk
            out.put_u32_le(0); // disk with the central directory
            out.put_u64_le(count);
            out.put_u64_le(count);
            out.put_u64_le(cd_size);
            out.put_u64_le(cd_start);
            out.put_u32_le(ZIP64_LOCATOR);
            out.put_u32_le(0);
            out.put_u64_le(zip64_end_at);
            out.put_u32_le(1); // total disks
        }
        let count16 = if zip64_end {
            0xFFFF
        } else {
            u16::try_from(count).unwrap_or(0xFFFF)
        };
        out.put_u32_le(END);
        out.put_u16_le(0);
        out.put_u16_le(0);
        out.put_u16_le(count16);
        out.put_u16_le(count16);
        out.put_u32_le(if zip64_end { u32::MAX } else { len32(cd_size) });
        out.put_u32_le(if zip64_end { u32::MAX } else { len32(cd_start) });
        out.put_u16_le(0); // comment length
        out.freeze()
    }
}

/// The exact length of the archive of these entries (name, size), in the
/// order given: what [`ZipWriter`] produces for them.
pub fn archive_len<'a>(entries: impl IntoIterator<Item = (&'a str, u64)>) -> u64 {
    let mut w = ZipWriter::new(UNIX_EPOCH);
    let mut total = 0u64;
    for (name, size) in entries {
        total += w.begin_entry(name, size).len() as u64;
        // The CRC does not change any length.
        total += size;
        total += w.end_entry(0, size).map_or(0, |d| d.len() as u64);
    }
    total + w.finish().len() as u64
}

/// A 16-bit length field; names and extra fields are short by
/// construction.
fn len16(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

/// A 32-bit field whose value is below the ZIP64 threshold.
fn len32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// MS-DOS date and time (APPNOTE 4.4.6) of `t` in UTC; dates before 1980
/// become 1980-01-01.
fn dos_date_time(t: SystemTime) -> (u16, u16) {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    if y < 1980 {
        return ((1 << 5) | 1, 0);
    }
    let year = u16::try_from((y - 1980).min(127)).unwrap_or(127);
    let date = (year << 9) | ((m as u16) << 5) | d as u16;
    let (h, min, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    let time = ((h as u16) << 11) | ((min as u16) << 5) | (s / 2) as u16;
    (date, time)
}

/// The proleptic Gregorian date of a day count since 1970-01-01.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Write;
    use std::process::Command;
    use std::time::Duration;

    /// Writes an archive of `files` with the given ZIP64 threshold.
    fn archive(files: &[(String, Vec<u8>)], zip64_from: u64) -> Vec<u8> {
        let t = UNIX_EPOCH + Duration::from_secs(1_765_000_000);
        let mut w = ZipWriter::new(t).with_zip64_from(zip64_from);
        let mut out = Vec::new();
        for (name, data) in files {
            out.extend_from_slice(&w.begin_entry(name, data.len() as u64));
            out.extend_from_slice(data);
            let crc = crc32fast::hash(data);
            out.extend_from_slice(&w.end_entry(crc, data.len() as u64).unwrap());
        }
        assert_eq!(w.offset(), out.len() as u64);
        out.extend_from_slice(&w.finish());
        out
    }

    fn files(n: usize) -> Vec<(String, Vec<u8>)> {
        (0..n)
            .map(|i| {
                let data: Vec<u8> = (0..(i * 37) % 3000).map(|b| (b * 7 + i) as u8).collect();
                (format!("DICOM/SE{:06}/IM{:06}", i / 10, i), data)
            })
            .collect()
    }

    /// Checks an archive with Python's zipfile (testzip, names, contents)
    /// and `unzip -t`, when they are installed.
    fn check_with_peers(bytes: &[u8], files: &[(String, Vec<u8>)]) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.zip");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(bytes)
            .unwrap();
        let script = r#"
import sys, zipfile, hashlib
z = zipfile.ZipFile(sys.argv[1])
assert z.testzip() is None
for i in z.infolist():
    assert i.compress_type == zipfile.ZIP_STORED
    print(i.filename, i.file_size, hashlib.sha256(z.read(i)).hexdigest())
"#;
        let python = std::env::var("PACS_PYTHON").unwrap_or_else(|_| "python3".into());
        let out = Command::new(python)
            .args(["-c", script])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let want: Vec<String> = files
            .iter()
            .map(|(n, d)| {
                use sha2::Digest;
                format!("{n} {} {}", d.len(), hex::encode(sha2::Sha256::digest(d)))
            })
            .collect();
        let got: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(got, want);
        if std::path::Path::new("/usr/bin/unzip").exists() {
            let out = Command::new("/usr/bin/unzip")
                .arg("-tq")
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "unzip -t: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    #[test]
    fn plain_archive_reads_back_with_python_and_unzip() {
        let f = files(25);
        let bytes = archive(&f, u64::from(u32::MAX));
        let names = f.iter().map(|(n, d)| (n.as_str(), d.len() as u64));
        assert_eq!(archive_len(names), bytes.len() as u64);
        check_with_peers(&bytes, &f);
    }

    #[test]
    fn zip64_entries_and_offsets_read_back() {
        // Every size and offset at or above 100 bytes goes in ZIP64 form.
        let f = files(25);
        let bytes = archive(&f, 100);
        // A ZIP64 end of central directory record and its locator.
        let has = |sig: u32| bytes.windows(4).any(|w| w == sig.to_le_bytes());
        assert!(has(ZIP64_END) && has(ZIP64_LOCATOR));
        check_with_peers(&bytes, &f);
    }

    #[test]
    fn more_than_65535_entries_use_zip64_end_records() {
        let f: Vec<(String, Vec<u8>)> = (0..70_000)
            .map(|i| (format!("F{i:07}"), vec![(i % 251) as u8; i % 3]))
            .collect();
        let bytes = archive(&f, u64::from(u32::MAX));
        let end = &bytes[bytes.len() - 22..];
        assert_eq!(&end[..4], &END.to_le_bytes());
        assert_eq!(&end[8..10], &[0xFF, 0xFF]);
        check_with_peers(&bytes, &f);
    }

    #[test]
    fn a_size_other_than_announced_is_refused() {
        let mut w = ZipWriter::new(UNIX_EPOCH);
        w.begin_entry("A", 10);
        assert_eq!(
            w.end_entry(0, 9),
            Err(ZipError::SizeMismatch {
                name: "A".into(),
                announced: 10,
                written: 9
            })
        );
        assert_eq!(w.end_entry(0, 9), Err(ZipError::NoEntry));
    }

    #[test]
    fn dos_dates() {
        let t = UNIX_EPOCH + Duration::from_secs(1_765_000_000); // 2025-12-06 05:46:40
        let (date, time) = dos_date_time(t);
        assert_eq!(date, (45 << 9) | (12 << 5) | 6);
        assert_eq!(time, (5 << 11) | (46 << 5) | 20);
        assert_eq!(dos_date_time(UNIX_EPOCH), (33, 0));
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
    }
}
