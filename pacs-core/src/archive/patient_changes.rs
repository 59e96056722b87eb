//! The archive side of patient updates and merges (design piece 6; the
//! model is `crate::patients`): recording a change, rebuilding the index
//! rows of the studies it touches from their blobs, moving the patient's
//! pending orders, and coercing retrieved objects.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use tracing::{debug, info, warn};

use super::{Archive, ArchiveError, HeaderScan};

/// How many times a patient change is planned again when other nodes keep
/// recording changes while it is planned.
const MAX_CHANGE_ATTEMPTS: u32 = 10;
use crate::audit::{AuditAction, AuditActor, AuditEvent, AuditEventId, AuditObject, AuditOutcome};
use crate::dicom::tags;
use crate::patients::{
    ChangeKind, CoercionMap, Demographics, PatientChange, PatientCoercion, PatientError,
    PatientKey, PatientStore,
};
use crate::ports::PortError;
use crate::query::{Level, Query};
use crate::records::{normalize_person_name, InstanceAttributes, InstanceRecord, StudyRecord};
use crate::Uid;

/// Where changes are kept and the coercions in force.
#[derive(Default)]
pub(crate) struct PatientState {
    store: Option<Arc<dyn PatientStore>>,
    map: Arc<CoercionMap>,
    /// The newest change id the map is known to hold with every change
    /// before it (`None`: none yet). A change recorded here is put in the
    /// map without moving this (another node may have recorded one in
    /// between), so the next refresh reloads.
    seen: Option<u64>,
}

/// One requested change.
#[derive(Debug, Clone)]
pub struct PatientChangeRequest {
    pub kind: ChangeKind,
    /// The patient updated, or merged away.
    pub from: PatientKey,
    /// The surviving patient (`from` for an update).
    pub into: PatientKey,
    /// The values to set (for a merge: the survivor's, where given).
    pub demographics: Demographics,
    /// Who asked, for the history and the audit record.
    pub actor: AuditActor,
    /// `hl7` or `rest`.
    pub source: &'static str,
}

/// What a change did.
#[derive(Debug, Clone)]
pub struct PatientChangeOutcome {
    pub change: PatientChange,
    /// Studies whose index rows were rebuilt.
    pub studies: usize,
    /// Pending orders moved or corrected.
    pub orders: usize,
}

/// The keys a patient may be stored under: itself, and without an issuer
/// when it has one (objects often lack Issuer of Patient ID while the HIS
/// names its assigning authority).
fn aliases(key: &PatientKey) -> Vec<PatientKey> {
    let mut v = vec![key.clone()];
    if !key.issuer.is_empty() {
        v.push(PatientKey::new("", &key.patient_id));
    }
    v
}

fn demographics_of(study: &StudyRecord) -> Demographics {
    Demographics {
        name: Some(study.patient_name.clone()),
        birth_date: Some(study.patient_birth_date.clone()),
        sex: Some(study.patient_sex.clone()),
    }
}

impl Archive {
    /// Sets where patient changes are kept and loads the coercions in
    /// force. Call before `recover`, so adopted objects are coerced too.
    pub async fn set_patients(&self, store: Arc<dyn PatientStore>) -> Result<(), ArchiveError> {
        // The id first: every change up to it is in the coercions read after.
        let seen = store.latest_change_id().await?;
        let entries = store.coercions().await?;
        let mut state = self
            .inner
            .patients
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.map = Arc::new(CoercionMap::new(entries));
        state.store = Some(store);
        state.seen = seen;
        Ok(())
    }

    /// Reloads the coercions when the store holds a change this map may
    /// lack (one recorded by another node sharing the store, or by this
    /// one since the last reload): one indexed read when nothing moved.
    /// Study rows another node's change left uncoerced here (an object
    /// this node stored in between) are rebuilt. The number of studies
    /// rebuilt.
    pub async fn refresh_patients(&self) -> Result<usize, ArchiveError> {
        let Some(store) = self.patient_store() else {
            return Ok(0);
        };
        if store.latest_change_id().await? <= self.patients_seen() {
            return Ok(0);
        }
        let _gate = self.inner.patient_gate.lock().await;
        self.reload_patients(store.as_ref()).await
    }

    fn patients_seen(&self) -> Option<u64> {
        self.inner
            .patients
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .seen
    }

    /// [`Archive::refresh_patients`] with the patient gate held, so no
    /// change of this node is recorded between the read and the swap: the
    /// map read then holds every change the old one did.
    async fn reload_patients(&self, store: &dyn PatientStore) -> Result<usize, ArchiveError> {
        let latest = store.latest_change_id().await?;
        if latest <= self.patients_seen() {
            return Ok(0);
        }
        let entries = store.coercions().await?;
        let next = CoercionMap::new(entries.clone());
        let old = {
            let mut state = self
                .inner
                .patients
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Ids only move forward (`seen` is checked under the gate).
            state.seen = latest;
            std::mem::replace(&mut state.map, Arc::new(next))
        };
        let moved: Vec<(PatientKey, PatientCoercion)> = entries
            .into_iter()
            .filter(|(k, c)| old.get(k) != Some(c))
            .collect();
        if moved.is_empty() {
            return Ok(0);
        }
        info!(
            coercions = moved.len(),
            "patient changes of another node applied"
        );
        // Rows indexed here before the change arrived still show the old
        // values: rebuild those studies (the recording node rebuilt the
        // others).
        let mut stale = BTreeSet::new();
        for (k, c) in &moved {
            for study in self.studies_under(k).await? {
                if shows_other_values(&study, c) {
                    stale.insert(study.study_instance_uid);
                }
            }
        }
        for study in &stale {
            self.reindex_study(study).await?;
        }
        Ok(stale.len())
    }

    /// The coercions in force.
    pub fn coercions(&self) -> Arc<CoercionMap> {
        self.inner
            .patients
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .map
            .clone()
    }

    fn patient_store(&self) -> Option<Arc<dyn PatientStore>> {
        self.inner
            .patients
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .store
            .clone()
    }

    /// The changes recorded for a patient, oldest first.
    pub async fn patient_history(
        &self,
        key: &PatientKey,
    ) -> Result<Vec<PatientChange>, PatientError> {
        let store = self.patient_store().ok_or(PatientError::Unavailable)?;
        Ok(store.history(key).await?)
    }

    /// The studies the index holds under `key` (unscoped).
    async fn studies_under(&self, key: &PatientKey) -> Result<Vec<StudyRecord>, ArchiveError> {
        let mut q = Query::new(Level::Study);
        q.add_key(tags::PATIENT_ID, &key.patient_id)
            .map_err(|e| PortError::Index(e.to_string()))?;
        let wanted = key.index_key();
        let found = self.inner.index.find(&q).await?;
        Ok(found
            .matches
            .into_iter()
            .filter_map(|m| m.study)
            .filter(|s| s.patient_key == wanted)
            .collect())
    }

    /// Records a patient update or merge and applies it: the index rows of
    /// every study of the patient(s) are rebuilt from their blobs with the
    /// new values, the pending orders follow, and a Patient Record
    /// (110110, PS3.15 A.5.3) Update event is recorded.
    pub async fn change_patient(
        &self,
        req: PatientChangeRequest,
    ) -> Result<PatientChangeOutcome, PatientError> {
        req.from.validate()?;
        req.into.validate()?;
        req.demographics.validate()?;
        let merge = req.kind == ChangeKind::Merge;
        if merge && req.from == req.into {
            return Err(PatientError::Invalid(
                "a patient cannot be merged into itself".into(),
            ));
        }
        if !merge && req.from != req.into {
            return Err(PatientError::Invalid("an update names one patient".into()));
        }
        let store = self.patient_store().ok_or(PatientError::Unavailable)?;
        let _gate = self.inner.patient_gate.lock().await;
        let mut attempts = 0;
        // Planned on every change recorded so far, by any node, and
        // recorded only if no node recorded another meanwhile (then
        // planned again): two nodes changing related patients at once
        // cannot each build on a history without the other's change.
        loop {
            if let Err(e) = self.reload_patients(store.as_ref()).await {
                warn!(error = %e, "the patient changes of other nodes could not be reloaded before a change");
            }
            let seen = self.patients_seen();
            let map = self.coercions();
            let archive_err = |e: ArchiveError| PatientError::Archive(e.to_string());

            // The studies and coercions of the patient changed (`from`).
            let mut from_studies: Vec<StudyRecord> = Vec::new();
            let mut from_keys: Vec<PatientKey> = Vec::new();
            for k in aliases(&req.from) {
                let studies = self.studies_under(&k).await.map_err(archive_err)?;
                let coerced = !map.targeting(&k).is_empty();
                if k == req.from || !studies.is_empty() || coerced {
                    from_keys.push(k);
                }
                from_studies.extend(studies);
            }
            let orders = self.orders();
            let from_orders = match &orders {
                Some(o) => pending_orders(o.as_ref(), &from_keys).await?,
                None => Vec::new(),
            };
            let known = !from_studies.is_empty()
                || !from_orders.is_empty()
                || from_keys.iter().any(|k| !map.targeting(k).is_empty());
            if !known {
                return Err(PatientError::NotFound);
            }
            let before = from_studies
                .first()
                .map(demographics_of)
                .or_else(|| {
                    from_keys
                        .iter()
                        .flat_map(|k| map.targeting(k))
                        .map(|(_, c)| c.demographics)
                        .next()
                })
                .unwrap_or_default();

            let mut into_studies: Vec<StudyRecord> = Vec::new();
            let mut entries: Vec<(PatientKey, PatientCoercion)> = Vec::new();
            let mut into_orders = Vec::new();
            if merge {
                let mut into_keys = Vec::new();
                for k in aliases(&req.into) {
                    let studies = self.studies_under(&k).await.map_err(archive_err)?;
                    if k == req.into || !studies.is_empty() {
                        into_keys.push(k);
                    }
                    into_studies.extend(studies);
                }
                // The survivor's values as shown now, then what the HIS sent.
                let now = into_studies
                    .first()
                    .map(demographics_of)
                    .or_else(|| {
                        map.targeting(&req.into)
                            .into_iter()
                            .map(|(_, c)| c.demographics)
                            .next()
                    })
                    .unwrap_or_default();
                let survivor = now.overlaid(&req.demographics);
                for k in &from_keys {
                    let mut moved = map.targeting(k);
                    if !moved.iter().any(|(orig, _)| orig == k) {
                        moved.push((
                            k.clone(),
                            PatientCoercion {
                                target: k.clone(),
                                demographics: Demographics::default(),
                            },
                        ));
                    }
                    for (orig, c) in moved {
                        entries.push((
                            orig,
                            PatientCoercion {
                                target: req.into.clone(),
                                demographics: c.demographics.overlaid(&survivor),
                            },
                        ));
                    }
                }
                if !req.demographics.is_empty() {
                    entries.extend(updated(&map, &into_keys, &req.into, &req.demographics));
                }
                if let Some(o) = &orders {
                    into_orders = pending_orders(o.as_ref(), &into_keys).await?;
                }
            } else {
                if req.demographics.is_empty() {
                    return Err(PatientError::Invalid("nothing to change".into()));
                }
                entries = updated(&map, &from_keys, &req.into, &req.demographics);
            }

            let change = PatientChange {
                id: 0,
                time: crate::orders::now_secs(),
                actor: req.actor.user_id.clone(),
                source: req.source.to_owned(),
                kind: req.kind,
                from: req.from.clone(),
                into: req.into.clone(),
                before,
                after: req.demographics.clone(),
            };
            let Some(change) = store
                .record_if_latest(seen, change, entries.clone())
                .await?
            else {
                attempts += 1;
                if attempts >= MAX_CHANGE_ATTEMPTS {
                    return Err(PatientError::Archive(format!(
                    "other nodes recorded patient changes during each of {attempts} attempts; nothing was changed, try again"
                )));
                }
                info!(
                    attempts,
                    "another node recorded a patient change meanwhile; planning this one again"
                );
                continue;
            };
            {
                let mut state = self
                    .inner
                    .patients
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let mut next = (*state.map).clone();
                next.set(&entries);
                state.map = Arc::new(next);
            }
            info!(
                kind = req.kind.as_str(),
                change = change.id,
                "patient change recorded"
            );

            // Rebuild the index rows.
            let studies: BTreeSet<Uid> = from_studies
                .iter()
                .chain(into_studies.iter())
                .map(|s| s.study_instance_uid.clone())
                .collect();
            let mut failed = 0usize;
            for study in &studies {
                if let Err(e) = self.reindex_study(study).await {
                    failed += 1;
                    warn!(study = %study, error = %e, "a study's index rows could not be rebuilt after a patient change; run pacs reindex");
                }
            }

            // Pending orders follow the patient.
            let mut moved_orders = 0;
            if let Some(o) = &orders {
                let survivor = self
                    .studies_under(&req.into)
                    .await
                    .ok()
                    .and_then(|s| s.first().map(demographics_of))
                    .unwrap_or_default()
                    .overlaid(&req.demographics);
                for mut order in from_orders.into_iter().chain(into_orders) {
                    order.patient_id = req.into.patient_id.clone();
                    order.issuer_of_patient_id = req.into.issuer.clone();
                    let d = if merge { &survivor } else { &req.demographics };
                    if let Some(v) = &d.name {
                        order.patient_name = v.clone();
                    }
                    if let Some(v) = &d.birth_date {
                        order.patient_birth_date = v.clone();
                    }
                    if let Some(v) = &d.sex {
                        order.patient_sex = v.clone();
                    }
                    order.updated = crate::orders::now_secs();
                    match o.replace(order).await {
                        Ok(_) => moved_orders += 1,
                        Err(e) => {
                            warn!(error = %e, "a pending order could not follow a patient change")
                        }
                    }
                }
            }

            let mut event = AuditEvent::new(
                AuditEventId::PatientRecord,
                AuditAction::Update,
                if failed == 0 {
                    AuditOutcome::Success
                } else {
                    AuditOutcome::SeriousFailure
                },
            )
            .describe(format!(
                "patient {} (change {}, {}: {}; {} studies, {} orders)",
                if merge { "merged" } else { "updated" },
                change.id,
                req.source,
                changed_fields(&req.demographics, merge),
                studies.len(),
                moved_orders
            ))
            .actor(req.actor.clone())
            .object(AuditObject::Patient {
                id: req.from.patient_id.clone(),
                name: None,
            });
            if merge {
                event = event.object(AuditObject::Patient {
                    id: req.into.patient_id.clone(),
                    name: None,
                });
            }
            // The history entry holding who, when, the old and the new values.
            event = event.object(AuditObject::Other {
                kind: "patient-change".into(),
                id: change.id.to_string(),
            });
            for s in &studies {
                event = event.object(AuditObject::Study {
                    uid: s.as_str().to_owned(),
                });
            }
            self.audit()
                .record(event)
                .await
                .map_err(|e| PatientError::Audit(e.to_string()))?;
            if failed > 0 {
                return Err(PatientError::Archive(format!(
                "the change is recorded, but {failed} studies could not be re-indexed (run pacs reindex)"
            )));
            }
            return Ok(PatientChangeOutcome {
                change,
                studies: studies.len(),
                orders: moved_orders,
            });
        }
    }

    /// Rebuilds the index rows of one study from its blobs' headers with
    /// the coercions in force (one index transaction for the study).
    async fn reindex_study(&self, study: &Uid) -> Result<(), ArchiveError> {
        // Landed objects are moved first, so their rows carry no landing
        // mark the rebuild would drop.
        self.drain_landing().await?;
        let map = self.coercions();
        let limits = self.inner.limits.clone();
        let mut rows = Vec::new();
        for rec in self.inner.index.instances_of_study(study).await? {
            let (_, mut stream) = self.retrieve_stored(&rec.sop_instance_uid).await?;
            let mut scan = HeaderScan::new();
            while scan.header.is_none() {
                match stream.next().await {
                    Some(chunk) => scan
                        .feed(&chunk?, &limits)
                        .map_err(|e| PortError::Index(e.to_string()))?,
                    None => {
                        scan.finish(&limits)
                            .map_err(|e| PortError::Index(e.to_string()))?;
                        break;
                    }
                }
            }
            let header = scan
                .header
                .take()
                .ok_or_else(|| PortError::Index("header unreadable".into()))?;
            let mut attrs = InstanceAttributes::from_header(&header)
                .map_err(|e| PortError::Index(e.to_string()))?;
            attrs.instance.blob_key = rec.blob_key.clone();
            attrs.instance.size = rec.size;
            attrs.instance.sha256 = rec.sha256.clone();
            attrs.instance.received_at_ms = rec.received_at_ms;
            map.apply_to_attrs(&mut attrs);
            rows.push(attrs);
        }
        if rows.is_empty() {
            return Ok(());
        }
        self.inner.index.replace_study(study, rows).await?;
        self.inner.index.flush().await?;
        Ok(())
    }

    /// The stored stream of `record` with its header coerced when its
    /// patient was changed (see [`Archive::retrieve`]).
    pub(super) async fn coerce_retrieved(
        &self,
        mut record: InstanceRecord,
        mut stream: BoxStream<'static, Result<Bytes, PortError>>,
    ) -> Result<(InstanceRecord, BoxStream<'static, Result<Bytes, PortError>>), ArchiveError> {
        let map = self.coercions();
        if map.is_empty() {
            return Ok((record, stream));
        }
        let Some(study) = self.inner.index.study(&record.study_instance_uid).await? else {
            return Ok((record, stream));
        };
        if !map.is_target(&study.patient_key) {
            return Ok((record, stream));
        }
        let limits = &self.inner.limits;
        let mut scan = HeaderScan::new();
        let mut ended = false;
        while scan.header.is_none() {
            match stream.next().await {
                Some(chunk) => {
                    let chunk = chunk?;
                    if scan.feed(&chunk, limits).is_err() {
                        break;
                    }
                }
                None => {
                    ended = true;
                    let _ = scan.finish(limits);
                    break;
                }
            }
        }
        let prefix = std::mem::take(&mut scan.prefix);
        let coerced = scan.header.as_ref().and_then(|h| {
            let ds = &h.dataset;
            let original = PatientKey::new(
                &ds.string(tags::ISSUER_OF_PATIENT_ID)
                    .unwrap_or_default()
                    .replace('\0', ""),
                &ds.string(tags::PATIENT_ID)
                    .unwrap_or_default()
                    .replace('\0', ""),
            );
            let c = map.get(&original)?;
            let out = crate::patients::coerce_part10(&prefix, h, c);
            if out.is_none() {
                debug!(sop = %record.sop_instance_uid, "object sent as stored: its header cannot be rewritten");
            }
            out
        });
        let head = match coerced {
            Some(out) => {
                let delta = out.len() as i64 - prefix.len() as i64;
                record.size = (record.size as i64 + delta).max(0) as u64;
                record.pixel_data_offset = record
                    .pixel_data_offset
                    .map(|o| (o as i64 + delta).max(0) as u64);
                Bytes::from(out)
            }
            None => Bytes::from(prefix),
        };
        let head = futures::stream::once(async move { Ok(head) });
        let rest = if ended {
            futures::stream::empty().boxed()
        } else {
            stream
        };
        Ok((record, head.chain(rest).boxed()))
    }
}

/// Whether a study row indexed under the coercion's original key shows
/// other values than the coercion sets.
fn shows_other_values(study: &StudyRecord, c: &PatientCoercion) -> bool {
    let d = &c.demographics;
    study.patient_key != c.target.index_key()
        || d.name
            .as_ref()
            .is_some_and(|n| normalize_person_name(n) != study.patient_name)
        || d.birth_date
            .as_ref()
            .is_some_and(|v| *v != study.patient_birth_date)
        || d.sex.as_ref().is_some_and(|v| *v != study.patient_sex)
}

/// The attributes a change sets, by name (the values stay in the history).
fn changed_fields(d: &Demographics, merge: bool) -> String {
    let names: Vec<&str> = [
        (merge, "patient ID"),
        (d.name.is_some(), "name"),
        (d.birth_date.is_some(), "birth date"),
        (d.sex.is_some(), "sex"),
    ]
    .into_iter()
    .filter_map(|(set, n)| set.then_some(n))
    .collect();
    names.join(", ")
}

/// The values of `keys`' coercions (and their own, when missing) with
/// `d` over them, all pointing at `target`.
fn updated(
    map: &CoercionMap,
    keys: &[PatientKey],
    target: &PatientKey,
    d: &Demographics,
) -> Vec<(PatientKey, PatientCoercion)> {
    let mut out = Vec::new();
    for k in keys {
        let mut entries = map.targeting(k);
        if !entries.iter().any(|(orig, _)| orig == k) {
            entries.push((
                k.clone(),
                PatientCoercion {
                    target: k.clone(),
                    demographics: Demographics::default(),
                },
            ));
        }
        for (orig, c) in entries {
            out.push((
                orig,
                PatientCoercion {
                    target: target.clone(),
                    demographics: c.demographics.overlaid(d),
                },
            ));
        }
    }
    out
}

/// The orders of these patients that have not ended.
async fn pending_orders(
    store: &dyn crate::orders::OrderStore,
    keys: &[PatientKey],
) -> Result<Vec<crate::orders::OrderRecord>, PatientError> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for k in keys {
        let filter = crate::orders::OrderFilter {
            patient_id: Some(k.patient_id.clone()),
            ..Default::default()
        };
        for o in store.list(&filter).await? {
            if o.issuer_of_patient_id == k.issuer
                && !o.status.is_final()
                && seen.insert(o.id.clone())
            {
                out.push(o);
            }
        }
    }
    Ok(out)
}
