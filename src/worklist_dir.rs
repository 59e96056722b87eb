//! `worklist_dir`: a folder of DICOM worklist files (`*.wl`, one item per
//! file, as Orthanc's worklist plugin reads them: Part 10 or a bare data
//! set in Explicit or Implicit VR Little Endian), kept in step with the
//! archive's orders so the Modality Worklist answers them.
//!
//! The folder is checked every `worklist_poll_seconds`; when the names,
//! sizes or modification times of its `.wl` files change, every file is
//! read again and the orders whose source is `worklist_dir` are made to
//! match: new steps inserted, changed ones replaced, those whose file went
//! away removed. A step's status set by MPPS survives a reload unless the
//! file itself says another status than SCHEDULED. A file that cannot be
//! read, is larger than `worklist_max_file_bytes`, or whose accession
//! number and SPS ID belong to an order from elsewhere is skipped with a
//! warning (its name only: no patient data in the log).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use pacs_core::audit::{AuditAction, AuditActor};
use pacs_core::dicom::{parse_dataset, parse_part10, TransferSyntax};
use pacs_core::orders::{order_event, OrderError, OrderFilter, OrderRecord, OrderSource};
use pacs_core::{Archive, Limits};
use tracing::{debug, info, warn};

/// What identifies the folder's state: each `.wl` file's name, size and
/// modification time.
type Snapshot = BTreeMap<PathBuf, (u64, Option<SystemTime>)>;

fn snapshot(dir: &Path) -> std::io::Result<Snapshot> {
    let mut out = Snapshot::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let is_wl = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("wl"));
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        if is_wl && meta.is_file() {
            out.insert(path, (meta.len(), meta.modified().ok()));
        }
    }
    Ok(out)
}

/// Reads one worklist file into the step it describes.
fn read_item(bytes: &[u8], limits: &Limits) -> Result<OrderRecord, String> {
    let dataset = match parse_part10(bytes, true, limits) {
        Ok(h) => h.dataset,
        Err(_) => {
            let explicit = parse_dataset(
                bytes,
                &TransferSyntax::explicit_vr_little_endian(),
                true,
                limits,
            );
            match explicit {
                Ok(h) if !h.dataset.is_empty() => h.dataset,
                _ => {
                    parse_dataset(
                        bytes,
                        &TransferSyntax::implicit_vr_little_endian(),
                        true,
                        limits,
                    )
                    .map_err(|e| format!("not a DICOM data set: {e}"))?
                    .dataset
                }
            }
        }
    };
    OrderRecord::from_worklist_item(&dataset).map_err(|e| e.to_string())
}

fn actor() -> AuditActor {
    AuditActor {
        user_id: "worklist_dir".into(),
        role: Some("Application".into()),
        requestor: true,
        ..AuditActor::default()
    }
}

/// The steps the folder describes, by (accession, SPS ID).
fn read_folder(
    files: &Snapshot,
    max_bytes: u64,
    limits: &Limits,
) -> HashMap<(String, String), OrderRecord> {
    let mut out = HashMap::new();
    for (path, (size, _)) in files {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name.unwrap_or_default();
        if *size > max_bytes {
            warn!(file = %name, size, max_bytes, "worklist file skipped: larger than worklist_max_file_bytes");
            continue;
        }
        let item = std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|b| read_item(&b, limits));
        match item {
            Ok(mut o) => {
                if o.requested_procedure_id.is_empty() {
                    o.requested_procedure_id = o.accession_number.clone();
                }
                if o.sps_id.is_empty() {
                    o.sps_id = o.accession_number.clone();
                }
                let key = (o.accession_number.clone(), o.sps_id.clone());
                if out.insert(key, o).is_some() {
                    warn!(file = %name, "worklist file skipped: another file has the same accession number and SPS ID");
                }
            }
            Err(e) => warn!(file = %name, error = %e, "worklist file skipped"),
        }
    }
    out
}

/// Makes the `worklist_dir` orders match `wanted`.
async fn apply(
    archive: &Archive,
    mut wanted: HashMap<(String, String), OrderRecord>,
) -> Result<(), OrderError> {
    let store = archive.orders().ok_or(OrderError::Unavailable)?;
    let current = store
        .list(&OrderFilter {
            source: Some(OrderSource::WorklistDir),
            ..OrderFilter::default()
        })
        .await?;
    let (mut added, mut changed, mut removed) = (0, 0, 0);
    for old in current {
        let key = (old.accession_number.clone(), old.sps_id.clone());
        match wanted.remove(&key) {
            None => {
                if store.remove(&old.id).await?.is_some() {
                    removed += 1;
                    pacs_core::orders::record(
                        archive,
                        order_event(AuditAction::Delete, &old, actor(), "worklist file removed"),
                    )
                    .await?;
                }
            }
            Some(mut new) => {
                new.id = old.id.clone();
                new.created = old.created;
                new.updated = old.updated;
                if new.study_instance_uid.is_empty() {
                    new.study_instance_uid = old.study_instance_uid.clone();
                }
                if new.status == pacs_core::orders::OrderStatus::Scheduled {
                    new.status = old.status;
                }
                if new != old {
                    let saved = store.replace(new).await?;
                    changed += 1;
                    pacs_core::orders::record(
                        archive,
                        order_event(
                            AuditAction::Update,
                            &saved,
                            actor(),
                            "worklist file changed",
                        ),
                    )
                    .await?;
                }
            }
        }
    }
    for (_, new) in wanted {
        match store.insert(new).await {
            Ok(saved) => {
                added += 1;
                pacs_core::orders::record(
                    archive,
                    order_event(AuditAction::Create, &saved, actor(), "worklist file added"),
                )
                .await?;
            }
            Err(OrderError::Duplicate { .. }) => {
                warn!("worklist file skipped: its accession number and SPS ID belong to an order from HL7 or the REST API");
            }
            Err(e) => return Err(e),
        }
    }
    info!(added, changed, removed, "worklist folder read");
    Ok(())
}

/// Watches `dir` until `stop` resolves.
pub async fn watch(
    archive: Archive,
    dir: PathBuf,
    poll: Duration,
    max_bytes: u64,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut last: Option<Snapshot> = None;
    loop {
        let d = dir.clone();
        match tokio::task::spawn_blocking(move || snapshot(&d)).await {
            Ok(Ok(now)) if last.as_ref() != Some(&now) => {
                let limits = archive.limits().clone();
                let files = now.clone();
                let wanted =
                    tokio::task::spawn_blocking(move || read_folder(&files, max_bytes, &limits))
                        .await
                        .unwrap_or_default();
                match apply(&archive, wanted).await {
                    Ok(()) => last = Some(now),
                    Err(e) => warn!(error = %e, "worklist folder not applied; will retry"),
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                debug!(error = %e, dir = %dir.display(), "worklist folder unreadable");
            }
            Err(e) => warn!(error = %e, "worklist folder task failed"),
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(poll) => {}
        }
    }
}
