//! DIMSE-N dispatch: which handler an N-request goes to, decided as a pure
//! step from the presentation context and the request (no IO, tested with
//! tables). The association loop reads the data set that follows and runs
//! the handler: [`crate::mpps`] for N-CREATE and N-SET of MPPS,
//! [`crate::commitment`] for N-ACTION of Storage Commitment.
//!
//! A new N-service adds a [`Service`] in `negotiation.rs`, a row here and
//! its handler module.

use crate::message::{command_field, NRequest};
use crate::negotiation::Service;
use crate::status::Status;

/// Whether a command field is a DIMSE-N request.
pub(crate) fn is_n_request(field: u16) -> bool {
    matches!(
        field,
        command_field::N_EVENT_REPORT_RQ
            | command_field::N_GET_RQ
            | command_field::N_SET_RQ
            | command_field::N_ACTION_RQ
            | command_field::N_CREATE_RQ
            | command_field::N_DELETE_RQ
    )
}

/// Where an N-request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NRoute {
    MppsCreate,
    MppsSet,
    CommitmentAction,
    /// Answered at once with this status (any data set is dropped).
    Refuse(Status, &'static str),
}

/// Routes an N-request received on a context of `service` for
/// `abstract_syntax`.
pub(crate) fn route(abstract_syntax: &str, service: Service, rq: &NRequest) -> NRoute {
    let route = match (service, rq.field) {
        (Service::Mpps, command_field::N_CREATE_RQ) => NRoute::MppsCreate,
        (Service::Mpps, command_field::N_SET_RQ) => NRoute::MppsSet,
        (Service::StorageCommitment, command_field::N_ACTION_RQ) => NRoute::CommitmentAction,
        (Service::Mpps | Service::StorageCommitment, _) => {
            return NRoute::Refuse(
                Status::UNRECOGNIZED_OPERATION,
                "operation not supported for this SOP class",
            )
        }
        _ => {
            return NRoute::Refuse(
                Status::UNRECOGNIZED_OPERATION,
                "operation not supported on this presentation context",
            )
        }
    };
    if rq.sop_class_uid.trim_end_matches(['\0', ' ']) != abstract_syntax {
        // PS3.7 C.4.18 (0122H): the command names another SOP class than
        // the context it came on.
        return NRoute::Refuse(
            Status::SOP_CLASS_NOT_SUPPORTED,
            "SOP class differs from the presentation context's",
        );
    }
    if !rq.has_data_set {
        return NRoute::Refuse(Status::MISSING_ATTRIBUTE, "the request needs a data set");
    }
    route
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::negotiation::{MPPS_SOP_CLASS, STORAGE_COMMITMENT_SOP_CLASS};

    fn rq(field: u16, class: &str, data: bool) -> NRequest {
        NRequest {
            field,
            message_id: 1,
            sop_class_uid: class.into(),
            sop_instance_uid: Some("1.2.3".into()),
            type_id: None,
            has_data_set: data,
        }
    }

    #[test]
    fn routes() {
        use command_field::*;
        let cases: Vec<(Service, &str, u16, &str, bool, NRoute)> = vec![
            (
                Service::Mpps,
                MPPS_SOP_CLASS,
                N_CREATE_RQ,
                MPPS_SOP_CLASS,
                true,
                NRoute::MppsCreate,
            ),
            (
                Service::Mpps,
                MPPS_SOP_CLASS,
                N_SET_RQ,
                MPPS_SOP_CLASS,
                true,
                NRoute::MppsSet,
            ),
            (
                Service::StorageCommitment,
                STORAGE_COMMITMENT_SOP_CLASS,
                N_ACTION_RQ,
                STORAGE_COMMITMENT_SOP_CLASS,
                true,
                NRoute::CommitmentAction,
            ),
            (
                Service::Mpps,
                MPPS_SOP_CLASS,
                N_DELETE_RQ,
                MPPS_SOP_CLASS,
                false,
                NRoute::Refuse(
                    Status::UNRECOGNIZED_OPERATION,
                    "operation not supported for this SOP class",
                ),
            ),
            (
                Service::StorageCommitment,
                STORAGE_COMMITMENT_SOP_CLASS,
                N_CREATE_RQ,
                STORAGE_COMMITMENT_SOP_CLASS,
                true,
                NRoute::Refuse(
                    Status::UNRECOGNIZED_OPERATION,
                    "operation not supported for this SOP class",
                ),
            ),
            (
                Service::Verification,
                "1.2.840.10008.1.1",
                N_ACTION_RQ,
                STORAGE_COMMITMENT_SOP_CLASS,
                true,
                NRoute::Refuse(
                    Status::UNRECOGNIZED_OPERATION,
                    "operation not supported on this presentation context",
                ),
            ),
            (
                Service::Mpps,
                MPPS_SOP_CLASS,
                N_CREATE_RQ,
                STORAGE_COMMITMENT_SOP_CLASS,
                true,
                NRoute::Refuse(
                    Status::SOP_CLASS_NOT_SUPPORTED,
                    "SOP class differs from the presentation context's",
                ),
            ),
            (
                Service::Mpps,
                MPPS_SOP_CLASS,
                N_SET_RQ,
                MPPS_SOP_CLASS,
                false,
                NRoute::Refuse(Status::MISSING_ATTRIBUTE, "the request needs a data set"),
            ),
        ];
        for (service, context, field, class, data, expected) in cases {
            assert_eq!(
                route(context, service, &rq(field, class, data)),
                expected,
                "{service:?} {field:#06x}"
            );
        }
        assert!(is_n_request(N_ACTION_RQ) && is_n_request(N_EVENT_REPORT_RQ));
        assert!(!is_n_request(N_ACTION_RSP) && !is_n_request(C_STORE_RQ));
    }
}
