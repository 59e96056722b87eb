//! The audit trail on local disk: an append-only, hash-chained log of DICOM
//! audit messages (PS3.15 A.5) under `DATA_DIR/audit/`, behind the
//! [`AuditSink`] port.
//!
//! # Format (version 1)
//! One file per UTC day, `audit-YYYY-MM-DD.log` (the day the record was
//! written), one JSON object per line, fields in this order:
//! `v` (format version, 1), `seq` (1, 2, ... across files), `prev` (the
//! previous record's `hash`; 64 zeros for the first record), `time`
//! (EventDateTime, UTC), `event` (the DCM event ID), `outcome`
//! (EventOutcomeIndicator), `users`, `patients`, `studies` (search keys
//! taken from the event), `msg` (the `AuditMessage` XML of PS3.15 A.5.1)
//! and `hash` = hex SHA-256 of the line's JSON without its `hash` field.
//! Every field but `hash` is under the hash, and `prev` chains each record
//! to the one before, across files and restarts (the last record is read
//! back at open), so an edited, removed or reordered line breaks the chain
//! at that line. Truncating the newest records is not detectable from the
//! log alone (nothing comes after them).
//!
//! # Durability
//! [`AuditSink::record`] returns after its line is written and
//! `fdatasync`ed. One writer thread takes every record waiting, writes them
//! with one `write` and one `fdatasync` (group commit), then answers each.
//! If the write or the sync fails, every record of that batch is answered
//! with an error and the file is cut back to where it was; if even that
//! fails, the log refuses every further record until restart.
//!
//! Non-goals: no network transport (`audit_syslog` tails this log to a
//! syslog collector); no rotation by size; only one process writes a data
//! directory's log (the index's lock already ensures one `pacs serve` per
//! data directory).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::SystemTime;

use async_trait::async_trait;
use pacs_core::audit::{AuditError, AuditEvent, AuditObject, AuditSink};
use pacs_core::audit_xml::{audit_message, utc_timestamp};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;
use tracing::{error, warn};

/// The format version written (and the only one read).
pub const AUDIT_FORMAT_VERSION: u32 = 1;
/// `prev` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Most records one group commit takes.
const MAX_BATCH: usize = 256;

/// One line of the log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    pub v: u32,
    pub seq: u64,
    pub prev: String,
    pub time: String,
    pub event: String,
    pub outcome: u8,
    pub users: Vec<String>,
    pub patients: Vec<String>,
    pub studies: Vec<String>,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hash: String,
}

impl AuditRecord {
    /// The hash this record must carry: SHA-256 of its JSON without `hash`.
    pub fn compute_hash(&self) -> String {
        let body = AuditRecord {
            hash: String::new(),
            ..self.clone()
        };
        // Serializing a struct of strings and integers cannot fail.
        let json = serde_json::to_string(&body).unwrap_or_default();
        hex::encode(Sha256::digest(json.as_bytes()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditLogError {
    #[error("audit log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit log {path} line {line}: {reason}")]
    Format {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> AuditLogError + '_ {
    move |source| AuditLogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The log file of the UTC day of `time`.
fn file_name(time: SystemTime) -> String {
    format!("audit-{}.log", &utc_timestamp(time)[..10])
}

/// The log files of `dir`, oldest first (their names sort by date).
pub fn log_files(dir: &Path) -> Result<Vec<PathBuf>, AuditLogError> {
    let mut files = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(io_err(dir)(e)),
    };
    for entry in rd {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("audit-") && name.ends_with(".log") {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Parses one line, refusing an unknown format version.
pub(crate) fn parse_line(
    path: &Path,
    line_no: usize,
    line: &str,
) -> Result<AuditRecord, AuditLogError> {
    let bad = |reason: String| AuditLogError::Format {
        path: path.to_path_buf(),
        line: line_no,
        reason,
    };
    let rec: AuditRecord =
        serde_json::from_str(line).map_err(|e| bad(format!("not an audit record: {e}")))?;
    if rec.v != AUDIT_FORMAT_VERSION {
        return Err(bad(format!(
            "format version {} is not known to this build (it reads version {AUDIT_FORMAT_VERSION})",
            rec.v
        )));
    }
    Ok(rec)
}

/// The last complete record of `path`, cutting off an unterminated tail
/// (a record whose write never completed, so never acknowledged).
fn last_record(path: &Path) -> Result<Option<AuditRecord>, AuditLogError> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err(path))?;
    let len = f.metadata().map_err(io_err(path))?.len();
    // Read backwards in growing chunks until the last full line is inside.
    let mut chunk = 64 * 1024u64;
    loop {
        let start = len.saturating_sub(chunk);
        f.seek(SeekFrom::Start(start)).map_err(io_err(path))?;
        let mut buf = Vec::with_capacity((len - start) as usize);
        Read::by_ref(&mut f)
            .take(len - start)
            .read_to_end(&mut buf)
            .map_err(io_err(path))?;
        let complete = match buf.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None if start == 0 => 0,
            None => {
                chunk *= 4;
                continue;
            }
        };
        if complete < buf.len() {
            warn!(file = %path.display(), bytes = buf.len() - complete,
                "audit log ends with an unfinished record (never acknowledged); cutting it off");
            f.set_len(start + complete as u64).map_err(io_err(path))?;
            f.sync_all().map_err(io_err(path))?;
        }
        let body = &buf[..complete];
        let body = body.strip_suffix(b"\n").unwrap_or(body);
        if body.is_empty() && start == 0 {
            return Ok(None);
        }
        match body.iter().rposition(|&b| b == b'\n') {
            Some(i) => {
                let line = String::from_utf8_lossy(&body[i + 1..]);
                return parse_line(path, 0, &line).map(Some);
            }
            None if start == 0 => {
                let line = String::from_utf8_lossy(body);
                return parse_line(path, 1, &line).map(Some);
            }
            None => chunk *= 4,
        }
    }
}

struct Job {
    event: AuditEvent,
    done: oneshot::Sender<Result<(), AuditError>>,
}

/// The writer thread's state.
struct Writer {
    dir: PathBuf,
    source_id: String,
    current: Option<(String, File)>,
    seq: u64,
    hash: String,
    /// A failed write could not be undone: refuse everything.
    poisoned: bool,
    /// The `seq` of the last record written and synced (what a forwarder
    /// may send).
    written: tokio::sync::watch::Sender<u64>,
}

/// The audit sink writing `DATA_DIR/audit/` (see the module documentation).
pub struct FileAuditLog {
    jobs: mpsc::SyncSender<Job>,
    dir: PathBuf,
    written: tokio::sync::watch::Receiver<u64>,
}

impl FileAuditLog {
    /// Opens (creating) the log in `dir`, continuing the chain from its last
    /// record. `source_id` names this archive in every message
    /// (AuditSourceID: the AE title).
    pub fn open(dir: &Path, source_id: &str) -> Result<FileAuditLog, AuditLogError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let (seq, hash) = match log_files(dir)?.last() {
            Some(last) => match last_record(last)? {
                Some(r) => (r.seq, r.hash),
                None => (0, GENESIS_HASH.to_owned()),
            },
            None => (0, GENESIS_HASH.to_owned()),
        };
        let (written_tx, written) = tokio::sync::watch::channel(seq);
        let writer = Writer {
            dir: dir.to_path_buf(),
            source_id: source_id.to_owned(),
            current: None,
            seq,
            hash,
            poisoned: false,
            written: written_tx,
        };
        let (jobs, rx) = mpsc::sync_channel::<Job>(4 * MAX_BATCH);
        std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || writer.run(rx))
            .map_err(io_err(dir))?;
        Ok(FileAuditLog {
            jobs,
            dir: dir.to_path_buf(),
            written,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `seq` of the last record written and synced, updated after each
    /// group commit; it closes when the writer stops (see
    /// [`crate::audit_syslog`]).
    pub fn written(&self) -> tokio::sync::watch::Receiver<u64> {
        self.written.clone()
    }
}

#[async_trait]
impl AuditSink for FileAuditLog {
    async fn record(&self, event: AuditEvent) -> Result<(), AuditError> {
        let (done, answer) = oneshot::channel();
        let stopped = || AuditError::Write("the audit writer has stopped".into());
        match self.jobs.try_send(Job { event, done }) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(job)) => {
                // The queue is full: wait for room off the runtime.
                let jobs = self.jobs.clone();
                let sent = tokio::task::spawn_blocking(move || jobs.send(job).is_ok())
                    .await
                    .unwrap_or(false);
                if !sent {
                    return Err(stopped());
                }
            }
            Err(mpsc::TrySendError::Disconnected(_)) => return Err(stopped()),
        }
        answer.await.map_err(|_| stopped())?
    }
}

/// The search keys of an event: who, which patients, which studies.
fn keys(event: &AuditEvent) -> (Vec<String>, Vec<String>, Vec<String>) {
    let mut users = Vec::new();
    for a in &event.actors {
        for u in std::iter::once(&a.user_id).chain(a.alt_user_id.as_ref()) {
            if !u.is_empty() && !users.contains(u) {
                users.push(u.clone());
            }
        }
    }
    let mut patients = Vec::new();
    let mut studies = Vec::new();
    for o in &event.objects {
        match o {
            AuditObject::Patient { id, .. } if !patients.contains(id) => patients.push(id.clone()),
            AuditObject::Study { uid } if !studies.contains(uid) => studies.push(uid.clone()),
            _ => {}
        }
    }
    (users, patients, studies)
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Job>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(j) => batch.push(j),
                    Err(_) => break,
                }
            }
            let result = self.write_batch(batch.iter().map(|j| &j.event));
            if result.is_ok() {
                self.written.send_replace(self.seq);
            }
            for job in batch {
                let answer = match &result {
                    Ok(()) => Ok(()),
                    Err(AuditError::Write(m)) => Err(AuditError::Write(m.clone())),
                };
                let _ = job.done.send(answer);
            }
        }
    }

    fn write_batch<'a>(
        &mut self,
        events: impl Iterator<Item = &'a AuditEvent>,
    ) -> Result<(), AuditError> {
        if self.poisoned {
            return Err(AuditError::Write(
                "the audit log is unusable after an earlier failed write".into(),
            ));
        }
        let (seq0, hash0) = (self.seq, self.hash.clone());
        let mut text = String::new();
        for event in events {
            let (users, patients, studies) = keys(event);
            let mut rec = AuditRecord {
                v: AUDIT_FORMAT_VERSION,
                seq: self.seq + 1,
                prev: self.hash.clone(),
                time: utc_timestamp(event.time),
                event: event.id.code().to_owned(),
                outcome: event.outcome.code(),
                users,
                patients,
                studies,
                msg: audit_message(event, &self.source_id),
                hash: String::new(),
            };
            rec.hash = rec.compute_hash();
            let line = serde_json::to_string(&rec)
                .map_err(|e| AuditError::Write(format!("cannot encode the record: {e}")))?;
            text.push_str(&line);
            text.push('\n');
            self.seq = rec.seq;
            self.hash = rec.hash;
        }
        let result = self.append(text.as_bytes());
        if let Err(e) = &result {
            error!(error = %e, "audit record not written");
            self.seq = seq0;
            self.hash = hash0;
        }
        result
    }

    /// Appends to today's file and syncs; on failure cuts the file back.
    fn append(&mut self, bytes: &[u8]) -> Result<(), AuditError> {
        let name = file_name(SystemTime::now());
        if self.current.as_ref().map(|(n, _)| n) != Some(&name) {
            let path = self.dir.join(&name);
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| AuditError::Write(format!("{}: {e}", path.display())))?;
            // A new file's directory entry must survive a crash too.
            if let Ok(d) = File::open(&self.dir) {
                let _ = d.sync_all();
            }
            self.current = Some((name, f));
        }
        let Some((name, f)) = self.current.as_mut() else {
            return Err(AuditError::Write("no audit file open".into()));
        };
        let before = f.metadata().map(|m| m.len());
        let written = f.write_all(bytes).and_then(|()| f.sync_data());
        if let Err(e) = written {
            let undone = before.and_then(|len| f.set_len(len).and_then(|()| f.sync_data()));
            if undone.is_err() {
                self.poisoned = true;
            }
            return Err(AuditError::Write(format!("{name}: {e}")));
        }
        Ok(())
    }
}

/// Where `verify` found the chain broken.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BrokenAt {
    pub file: PathBuf,
    pub line: usize,
    pub reason: String,
}

/// What `verify` found.
#[derive(Debug, Clone, Serialize, Default)]
pub struct VerifyReport {
    pub files: usize,
    pub records: u64,
    /// The first line where the chain does not hold.
    pub broken: Option<BrokenAt>,
}

/// Checks every record of `dir` in order: its hash, its sequence number and
/// its link to the record before. Stops at the first break. A last line
/// without its newline (a record being written) is not counted.
pub fn verify(dir: &Path) -> Result<VerifyReport, AuditLogError> {
    let mut report = VerifyReport::default();
    let mut prev = GENESIS_HASH.to_owned();
    let mut seq = 0u64;
    for path in log_files(dir)? {
        report.files += 1;
        let f = File::open(&path).map_err(io_err(&path))?;
        let mut reader = BufReader::new(f);
        let mut line_no = 0usize;
        let mut buf = String::new();
        loop {
            buf.clear();
            let n = reader.read_line(&mut buf).map_err(io_err(&path))?;
            if n == 0 || !buf.ends_with('\n') {
                break;
            }
            line_no += 1;
            let broken = |reason: String| BrokenAt {
                file: path.clone(),
                line: line_no,
                reason,
            };
            let rec = match parse_line(&path, line_no, buf.trim_end_matches('\n')) {
                Ok(r) => r,
                Err(e) => {
                    report.broken = Some(broken(e.to_string()));
                    return Ok(report);
                }
            };
            let why = if rec.compute_hash() != rec.hash {
                Some("the record does not match its hash (edited)".to_owned())
            } else if rec.seq != seq + 1 {
                Some(format!(
                    "sequence number {} where {} was expected (a record removed or reordered)",
                    rec.seq,
                    seq + 1
                ))
            } else if rec.prev != prev {
                Some("does not chain to the record before (removed or reordered)".to_owned())
            } else {
                None
            };
            if let Some(why) = why {
                report.broken = Some(broken(why));
                return Ok(report);
            }
            seq = rec.seq;
            prev = rec.hash;
            report.records += 1;
        }
    }
    Ok(report)
}

/// Which records `search` returns; empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub patient: Option<String>,
    pub user: Option<String>,
    pub study: Option<String>,
    /// Inclusive: `YYYY-MM-DD` or a full UTC timestamp.
    pub from: Option<String>,
    /// Inclusive: `YYYY-MM-DD` (the whole day) or a full UTC timestamp.
    pub to: Option<String>,
    /// Stop after this many matches (0: no limit).
    pub limit: usize,
}

impl AuditFilter {
    pub fn matches(&self, r: &AuditRecord) -> bool {
        let has = |want: &Option<String>, set: &[String]| {
            want.as_ref().is_none_or(|w| set.iter().any(|v| v == w))
        };
        let after_from = self
            .from
            .as_ref()
            .is_none_or(|f| r.time.as_str() >= f.as_str());
        let before_to = self.to.as_ref().is_none_or(|t| {
            if t.len() == 10 {
                r.time.get(..10).is_some_and(|day| day <= t.as_str())
            } else {
                r.time.as_str() <= t.as_str()
            }
        });
        has(&self.patient, &r.patients)
            && has(&self.user, &r.users)
            && has(&self.study, &r.studies)
            && after_from
            && before_to
    }

    /// Whether the file of day `day` (`YYYY-MM-DD`) can hold matches.
    fn day_may_match(&self, day: &str) -> bool {
        self.from
            .as_ref()
            .is_none_or(|f| day >= f.get(..10).unwrap_or(f))
            && self
                .to
                .as_ref()
                .is_none_or(|t| day <= t.get(..10).unwrap_or(t))
    }
}

/// The records of `dir` that `filter` selects, oldest first. Unreadable
/// lines are skipped (`verify` names them).
pub fn search(dir: &Path, filter: &AuditFilter) -> Result<Vec<AuditRecord>, AuditLogError> {
    let mut out = Vec::new();
    for path in log_files(dir)? {
        let day = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("audit-"))
            .and_then(|n| n.strip_suffix(".log"))
            .unwrap_or("");
        if !filter.day_may_match(day) {
            continue;
        }
        let f = File::open(&path).map_err(io_err(&path))?;
        for (i, line) in BufReader::new(f).lines().enumerate() {
            let line = line.map_err(io_err(&path))?;
            let Ok(rec) = parse_line(&path, i + 1, &line) else {
                continue;
            };
            if filter.matches(&rec) {
                out.push(rec);
                if filter.limit > 0 && out.len() >= filter.limit {
                    return Ok(out);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use pacs_core::audit::{AuditAction, AuditActor, AuditEventId, AuditOutcome};

    fn event(user: &str, patient: &str) -> AuditEvent {
        AuditEvent::new(
            AuditEventId::InstancesTransferred,
            AuditAction::Read,
            AuditOutcome::Success,
        )
        .actor(AuditActor {
            user_id: user.into(),
            requestor: true,
            ..AuditActor::default()
        })
        .object(AuditObject::Patient {
            id: patient.into(),
            name: None,
        })
        .object(AuditObject::Study {
            uid: "1.2.3".into(),
        })
    }

    fn lines(dir: &Path) -> Vec<String> {
        log_files(dir)
            .unwrap()
            .iter()
            .flat_map(|p| {
                std::fs::read_to_string(p)
                    .unwrap()
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[tokio::test]
    async fn chain_continues_across_reopen_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let log = FileAuditLog::open(dir.path(), "PACS").unwrap();
        log.record(event("ALICE", "P1")).await.unwrap();
        log.record(event("BOB", "P2")).await.unwrap();
        drop(log);
        let log = FileAuditLog::open(dir.path(), "PACS").unwrap();
        log.record(event("ALICE", "P3")).await.unwrap();
        let report = verify(dir.path()).unwrap();
        assert_eq!(report.records, 3);
        assert_eq!(report.broken, None);
        let recs: Vec<AuditRecord> = lines(dir.path())
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(recs[2].seq, 3);
        assert_eq!(recs[2].prev, recs[1].hash);
        assert_eq!(recs[0].prev, GENESIS_HASH);
        assert!(recs[0].msg.starts_with("<AuditMessage>"));

        let by_user = AuditFilter {
            user: Some("ALICE".into()),
            ..AuditFilter::default()
        };
        let found = search(dir.path(), &by_user).unwrap();
        assert_eq!(found.len(), 2);
        let by_patient = AuditFilter {
            patient: Some("P2".into()),
            ..AuditFilter::default()
        };
        assert_eq!(search(dir.path(), &by_patient).unwrap()[0].seq, 2);
        let before_1971 = AuditFilter {
            to: Some("1971-01-01".into()),
            ..AuditFilter::default()
        };
        assert!(search(dir.path(), &before_1971).unwrap().is_empty());
    }

    fn rewrite(dir: &Path, f: impl FnOnce(&mut Vec<String>)) {
        let path = log_files(dir).unwrap().pop().unwrap();
        let mut l: Vec<String> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        f(&mut l);
        std::fs::write(&path, l.join("\n") + "\n").unwrap();
    }

    async fn three(dir: &Path) {
        let log = FileAuditLog::open(dir, "PACS").unwrap();
        for p in ["P1", "P2", "P3"] {
            log.record(event("U", p)).await.unwrap();
        }
    }

    #[tokio::test]
    async fn verify_names_the_first_bad_line() {
        // Edited.
        let dir = tempfile::tempdir().unwrap();
        three(dir.path()).await;
        rewrite(dir.path(), |l| l[1] = l[1].replace("P2", "P9"));
        let b = verify(dir.path()).unwrap().broken.unwrap();
        assert_eq!(b.line, 2);
        assert!(b.reason.contains("hash"), "{}", b.reason);
        // Removed.
        let dir = tempfile::tempdir().unwrap();
        three(dir.path()).await;
        rewrite(dir.path(), |l| {
            l.remove(1);
        });
        assert_eq!(verify(dir.path()).unwrap().broken.unwrap().line, 2);
        // Reordered.
        let dir = tempfile::tempdir().unwrap();
        three(dir.path()).await;
        rewrite(dir.path(), |l| l.swap(0, 1));
        assert_eq!(verify(dir.path()).unwrap().broken.unwrap().line, 1);
        // An unknown format version is refused at open.
        let dir = tempfile::tempdir().unwrap();
        three(dir.path()).await;
        rewrite(dir.path(), |l| {
            let last = l.len() - 1;
            l[last] = l[last].replace("{\"v\":1,", "{\"v\":9,")
        });
        let e = FileAuditLog::open(dir.path(), "PACS").err().unwrap();
        assert!(e.to_string().contains("format version 9"), "{e}");
    }

    #[tokio::test]
    async fn an_unfinished_last_record_is_cut_at_open() {
        let dir = tempfile::tempdir().unwrap();
        three(dir.path()).await;
        let path = log_files(dir.path()).unwrap().pop().unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"v\":1,\"seq\":4,\"prev\":\"ab").unwrap();
        drop(f);
        let log = FileAuditLog::open(dir.path(), "PACS").unwrap();
        log.record(event("U", "P4")).await.unwrap();
        let report = verify(dir.path()).unwrap();
        assert_eq!((report.records, report.broken), (4, None));
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_failed_write_is_an_error() {
        // Today's file is /dev/full: every write fails with ENOSPC.
        let dir = tempfile::tempdir().unwrap();
        let name = file_name(SystemTime::now());
        std::os::unix::fs::symlink("/dev/full", dir.path().join(&name)).unwrap();
        let log = FileAuditLog::open(dir.path(), "PACS").unwrap();
        let r = log.record(event("U", "P1")).await;
        assert!(matches!(r, Err(AuditError::Write(_))), "{r:?}");
    }
}
