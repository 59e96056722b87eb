//! Typed DIMSE-N commands (PS3.7 §10.3): one request and one response type
//! for the six N-services, over [`CommandSet`].
//!
//! N-CREATE and N-EVENT-REPORT name their object with the Affected SOP
//! Class/Instance UIDs; N-SET, N-GET, N-ACTION and N-DELETE with the
//! Requested ones (PS3.7 Tables 10.3-1 to 10.3-12). Responses always use
//! the Affected ones. Event Type ID and Action Type ID share one field
//! here, since a command carries at most one of them.

use super::command_set::{error_comment, tags, CommandSet, FieldError};
use super::commands::command_field;
use super::{DATA_SET_PRESENT, NO_DATA_SET};
use crate::status::Status;

/// Whether a request field names its object with the Requested UIDs.
fn uses_requested(field: u16) -> bool {
    matches!(
        field & 0x7FFF,
        command_field::N_SET_RQ
            | command_field::N_GET_RQ
            | command_field::N_ACTION_RQ
            | command_field::N_DELETE_RQ
    )
}

/// The tag of the type ID a field carries, if any.
fn type_id_tag(field: u16) -> Option<u32> {
    match field & 0x7FFF {
        command_field::N_EVENT_REPORT_RQ => Some(tags::EVENT_TYPE_ID),
        command_field::N_ACTION_RQ => Some(tags::ACTION_TYPE_ID),
        _ => None,
    }
}

/// A DIMSE-N request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NRequest {
    pub field: u16,
    pub message_id: u16,
    pub sop_class_uid: String,
    /// Optional for N-CREATE (the SCP may then assign one).
    pub sop_instance_uid: Option<String>,
    /// Event Type ID (N-EVENT-REPORT) or Action Type ID (N-ACTION).
    pub type_id: Option<u16>,
    pub has_data_set: bool,
}

impl NRequest {
    pub fn from_command(c: &CommandSet) -> Result<NRequest, FieldError> {
        let field = c.command_field()?;
        let (class_tag, instance_tag) = if uses_requested(field) {
            (
                tags::REQUESTED_SOP_CLASS_UID,
                tags::REQUESTED_SOP_INSTANCE_UID,
            )
        } else {
            (
                tags::AFFECTED_SOP_CLASS_UID,
                tags::AFFECTED_SOP_INSTANCE_UID,
            )
        };
        let type_id = match type_id_tag(field) {
            Some(tag) => Some(c.us(tag)?),
            None => None,
        };
        Ok(NRequest {
            field,
            message_id: c.us(tags::MESSAGE_ID)?,
            sop_class_uid: c.text(class_tag)?,
            sop_instance_uid: c.text_opt(instance_tag)?,
            type_id,
            has_data_set: c.has_data_set(),
        })
    }

    pub fn to_command(&self) -> CommandSet {
        let mut c = CommandSet::new();
        let (class_tag, instance_tag) = if uses_requested(self.field) {
            (
                tags::REQUESTED_SOP_CLASS_UID,
                tags::REQUESTED_SOP_INSTANCE_UID,
            )
        } else {
            (
                tags::AFFECTED_SOP_CLASS_UID,
                tags::AFFECTED_SOP_INSTANCE_UID,
            )
        };
        c.set_uid(class_tag, &self.sop_class_uid);
        c.set_us(tags::COMMAND_FIELD, self.field);
        c.set_us(tags::MESSAGE_ID, self.message_id);
        c.set_us(
            tags::COMMAND_DATA_SET_TYPE,
            if self.has_data_set {
                DATA_SET_PRESENT
            } else {
                NO_DATA_SET
            },
        );
        if let Some(uid) = &self.sop_instance_uid {
            c.set_uid(instance_tag, uid);
        }
        if let (Some(tag), Some(id)) = (type_id_tag(self.field), self.type_id) {
            c.set_us(tag, id);
        }
        c
    }

    /// The response to this request, without a data set.
    pub fn response(&self, status: Status, comment: Option<&str>) -> NResponse {
        NResponse {
            field: command_field::response_to(self.field),
            message_id_being_responded_to: self.message_id,
            sop_class_uid: Some(self.sop_class_uid.clone()),
            sop_instance_uid: self.sop_instance_uid.clone(),
            type_id: self.type_id,
            status,
            error_comment: comment.map(str::to_owned),
        }
    }
}

/// A DIMSE-N response (without a data set: we send none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NResponse {
    pub field: u16,
    pub message_id_being_responded_to: u16,
    pub sop_class_uid: Option<String>,
    pub sop_instance_uid: Option<String>,
    pub type_id: Option<u16>,
    pub status: Status,
    /// Written only with a warning or failure status, cut to 64 characters.
    pub error_comment: Option<String>,
}

impl NResponse {
    pub fn from_command(c: &CommandSet) -> Result<NResponse, FieldError> {
        let field = c.command_field()?;
        let type_id = match type_id_tag(field) {
            Some(tag) => c.us_opt(tag)?,
            None => None,
        };
        Ok(NResponse {
            field,
            message_id_being_responded_to: c.us(tags::MESSAGE_ID_BEING_RESPONDED_TO)?,
            sop_class_uid: c.text_opt(tags::AFFECTED_SOP_CLASS_UID)?,
            sop_instance_uid: c.text_opt(tags::AFFECTED_SOP_INSTANCE_UID)?,
            type_id,
            status: Status(c.us(tags::STATUS)?),
            error_comment: c.text_opt(tags::ERROR_COMMENT)?,
        })
    }

    pub fn to_command(&self) -> CommandSet {
        let mut c = CommandSet::new();
        if let Some(uid) = &self.sop_class_uid {
            c.set_uid(tags::AFFECTED_SOP_CLASS_UID, uid);
        }
        c.set_us(tags::COMMAND_FIELD, self.field);
        c.set_us(
            tags::MESSAGE_ID_BEING_RESPONDED_TO,
            self.message_id_being_responded_to,
        );
        c.set_us(tags::COMMAND_DATA_SET_TYPE, NO_DATA_SET);
        c.set_us(tags::STATUS, self.status.0);
        if let Some(text) = &self.error_comment {
            if self.status.allows_error_comment() {
                c.set_text(tags::ERROR_COMMENT, &error_comment(text));
            }
        }
        if let Some(uid) = &self.sop_instance_uid {
            c.set_uid(tags::AFFECTED_SOP_INSTANCE_UID, uid);
        }
        if let (Some(tag), Some(id)) = (type_id_tag(self.field), self.type_id) {
            c.set_us(tag, id);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn round_trip(c: &CommandSet) -> CommandSet {
        CommandSet::decode(&c.encode()).unwrap().0
    }

    #[test]
    fn action_uses_requested_uids_and_action_type() {
        let rq = NRequest {
            field: command_field::N_ACTION_RQ,
            message_id: 7,
            sop_class_uid: "1.2.840.10008.1.20.1".into(),
            sop_instance_uid: Some("1.2.840.10008.1.20.1.1".into()),
            type_id: Some(1),
            has_data_set: true,
        };
        let c = round_trip(&rq.to_command());
        assert!(c.contains(tags::REQUESTED_SOP_CLASS_UID));
        assert!(c.contains(tags::ACTION_TYPE_ID));
        assert!(!c.contains(tags::AFFECTED_SOP_CLASS_UID));
        assert_eq!(NRequest::from_command(&c).unwrap(), rq);
        let rsp = rq.response(Status::SUCCESS, Some("not sent"));
        let back = NResponse::from_command(&round_trip(&rsp.to_command())).unwrap();
        assert_eq!(back.field, command_field::N_ACTION_RSP);
        assert_eq!(back.type_id, Some(1));
        assert_eq!(back.error_comment, None);
        assert_eq!(
            back.sop_instance_uid.as_deref(),
            Some("1.2.840.10008.1.20.1.1")
        );
    }

    #[test]
    fn create_and_event_report_use_affected_uids() {
        let rq = NRequest {
            field: command_field::N_EVENT_REPORT_RQ,
            message_id: 9,
            sop_class_uid: "1.2.840.10008.1.20.1".into(),
            sop_instance_uid: Some("1.2.840.10008.1.20.1.1".into()),
            type_id: Some(2),
            has_data_set: true,
        };
        let c = round_trip(&rq.to_command());
        assert!(c.contains(tags::AFFECTED_SOP_INSTANCE_UID) && c.contains(tags::EVENT_TYPE_ID));
        assert_eq!(NRequest::from_command(&c).unwrap(), rq);
        let create = NRequest {
            field: command_field::N_CREATE_RQ,
            message_id: 1,
            sop_class_uid: "1.2.840.10008.3.1.2.3.3".into(),
            sop_instance_uid: None,
            type_id: None,
            has_data_set: true,
        };
        let c = round_trip(&create.to_command());
        assert_eq!(NRequest::from_command(&c).unwrap(), create);
        let rsp = create.response(Status::INVALID_ATTRIBUTE_VALUE, Some("status"));
        let back = NResponse::from_command(&round_trip(&rsp.to_command())).unwrap();
        assert_eq!(back.status, Status::INVALID_ATTRIBUTE_VALUE);
        assert_eq!(back.error_comment.as_deref(), Some("status"));
    }

    #[test]
    fn missing_fields_are_errors() {
        let mut c = NRequest {
            field: command_field::N_ACTION_RQ,
            message_id: 7,
            sop_class_uid: "1.2".into(),
            sop_instance_uid: Some("1.3".into()),
            type_id: Some(1),
            has_data_set: true,
        }
        .to_command();
        c.remove(tags::ACTION_TYPE_ID);
        assert_eq!(
            NRequest::from_command(&c),
            Err(FieldError::Missing(tags::ACTION_TYPE_ID))
        );
    }
}
