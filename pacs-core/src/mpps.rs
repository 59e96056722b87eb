//! Modality Performed Procedure Step records (PS3.4 F.7) and the port that
//! keeps them.
//!
//! An MPPS is created IN PROGRESS by the modality (N-CREATE) and updated
//! (N-SET) until it is COMPLETED or DISCONTINUED; both are final (PS3.4
//! F.7.2.2.3). The record keeps the whole data set as last set, plus the
//! links the archive follows: the scheduled step it performs (Accession
//! Number, Scheduled Procedure Step ID, Study Instance UID from the
//! Scheduled Step Attribute Sequence) and the series it produced
//! (Performed Series Sequence).
//!
//! Non-goals: the order model (which scheduled step moves to which status)
//! lives elsewhere; this module only says, through [`StepStatusSink`], that
//! a step's performed status changed.

use async_trait::async_trait;

use crate::ports::PortError;

/// Performed Procedure Step Status (0040,0252).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MppsStatus {
    InProgress,
    Completed,
    Discontinued,
}

impl MppsStatus {
    /// The defined terms (PS3.3 C.4.14).
    pub fn parse(s: &str) -> Option<MppsStatus> {
        match s.trim_matches([' ', '\0']) {
            "IN PROGRESS" => Some(MppsStatus::InProgress),
            "COMPLETED" => Some(MppsStatus::Completed),
            "DISCONTINUED" => Some(MppsStatus::Discontinued),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MppsStatus::InProgress => "IN PROGRESS",
            MppsStatus::Completed => "COMPLETED",
            MppsStatus::Discontinued => "DISCONTINUED",
        }
    }

    /// COMPLETED and DISCONTINUED admit no further N-SET.
    pub fn is_final(self) -> bool {
        self != MppsStatus::InProgress
    }
}

/// A scheduled step an MPPS performs (one item of the Scheduled Step
/// Attribute Sequence, 0040,0270).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScheduledStepRef {
    pub accession_number: String,
    pub scheduled_procedure_step_id: String,
    pub requested_procedure_id: String,
    pub study_instance_uid: String,
}

/// One MPPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MppsRecord {
    /// Affected SOP Instance UID of the N-CREATE (validated).
    pub sop_instance_uid: String,
    pub status: MppsStatus,
    /// The calling AE title of the N-CREATE.
    pub creator_ae: String,
    /// Milliseconds since the epoch.
    pub created_ms: u64,
    pub updated_ms: u64,
    pub steps: Vec<ScheduledStepRef>,
    /// Series Instance UIDs of the Performed Series Sequence (0040,0340).
    pub series_uids: Vec<String>,
    /// The data set as last set, Explicit VR Little Endian.
    pub dataset: Vec<u8>,
}

/// Keeps MPPS records. Writes are durable before they return.
#[async_trait]
pub trait MppsStore: Send + Sync + 'static {
    /// Stores a new record; `false` (and nothing written) if one with the
    /// same SOP Instance UID exists.
    async fn create(&self, record: &MppsRecord) -> Result<bool, PortError>;
    async fn get(&self, sop_instance_uid: &str) -> Result<Option<MppsRecord>, PortError>;
    /// Replaces an existing record that is still IN PROGRESS; `false`
    /// (nothing written) if there is none, or if the stored one is final
    /// (COMPLETED or DISCONTINUED). The check and the write are one atomic
    /// step, so two N-SETs racing on two nodes cannot both finish (or
    /// reopen) one procedure step.
    async fn update(&self, record: &MppsRecord) -> Result<bool, PortError>;
    /// Every record, by SOP Instance UID.
    async fn list(&self) -> Result<Vec<MppsRecord>, PortError>;
    /// The records one of whose scheduled steps names `accession`, by SOP
    /// Instance UID (none for an empty one): how an order finds the procedure steps that performed
    /// it. This default reads every record; a store keeps an entry per
    /// accession number instead, so the answer costs what it holds.
    async fn of_accession(&self, accession: &str) -> Result<Vec<MppsRecord>, PortError> {
        if accession.is_empty() {
            return Ok(Vec::new());
        }
        let mut all = self.list().await?;
        all.retain(|r| r.names_accession(accession));
        Ok(all)
    }
}

impl MppsRecord {
    /// Whether one of its scheduled steps names `accession`.
    pub fn names_accession(&self, accession: &str) -> bool {
        self.steps.iter().any(|s| s.accession_number == accession)
    }

    /// The distinct accession numbers its steps name (empty ones left out).
    pub fn accessions(&self) -> std::collections::BTreeSet<&str> {
        self.steps
            .iter()
            .map(|s| s.accession_number.as_str())
            .filter(|a| !a.is_empty())
            .collect()
    }
}

/// Told when an MPPS starts, completes or is discontinued, for each
/// scheduled step it names: the seam where the order model moves a step
/// from scheduled to in progress to completed or discontinued.
#[async_trait]
pub trait StepStatusSink: Send + Sync + 'static {
    async fn step_status(&self, step: &ScheduledStepRef, status: MppsStatus, mpps_uid: &str);

    /// Told once when an MPPS reaches a final status (COMPLETED or
    /// DISCONTINUED), with the whole record, after its steps were told:
    /// where "the procedure is done" work starts (availability
    /// notifications). Nothing by default.
    async fn performed(&self, _record: &MppsRecord) {}
}

/// Several sinks told in turn (the order model, then the availability
/// notifications).
pub struct SinkFanout(pub Vec<std::sync::Arc<dyn StepStatusSink>>);

#[async_trait]
impl StepStatusSink for SinkFanout {
    async fn step_status(&self, step: &ScheduledStepRef, status: MppsStatus, mpps_uid: &str) {
        for s in &self.0 {
            s.step_status(step, status, mpps_uid).await;
        }
    }

    async fn performed(&self, record: &MppsRecord) {
        for s in &self.0 {
            s.performed(record).await;
        }
    }
}

/// A sink that does nothing (no order model attached).
pub struct NoStepStatus;

#[async_trait]
impl StepStatusSink for NoStepStatus {
    async fn step_status(&self, _: &ScheduledStepRef, _: MppsStatus, _: &str) {}
}

/// The [`StepStatusSink`] a server holds (a no-op unless the order model
/// plugs one in). Cloneable and printable, for configuration structs.
#[derive(Clone)]
pub struct StepStatusHook(pub std::sync::Arc<dyn StepStatusSink>);

impl Default for StepStatusHook {
    fn default() -> Self {
        StepStatusHook(std::sync::Arc::new(NoStepStatus))
    }
}

impl std::fmt::Debug for StepStatusHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StepStatusHook")
    }
}

/// An [`MppsStore`] in memory (tests, memory archives).
#[derive(Default)]
pub struct MemoryMppsStore {
    records: std::sync::Mutex<std::collections::BTreeMap<String, MppsRecord>>,
}

impl MemoryMppsStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, MppsRecord>> {
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl MppsStore for MemoryMppsStore {
    async fn create(&self, record: &MppsRecord) -> Result<bool, PortError> {
        let mut g = self.lock();
        if g.contains_key(&record.sop_instance_uid) {
            return Ok(false);
        }
        g.insert(record.sop_instance_uid.clone(), record.clone());
        Ok(true)
    }
    async fn get(&self, sop_instance_uid: &str) -> Result<Option<MppsRecord>, PortError> {
        Ok(self.lock().get(sop_instance_uid).cloned())
    }
    async fn update(&self, record: &MppsRecord) -> Result<bool, PortError> {
        let mut g = self.lock();
        match g.get_mut(&record.sop_instance_uid) {
            Some(r) if !r.status.is_final() => {
                *r = record.clone();
                Ok(true)
            }
            _ => Ok(false),
        }
    }
    async fn list(&self) -> Result<Vec<MppsRecord>, PortError> {
        Ok(self.lock().values().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(
            MppsStatus::parse("IN PROGRESS "),
            Some(MppsStatus::InProgress)
        );
        assert_eq!(MppsStatus::parse("COMPLETED"), Some(MppsStatus::Completed));
        assert_eq!(
            MppsStatus::parse("DISCONTINUED"),
            Some(MppsStatus::Discontinued)
        );
        assert_eq!(MppsStatus::parse("in progress"), None);
        assert_eq!(MppsStatus::parse(""), None);
        assert!(!MppsStatus::InProgress.is_final());
        assert!(MppsStatus::Completed.is_final() && MppsStatus::Discontinued.is_final());
    }
}
