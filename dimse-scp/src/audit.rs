//! The audit events of the DIMSE boundary (PS3.15 A.5.3), built from what
//! an association knows: the peer's calling AE title and address, our AE
//! title, the studies and patients concerned.
//!
//! Which event, when:
//! - an association refused by policy (unknown or misplaced calling AE):
//!   Security Alert (110113), Node Authentication (110126);
//! - a Q/R request refused as not authorized: Security Alert, Use of
//!   Restricted Function (110132);
//! - C-FIND: Query (110112) before the first match is sent, with the
//!   identifier's keys as text and the patients and studies matched;
//! - C-GET / C-MOVE: Begin Transferring (110102) before the first
//!   sub-operation, Instances Transferred (110104, Read) when it ends;
//! - C-STORE: Instances Transferred (110104, Create), one per study per
//!   association, when the association ends;
//! - MPPS N-CREATE / N-SET accepted: Procedure Record (110111, Create /
//!   Update), with the patient, the studies of its steps and the MPPS;
//! - a Storage Commitment report sent: Instances Transferred (110104,
//!   Read: the archive read back and verified what the requestor sent),
//!   with the studies and patients of the committed instances and the
//!   counts committed and failed.
//!
//! Non-goals: writing (the archive's [`pacs_core::AuditSink`] does it).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use pacs_core::audit::{
    event_type, AuditAction, AuditActor, AuditEvent, AuditEventId, AuditObject, AuditOutcome,
};
use pacs_core::query::{Level, Match, Query};
use pacs_core::{Archive, Uid};

/// Most patients and studies one Query event names.
const MAX_QUERY_OBJECTS: usize = 1000;

/// Who is on the other end of an association.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    pub calling_ae: String,
    pub address: Option<IpAddr>,
    pub our_ae: String,
}

impl Peer {
    /// The peer as the requesting participant, in `role`.
    fn actor(&self, role: &str) -> AuditActor {
        AuditActor {
            user_id: self.calling_ae.clone(),
            alt_user_id: None,
            role: Some(role.to_owned()),
            address: self.address.map(|a| a.to_string()),
            requestor: true,
        }
    }

    /// This archive, in `role`.
    fn us(&self, role: &str) -> AuditActor {
        AuditActor {
            user_id: self.our_ae.clone(),
            alt_user_id: Some(std::process::id().to_string()),
            role: Some(role.to_owned()),
            address: None,
            requestor: false,
        }
    }
}

/// One study of a transfer: its patient (if the index knows it) and how
/// many instances.
#[derive(Debug, Clone, Default)]
pub(crate) struct StudyShare {
    pub patient_id: Option<String>,
    pub instances: u64,
}

/// An association refused during negotiation.
pub(crate) fn association_refused(peer: &Peer, reason: &str) -> AuditEvent {
    AuditEvent::new(
        AuditEventId::SecurityAlert,
        AuditAction::Execute,
        AuditOutcome::MinorFailure,
    )
    .with_type(event_type::NODE_AUTHENTICATION)
    .describe(format!("association refused: {reason}"))
    .actor(peer.actor("Source"))
    .actor(peer.us("Application"))
}

/// A query/retrieve request refused as not authorized.
pub(crate) fn restricted_function(peer: &Peer, what: &str) -> AuditEvent {
    AuditEvent::new(
        AuditEventId::SecurityAlert,
        AuditAction::Execute,
        AuditOutcome::MinorFailure,
    )
    .with_type(event_type::USE_OF_RESTRICTED_FUNCTION)
    .describe(format!("{what} refused: calling AE not authorized"))
    .actor(peer.actor("Source"))
    .actor(peer.us("Application"))
}

/// The identifier's matching keys as text: the level, then `Keyword=value`
/// per key with a value (return-only keys are no condition), one per line.
pub(crate) fn query_text(query: &Query) -> String {
    let mut s = format!("QueryRetrieveLevel={}", query.level.as_dicom());
    for k in &query.keys {
        s.push('\n');
        s.push_str(k.attribute.keyword);
        s.push('=');
        s.push_str(&k.raw);
    }
    s
}

/// A C-FIND in `sop_class` whose keys read `text`, before its matches
/// are named.
pub(crate) fn dicom_query(peer: &Peer, sop_class: &str, text: String) -> AuditEvent {
    AuditEvent::new(
        AuditEventId::Query,
        AuditAction::Execute,
        AuditOutcome::Success,
    )
    .actor(peer.actor("Source"))
    .actor(peer.us("Destination"))
    .object(AuditObject::DicomQuery {
        sop_class: sop_class.to_owned(),
        text,
    })
}

/// A C-FIND, with the patients and studies its matches name.
pub(crate) fn query(peer: &Peer, sop_class: &str, query: &Query, rows: &[Match]) -> AuditEvent {
    let mut e = dicom_query(peer, sop_class, query_text(query));
    let mut patients: BTreeSet<&str> = BTreeSet::new();
    let mut studies: BTreeSet<&str> = BTreeSet::new();
    for row in rows {
        let pid = row
            .patient
            .as_ref()
            .map(|p| p.patient_id.as_str())
            .or(row.study.as_ref().map(|s| s.patient_id.as_str()));
        if let Some(pid) = pid.filter(|p| !p.is_empty()) {
            if patients.len() < MAX_QUERY_OBJECTS {
                patients.insert(pid);
            }
        }
        let study = row
            .study
            .as_ref()
            .map(|s| s.study_instance_uid.as_str())
            .or(row.series.as_ref().map(|s| s.study_instance_uid.as_str()))
            .or(row.instance.as_ref().map(|i| i.study_instance_uid.as_str()));
        if let Some(uid) = study {
            if studies.len() < MAX_QUERY_OBJECTS {
                studies.insert(uid);
            }
        }
    }
    for p in patients {
        e = e.object(AuditObject::Patient {
            id: p.to_owned(),
            name: None,
        });
    }
    for s in studies {
        e = e.object(AuditObject::Study { uid: s.to_owned() });
    }
    e
}

fn with_studies(mut e: AuditEvent, studies: &BTreeMap<Uid, StudyShare>) -> AuditEvent {
    let mut patients: BTreeSet<&str> = BTreeSet::new();
    for (uid, share) in studies {
        e = e.object(AuditObject::Study {
            uid: uid.to_string(),
        });
        if let Some(p) = share.patient_id.as_deref().filter(|p| !p.is_empty()) {
            patients.insert(p);
        }
    }
    for p in patients {
        e = e.object(AuditObject::Patient {
            id: p.to_owned(),
            name: None,
        });
    }
    e
}

/// A C-GET or C-MOVE about to send `studies` to `destination` (the
/// requestor itself for C-GET).
pub(crate) fn begin_transfer(
    peer: &Peer,
    destination: Option<&str>,
    studies: &BTreeMap<Uid, StudyShare>,
) -> AuditEvent {
    let e = AuditEvent::new(
        AuditEventId::BeginTransferring,
        AuditAction::Execute,
        AuditOutcome::Success,
    );
    with_studies(transfer_actors(e, peer, destination), studies)
}

/// A C-GET or C-MOVE that ended: `failed` sub-operations of `total`.
pub(crate) fn retrieved(
    peer: &Peer,
    destination: Option<&str>,
    studies: &BTreeMap<Uid, StudyShare>,
    failed: u64,
    total: u64,
) -> AuditEvent {
    let outcome = if failed == 0 {
        AuditOutcome::Success
    } else {
        AuditOutcome::MinorFailure
    };
    let mut e = AuditEvent::new(
        AuditEventId::InstancesTransferred,
        AuditAction::Read,
        outcome,
    );
    if failed > 0 {
        e = e.describe(format!("{failed} of {total} sub-operations failed"));
    }
    with_studies(transfer_actors(e, peer, destination), studies)
}

fn transfer_actors(e: AuditEvent, peer: &Peer, destination: Option<&str>) -> AuditEvent {
    let e = e.actor(peer.us("Source"));
    match destination {
        // C-MOVE: the requestor and a third party receiving.
        Some(dest) if dest != peer.calling_ae => {
            e.actor(peer.actor("Application Launcher"))
                .actor(AuditActor {
                    user_id: dest.to_owned(),
                    role: Some("Destination".into()),
                    ..AuditActor::default()
                })
        }
        _ => e.actor(peer.actor("Destination")),
    }
}

/// Instances of one study received by C-STORE on one association.
pub(crate) fn stored(peer: &Peer, study: &Uid, share: &StudyShare) -> AuditEvent {
    let e = AuditEvent::new(
        AuditEventId::InstancesTransferred,
        AuditAction::Create,
        AuditOutcome::Success,
    )
    .describe(format!("{} instances received", share.instances))
    .actor(peer.actor("Source"))
    .actor(peer.us("Destination"));
    with_studies(e, &BTreeMap::from([(study.clone(), share.clone())]))
}

/// An MPPS created or changed (PS3.15 A.5.3 Procedure Record): the
/// modality is the requestor, the patient and the studies of the
/// scheduled steps the objects, the MPPS instance named as a procedure.
pub(crate) fn procedure_record(
    peer: &Peer,
    action: AuditAction,
    mpps_uid: &str,
    status: &str,
    patient_id: Option<String>,
    studies: &[String],
) -> AuditEvent {
    let mut e = AuditEvent::new(AuditEventId::ProcedureRecord, action, AuditOutcome::Success)
        .describe(format!("MPPS {status}"))
        .actor(peer.actor("Source"))
        .actor(peer.us("Destination"));
    if let Some(id) = patient_id.filter(|p| !p.is_empty()) {
        e = e.object(AuditObject::Patient { id, name: None });
    }
    let mut seen = BTreeSet::new();
    for s in studies.iter().filter(|s| !s.is_empty()) {
        if seen.insert(s.clone()) {
            e = e.object(AuditObject::Study { uid: s.clone() });
        }
    }
    e.object(AuditObject::Other {
        kind: "mpps".into(),
        id: mpps_uid.to_owned(),
    })
}

/// A Storage Commitment report sent to `peer` (the requestor): PS3.15
/// A.5.3 DICOM Instances Transferred, Read, naming the studies (and
/// patients) of the committed instances; Minor Failure when some failed.
pub(crate) async fn commitment_report(
    archive: &Archive,
    peer: &Peer,
    transaction_uid: &str,
    committed: &[(String, String)],
    failed: usize,
) -> AuditEvent {
    let mut studies: BTreeMap<Uid, StudyShare> = BTreeMap::new();
    for (_, sop) in committed {
        let Ok(uid) = Uid::parse(sop) else { continue };
        if let Ok(rec) = archive.instance(&uid).await {
            studies.entry(rec.study_instance_uid).or_default().instances += 1;
        }
    }
    add_patients(archive, &mut studies).await;
    let outcome = if failed == 0 {
        AuditOutcome::Success
    } else {
        AuditOutcome::MinorFailure
    };
    let e = AuditEvent::new(
        AuditEventId::InstancesTransferred,
        AuditAction::Read,
        outcome,
    )
    .describe(format!(
        "storage commitment {transaction_uid}: {} committed, {failed} failed",
        committed.len()
    ))
    .actor(peer.actor("Source"))
    .actor(peer.us("Destination"));
    with_studies(e, &studies)
}

/// Fills in the patient of each study from the index (left unknown when
/// the index cannot say).
pub(crate) async fn add_patients(archive: &Archive, studies: &mut BTreeMap<Uid, StudyShare>) {
    for (uid, share) in studies.iter_mut() {
        if share.patient_id.is_some() {
            continue;
        }
        let mut q = Query::new(Level::Study);
        if q.add_key(crate::identifier::STUDY_INSTANCE_UID, uid.as_str())
            .is_err()
        {
            continue;
        }
        if let Ok(found) = archive.find(&q).await {
            share.patient_id = found
                .matches
                .into_iter()
                .find_map(|m| m.study.map(|s| s.patient_id));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn peer() -> Peer {
        Peer {
            calling_ae: "WS".into(),
            address: Some([10, 0, 0, 7].into()),
            our_ae: "PACS".into(),
        }
    }

    #[test]
    fn query_keys_as_text() {
        let mut q = Query::new(Level::Study);
        q.add_key(crate::identifier::PATIENT_ID, "P*").unwrap();
        q.add_key(crate::identifier::STUDY_INSTANCE_UID, "")
            .unwrap();
        assert_eq!(query_text(&q), "QueryRetrieveLevel=STUDY\nPatientID=P*");
    }

    #[test]
    fn transfers_name_source_requestor_and_destination() {
        let studies = BTreeMap::from([(
            Uid::parse("1.2.3").unwrap(),
            StudyShare {
                patient_id: Some("P1".into()),
                instances: 2,
            },
        )]);
        // C-GET: the requestor is the destination.
        let get = begin_transfer(&peer(), None, &studies);
        let roles: Vec<_> = get
            .actors
            .iter()
            .map(|a| (a.user_id.as_str(), a.role.as_deref().unwrap_or("")))
            .collect();
        assert_eq!(roles, vec![("PACS", "Source"), ("WS", "Destination")]);
        assert_eq!(get.actors[1].address.as_deref(), Some("10.0.0.7"));
        // C-MOVE: a third party receives.
        let mv = retrieved(&peer(), Some("DEST"), &studies, 1, 2);
        let roles: Vec<_> = mv
            .actors
            .iter()
            .map(|a| (a.user_id.as_str(), a.role.as_deref().unwrap_or("")))
            .collect();
        assert_eq!(
            roles,
            vec![
                ("PACS", "Source"),
                ("WS", "Application Launcher"),
                ("DEST", "Destination")
            ]
        );
        assert_eq!(mv.outcome, AuditOutcome::MinorFailure);
        assert_eq!(
            mv.objects,
            vec![
                AuditObject::Study {
                    uid: "1.2.3".into()
                },
                AuditObject::Patient {
                    id: "P1".into(),
                    name: None
                }
            ]
        );
    }
}
