//! Patient changes in the index's sled database: the [`PatientStore`] port.
//!
//! Trees: `patient_changes` (id as big-endian u64 → the change: kind,
//! patients, who, when, values before and after; append-only, the history)
//! and `patient_coercions` (original issuer, NUL, Patient ID → the patient
//! and values every answer shows for objects stored under that key). Like
//! the order trees they are not part of the index proper: `pacs reindex`
//! leaves them alone and applies them to the rows it rebuilds. Every value
//! is the format version byte ([`FORMAT`]) then bincode of the record below;
//! another version is refused with a message. A change and its coercions
//! are one sled transaction followed by a sled flush. Ids come from
//! `generate_id` (increasing); the archive records one change at a time,
//! so the newest id (`latest_change_id`, the last key) is the last
//! committed. The PostgreSQL store of several nodes keeps the same values
//! (`pg_side::PgPatients`).

use std::sync::Arc;

use async_trait::async_trait;
use pacs_core::patients::{
    ChangeKind, Demographics, PatientChange, PatientCoercion, PatientKey, PatientStore,
};
use pacs_core::ports::PortError;
use serde::{Deserialize, Serialize};
use sled::transaction::TransactionError;
use sled::Transactional;

use crate::format::{db_err, decode_record, encode_record};

/// The format version of every record this code writes.
const FORMAT: u8 = 1;

const CHANGES: &str = "patient_changes";
const COERCIONS: &str = "patient_coercions";

/// Demographics on disk (version 1): each value present or not.
#[derive(Serialize, Deserialize)]
struct StoredDemographics {
    name: Option<String>,
    birth_date: Option<String>,
    sex: Option<String>,
}

/// A coercion on disk (version 1).
#[derive(Serialize, Deserialize)]
struct StoredCoercion {
    target_issuer: String,
    target_patient_id: String,
    demographics: StoredDemographics,
}

/// A change on disk (version 1).
#[derive(Serialize, Deserialize)]
struct StoredChange {
    id: u64,
    time: u64,
    actor: String,
    source: String,
    /// `update` or `merge`.
    kind: String,
    from_issuer: String,
    from_patient_id: String,
    into_issuer: String,
    into_patient_id: String,
    before: StoredDemographics,
    after: StoredDemographics,
}

fn sd(d: &Demographics) -> StoredDemographics {
    StoredDemographics {
        name: d.name.clone(),
        birth_date: d.birth_date.clone(),
        sex: d.sex.clone(),
    }
}

fn dd(d: StoredDemographics) -> Demographics {
    Demographics {
        name: d.name,
        birth_date: d.birth_date,
        sex: d.sex,
    }
}

pub(crate) fn key_bytes(k: &PatientKey) -> Vec<u8> {
    k.index_key().into_bytes()
}

pub(crate) fn key_of(raw: &[u8]) -> Result<PatientKey, PortError> {
    let s = std::str::from_utf8(raw)
        .map_err(|_| PortError::Index("patient coercion key is not UTF-8".into()))?;
    let (issuer, id) = s
        .split_once('\0')
        .ok_or_else(|| PortError::Index("patient coercion key without a NUL".into()))?;
    Ok(PatientKey::new(issuer, id))
}

pub(crate) fn encode_change(c: &PatientChange) -> Result<Vec<u8>, PortError> {
    encode_record(
        FORMAT,
        "patient change",
        &StoredChange {
            id: c.id,
            time: c.time,
            actor: c.actor.clone(),
            source: c.source.clone(),
            kind: c.kind.as_str().to_owned(),
            from_issuer: c.from.issuer.clone(),
            from_patient_id: c.from.patient_id.clone(),
            into_issuer: c.into.issuer.clone(),
            into_patient_id: c.into.patient_id.clone(),
            before: sd(&c.before),
            after: sd(&c.after),
        },
    )
}

pub(crate) fn decode_change(raw: &[u8]) -> Result<PatientChange, PortError> {
    let s: StoredChange = decode_record(FORMAT, "patient change", raw)?;
    let kind = match s.kind.as_str() {
        "update" => ChangeKind::Update,
        "merge" => ChangeKind::Merge,
        k => {
            return Err(PortError::Index(format!(
                "patient change record has unknown kind {k:?}"
            )))
        }
    };
    Ok(PatientChange {
        id: s.id,
        time: s.time,
        actor: s.actor,
        source: s.source,
        kind,
        from: PatientKey::new(&s.from_issuer, &s.from_patient_id),
        into: PatientKey::new(&s.into_issuer, &s.into_patient_id),
        before: dd(s.before),
        after: dd(s.after),
    })
}

pub(crate) fn encode_coercion(c: &PatientCoercion) -> Result<Vec<u8>, PortError> {
    encode_record(
        FORMAT,
        "patient coercion",
        &StoredCoercion {
            target_issuer: c.target.issuer.clone(),
            target_patient_id: c.target.patient_id.clone(),
            demographics: sd(&c.demographics),
        },
    )
}

pub(crate) fn decode_coercion(raw: &[u8]) -> Result<PatientCoercion, PortError> {
    let s: StoredCoercion = decode_record(FORMAT, "patient coercion", raw)?;
    Ok(PatientCoercion {
        target: PatientKey::new(&s.target_issuer, &s.target_patient_id),
        demographics: dd(s.demographics),
    })
}

/// The patient-change trees of an open index (see `SledIndex::patients`).
#[derive(Clone)]
pub struct SledPatients {
    cell: Arc<crate::index::Cell>,
}

struct Trees {
    db: sled::Db,
    changes: sled::Tree,
    coercions: sled::Tree,
}

impl SledPatients {
    pub(crate) fn open(cell: Arc<crate::index::Cell>) -> Result<SledPatients, PortError> {
        let me = SledPatients { cell };
        me.trees()?;
        Ok(me)
    }

    fn trees(&self) -> Result<Trees, PortError> {
        let db = self.cell.current_db()?;
        Ok(Trees {
            changes: db.open_tree(CHANGES).map_err(db_err)?,
            coercions: db.open_tree(COERCIONS).map_err(db_err)?,
            db,
        })
    }

    /// Every change, oldest first (for copying this node's history to a
    /// shared store).
    pub async fn changes(&self) -> Result<Vec<PatientChange>, PortError> {
        self.blocking(|t| {
            t.changes
                .iter()
                .map(|kv| decode_change(&kv.map_err(db_err)?.1))
                .collect()
        })
        .await
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, PortError>
    where
        T: Send + 'static,
        F: FnOnce(&Trees) -> Result<T, PortError> + Send + 'static,
    {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&me.trees()?))
            .await
            .map_err(|e| PortError::Index(format!("patient task failed: {e}")))?
    }
}

/// Held while a change is recorded: a check of the newest change and the
/// write after it are one step (a sled database has one process).
static RECORD_GATE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The id of the newest change recorded.
fn latest_in(t: &Trees) -> Result<Option<u64>, PortError> {
    t.changes
        .last()
        .map_err(db_err)?
        .map(|(k, _)| {
            <[u8; 8]>::try_from(k.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| PortError::Index("a patient change key is not 8 bytes".into()))
        })
        .transpose()
}

/// Appends `change` (its id assigned here) and sets `coercions` in one
/// transaction, flushed.
fn record_in(
    t: &Trees,
    mut change: PatientChange,
    coercions: Vec<(PatientKey, PatientCoercion)>,
) -> Result<PatientChange, PortError> {
    change.id = t.db.generate_id().map_err(db_err)?;
    let value = encode_change(&change)?;
    let entries = coercions
        .iter()
        .map(|(k, c)| Ok((key_bytes(k), encode_coercion(c)?)))
        .collect::<Result<Vec<_>, PortError>>()?;
    (&t.changes, &t.coercions)
        .transaction(|(changes, co)| {
            changes.insert(&change.id.to_be_bytes(), value.as_slice())?;
            for (k, v) in &entries {
                co.insert(k.as_slice(), v.as_slice())?;
            }
            Ok(())
        })
        .map_err(|e: TransactionError<()>| match e {
            TransactionError::Abort(()) => PortError::Index("aborted".into()),
            TransactionError::Storage(e) => db_err(e),
        })?;
    t.db.flush().map_err(db_err)?;
    Ok(change)
}

#[async_trait]
impl PatientStore for SledPatients {
    async fn coercions(&self) -> Result<Vec<(PatientKey, PatientCoercion)>, PortError> {
        self.blocking(|t| {
            let mut out = Vec::new();
            for kv in t.coercions.iter() {
                let (k, v) = kv.map_err(db_err)?;
                out.push((key_of(&k)?, decode_coercion(&v)?));
            }
            Ok(out)
        })
        .await
    }

    async fn record(
        &self,
        change: PatientChange,
        coercions: Vec<(PatientKey, PatientCoercion)>,
    ) -> Result<PatientChange, PortError> {
        self.blocking(move |t| {
            let _gate = RECORD_GATE
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            record_in(t, change, coercions)
        })
        .await
    }

    async fn record_if_latest(
        &self,
        seen: Option<u64>,
        change: PatientChange,
        coercions: Vec<(PatientKey, PatientCoercion)>,
    ) -> Result<Option<PatientChange>, PortError> {
        self.blocking(move |t| {
            let _gate = RECORD_GATE
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if latest_in(t)? != seen {
                return Ok(None);
            }
            record_in(t, change, coercions).map(Some)
        })
        .await
    }

    async fn history(&self, key: &PatientKey) -> Result<Vec<PatientChange>, PortError> {
        let key = key.clone();
        self.blocking(move |t| {
            let mut out = Vec::new();
            for kv in t.changes.iter() {
                let c = decode_change(&kv.map_err(db_err)?.1)?;
                if c.from == key || c.into == key {
                    out.push(c);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn latest_change_id(&self) -> Result<Option<u64>, PortError> {
        self.blocking(latest_in).await
    }
}
