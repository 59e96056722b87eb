//! Orders: the requested procedures and their scheduled procedure steps
//! that the HIS sends (HL7, the REST API, a folder of worklist files) and
//! the Modality Worklist hands to modalities (PS3.4 Annex K), and the
//! [`OrderStore`] port that keeps them.
//!
//! One [`OrderRecord`] is one Scheduled Procedure Step of one Requested
//! Procedure (the MWL's unit: PS3.4 K.6.1.1, one response per step). Its
//! key for the outside world is (Accession Number, SPS ID); the store
//! refuses a second step with the same pair. Status changes of a step go
//! through [`change_status`], which records them in the audit trail, so MPPS
//! (in progress, completed, discontinued) and the HIS (cancel, discontinue)
//! leave the same trace.
//!
//! Non-goals: matching a worklist query (the DIMSE crate does it with
//! [`crate::matching`]), parsing HL7, and persistence (the `storage` crate).

use async_trait::async_trait;

use crate::audit::{AuditAction, AuditActor, AuditEvent, AuditEventId, AuditObject, AuditOutcome};
use crate::ports::PortError;
use crate::Archive;

/// The state of a scheduled procedure step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum OrderStatus {
    #[default]
    Scheduled,
    InProgress,
    Completed,
    Discontinued,
    Cancelled,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 5] = [
        OrderStatus::Scheduled,
        OrderStatus::InProgress,
        OrderStatus::Completed,
        OrderStatus::Discontinued,
        OrderStatus::Cancelled,
    ];

    /// The name in the REST API and the index.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Scheduled => "scheduled",
            OrderStatus::InProgress => "in_progress",
            OrderStatus::Completed => "completed",
            OrderStatus::Discontinued => "discontinued",
            OrderStatus::Cancelled => "cancelled",
        }
    }

    /// Parses [`OrderStatus::as_str`] (case-insensitive).
    pub fn parse(s: &str) -> Option<OrderStatus> {
        OrderStatus::ALL
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s.trim()))
    }

    /// Scheduled Procedure Step Status (0040,0020), PS3.3 C.4.10 defined
    /// terms: a step in progress is STARTED, a cancelled one CANCELED.
    pub fn as_dicom(self) -> &'static str {
        match self {
            OrderStatus::Scheduled => "SCHEDULED",
            OrderStatus::InProgress => "STARTED",
            OrderStatus::Completed => "COMPLETED",
            OrderStatus::Discontinued => "DISCONTINUED",
            OrderStatus::Cancelled => "CANCELED",
        }
    }

    /// Parses (0040,0020); `ARRIVED` and `READY` count as scheduled.
    pub fn from_dicom(s: &str) -> Option<OrderStatus> {
        Some(match s.trim().to_ascii_uppercase().as_str() {
            "SCHEDULED" | "ARRIVED" | "READY" | "" => OrderStatus::Scheduled,
            "STARTED" | "IN PROGRESS" => OrderStatus::InProgress,
            "COMPLETED" => OrderStatus::Completed,
            "DISCONTINUED" => OrderStatus::Discontinued,
            "CANCELED" | "CANCELLED" => OrderStatus::Cancelled,
            _ => return None,
        })
    }

    /// Completed, discontinued and cancelled steps do not change again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            OrderStatus::Completed | OrderStatus::Discontinued | OrderStatus::Cancelled
        )
    }
}

/// Where an order came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OrderSource {
    Hl7,
    #[default]
    Rest,
    WorklistDir,
}

impl OrderSource {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderSource::Hl7 => "hl7",
            OrderSource::Rest => "rest",
            OrderSource::WorklistDir => "worklist_dir",
        }
    }

    pub fn parse(s: &str) -> Option<OrderSource> {
        [
            OrderSource::Hl7,
            OrderSource::Rest,
            OrderSource::WorklistDir,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// Another identifier of the same patient (Other Patient IDs Sequence,
/// (0010,1002)): a citizen ID, an insurance number, another MRN.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OtherPatientId {
    pub id: String,
    pub issuer: String,
}

/// One scheduled procedure step of a requested procedure. Text fields are
/// empty when unknown; dates are `YYYYMMDD`, times `HHMM[SS]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OrderRecord {
    /// The store's identifier (assigned on insert).
    pub id: String,
    /// Patient ID (0010,0020): the primary identifier.
    pub patient_id: String,
    /// Issuer of Patient ID (0010,0021).
    pub issuer_of_patient_id: String,
    pub other_patient_ids: Vec<OtherPatientId>,
    /// Patient's Name (0010,0010), DICOM PN form (`Family^Given^Middle`).
    pub patient_name: String,
    pub patient_birth_date: String,
    /// `M`, `F`, `O` or empty.
    pub patient_sex: String,
    /// Accession Number (0008,0050).
    pub accession_number: String,
    /// Referring Physician's Name (0008,0090).
    pub referring_physician_name: String,
    /// Requested Procedure ID (0040,1001).
    pub requested_procedure_id: String,
    /// Requested Procedure Description (0032,1060).
    pub requested_procedure_description: String,
    /// Study Instance UID (0020,000D) the modality is to use.
    pub study_instance_uid: String,
    /// Placer / filler order numbers (0040,2016 / 0040,2017).
    pub placer_order_number: String,
    pub filler_order_number: String,
    /// Scheduled Procedure Step ID (0040,0009).
    pub sps_id: String,
    /// Scheduled Procedure Step Description (0040,0007).
    pub sps_description: String,
    /// Modality (0008,0060).
    pub modality: String,
    /// Scheduled Station AE Title (0040,0001).
    pub station_ae_title: String,
    /// Scheduled Station Name (0040,0010).
    pub station_name: String,
    /// Scheduled Procedure Step Location (0040,0011): the room.
    pub location: String,
    /// Scheduled Procedure Step Start Date / Time (0040,0002 / 0040,0003).
    pub start_date: String,
    pub start_time: String,
    /// Scheduled Performing Physician's Name (0040,0006).
    pub performing_physician_name: String,
    pub status: OrderStatus,
    pub source: OrderSource,
    /// Seconds since the Unix epoch.
    pub created: u64,
    pub updated: u64,
}

/// Why an order was refused.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// A field that breaks its grammar (the message names it).
    #[error("{0}")]
    Invalid(String),
    /// Another step has the same accession number and SPS ID.
    #[error("an order with accession number {accession:?} and SPS ID {sps_id:?} exists")]
    Duplicate { accession: String, sps_id: String },
    #[error("no such order")]
    NotFound,
    /// The step is completed, discontinued or cancelled.
    #[error("the order is {0} and cannot change")]
    Final(&'static str),
    /// This archive keeps no orders.
    #[error("orders are not kept by this archive")]
    Unavailable,
    #[error(transparent)]
    Port(#[from] PortError),
    #[error("the audit record could not be written: {0}")]
    Audit(String),
}

/// `YYYYMMDD` with a real month and day (PS3.5 DA).
pub fn is_valid_date(s: &str) -> bool {
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let n = |r: std::ops::Range<usize>| s[r].parse::<u32>().unwrap_or(0);
    let (y, m, d) = (n(0..4), n(4..6), n(6..8));
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 0,
    };
    (1..=days).contains(&d)
}

/// `HH`, `HHMM`, `HHMMSS` or `HHMMSS.F{1,6}` (PS3.5 TM).
pub fn is_valid_time(s: &str) -> bool {
    let (main, frac) = match s.split_once('.') {
        Some((m, f)) => (m, Some(f)),
        None => (s, None),
    };
    if !matches!(main.len(), 2 | 4 | 6) || !main.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    if let Some(f) = frac {
        if main.len() != 6 || f.is_empty() || f.len() > 6 || !f.bytes().all(|b| b.is_ascii_digit())
        {
            return false;
        }
    }
    let n = |r: std::ops::Range<usize>| main.get(r).and_then(|v| v.parse::<u32>().ok());
    n(0..2).is_some_and(|h| h < 24)
        && n(2..4).is_none_or(|m| m < 60)
        && n(4..6).is_none_or(|sec| sec < 60)
}

/// A value of a short string VR: at most `max` characters, no control
/// characters and no backslash (a value separator in DICOM).
fn check_text(field: &str, value: &str, max: usize) -> Result<(), OrderError> {
    if value.chars().count() > max {
        return Err(OrderError::Invalid(format!(
            "{field} is longer than {max} characters"
        )));
    }
    if value.chars().any(|c| c.is_control() || c == '\\') {
        return Err(OrderError::Invalid(format!(
            "{field} contains a control character or a backslash"
        )));
    }
    Ok(())
}

impl OrderRecord {
    /// Checks every field against its DICOM VR (lengths per PS3.5 6.2,
    /// dates, times, the UID grammar) and the fields a worklist step needs
    /// (patient ID, accession number or SPS ID, modality).
    pub fn validate(&self) -> Result<(), OrderError> {
        let lo = |f: &str, v: &str| check_text(f, v, 64);
        let sh = |f: &str, v: &str| check_text(f, v, 16);
        let pn = |f: &str, v: &str| check_text(f, v, 64 * 5);
        if self.patient_id.trim().is_empty() {
            return Err(OrderError::Invalid("patient_id is required".into()));
        }
        lo("patient_id", &self.patient_id)?;
        lo("issuer_of_patient_id", &self.issuer_of_patient_id)?;
        for o in &self.other_patient_ids {
            lo("other_patient_ids.id", &o.id)?;
            lo("other_patient_ids.issuer", &o.issuer)?;
        }
        pn("patient_name", &self.patient_name)?;
        pn("referring_physician_name", &self.referring_physician_name)?;
        pn("performing_physician_name", &self.performing_physician_name)?;
        if !self.patient_birth_date.is_empty() && !is_valid_date(&self.patient_birth_date) {
            return Err(OrderError::Invalid(format!(
                "patient_birth_date {:?} is not a date YYYYMMDD",
                self.patient_birth_date
            )));
        }
        if !matches!(self.patient_sex.as_str(), "" | "M" | "F" | "O") {
            return Err(OrderError::Invalid(
                "patient_sex must be M, F, O or empty".into(),
            ));
        }
        if self.accession_number.trim().is_empty() && self.sps_id.trim().is_empty() {
            return Err(OrderError::Invalid(
                "accession_number or sps_id is required".into(),
            ));
        }
        sh("accession_number", &self.accession_number)?;
        sh("requested_procedure_id", &self.requested_procedure_id)?;
        lo(
            "requested_procedure_description",
            &self.requested_procedure_description,
        )?;
        lo("placer_order_number", &self.placer_order_number)?;
        lo("filler_order_number", &self.filler_order_number)?;
        sh("sps_id", &self.sps_id)?;
        lo("sps_description", &self.sps_description)?;
        if self.modality.is_empty()
            || self.modality.len() > 16
            || !self
                .modality
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(OrderError::Invalid(format!(
                "modality {:?} is not a code string such as CT or MR",
                self.modality
            )));
        }
        sh("station_ae_title", &self.station_ae_title)?;
        sh("station_name", &self.station_name)?;
        lo("location", &self.location)?;
        if !self.start_date.is_empty() && !is_valid_date(&self.start_date) {
            return Err(OrderError::Invalid(format!(
                "start_date {:?} is not a date YYYYMMDD",
                self.start_date
            )));
        }
        if !self.start_time.is_empty() && !is_valid_time(&self.start_time) {
            return Err(OrderError::Invalid(format!(
                "start_time {:?} is not a time HHMM[SS]",
                self.start_time
            )));
        }
        if !self.study_instance_uid.is_empty() {
            crate::Uid::parse(&self.study_instance_uid)
                .map_err(|e| OrderError::Invalid(format!("study_instance_uid: {e}")))?;
        }
        Ok(())
    }

    /// Fills what the store assigns: the id, a Study Instance UID when
    /// none was given (`2.25.` and a random 128-bit number, PS3.5 B.2),
    /// and the requested procedure / SPS IDs from the accession number
    /// when absent (they are Type 1 in the worklist, PS3.4 K.6.1.2.2).
    pub fn assign_identity(&mut self, random: u128, now: u64) {
        if self.id.is_empty() {
            self.id = format!("{random:032x}");
        }
        if self.study_instance_uid.is_empty() {
            self.study_instance_uid = format!("2.25.{random}");
        }
        if self.requested_procedure_id.is_empty() {
            self.requested_procedure_id = self.accession_number.clone();
        }
        if self.sps_id.is_empty() {
            self.sps_id = self.accession_number.clone();
        }
        if self.created == 0 {
            self.created = now;
        }
        self.updated = now;
    }
}

impl OrderRecord {
    /// The step a worklist item describes (a data set as a modality would
    /// receive it: Table K.6-1 attributes, the step in the first item of
    /// (0040,0100)), as Orthanc's worklist files hold it. The status is
    /// the item's SPS Status, SCHEDULED when absent.
    pub fn from_worklist_item(ds: &crate::dicom::DataSet) -> Result<OrderRecord, OrderError> {
        let text = |d: &crate::dicom::DataSet, tag: u32| {
            d.string(tag).unwrap_or_default().trim().to_owned()
        };
        let empty = crate::dicom::DataSet::default();
        let step = ds
            .sequence(0x0040_0100)
            .and_then(|items| items.first())
            .unwrap_or(&empty);
        let status_text = text(step, 0x0040_0020);
        let status = OrderStatus::from_dicom(&status_text).ok_or_else(|| {
            OrderError::Invalid(format!(
                "Scheduled Procedure Step Status {status_text:?} is not a defined term"
            ))
        })?;
        let other_patient_ids = ds
            .sequence(0x0010_1002)
            .unwrap_or(&[])
            .iter()
            .map(|i| OtherPatientId {
                id: text(i, 0x0010_0020),
                issuer: text(i, 0x0010_0021),
            })
            .filter(|o| !o.id.is_empty())
            .collect();
        let order = OrderRecord {
            patient_id: text(ds, 0x0010_0020),
            issuer_of_patient_id: text(ds, 0x0010_0021),
            other_patient_ids,
            patient_name: text(ds, 0x0010_0010),
            patient_birth_date: text(ds, 0x0010_0030),
            patient_sex: text(ds, 0x0010_0040),
            accession_number: text(ds, 0x0008_0050),
            referring_physician_name: text(ds, 0x0008_0090),
            requested_procedure_id: text(ds, 0x0040_1001),
            requested_procedure_description: text(ds, 0x0032_1060),
            study_instance_uid: ds.uid(0x0020_000D).unwrap_or_default(),
            placer_order_number: text(ds, 0x0040_2016),
            filler_order_number: text(ds, 0x0040_2017),
            sps_id: text(step, 0x0040_0009),
            sps_description: text(step, 0x0040_0007),
            modality: text(step, 0x0008_0060),
            station_ae_title: text(step, 0x0040_0001),
            station_name: text(step, 0x0040_0010),
            location: text(step, 0x0040_0011),
            start_date: text(step, 0x0040_0002),
            start_time: text(step, 0x0040_0003),
            performing_physician_name: text(step, 0x0040_0006),
            status,
            source: OrderSource::WorklistDir,
            ..OrderRecord::default()
        };
        order.validate()?;
        Ok(order)
    }
}

/// Which orders a listing wants; `None` fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderFilter {
    pub status: Option<OrderStatus>,
    pub modality: Option<String>,
    pub station_ae_title: Option<String>,
    /// Any of these accession numbers (empty: any).
    pub accession_numbers: Vec<String>,
    pub patient_id: Option<String>,
    /// Start date range, inclusive (`YYYYMMDD`).
    pub date_from: Option<String>,
    pub date_to: Option<String>,
    pub source: Option<OrderSource>,
    /// At most this many (the earliest scheduled first).
    pub limit: Option<usize>,
}

impl OrderFilter {
    pub fn accepts(&self, o: &OrderRecord) -> bool {
        self.status.is_none_or(|s| s == o.status)
            && self.modality.as_ref().is_none_or(|m| *m == o.modality)
            && self
                .station_ae_title
                .as_ref()
                .is_none_or(|a| *a == o.station_ae_title)
            && (self.accession_numbers.is_empty()
                || self.accession_numbers.contains(&o.accession_number))
            && self.patient_id.as_ref().is_none_or(|p| *p == o.patient_id)
            && self.source.is_none_or(|s| s == o.source)
            && self
                .date_from
                .as_ref()
                .is_none_or(|d| !o.start_date.is_empty() && o.start_date >= *d)
            && self
                .date_to
                .as_ref()
                .is_none_or(|d| !o.start_date.is_empty() && o.start_date <= *d)
    }
}

/// Where orders are kept. Every write is durable when the call returns.
/// Records carry a format version on disk; one of an unknown version is an
/// error, never misread.
#[async_trait]
pub trait OrderStore: Send + Sync + 'static {
    /// Adds a step, assigning its identity ([`OrderRecord::assign_identity`]);
    /// [`OrderError::Duplicate`] if (accession, SPS ID) is taken.
    async fn insert(&self, order: OrderRecord) -> Result<OrderRecord, OrderError>;
    async fn get(&self, id: &str) -> Result<Option<OrderRecord>, PortError>;
    /// The step with this accession number and SPS ID.
    async fn find_step(
        &self,
        accession: &str,
        sps_id: &str,
    ) -> Result<Option<OrderRecord>, PortError>;
    /// The steps the filter accepts, by start date and time.
    async fn list(&self, filter: &OrderFilter) -> Result<Vec<OrderRecord>, PortError>;
    /// Replaces the step with `order.id` (a change from the HIS, a PATCH);
    /// [`OrderError::NotFound`] if there is none, `Duplicate` if the new
    /// (accession, SPS ID) belongs to another step.
    async fn replace(&self, order: OrderRecord) -> Result<OrderRecord, OrderError>;
    /// Sets the status of the step (accession, SPS ID); the record before
    /// and after, or `None` if there is no such step. A final step
    /// (completed, discontinued, cancelled) keeps its status: it is
    /// returned unchanged as before and after, decided in the same atomic
    /// step as the write, so a change racing from another node cannot
    /// reopen it. Callers go through [`change_status`], which audits.
    async fn update_status(
        &self,
        accession: &str,
        sps_id: &str,
        status: OrderStatus,
        now: u64,
    ) -> Result<Option<(OrderRecord, OrderRecord)>, PortError>;
    /// Removes a step; the removed record, if there was one.
    async fn remove(&self, id: &str) -> Result<Option<OrderRecord>, PortError>;
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The audit event of a change to an order: Order Record (110109, PS3.15
/// A.5.3) with the action, the patient and the order (accession / SPS
/// ID) as participant objects.
pub fn order_event(
    action: AuditAction,
    order: &OrderRecord,
    actor: AuditActor,
    what: &str,
) -> AuditEvent {
    AuditEvent::new(AuditEventId::OrderRecord, action, AuditOutcome::Success)
        .describe(what.to_owned())
        .actor(actor)
        .object(AuditObject::Patient {
            id: order.patient_id.clone(),
            name: (!order.patient_name.is_empty()).then(|| order.patient_name.clone()),
        })
        .object(AuditObject::Other {
            kind: "order".into(),
            id: format!("{}/{}", order.accession_number, order.sps_id),
        })
}

/// Records `event`, mapping a failure to [`OrderError::Audit`].
pub async fn record(archive: &Archive, event: AuditEvent) -> Result<(), OrderError> {
    archive
        .audit()
        .record(event)
        .await
        .map_err(|e| OrderError::Audit(e.to_string()))
}

/// Moves the step (accession, SPS ID) to `status` and audits the change
/// (Order Record, Update). A final step does not change
/// ([`OrderError::Final`]). This is the call MPPS makes (in progress,
/// completed, discontinued) and the HL7 listener makes (discontinue).
pub async fn change_status(
    archive: &Archive,
    accession: &str,
    sps_id: &str,
    status: OrderStatus,
    actor: AuditActor,
) -> Result<OrderRecord, OrderError> {
    let store = archive.orders().ok_or(OrderError::Unavailable)?;
    let current = store
        .find_step(accession, sps_id)
        .await?
        .ok_or(OrderError::NotFound)?;
    if current.status.is_final() && current.status != status {
        return Err(OrderError::Final(current.status.as_str()));
    }
    let (before, after) = store
        .update_status(accession, sps_id, status, now_secs())
        .await?
        .ok_or(OrderError::NotFound)?;
    // Made final meanwhile (by another node): left as it was.
    if before.status.is_final() && before.status != status {
        return Err(OrderError::Final(before.status.as_str()));
    }
    let what = format!(
        "status {} -> {}",
        before.status.as_str(),
        after.status.as_str()
    );
    record(
        archive,
        order_event(AuditAction::Update, &after, actor, &what),
    )
    .await?;
    Ok(after)
}

/// Moves order steps as MPPS reports them (PS3.4 F.7: IN PROGRESS, then
/// COMPLETED or DISCONTINUED): the order model's side of
/// [`crate::mpps::StepStatusSink`]. A step the MPPS names but no order
/// holds (an unscheduled exam, another RIS's accession) is left alone.
pub struct OrderStepStatus {
    archive: Archive,
}

impl OrderStepStatus {
    pub fn new(archive: Archive) -> OrderStepStatus {
        OrderStepStatus { archive }
    }
}

#[async_trait]
impl crate::mpps::StepStatusSink for OrderStepStatus {
    async fn step_status(
        &self,
        step: &crate::mpps::ScheduledStepRef,
        status: crate::mpps::MppsStatus,
        mpps_uid: &str,
    ) {
        if step.accession_number.is_empty() || step.scheduled_procedure_step_id.is_empty() {
            return;
        }
        let to = match status {
            crate::mpps::MppsStatus::InProgress => OrderStatus::InProgress,
            crate::mpps::MppsStatus::Completed => OrderStatus::Completed,
            crate::mpps::MppsStatus::Discontinued => OrderStatus::Discontinued,
        };
        let actor = AuditActor {
            user_id: format!("mpps:{mpps_uid}"),
            role: Some("Application".into()),
            ..AuditActor::default()
        };
        match change_status(
            &self.archive,
            &step.accession_number,
            &step.scheduled_procedure_step_id,
            to,
            actor,
        )
        .await
        {
            Ok(_) => {}
            Err(OrderError::NotFound) => {
                tracing::debug!("MPPS names a step no order holds; left alone")
            }
            Err(e) => tracing::warn!(error = %e, "MPPS could not move its order step"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn dates_and_times() {
        for (d, ok) in [
            ("20240229", true),
            ("20230229", false),
            ("20241301", false),
            ("2024011", false),
            ("2024-01-01", false),
            ("20240131", true),
        ] {
            assert_eq!(is_valid_date(d), ok, "{d}");
        }
        for (t, ok) in [
            ("08", true),
            ("0830", true),
            ("083015", true),
            ("083015.123", true),
            ("2400", false),
            ("0860", false),
            ("0830.5", false),
            ("8:30", false),
        ] {
            assert_eq!(is_valid_time(t), ok, "{t}");
        }
    }

    fn order() -> OrderRecord {
        OrderRecord {
            patient_id: "P1".into(),
            accession_number: "A1".into(),
            modality: "CT".into(),
            ..OrderRecord::default()
        }
    }

    #[test]
    fn validation_names_the_field() {
        assert!(order().validate().is_ok());
        let mut o = order();
        o.study_instance_uid = "1.2.abc".into();
        assert!(o
            .validate()
            .unwrap_err()
            .to_string()
            .contains("study_instance_uid"));
        let mut o = order();
        o.modality = "ct scanner".into();
        assert!(o.validate().unwrap_err().to_string().contains("modality"));
        let mut o = order();
        o.accession_number = "A\\B".into();
        assert!(o
            .validate()
            .unwrap_err()
            .to_string()
            .contains("accession_number"));
        let mut o = order();
        o.patient_id = " ".into();
        assert!(o.validate().is_err());
    }

    #[test]
    fn identity_is_assigned_once() {
        let mut o = order();
        o.assign_identity(7, 100);
        assert_eq!(o.id, format!("{:032x}", 7));
        assert_eq!(o.study_instance_uid, "2.25.7");
        assert_eq!(o.sps_id, "A1");
        assert_eq!(o.requested_procedure_id, "A1");
        o.assign_identity(9, 200);
        assert_eq!(o.id, format!("{:032x}", 7));
        assert_eq!((o.created, o.updated), (100, 200));
    }

    #[test]
    fn statuses_round_trip() {
        for s in OrderStatus::ALL {
            assert_eq!(OrderStatus::parse(s.as_str()), Some(s));
            assert_eq!(OrderStatus::from_dicom(s.as_dicom()), Some(s));
        }
    }
}
