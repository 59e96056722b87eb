//! The one audit sink: the events of DICOM PS3.15 A.5 (IHE ATNA) that the
//! boundaries emit once they know who is acting, and the [`AuditSink`] port
//! that records them.
//!
//! Events are emitted where the principal is known (an HTTP request after
//! authentication, a DIMSE association after negotiation). A read of
//! patient data must be refused when its record cannot be written, so
//! [`AuditSink::record`] returns only once the record is written (or says
//! why it could not be).
//!
//! Non-goals: the writer (append-only, hash-chained log, syslog) lives in an
//! adapter; this module holds the model and the port.

use std::time::SystemTime;

use async_trait::async_trait;

/// The event, by its PS3.15 A.5.3 / DCM event ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditEventId {
    /// 110100 Application Activity (start, stop).
    ApplicationActivity,
    /// 110101 Audit Log Used.
    AuditLogUsed,
    /// 110102 Begin Transferring DICOM Instances.
    BeginTransferring,
    /// 110103 DICOM Instances Accessed (read, created, updated, deleted).
    InstancesAccessed,
    /// 110104 DICOM Instances Transferred (sent or received).
    InstancesTransferred,
    /// 110105 DICOM Study Deleted.
    StudyDeleted,
    /// 110106 Export (media, ZIP, share link).
    Export,
    /// 110107 Import.
    Import,
    /// 110109 Order Record (orders created, changed, read, removed).
    OrderRecord,
    /// 110110 Patient Record.
    PatientRecord,
    /// 110111 Procedure Record (performed procedure steps: MPPS).
    ProcedureRecord,
    /// 110112 Query.
    Query,
    /// 110113 Security Alert (refused AE, bad token, lock-out, node authentication).
    SecurityAlert,
    /// 110114 User Authentication (login, logout, failures).
    UserAuthentication,
}

impl AuditEventId {
    /// The DCM code value (PS3.16 CID 400-series, PS3.15 A.5.3).
    pub fn code(self) -> &'static str {
        match self {
            AuditEventId::ApplicationActivity => "110100",
            AuditEventId::AuditLogUsed => "110101",
            AuditEventId::BeginTransferring => "110102",
            AuditEventId::InstancesAccessed => "110103",
            AuditEventId::InstancesTransferred => "110104",
            AuditEventId::StudyDeleted => "110105",
            AuditEventId::Export => "110106",
            AuditEventId::Import => "110107",
            AuditEventId::OrderRecord => "110109",
            AuditEventId::PatientRecord => "110110",
            AuditEventId::ProcedureRecord => "110111",
            AuditEventId::Query => "110112",
            AuditEventId::SecurityAlert => "110113",
            AuditEventId::UserAuthentication => "110114",
        }
    }

    /// The code meaning.
    pub fn meaning(self) -> &'static str {
        match self {
            AuditEventId::ApplicationActivity => "Application Activity",
            AuditEventId::AuditLogUsed => "Audit Log Used",
            AuditEventId::BeginTransferring => "Begin Transferring DICOM Instances",
            AuditEventId::InstancesAccessed => "DICOM Instances Accessed",
            AuditEventId::InstancesTransferred => "DICOM Instances Transferred",
            AuditEventId::StudyDeleted => "DICOM Study Deleted",
            AuditEventId::Export => "Export",
            AuditEventId::Import => "Import",
            AuditEventId::OrderRecord => "Order Record",
            AuditEventId::PatientRecord => "Patient Record",
            AuditEventId::ProcedureRecord => "Procedure Record",
            AuditEventId::Query => "Query",
            AuditEventId::SecurityAlert => "Security Alert",
            AuditEventId::UserAuthentication => "User Authentication",
        }
    }
}

/// EventTypeCodes of the DCM coding scheme that the boundaries emit
/// (PS3.16 CID 401, "Audit Event Type Code", as PS3.15 A.5.3 uses them),
/// as (code, meaning) pairs for [`AuditEvent::event_type`]. An event type
/// not in [`DCM_EVENT_TYPES`] is a local code and is written with the
/// local coding scheme [`LOCAL_CODING_SCHEME`].
pub mod event_type {
    /// Application Activity (A.5.3.1).
    pub const APPLICATION_START: (&str, &str) = ("110120", "Application Start");
    pub const APPLICATION_STOP: (&str, &str) = ("110121", "Application Stop");
    /// User Authentication (A.5.3.12).
    pub const LOGIN: (&str, &str) = ("110122", "Login");
    pub const LOGOUT: (&str, &str) = ("110123", "Logout");
    /// Security Alert (A.5.3.11): a node or credential that failed to
    /// authenticate (refused AE title or address, bad token).
    pub const NODE_AUTHENTICATION: (&str, &str) = ("110126", "Node Authentication");
    /// Security Alert: an authenticated principal refused a function.
    pub const USE_OF_RESTRICTED_FUNCTION: (&str, &str) = ("110132", "Use of Restricted Function");
    /// Security Alert: a user's security attributes changed (lock-out,
    /// user and token administration).
    pub const USER_SECURITY_ATTRIBUTES_CHANGED: (&str, &str) =
        ("110137", "User Security Attributes Changed");
}

/// Every DCM EventTypeCode in [`event_type`].
pub const DCM_EVENT_TYPES: [(&str, &str); 7] = [
    event_type::APPLICATION_START,
    event_type::APPLICATION_STOP,
    event_type::LOGIN,
    event_type::LOGOUT,
    event_type::NODE_AUTHENTICATION,
    event_type::USE_OF_RESTRICTED_FUNCTION,
    event_type::USER_SECURITY_ATTRIBUTES_CHANGED,
];

/// The coding scheme of our own codes (PS3.3 8.2: private schemes start
/// with "99"): share-link event types and the access table's role names.
pub const LOCAL_CODING_SCHEME: &str = "99SENPACS";

/// Active participant roles of the DCM coding scheme (PS3.16 CID 402,
/// "Audit Active Participant Role ID Code"): the role name an
/// [`AuditActor`] carries, its code and its code meaning.
pub const DCM_ROLES: [(&str, &str, &str); 6] = [
    ("Application", "110150", "Application"),
    ("Application Launcher", "110151", "Application Launcher"),
    ("Destination", "110152", "Destination Role ID"),
    ("Source", "110153", "Source Role ID"),
    ("Destination Media", "110154", "Destination Media"),
    ("Source Media", "110155", "Source Media"),
];

/// EventActionCode (PS3.15 A.5.1): Create, Read, Update, Delete, Execute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAction {
    Create,
    Read,
    Update,
    Delete,
    Execute,
}

impl AuditAction {
    pub fn code(self) -> &'static str {
        match self {
            AuditAction::Create => "C",
            AuditAction::Read => "R",
            AuditAction::Update => "U",
            AuditAction::Delete => "D",
            AuditAction::Execute => "E",
        }
    }
}

/// EventOutcomeIndicator (PS3.15 A.5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditOutcome {
    Success,
    /// 4: minor failure (the action was refused, e.g. a bad password).
    MinorFailure,
    /// 8: serious failure (the action failed).
    SeriousFailure,
    /// 12: major failure (e.g. a security alert).
    MajorFailure,
}

impl AuditOutcome {
    pub fn code(self) -> u8 {
        match self {
            AuditOutcome::Success => 0,
            AuditOutcome::MinorFailure => 4,
            AuditOutcome::SeriousFailure => 8,
            AuditOutcome::MajorFailure => 12,
        }
    }
}

/// An ActiveParticipant: who took part (user, token, AE, the archive).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditActor {
    /// UserID: user or token name, share id, AE title, or our process.
    pub user_id: String,
    /// AlternativeUserID, e.g. the AE title of a DIMSE peer.
    pub alt_user_id: Option<String>,
    /// The role name (access::Role) or a DCM role such as "Application".
    pub role: Option<String>,
    /// NetworkAccessPointID: the peer's address.
    pub address: Option<String>,
    /// UserIsRequestor.
    pub requestor: bool,
}

/// A ParticipantObject: the patient, a study, a query, a share link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditObject {
    Patient {
        id: String,
        name: Option<String>,
    },
    Study {
        uid: String,
    },
    /// The query, as the request's text (QIDO query string, C-FIND keys).
    Query {
        text: String,
    },
    /// A DIMSE query: the SOP class it was made in (the object's ID in
    /// PS3.15 A.5.3.2) and its identifier's keys as text.
    DicomQuery {
        sop_class: String,
        text: String,
    },
    /// Anything else with a type and an id (a share link's id, a user, a token).
    Other {
        kind: String,
        id: String,
    },
}

/// One audit event.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    pub time: SystemTime,
    pub id: AuditEventId,
    /// EventTypeCode, e.g. [`event_type::LOGIN`]; a code not in
    /// [`DCM_EVENT_TYPES`] is written as a local code.
    pub event_type: Option<(String, String)>,
    pub action: AuditAction,
    pub outcome: AuditOutcome,
    /// EventOutcomeDescription: why it failed, what was refused.
    pub outcome_description: Option<String>,
    pub actors: Vec<AuditActor>,
    pub objects: Vec<AuditObject>,
}

impl AuditEvent {
    /// An event now, with no participants yet.
    pub fn new(id: AuditEventId, action: AuditAction, outcome: AuditOutcome) -> AuditEvent {
        AuditEvent {
            time: SystemTime::now(),
            id,
            event_type: None,
            action,
            outcome,
            outcome_description: None,
            actors: Vec::new(),
            objects: Vec::new(),
        }
    }

    /// Sets the EventTypeCode from a (code, meaning) pair such as
    /// [`event_type::LOGIN`].
    pub fn with_type(self, (code, meaning): (&str, &str)) -> Self {
        self.event_type(code, meaning)
    }

    pub fn event_type(mut self, code: &str, meaning: &str) -> Self {
        self.event_type = Some((code.to_owned(), meaning.to_owned()));
        self
    }

    pub fn describe(mut self, why: impl Into<String>) -> Self {
        self.outcome_description = Some(why.into());
        self
    }

    pub fn actor(mut self, actor: AuditActor) -> Self {
        self.actors.push(actor);
        self
    }

    pub fn object(mut self, object: AuditObject) -> Self {
        self.objects.push(object);
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("the audit record could not be written: {0}")]
    Write(String),
}

/// Records audit events. `record` returns once the event is written (so a
/// caller can refuse a PHI read whose record failed).
#[async_trait]
pub trait AuditSink: Send + Sync {
    async fn record(&self, event: AuditEvent) -> Result<(), AuditError>;
}

/// A sink that records nothing: offline tools and tests that do not audit.
pub struct NoAudit;

#[async_trait]
impl AuditSink for NoAudit {
    async fn record(&self, _event: AuditEvent) -> Result<(), AuditError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The codes we emit, against PS3.16 (DCM): CID 400 Audit Event ID,
    /// CID 401 Audit Event Type Code, CID 402 Audit Active Participant Role
    /// ID Code. A change here is a change of what collectors receive.
    #[test]
    fn dcm_codes_are_the_standards() {
        let ids = [
            (
                AuditEventId::ApplicationActivity,
                "110100",
                "Application Activity",
            ),
            (AuditEventId::AuditLogUsed, "110101", "Audit Log Used"),
            (
                AuditEventId::BeginTransferring,
                "110102",
                "Begin Transferring DICOM Instances",
            ),
            (
                AuditEventId::InstancesAccessed,
                "110103",
                "DICOM Instances Accessed",
            ),
            (
                AuditEventId::InstancesTransferred,
                "110104",
                "DICOM Instances Transferred",
            ),
            (AuditEventId::StudyDeleted, "110105", "DICOM Study Deleted"),
            (AuditEventId::Export, "110106", "Export"),
            (AuditEventId::Import, "110107", "Import"),
            (AuditEventId::OrderRecord, "110109", "Order Record"),
            (AuditEventId::PatientRecord, "110110", "Patient Record"),
            (AuditEventId::ProcedureRecord, "110111", "Procedure Record"),
            (AuditEventId::Query, "110112", "Query"),
            (AuditEventId::SecurityAlert, "110113", "Security Alert"),
            (
                AuditEventId::UserAuthentication,
                "110114",
                "User Authentication",
            ),
        ];
        for (id, code, meaning) in ids {
            assert_eq!((id.code(), id.meaning()), (code, meaning), "{id:?}");
        }
        assert_eq!(
            DCM_EVENT_TYPES,
            [
                ("110120", "Application Start"),
                ("110121", "Application Stop"),
                ("110122", "Login"),
                ("110123", "Logout"),
                ("110126", "Node Authentication"),
                ("110132", "Use of Restricted Function"),
                ("110137", "User Security Attributes Changed"),
            ]
        );
        assert_eq!(
            DCM_ROLES.map(|(_, code, meaning)| (code, meaning)),
            [
                ("110150", "Application"),
                ("110151", "Application Launcher"),
                ("110152", "Destination Role ID"),
                ("110153", "Source Role ID"),
                ("110154", "Destination Media"),
                ("110155", "Source Media"),
            ]
        );
        assert_eq!(
            [
                AuditAction::Create,
                AuditAction::Read,
                AuditAction::Update,
                AuditAction::Delete,
                AuditAction::Execute
            ]
            .map(AuditAction::code),
            ["C", "R", "U", "D", "E"]
        );
        assert_eq!(
            [
                AuditOutcome::Success,
                AuditOutcome::MinorFailure,
                AuditOutcome::SeriousFailure,
                AuditOutcome::MajorFailure
            ]
            .map(AuditOutcome::code),
            [0, 4, 8, 12]
        );
    }
}
