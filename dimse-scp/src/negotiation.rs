//! Association negotiation policy (PS3.8 §7.1, Annex D), without IO.
//!
//! Given an A-ASSOCIATE-RQ, decide: reject (and why), or accept with which
//! presentation contexts, in which transfer syntax each. This is ours and
//! not `dicom-ul`'s acceptor because the policy needs three things that
//! acceptor cannot express: our transfer syntax preference (it takes the
//! requestor's order), rejection reasons other than permanent service-user
//! ones, and a bound on the number of presentation contexts. The PDU types
//! and their encoding remain `dicom-ul`'s.
//!
//! # Abstract syntaxes accepted
//! - Verification (1.2.840.10008.1.1).
//! - Every storage SOP class of the standard, current or retired: the SOP
//!   classes of `dicom-dictionary-std`'s UID dictionary whose keyword
//!   contains `Storage`, except Storage Commitment and Media Storage
//!   Directory (which are not C-STORE services).
//! - Patient Root and Study Root Query/Retrieve FIND, MOVE and GET.
//! - Modality Performed Procedure Step (1.2.840.10008.3.1.2.3.3) and
//!   Storage Commitment Push Model (1.2.840.10008.1.20.1).
//!
//! # Transfer syntax preference (per presentation context)
//! For a storage context: the first encapsulated (compressed) syntax the
//! requestor lists, since compression was the sender's choice and the
//! archive stores what it was sent; otherwise Explicit VR Little Endian,
//! then Implicit VR Little Endian, then Deflated Explicit VR Little Endian,
//! then Explicit VR Big Endian. For Verification the same list without the
//! encapsulated step. Query/Retrieve contexts take Explicit VR Little
//! Endian, else Implicit VR Little Endian, and nothing else (their
//! identifiers are encoded by our own small encoder); so do the MPPS and
//! Storage Commitment contexts. A syntax `pacs_core`
//! cannot read is never accepted.
//!
//! # SCP/SCU role selection (PS3.7 D.3.3.4)
//! A requestor that wants to act as Storage SCP for a storage SOP class
//! (the C-GET SCU receiving its instances on the same association) proposes
//! the SCP role in a role selection sub-item; we accept it for storage SOP
//! classes and answer with the sub-item. A Storage Commitment requestor
//! that proposes the SCP role (to receive the N-EVENT-REPORT on the same
//! association, PS3.4 J.3.3) gets it too. For other SOP classes the SCP
//! role is refused (the SCU role is answered as proposed). C-GET sends
//! sub-operations only on contexts whose requestor took the SCP role.

use std::collections::BTreeSet;

use dicom_core::dictionary::{UidDictionary, UidType};
use dicom_dictionary_std::{uids, StandardSopClassDictionary};
use dicom_ul::pdu::{
    AssociationAC, AssociationRJ, AssociationRJResult, AssociationRJServiceProviderASCEReason,
    AssociationRJServiceProviderPresentationReason, AssociationRJServiceUserReason,
    AssociationRJSource, AssociationRQ, PresentationContextResult, PresentationContextResultReason,
    RequestorRoles, UserVariableItem,
};
use pacs_core::dicom::{
    TransferSyntax, DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN,
};

/// The DICOM application context name (PS3.7 A.2.1).
pub const APPLICATION_CONTEXT_NAME: &str = "1.2.840.10008.3.1.1.1";

/// At most 128 presentation contexts: their IDs are the odd numbers 1-255
/// (PS3.8 §9.3.2.2).
pub const MAX_PRESENTATION_CONTEXTS: usize = 128;

/// Peer maximum PDU length assumed when the A-ASSOCIATE-RQ carries no
/// Maximum Length sub-item (it is mandatory, PS3.8 D.1; be conservative).
pub const DEFAULT_PEER_MAX_PDU: u32 = 16 * 1024;

/// Implementation Class UID and Version Name we announce (PS3.7 D.3.3.2):
/// the archive's, so files and associations identify the same software.
pub const IMPLEMENTATION_CLASS_UID: &str = pacs_core::archive::IMPLEMENTATION_CLASS_UID;
pub const IMPLEMENTATION_VERSION_NAME: &str = pacs_core::archive::IMPLEMENTATION_VERSION_NAME;

/// Query/Retrieve information models.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QrModel {
    PatientRoot,
    StudyRoot,
    /// Modality Worklist Information Model – FIND (PS3.4 K): C-FIND only,
    /// answered by `worklist.rs`.
    Worklist,
}

/// Query/Retrieve operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QrOperation {
    Find,
    Move,
    Get,
}

/// The service an accepted abstract syntax belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Verification,
    Storage,
    QueryRetrieve {
        model: QrModel,
        operation: QrOperation,
    },
    /// Modality Performed Procedure Step (N-CREATE, N-SET).
    Mpps,
    /// Storage Commitment Push Model (N-ACTION; N-EVENT-REPORT back).
    StorageCommitment,
}

/// Modality Performed Procedure Step SOP Class (PS3.4 F.7.3).
pub const MPPS_SOP_CLASS: &str = "1.2.840.10008.3.1.2.3.3";
/// Storage Commitment Push Model SOP Class and its well-known instance
/// (PS3.4 J.3.5).
pub const STORAGE_COMMITMENT_SOP_CLASS: &str = "1.2.840.10008.1.20.1";
pub const STORAGE_COMMITMENT_INSTANCE: &str = "1.2.840.10008.1.20.1.1";
/// Instance Availability Notification SOP Class (PS3.4 R.3): we are its
/// SCU only (`ian.rs`), so it is never accepted from a peer.
pub const IAN_SOP_CLASS: &str = "1.2.840.10008.5.1.4.33";

/// Whether a SOP class UID is a storage SOP class of the standard.
pub fn is_storage_sop_class(uid: &str) -> bool {
    let Some(entry) = StandardSopClassDictionary.by_uid(uid) else {
        return false;
    };
    entry.r#type == UidType::SopClass
        && entry.alias.contains("Storage")
        && !entry.alias.starts_with("StorageCommitment")
        && entry.alias != "MediaStorageDirectoryStorage"
}

/// The service of an abstract syntax we accept, `None` for any other.
pub fn classify_abstract_syntax(uid: &str) -> Option<Service> {
    use QrModel::*;
    use QrOperation::*;
    let qr = |model, operation| Some(Service::QueryRetrieve { model, operation });
    match uid {
        uids::VERIFICATION => Some(Service::Verification),
        MPPS_SOP_CLASS => Some(Service::Mpps),
        STORAGE_COMMITMENT_SOP_CLASS => Some(Service::StorageCommitment),
        uids::PATIENT_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_FIND => qr(PatientRoot, Find),
        uids::PATIENT_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_MOVE => qr(PatientRoot, Move),
        uids::PATIENT_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_GET => qr(PatientRoot, Get),
        uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_FIND => qr(StudyRoot, Find),
        uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_MOVE => qr(StudyRoot, Move),
        uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_GET => qr(StudyRoot, Get),
        uids::MODALITY_WORKLIST_INFORMATION_MODEL_FIND => qr(Worklist, Find),
        _ if is_storage_sop_class(uid) => Some(Service::Storage),
        _ => None,
    }
}

/// The transfer syntax we accept for a context of `service` among those
/// `offered`, in the order documented at the top of this module.
pub fn choose_transfer_syntax(service: Service, offered: &[String]) -> Option<&str> {
    let known: Vec<(&str, TransferSyntax)> = offered
        .iter()
        .map(|s| s.trim_end_matches(['\0', ' ']))
        .filter_map(|s| TransferSyntax::from_uid(s).map(|ts| (s, ts)))
        .collect();
    if service == Service::Storage {
        if let Some((uid, _)) = known.iter().find(|(_, ts)| ts.encapsulated()) {
            return Some(uid);
        }
    }
    let preference: &[&str] = match service {
        Service::QueryRetrieve { .. } | Service::Mpps | Service::StorageCommitment => {
            &[EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN]
        }
        _ => &[
            EXPLICIT_VR_LITTLE_ENDIAN,
            IMPLICIT_VR_LITTLE_ENDIAN,
            DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
            EXPLICIT_VR_BIG_ENDIAN,
        ],
    };
    preference.iter().copied().find_map(|want| {
        known
            .iter()
            .find(|(uid, _)| *uid == want)
            .map(|(uid, _)| *uid)
    })
}

/// Who may associate, and on what terms.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Our AE title (compared case-sensitively, without surrounding spaces).
    pub ae_title: String,
    /// Only calling AE titles in `known_calling_aes` may associate.
    pub strict_ae: bool,
    pub known_calling_aes: Vec<String>,
    /// Maximum Length we announce and enforce (PS3.8 D.1).
    pub max_pdu_len: u32,
}

/// An accepted presentation context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedContext {
    pub id: u8,
    pub abstract_syntax: String,
    pub transfer_syntax: String,
    pub service: Service,
    /// The requestor took the SCP role for this (storage) SOP class: we
    /// may send it C-STORE requests here (C-GET sub-operations).
    pub requestor_is_scp: bool,
}

/// The outcome of a successful negotiation.
#[derive(Debug, Clone)]
pub struct Negotiated {
    /// The A-ASSOCIATE-AC to send.
    pub ac: AssociationAC,
    pub contexts: Vec<AcceptedContext>,
    /// Largest P-DATA-TF PDU the requestor accepts (0: no limit).
    pub peer_max_pdu: u32,
    pub calling_ae: String,
    pub called_ae: String,
}

fn rj(result: AssociationRJResult, source: AssociationRJSource) -> AssociationRJ {
    AssociationRJ { result, source }
}

/// A-ASSOCIATE-RJ transient, service-provider (presentation) "local limit
/// exceeded": too many associations (PS3.8 §9.3.4).
pub fn reject_local_limit() -> AssociationRJ {
    rj(
        AssociationRJResult::Transient,
        AssociationRJSource::ServiceProviderPresentation(
            AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
        ),
    )
}

/// A-ASSOCIATE-RJ permanent, service-user "calling-AE-title-not-recognized"
/// (PS3.8 §9.3.4): also the answer to a listed AE title calling from an
/// address it is not bound to.
pub fn reject_calling_ae() -> AssociationRJ {
    rj(
        AssociationRJResult::Permanent,
        AssociationRJSource::ServiceUser(
            AssociationRJServiceUserReason::CallingAETitleNotRecognized,
        ),
    )
}

/// The peer's Maximum Length sub-item (PS3.8 D.1), or
/// [`DEFAULT_PEER_MAX_PDU`] when it sent none.
pub(crate) fn peer_max_length(user_variables: &[UserVariableItem]) -> u32 {
    user_variables
        .iter()
        .find_map(|v| match v {
            UserVariableItem::MaxLength(n) => Some(*n),
            _ => None,
        })
        .unwrap_or(DEFAULT_PEER_MAX_PDU)
}

/// Decides on an A-ASSOCIATE-RQ.
pub fn negotiate(rq: &AssociationRQ, policy: &Policy) -> Result<Negotiated, AssociationRJ> {
    use AssociationRJResult::Permanent;
    use AssociationRJSource::{ServiceProviderASCE, ServiceUser};
    // PS3.8 §9.3.2: test only bit 0 of the protocol version.
    if rq.protocol_version & 1 == 0 {
        return Err(rj(
            Permanent,
            ServiceProviderASCE(
                AssociationRJServiceProviderASCEReason::ProtocolVersionNotSupported,
            ),
        ));
    }
    if rq.application_context_name.trim_end_matches(['\0', ' ']) != APPLICATION_CONTEXT_NAME {
        return Err(rj(
            Permanent,
            ServiceUser(AssociationRJServiceUserReason::ApplicationContextNameNotSupported),
        ));
    }
    let called = rq.called_ae_title.trim_matches(' ');
    let calling = rq.calling_ae_title.trim_matches(' ');
    if called != policy.ae_title.trim_matches(' ') {
        return Err(rj(
            Permanent,
            ServiceUser(AssociationRJServiceUserReason::CalledAETitleNotRecognized),
        ));
    }
    if policy.strict_ae
        && !policy
            .known_calling_aes
            .iter()
            .any(|ae| ae.trim_matches(' ') == calling)
    {
        return Err(rj(
            Permanent,
            ServiceUser(AssociationRJServiceUserReason::CallingAETitleNotRecognized),
        ));
    }
    // Presentation context IDs are distinct odd numbers (PS3.8 §9.3.2.2);
    // anything else makes the request unanswerable.
    let mut ids = BTreeSet::new();
    let well_formed = !rq.presentation_contexts.is_empty()
        && rq.presentation_contexts.len() <= MAX_PRESENTATION_CONTEXTS
        && rq
            .presentation_contexts
            .iter()
            .all(|pc| pc.id % 2 == 1 && ids.insert(pc.id));
    if !well_formed {
        return Err(rj(
            Permanent,
            ServiceUser(AssociationRJServiceUserReason::NoReasonGiven),
        ));
    }

    // Role selection: the requestor's proposals, answered per SOP class.
    let mut roles: Vec<(String, RequestorRoles)> = Vec::new();
    for v in &rq.user_variables {
        if let UserVariableItem::ScuScpRoleSelectionSubItem(uid, proposed) = v {
            let uid = uid.trim_end_matches(['\0', ' ']);
            if roles.iter().any(|(u, _)| u == uid) {
                continue;
            }
            let answer = RequestorRoles {
                scu: proposed.scu,
                scp: proposed.scp
                    && (is_storage_sop_class(uid) || uid == STORAGE_COMMITMENT_SOP_CLASS),
            };
            roles.push((uid.to_owned(), answer));
        }
    }
    let requestor_is_scp =
        |abstract_syntax: &str| roles.iter().any(|(uid, r)| uid == abstract_syntax && r.scp);

    let mut contexts = Vec::new();
    let mut results = Vec::with_capacity(rq.presentation_contexts.len());
    for pc in &rq.presentation_contexts {
        let abstract_syntax = pc.abstract_syntax.trim_end_matches(['\0', ' ']);
        let (reason, ts) = match classify_abstract_syntax(abstract_syntax) {
            None => (
                PresentationContextResultReason::AbstractSyntaxNotSupported,
                None,
            ),
            Some(service) => match choose_transfer_syntax(service, &pc.transfer_syntaxes) {
                None => (
                    PresentationContextResultReason::TransferSyntaxesNotSupported,
                    None,
                ),
                Some(ts) => {
                    contexts.push(AcceptedContext {
                        id: pc.id,
                        abstract_syntax: abstract_syntax.to_owned(),
                        transfer_syntax: ts.to_owned(),
                        service,
                        requestor_is_scp: matches!(
                            service,
                            Service::Storage | Service::StorageCommitment
                        ) && requestor_is_scp(abstract_syntax),
                    });
                    (PresentationContextResultReason::Acceptance, Some(ts))
                }
            },
        };
        results.push(PresentationContextResult {
            id: pc.id,
            reason,
            // Not significant when the context is refused (PS3.8 §9.3.3.2).
            transfer_syntax: ts.unwrap_or(IMPLICIT_VR_LITTLE_ENDIAN).to_owned(),
        });
    }

    let peer_max_pdu = peer_max_length(&rq.user_variables);

    let mut user_variables = vec![
        UserVariableItem::MaxLength(policy.max_pdu_len),
        UserVariableItem::ImplementationClassUID(IMPLEMENTATION_CLASS_UID.to_owned()),
        UserVariableItem::ImplementationVersionName(IMPLEMENTATION_VERSION_NAME.to_owned()),
    ];
    user_variables.extend(
        roles
            .into_iter()
            .map(|(uid, r)| UserVariableItem::ScuScpRoleSelectionSubItem(uid, r)),
    );
    let ac = AssociationAC {
        protocol_version: 1,
        calling_ae_title: rq.calling_ae_title.clone(),
        called_ae_title: rq.called_ae_title.clone(),
        application_context_name: APPLICATION_CONTEXT_NAME.to_owned(),
        presentation_contexts: results,
        user_variables,
    };
    Ok(Negotiated {
        ac,
        contexts,
        peer_max_pdu,
        calling_ae: calling.to_owned(),
        called_ae: called.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use dicom_ul::pdu::PresentationContextProposed;

    const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
    const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";
    const JPEG_LOSSLESS_SV1: &str = "1.2.840.10008.1.2.4.70";
    const JPEG_LS: &str = "1.2.840.10008.1.2.4.80";
    const J2K_LOSSLESS: &str = "1.2.840.10008.1.2.4.90";
    const RLE: &str = "1.2.840.10008.1.2.5";
    const HTJ2K_LOSSLESS: &str = "1.2.840.10008.1.2.4.201";
    const JPIP: &str = "1.2.840.10008.1.2.4.94";
    const PRIVATE: &str = "1.2.3.4.5.6";

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn storage_classes_come_from_the_dictionary() {
        for uid in [
            CT,
            "1.2.840.10008.5.1.4.1.1.4",      // MR
            "1.2.840.10008.5.1.4.1.1.3.1",    // US multi-frame
            "1.2.840.10008.5.1.4.1.1.1",      // CR
            "1.2.840.10008.5.1.4.1.1.1.1",    // DX for presentation
            "1.2.840.10008.5.1.4.1.1.2.1",    // enhanced CT
            "1.2.840.10008.5.1.4.1.1.88.11",  // basic text SR
            "1.2.840.10008.5.1.4.1.1.104.1",  // encapsulated PDF
            "1.2.840.10008.5.1.4.1.1.481.1",  // RT image
            "1.2.840.10008.5.1.4.1.1.6",      // US (retired)
            "1.2.840.10008.5.1.4.38.1",       // hanging protocol
            "1.2.840.10008.5.1.4.34.10",      // RT brachy delivery instruction
            "1.2.840.10008.5.1.4.1.1.77.1.6", // VL whole slide microscopy
        ] {
            assert_eq!(
                classify_abstract_syntax(uid),
                Some(Service::Storage),
                "{uid}"
            );
        }
        for uid in [
            "1.2.840.10008.1.3.10",          // media storage directory
            "1.2.840.10008.5.1.4.1.1.201.2", // inventory find
            "1.2.840.10008.1.2.1",           // a transfer syntax
            PRIVATE,
            "",
        ] {
            assert_eq!(classify_abstract_syntax(uid), None, "{uid}");
        }
        assert_eq!(
            classify_abstract_syntax("1.2.840.10008.5.1.4.31"),
            Some(Service::QueryRetrieve {
                model: QrModel::Worklist,
                operation: QrOperation::Find
            })
        );
        assert_eq!(
            classify_abstract_syntax("1.2.840.10008.1.1"),
            Some(Service::Verification)
        );
        assert_eq!(
            classify_abstract_syntax("1.2.840.10008.5.1.4.1.2.2.1"),
            Some(Service::QueryRetrieve {
                model: QrModel::StudyRoot,
                operation: QrOperation::Find
            })
        );
        assert_eq!(
            classify_abstract_syntax("1.2.840.10008.5.1.4.1.2.1.3"),
            Some(Service::QueryRetrieve {
                model: QrModel::PatientRoot,
                operation: QrOperation::Get
            })
        );
    }

    #[test]
    fn transfer_syntax_table() {
        let s = Service::Storage;
        let v = Service::Verification;
        let q = Service::QueryRetrieve {
            model: QrModel::StudyRoot,
            operation: QrOperation::Find,
        };
        let cases: Vec<(Service, Vec<&str>, Option<&str>)> = vec![
            (
                s,
                vec![IMPLICIT_VR_LITTLE_ENDIAN],
                Some(IMPLICIT_VR_LITTLE_ENDIAN),
            ),
            (
                s,
                vec![IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN],
                Some(EXPLICIT_VR_LITTLE_ENDIAN),
            ),
            (
                s,
                vec![EXPLICIT_VR_BIG_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN],
                Some(IMPLICIT_VR_LITTLE_ENDIAN),
            ),
            (
                s,
                vec![EXPLICIT_VR_BIG_ENDIAN, DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN],
                Some(DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN),
            ),
            (
                s,
                vec![EXPLICIT_VR_BIG_ENDIAN],
                Some(EXPLICIT_VR_BIG_ENDIAN),
            ),
            // Compressed wins over uncompressed, first offered among compressed.
            (
                s,
                vec![EXPLICIT_VR_LITTLE_ENDIAN, JPEG_LS, RLE],
                Some(JPEG_LS),
            ),
            (s, vec![RLE, JPEG_LOSSLESS_SV1], Some(RLE)),
            (
                s,
                vec![IMPLICIT_VR_LITTLE_ENDIAN, J2K_LOSSLESS],
                Some(J2K_LOSSLESS),
            ),
            (
                s,
                vec![HTJ2K_LOSSLESS, EXPLICIT_VR_LITTLE_ENDIAN],
                Some(HTJ2K_LOSSLESS),
            ),
            (s, vec![JPEG_BASELINE], Some(JPEG_BASELINE)),
            // Padding is tolerated.
            (
                s,
                vec!["1.2.840.10008.1.2.1\0"],
                Some(EXPLICIT_VR_LITTLE_ENDIAN),
            ),
            // Unknown and unsupported syntaxes are never chosen.
            (s, vec![PRIVATE], None),
            (
                s,
                vec![PRIVATE, IMPLICIT_VR_LITTLE_ENDIAN],
                Some(IMPLICIT_VR_LITTLE_ENDIAN),
            ),
            (s, vec![JPIP], None),
            (s, vec!["1.2.840.10008.1.2.1.99.5"], None),
            (s, vec![], None),
            // Non-storage contexts never take an encapsulated syntax.
            (
                v,
                vec![JPEG_LS, IMPLICIT_VR_LITTLE_ENDIAN],
                Some(IMPLICIT_VR_LITTLE_ENDIAN),
            ),
            (v, vec![JPEG_LS], None),
            // Query/Retrieve: little endian, explicit first, nothing else.
            (
                q,
                vec![IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN],
                Some(EXPLICIT_VR_LITTLE_ENDIAN),
            ),
            (
                q,
                vec![EXPLICIT_VR_BIG_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN],
                Some(IMPLICIT_VR_LITTLE_ENDIAN),
            ),
            (q, vec![EXPLICIT_VR_BIG_ENDIAN], None),
            (q, vec![DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN], None),
        ];
        for (service, offered, expect) in cases {
            let offered = strings(&offered);
            assert_eq!(
                choose_transfer_syntax(service, &offered),
                expect,
                "{offered:?}"
            );
        }
    }

    fn policy() -> Policy {
        Policy {
            ae_title: "PACS".into(),
            strict_ae: false,
            known_calling_aes: vec!["MODALITY".into()],
            max_pdu_len: 65536,
        }
    }

    fn pc(id: u8, abs: &str, ts: &[&str]) -> PresentationContextProposed {
        PresentationContextProposed {
            id,
            abstract_syntax: abs.into(),
            transfer_syntaxes: strings(ts),
        }
    }

    fn rq(calling: &str, called: &str, pcs: Vec<PresentationContextProposed>) -> AssociationRQ {
        AssociationRQ {
            protocol_version: 1,
            calling_ae_title: calling.into(),
            called_ae_title: called.into(),
            application_context_name: APPLICATION_CONTEXT_NAME.into(),
            presentation_contexts: pcs,
            user_variables: vec![UserVariableItem::MaxLength(16384)],
        }
    }

    fn user(reason: AssociationRJServiceUserReason) -> Result<(), AssociationRJ> {
        Err(rj(
            AssociationRJResult::Permanent,
            AssociationRJSource::ServiceUser(reason),
        ))
    }

    #[test]
    fn rejection_table() {
        use AssociationRJServiceUserReason::*;
        let echo = || vec![pc(1, uids::VERIFICATION, &[IMPLICIT_VR_LITTLE_ENDIAN])];
        let open = policy();
        let strict = Policy {
            strict_ae: true,
            ..policy()
        };
        let mut bad_version = rq("A", "PACS", echo());
        bad_version.protocol_version = 2;
        let mut bad_context = rq("A", "PACS", echo());
        bad_context.application_context_name = "1.2.3".into();
        let many: Vec<_> = (0..129u32)
            .map(|i| {
                pc(
                    (i * 2 + 1) as u8,
                    uids::VERIFICATION,
                    &[IMPLICIT_VR_LITTLE_ENDIAN],
                )
            })
            .collect();
        let cases: Vec<(&str, AssociationRQ, &Policy, Result<(), AssociationRJ>)> = vec![
            ("ok", rq("A", "PACS", echo()), &open, Ok(())),
            (
                "called AE with padding",
                rq("A", " PACS  ", echo()),
                &open,
                Ok(()),
            ),
            (
                "called AE is case-sensitive",
                rq("A", "pacs", echo()),
                &open,
                user(CalledAETitleNotRecognized),
            ),
            (
                "wrong called AE",
                rq("A", "OTHER", echo()),
                &open,
                user(CalledAETitleNotRecognized),
            ),
            (
                "strict, unknown caller",
                rq("STRANGER", "PACS", echo()),
                &strict,
                user(CallingAETitleNotRecognized),
            ),
            (
                "strict, known caller",
                rq("MODALITY", "PACS", echo()),
                &strict,
                Ok(()),
            ),
            (
                "strict is case-sensitive",
                rq("modality", "PACS", echo()),
                &strict,
                user(CallingAETitleNotRecognized),
            ),
            (
                "protocol version without bit 0",
                bad_version,
                &open,
                Err(rj(
                    AssociationRJResult::Permanent,
                    AssociationRJSource::ServiceProviderASCE(
                        AssociationRJServiceProviderASCEReason::ProtocolVersionNotSupported,
                    ),
                )),
            ),
            (
                "application context",
                bad_context,
                &open,
                user(ApplicationContextNameNotSupported),
            ),
            (
                "no presentation context",
                rq("A", "PACS", vec![]),
                &open,
                user(NoReasonGiven),
            ),
            (
                "129 presentation contexts",
                rq("A", "PACS", many),
                &open,
                user(NoReasonGiven),
            ),
            (
                "duplicate context id",
                rq("A", "PACS", vec![pc(1, CT, &[RLE]), pc(1, CT, &[RLE])]),
                &open,
                user(NoReasonGiven),
            ),
            (
                "even context id",
                rq("A", "PACS", vec![pc(2, CT, &[RLE])]),
                &open,
                user(NoReasonGiven),
            ),
        ];
        for (name, rq, policy, expect) in cases {
            assert_eq!(negotiate(&rq, policy).map(|_| ()), expect, "{name}");
        }
    }

    #[test]
    fn accepts_per_context() {
        let request = rq(
            "MODALITY",
            "PACS",
            vec![
                pc(1, uids::VERIFICATION, &[IMPLICIT_VR_LITTLE_ENDIAN]),
                pc(3, CT, &[EXPLICIT_VR_LITTLE_ENDIAN, JPEG_LS]),
                pc(5, PRIVATE, &[IMPLICIT_VR_LITTLE_ENDIAN]),
                pc(7, CT, &[PRIVATE]),
                pc(
                    9,
                    "1.2.840.10008.5.1.4.1.2.2.2\0",
                    &[EXPLICIT_VR_LITTLE_ENDIAN],
                ),
            ],
        );
        let n = negotiate(&request, &policy()).unwrap();
        assert_eq!(n.calling_ae, "MODALITY");
        assert_eq!(n.called_ae, "PACS");
        assert_eq!(n.peer_max_pdu, 16384);
        let results: Vec<_> =
            n.ac.presentation_contexts
                .iter()
                .map(|r| (r.id, r.reason.clone(), r.transfer_syntax.as_str()))
                .collect();
        use PresentationContextResultReason::*;
        assert_eq!(
            results,
            vec![
                (1, Acceptance, IMPLICIT_VR_LITTLE_ENDIAN),
                (3, Acceptance, JPEG_LS),
                (5, AbstractSyntaxNotSupported, IMPLICIT_VR_LITTLE_ENDIAN),
                (7, TransferSyntaxesNotSupported, IMPLICIT_VR_LITTLE_ENDIAN),
                (9, Acceptance, EXPLICIT_VR_LITTLE_ENDIAN),
            ]
        );
        let ids: Vec<u8> = n.contexts.iter().map(|c| c.id).collect();
        assert_eq!(ids, vec![1, 3, 9]);
        assert_eq!(n.contexts[2].abstract_syntax, "1.2.840.10008.5.1.4.1.2.2.2");
        assert!(n
            .ac
            .user_variables
            .contains(&UserVariableItem::MaxLength(65536)));
    }

    #[test]
    fn role_selection() {
        let mut request = rq(
            "GETSCU",
            "PACS",
            vec![
                pc(
                    1,
                    uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_GET,
                    &[IMPLICIT_VR_LITTLE_ENDIAN],
                ),
                pc(3, CT, &[EXPLICIT_VR_LITTLE_ENDIAN]),
                pc(5, "1.2.840.10008.5.1.4.1.1.4", &[EXPLICIT_VR_LITTLE_ENDIAN]),
            ],
        );
        let both = RequestorRoles {
            scu: true,
            scp: true,
        };
        let scp_only = RequestorRoles {
            scu: false,
            scp: true,
        };
        request.user_variables.extend([
            UserVariableItem::ScuScpRoleSelectionSubItem(CT.into(), scp_only),
            UserVariableItem::ScuScpRoleSelectionSubItem(
                uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_GET.into(),
                both,
            ),
        ]);
        let n = negotiate(&request, &policy()).unwrap();
        let scp: Vec<(u8, bool)> = n
            .contexts
            .iter()
            .map(|c| (c.id, c.requestor_is_scp))
            .collect();
        assert_eq!(scp, vec![(1, false), (3, true), (5, false)]);
        assert!(n
            .ac
            .user_variables
            .contains(&UserVariableItem::ScuScpRoleSelectionSubItem(
                CT.into(),
                scp_only
            )));
        assert!(n
            .ac
            .user_variables
            .contains(&UserVariableItem::ScuScpRoleSelectionSubItem(
                uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_GET.into(),
                RequestorRoles {
                    scu: true,
                    scp: false
                }
            )));
        // The answer survives the PDU codec.
        let mut out = Vec::new();
        dicom_ul::write_pdu(&mut out, &dicom_ul::Pdu::AssociationAC(n.ac.clone())).unwrap();
        let back = dicom_ul::pdu::read_pdu(&mut std::io::Cursor::new(&out[..]), 1 << 20, true)
            .unwrap()
            .unwrap();
        assert_eq!(back, dicom_ul::Pdu::AssociationAC(n.ac));
    }

    #[test]
    fn workflow_services_and_the_commitment_scp_role() {
        assert_eq!(
            classify_abstract_syntax(MPPS_SOP_CLASS),
            Some(Service::Mpps)
        );
        assert_eq!(
            classify_abstract_syntax(STORAGE_COMMITMENT_SOP_CLASS),
            Some(Service::StorageCommitment)
        );
        let mut request = rq(
            "MODALITY",
            "PACS",
            vec![
                pc(1, MPPS_SOP_CLASS, &[JPEG_LS, IMPLICIT_VR_LITTLE_ENDIAN]),
                pc(
                    3,
                    STORAGE_COMMITMENT_SOP_CLASS,
                    &[EXPLICIT_VR_LITTLE_ENDIAN],
                ),
                pc(5, MPPS_SOP_CLASS, &[EXPLICIT_VR_BIG_ENDIAN]),
            ],
        );
        let both = RequestorRoles {
            scu: true,
            scp: true,
        };
        request.user_variables.extend([
            UserVariableItem::ScuScpRoleSelectionSubItem(STORAGE_COMMITMENT_SOP_CLASS.into(), both),
            UserVariableItem::ScuScpRoleSelectionSubItem(MPPS_SOP_CLASS.into(), both),
        ]);
        let n = negotiate(&request, &policy()).unwrap();
        let accepted: Vec<(u8, &str, bool)> = n
            .contexts
            .iter()
            .map(|c| (c.id, c.transfer_syntax.as_str(), c.requestor_is_scp))
            .collect();
        assert_eq!(
            accepted,
            vec![
                (1, IMPLICIT_VR_LITTLE_ENDIAN, false),
                (3, EXPLICIT_VR_LITTLE_ENDIAN, true)
            ]
        );
        // PS3.4 J.3.3: the SCP role is granted for Storage Commitment only.
        assert!(n
            .ac
            .user_variables
            .contains(&UserVariableItem::ScuScpRoleSelectionSubItem(
                STORAGE_COMMITMENT_SOP_CLASS.into(),
                both
            )));
        assert!(n
            .ac
            .user_variables
            .contains(&UserVariableItem::ScuScpRoleSelectionSubItem(
                MPPS_SOP_CLASS.into(),
                RequestorRoles {
                    scu: true,
                    scp: false
                }
            )));
    }

    #[test]
    fn max_length_defaults() {
        let mut request = rq(
            "A",
            "PACS",
            vec![pc(1, uids::VERIFICATION, &[IMPLICIT_VR_LITTLE_ENDIAN])],
        );
        request.user_variables.clear();
        assert_eq!(
            negotiate(&request, &policy()).unwrap().peer_max_pdu,
            DEFAULT_PEER_MAX_PDU
        );
    }

    #[test]
    fn local_limit_rejection_bytes() {
        // PS3.8 §9.3.4: type 03, reserved, length 4, reserved, result 2
        // (transient), source 3 (service provider, presentation), reason 2.
        let mut out = Vec::new();
        dicom_ul::write_pdu(
            &mut out,
            &dicom_ul::Pdu::AssociationRJ(reject_local_limit()),
        )
        .unwrap();
        assert_eq!(out, [0x03, 0x00, 0, 0, 0, 4, 0x00, 0x02, 0x03, 0x02]);
    }
}
