//! The audit trail forwarded to a syslog collector: DICOM PS3.15 A.6
//! (Audit Trail Message Transmission Profile – SYSLOG-TLS), that is RFC 5424
//! messages carrying the `AuditMessage` XML, framed by octet counting
//! (RFC 5425 §4.3) on a stream the caller opens (TLS in `pacs serve`).
//!
//! # Spool
//! The local hash-chained log ([`crate::audit_log`]) is the record of
//! truth and also the spool: the forwarder tails it, sending each record
//! once its group commit is synced, in `seq` order, and remembers how far
//! it got in `DATA_DIR/audit/syslog.cursor` (format version 1: one JSON
//! object `{"v":1,"seq":N,"file":"audit-YYYY-MM-DD.log","offset":BYTES}`,
//! the last record sent and where the next one starts). Events recorded
//! while the collector is unreachable are sent, in order, once it is back,
//! also after a restart. The spool is bounded: when more than
//! `max_backlog` records wait, the oldest are skipped (they stay in the
//! local log) and a warning says how many. Delivery is at least once: a
//! record sent just before a crash or a dropped connection may be sent
//! again (RFC 5425 has no application acknowledgement).
//!
//! A new cursor (first start with a collector configured) starts after the
//! records already in the log when the forwarder starts.
//!
//! Non-goals: no TLS here (the caller's `connect` opens the stream); no
//! UDP (PS3.15 A.7); no structured data; a failure to forward never
//! refuses an action (only a failure to write the local log does).

use std::future::Future;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::audit_log::{log_files, parse_line, AuditLogError, AuditRecord};

/// MSGID of every message (PS3.15 A.6, A.7: "DICOM+RFC3881").
pub const MSGID: &str = "DICOM+RFC3881";
/// The cursor's file name under the audit directory.
pub const CURSOR_FILE: &str = "syslog.cursor";
/// The cursor's format version.
pub const CURSOR_FORMAT_VERSION: u32 = 1;
/// Most records read and sent between two cursor updates.
const BATCH: usize = 256;
/// The first wait before reconnecting.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// How messages are written and how the forwarder behaves.
#[derive(Debug, Clone)]
pub struct SyslogSettings {
    /// APP-NAME (RFC 5424 §6.2.5; printable US-ASCII, at most 48).
    pub app_name: String,
    /// HOSTNAME (RFC 5424 §6.2.4; printable US-ASCII, at most 255).
    pub hostname: String,
    /// Facility (0–23); PS3.15 A.6 asks for 10, security/authorization.
    pub facility: u8,
    /// Most records kept waiting for the collector before the oldest are
    /// skipped.
    pub max_backlog: u64,
    /// The longest wait between two connection attempts (the wait doubles
    /// from 1 s up to this).
    pub retry_max: Duration,
}

/// A byte stream to the collector (TLS in `pacs serve`).
pub trait SyslogStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> SyslogStream for T {}

/// Opens a new connection to the collector.
pub type SyslogConnect = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = std::io::Result<Box<dyn SyslogStream>>> + Send>>
        + Send
        + Sync,
>;

/// An RFC 5424 header field: printable US-ASCII only (RFC 5424 §6), at
/// most `max` characters, "-" (NILVALUE) when empty.
fn header_field(s: &str, max: usize) -> String {
    let f: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if f.is_empty() {
        "-".into()
    } else {
        f
    }
}

/// One record as a framed syslog message: `MSG-LEN SP SYSLOG-MSG`
/// (RFC 5425 §4.3), where SYSLOG-MSG is
/// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - BOM MSG` (RFC 5424
/// §6; the MSG is UTF-8, so it starts with a BOM, §6.4).
pub fn frame(settings: &SyslogSettings, procid: &str, rec: &AuditRecord) -> Vec<u8> {
    // PS3.15 A.6: severity 5 (notice) for most messages, 4 (warning) may
    // be used where the event says so: every failed outcome here.
    let severity: u16 = if rec.outcome == 0 { 5 } else { 4 };
    let pri = u16::from(settings.facility.min(23)) * 8 + severity;
    let mut msg = format!(
        "<{pri}>1 {} {} {} {} {MSGID} - ",
        header_field(&rec.time, 64),
        header_field(&settings.hostname, 255),
        header_field(&settings.app_name, 48),
        header_field(procid, 128),
    )
    .into_bytes();
    msg.extend_from_slice(b"\xEF\xBB\xBF");
    msg.extend_from_slice(rec.msg.as_bytes());
    let mut out = format!("{} ", msg.len()).into_bytes();
    out.extend_from_slice(&msg);
    out
}

/// How far the forwarder got: the last record sent, and where the next
/// record starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cursor {
    v: u32,
    seq: u64,
    /// The log file holding the next record (empty: not known yet).
    file: String,
    offset: u64,
}

fn cursor_path(dir: &Path) -> PathBuf {
    dir.join(CURSOR_FILE)
}

/// Reads the cursor; `None` when there is none. An unreadable cursor or
/// one of an unknown version is an error (the operator removes it to
/// start over from the current end of the log).
fn load_cursor(dir: &Path) -> Result<Option<Cursor>, AuditLogError> {
    let path = cursor_path(dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(AuditLogError::Io { path, source }),
    };
    let bad = |reason: String| AuditLogError::Format {
        path: path.clone(),
        line: 1,
        reason,
    };
    let c: Cursor =
        serde_json::from_str(text.trim()).map_err(|e| bad(format!("not a syslog cursor: {e}")))?;
    if c.v != CURSOR_FORMAT_VERSION {
        return Err(bad(format!(
            "format version {} is not known to this build (it reads version {CURSOR_FORMAT_VERSION})",
            c.v
        )));
    }
    Ok(Some(c))
}

/// Replaces the cursor (temporary file, then rename). Not synced: a lost
/// update only sends some records again.
fn save_cursor(dir: &Path, c: &Cursor) -> std::io::Result<()> {
    let tmp = dir.join(format!("{CURSOR_FILE}.tmp"));
    let json = serde_json::to_string(c).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, json + "\n")?;
    std::fs::rename(&tmp, cursor_path(dir))
}

/// Reads the records after `from.seq` up to `upto` (at most `max`), from
/// `from`'s place on; records below `skip_below` are passed over. Returns
/// them, the cursor after the last one, and how many were skipped.
fn read_batch(
    dir: &Path,
    from: &Cursor,
    upto: u64,
    skip_below: u64,
    max: usize,
) -> Result<(Vec<AuditRecord>, Cursor, u64), AuditLogError> {
    let mut out = Vec::new();
    let mut pos = from.clone();
    let mut skipped = 0u64;
    let files = log_files(dir)?;
    let name_of = |p: &PathBuf| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    if pos.file.is_empty() || !files.iter().any(|p| name_of(p) == pos.file) {
        // No place yet (or its file is gone): the records after `seq` are
        // in the newest file when `seq` is the log's end (a new cursor), or
        // from the oldest file on.
        let start = if from.seq > 0 && from.file.is_empty() {
            files.last()
        } else {
            files.first()
        };
        let Some(start) = start else {
            return Ok((out, pos, skipped));
        };
        pos.file = name_of(start);
        pos.offset = 0;
    }
    loop {
        let path = dir.join(&pos.file);
        let mut f = std::fs::File::open(&path).map_err(|source| AuditLogError::Io {
            path: path.clone(),
            source,
        })?;
        f.seek(SeekFrom::Start(pos.offset))
            .map_err(|source| AuditLogError::Io {
                path: path.clone(),
                source,
            })?;
        let mut reader = BufReader::new(f);
        let mut line = String::new();
        loop {
            line.clear();
            let n = reader
                .read_line(&mut line)
                .map_err(|source| AuditLogError::Io {
                    path: path.clone(),
                    source,
                })?;
            if n == 0 || !line.ends_with('\n') {
                break;
            }
            let rec = match parse_line(&path, 0, line.trim_end_matches('\n')) {
                Ok(r) => r,
                Err(e) => {
                    warn!(error = %e, "audit syslog: an unreadable record of the local log is not forwarded");
                    pos.offset += n as u64;
                    continue;
                }
            };
            if rec.seq > upto {
                return Ok((out, pos, skipped));
            }
            pos.offset += n as u64;
            if rec.seq <= pos.seq {
                continue;
            }
            pos.seq = rec.seq;
            if rec.seq < skip_below {
                skipped += 1;
                continue;
            }
            out.push(rec);
            if out.len() >= max {
                return Ok((out, pos, skipped));
            }
        }
        // The end of this file: go on with the next one, if any.
        match files
            .iter()
            .map(name_of)
            .find(|n| n.as_str() > pos.file.as_str())
        {
            Some(next) => {
                pos.file = next;
                pos.offset = 0;
            }
            None => return Ok((out, pos, skipped)),
        }
    }
}

/// Starts forwarding the log of `dir` (whose writer publishes its synced
/// `seq` on `written`) to the collector `connect` reaches. The task ends
/// when the log's writer stops and every record it wrote was sent.
pub fn spawn(
    dir: &Path,
    settings: SyslogSettings,
    written: watch::Receiver<u64>,
    connect: SyslogConnect,
) -> Result<tokio::task::JoinHandle<()>, AuditLogError> {
    let cursor = match load_cursor(dir)? {
        Some(c) => c,
        None => {
            let c = Cursor {
                v: CURSOR_FORMAT_VERSION,
                seq: *written.borrow(),
                file: String::new(),
                offset: 0,
            };
            save_cursor(dir, &c).map_err(|source| AuditLogError::Io {
                path: cursor_path(dir),
                source,
            })?;
            c
        }
    };
    let forwarder = Forwarder {
        dir: dir.to_path_buf(),
        settings,
        procid: std::process::id().to_string(),
        cursor,
        written,
        connect,
    };
    Ok(tokio::spawn(forwarder.run()))
}

struct Forwarder {
    dir: PathBuf,
    settings: SyslogSettings,
    procid: String,
    cursor: Cursor,
    written: watch::Receiver<u64>,
    connect: SyslogConnect,
}

/// Why a connection ended.
enum Ended {
    /// The log's writer stopped and everything was sent.
    Done,
    /// The connection failed or the collector closed it.
    Lost(String),
}

impl Forwarder {
    async fn run(mut self) {
        let mut retry = FIRST_RETRY;
        let mut writer_open = true;
        let mut down = false;
        loop {
            // Connect only when there is something to send.
            while self.cursor.seq >= *self.written.borrow_and_update() {
                if !writer_open || self.written.changed().await.is_err() {
                    return;
                }
            }
            let conn = match (self.connect)().await {
                Ok(c) => c,
                Err(e) => {
                    if !down {
                        warn!(error = %e, "audit syslog collector unreachable; records wait in the local log");
                        down = true;
                    }
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(self.settings.retry_max.max(FIRST_RETRY));
                    continue;
                }
            };
            if down {
                info!("audit syslog collector reachable again; sending the waiting records");
                down = false;
            }
            retry = FIRST_RETRY;
            match self.serve(conn, &mut writer_open).await {
                Ended::Done => return,
                Ended::Lost(why) => {
                    warn!(error = %why, "audit syslog connection lost; reconnecting");
                    tokio::time::sleep(retry).await;
                }
            }
        }
    }

    /// Sends on one connection until it fails or there is nothing more.
    async fn serve(&mut self, mut conn: Box<dyn SyslogStream>, writer_open: &mut bool) -> Ended {
        let mut scratch = [0u8; 512];
        loop {
            let upto = *self.written.borrow_and_update();
            if self.cursor.seq < upto {
                if let Err(why) = self.send_batch(&mut conn, upto).await {
                    return Ended::Lost(why);
                }
                continue;
            }
            if !*writer_open {
                let _ = conn.shutdown().await;
                return Ended::Done;
            }
            // Idle: wait for new records, or notice the collector closing.
            tokio::select! {
                changed = self.written.changed() => {
                    if changed.is_err() {
                        *writer_open = false;
                    }
                }
                read = conn.read(&mut scratch) => match read {
                    Ok(0) => return Ended::Lost("closed by the collector".into()),
                    Ok(_) => {}
                    Err(e) => return Ended::Lost(e.to_string()),
                }
            }
        }
    }

    /// Sends the next records up to `upto` and moves the cursor past them.
    async fn send_batch(
        &mut self,
        conn: &mut Box<dyn SyslogStream>,
        upto: u64,
    ) -> Result<(), String> {
        let backlog = upto - self.cursor.seq;
        let skip_below = if backlog > self.settings.max_backlog {
            upto - self.settings.max_backlog + 1
        } else {
            0
        };
        let dir = self.dir.clone();
        let from = self.cursor.clone();
        let read =
            tokio::task::spawn_blocking(move || read_batch(&dir, &from, upto, skip_below, BATCH))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
        let (records, next, skipped) = match read {
            Ok(r) => r,
            Err(e) => {
                // The local log cannot be read: wait and try again.
                warn!(error = %e, "audit syslog: cannot read the local log");
                tokio::time::sleep(self.settings.retry_max).await;
                return Ok(());
            }
        };
        if skipped > 0 {
            warn!(
                skipped,
                max_backlog = self.settings.max_backlog,
                "audit syslog backlog over its bound: the oldest records are not forwarded (they stay in the local log)"
            );
        }
        let mut bytes = Vec::new();
        for rec in &records {
            bytes.extend_from_slice(&frame(&self.settings, &self.procid, rec));
        }
        if !bytes.is_empty() {
            conn.write_all(&bytes).await.map_err(|e| e.to_string())?;
            conn.flush().await.map_err(|e| e.to_string())?;
        }
        if next == self.cursor {
            // Nothing readable yet past the cursor (a record being
            // renamed into view): wait for the next commit.
            tokio::time::sleep(FIRST_RETRY).await;
            return Ok(());
        }
        self.cursor = next;
        let dir = self.dir.clone();
        let c = self.cursor.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || save_cursor(&dir, &c)).await {
            warn!(error = %e, "audit syslog: cannot save the cursor (records may be sent again after a restart)");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::audit_log::FileAuditLog;
    use pacs_core::audit::{AuditAction, AuditEvent, AuditEventId, AuditOutcome, AuditSink};

    fn settings() -> SyslogSettings {
        SyslogSettings {
            app_name: "sen pacs".into(),
            hostname: "ward-1".into(),
            facility: 10,
            max_backlog: 3,
            retry_max: Duration::from_secs(1),
        }
    }

    fn rec(outcome: u8) -> AuditRecord {
        AuditRecord {
            v: 1,
            seq: 1,
            prev: String::new(),
            time: "2026-12-06T04:21:47.123Z".into(),
            event: "110112".into(),
            outcome,
            users: vec![],
            patients: vec![],
            studies: vec![],
            msg: "<AuditMessage>é</AuditMessage>".into(),
            hash: String::new(),
        }
    }

    #[test]
    fn frames_count_octets_and_follow_rfc_5424() {
        let f = frame(&settings(), "42", &rec(0));
        let text = String::from_utf8(f.clone()).unwrap();
        let (len, msg) = text.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), msg.len());
        assert_eq!(
            msg,
            "<85>1 2026-12-06T04:21:47.123Z ward-1 senpacs 42 DICOM+RFC3881 - \u{FEFF}<AuditMessage>é</AuditMessage>"
        );
        // A failure is a warning (severity 4): 10 * 8 + 4.
        let f = String::from_utf8(frame(&settings(), "42", &rec(8))).unwrap();
        assert!(f.contains(" <84>1 "), "{f}");
    }

    fn event() -> AuditEvent {
        AuditEvent::new(
            AuditEventId::Query,
            AuditAction::Execute,
            AuditOutcome::Success,
        )
    }

    #[tokio::test]
    async fn reads_across_files_from_the_cursor_and_bounds_the_backlog() {
        let dir = tempfile::tempdir().unwrap();
        let log = FileAuditLog::open(dir.path(), "PACS").unwrap();
        for _ in 0..3 {
            log.record(event()).await.unwrap();
        }
        // A second day's file continues the chain.
        let first = log_files(dir.path()).unwrap().pop().unwrap();
        let text = std::fs::read_to_string(&first).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        std::fs::write(&first, format!("{}\n", lines[0])).unwrap();
        std::fs::write(
            dir.path().join("audit-2999-01-01.log"),
            format!("{}\n{}\n", lines[1], lines[2]),
        )
        .unwrap();
        let start = Cursor {
            v: 1,
            seq: 0,
            file: String::new(),
            offset: 0,
        };
        let (recs, pos, skipped) = read_batch(dir.path(), &start, 3, 0, 10).unwrap();
        assert_eq!(recs.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(
            (pos.seq, pos.file.as_str(), skipped),
            (3, "audit-2999-01-01.log", 0)
        );
        // Only what was synced (`upto`), and at most `max`.
        let (recs, pos, _) = read_batch(dir.path(), &start, 2, 0, 10).unwrap();
        assert_eq!((recs.len(), pos.seq), (2, 2));
        let (recs, pos2, _) = read_batch(dir.path(), &pos, 3, 0, 10).unwrap();
        assert_eq!((recs[0].seq, pos2.seq), (3, 3));
        let (recs, _, _) = read_batch(dir.path(), &start, 3, 0, 1).unwrap();
        assert_eq!(recs.len(), 1);
        // Skipping below a bound.
        let (recs, _, skipped) = read_batch(dir.path(), &start, 3, 3, 10).unwrap();
        assert_eq!((recs.len(), recs[0].seq, skipped), (1, 3, 2));
        // The cursor round-trips; an unknown version is refused.
        save_cursor(dir.path(), &pos2).unwrap();
        assert_eq!(load_cursor(dir.path()).unwrap(), Some(pos2));
        std::fs::write(
            cursor_path(dir.path()),
            "{\"v\":7,\"seq\":1,\"file\":\"\",\"offset\":0}",
        )
        .unwrap();
        let e = load_cursor(dir.path()).unwrap_err();
        assert!(e.to_string().contains("format version 7"), "{e}");
    }
}
