//! Typed DIMSE-C commands (PS3.7 §9.3) over [`CommandSet`].
//!
//! Each type reads from and writes to a command set; reading checks the
//! fields the service needs and leaves the validation of their values (UID
//! grammar, SOP class support) to the handler, which knows which status to
//! answer with.

use super::command_set::{error_comment, tags, CommandSet, FieldError};
use super::{DATA_SET_PRESENT, NO_DATA_SET};
use crate::status::Status;

/// Command Field (0000,0100) values (PS3.7 E.1).
pub mod command_field {
    pub const C_STORE_RQ: u16 = 0x0001;
    pub const C_STORE_RSP: u16 = 0x8001;
    pub const C_GET_RQ: u16 = 0x0010;
    pub const C_GET_RSP: u16 = 0x8010;
    pub const C_FIND_RQ: u16 = 0x0020;
    pub const C_FIND_RSP: u16 = 0x8020;
    pub const C_MOVE_RQ: u16 = 0x0021;
    pub const C_MOVE_RSP: u16 = 0x8021;
    pub const C_ECHO_RQ: u16 = 0x0030;
    pub const C_ECHO_RSP: u16 = 0x8030;
    pub const C_CANCEL_RQ: u16 = 0x0FFF;
    pub const N_EVENT_REPORT_RQ: u16 = 0x0100;
    pub const N_EVENT_REPORT_RSP: u16 = 0x8100;
    pub const N_GET_RQ: u16 = 0x0110;
    pub const N_SET_RQ: u16 = 0x0120;
    pub const N_SET_RSP: u16 = 0x8120;
    pub const N_ACTION_RQ: u16 = 0x0130;
    pub const N_ACTION_RSP: u16 = 0x8130;
    pub const N_CREATE_RQ: u16 = 0x0140;
    pub const N_CREATE_RSP: u16 = 0x8140;
    pub const N_DELETE_RQ: u16 = 0x0150;

    /// Whether a command field is a response (bit 15 set, PS3.7 E.1).
    pub fn is_response(field: u16) -> bool {
        field & 0x8000 != 0
    }

    /// Whether a command field is one PS3.7 defines (Table E.1-1): the
    /// DIMSE-C and DIMSE-N requests and their responses, and C-CANCEL.
    pub fn is_defined(field: u16) -> bool {
        matches!(
            field & 0x7FFF,
            0x0001
                | 0x0010
                | 0x0020
                | 0x0021
                | 0x0030
                | 0x0100
                | 0x0110
                | 0x0120
                | 0x0130
                | 0x0140
                | 0x0150
        ) || field == C_CANCEL_RQ
    }

    /// The response field matching a request field.
    pub fn response_to(request: u16) -> u16 {
        request | 0x8000
    }
}

/// Priority (0000,0700) values (PS3.7 §9.3.1.1).
pub mod priority {
    pub const MEDIUM: u16 = 0x0000;
    pub const HIGH: u16 = 0x0001;
    pub const LOW: u16 = 0x0002;
}

/// C-ECHO-RQ (PS3.7 §9.3.5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CEchoRq {
    pub message_id: u16,
    pub affected_sop_class_uid: String,
}

impl CEchoRq {
    pub fn from_command(c: &CommandSet) -> Result<CEchoRq, FieldError> {
        Ok(CEchoRq {
            message_id: c.us(tags::MESSAGE_ID)?,
            affected_sop_class_uid: c.text(tags::AFFECTED_SOP_CLASS_UID)?,
        })
    }

    pub fn to_command(&self) -> CommandSet {
        let mut c = CommandSet::new();
        c.set_uid(tags::AFFECTED_SOP_CLASS_UID, &self.affected_sop_class_uid);
        c.set_us(tags::COMMAND_FIELD, command_field::C_ECHO_RQ);
        c.set_us(tags::MESSAGE_ID, self.message_id);
        c.set_us(tags::COMMAND_DATA_SET_TYPE, NO_DATA_SET);
        c
    }
}

/// C-ECHO-RSP (PS3.7 §9.3.5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CEchoRsp {
    pub message_id_being_responded_to: u16,
    pub affected_sop_class_uid: Option<String>,
    pub status: Status,
}

impl CEchoRsp {
    pub fn from_command(c: &CommandSet) -> Result<CEchoRsp, FieldError> {
        Ok(CEchoRsp {
            message_id_being_responded_to: c.us(tags::MESSAGE_ID_BEING_RESPONDED_TO)?,
            affected_sop_class_uid: c.text_opt(tags::AFFECTED_SOP_CLASS_UID)?,
            status: Status(c.us(tags::STATUS)?),
        })
    }

    pub fn to_command(&self) -> CommandSet {
        Response {
            command_field: command_field::C_ECHO_RSP,
            message_id_being_responded_to: self.message_id_being_responded_to,
            affected_sop_class_uid: self.affected_sop_class_uid.as_deref(),
            affected_sop_instance_uid: None,
            status: self.status,
            error_comment: None,
        }
        .to_command()
    }
}

/// C-STORE-RQ (PS3.7 §9.3.1.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CStoreRq {
    pub message_id: u16,
    pub affected_sop_class_uid: String,
    pub affected_sop_instance_uid: String,
    /// Raw Priority; see [`priority`]. Unknown values are kept, not refused.
    pub priority: u16,
    /// Move Originator AE Title (0000,1030), when the store is a C-MOVE
    /// sub-operation.
    pub move_originator_ae_title: Option<String>,
    /// Move Originator Message ID (0000,1031).
    pub move_originator_message_id: Option<u16>,
}

impl CStoreRq {
    /// Reads a C-STORE-RQ. Priority is optional here (the standard requires
    /// it; its absence changes nothing we do).
    pub fn from_command(c: &CommandSet) -> Result<CStoreRq, FieldError> {
        Ok(CStoreRq {
            message_id: c.us(tags::MESSAGE_ID)?,
            affected_sop_class_uid: c.text(tags::AFFECTED_SOP_CLASS_UID)?,
            affected_sop_instance_uid: c.text(tags::AFFECTED_SOP_INSTANCE_UID)?,
            priority: c.us_opt(tags::PRIORITY)?.unwrap_or(priority::MEDIUM),
            move_originator_ae_title: c.text_opt(tags::MOVE_ORIGINATOR_AE_TITLE)?,
            move_originator_message_id: c.us_opt(tags::MOVE_ORIGINATOR_MESSAGE_ID)?,
        })
    }

    pub fn to_command(&self) -> CommandSet {
        let mut c = CommandSet::new();
        c.set_uid(tags::AFFECTED_SOP_CLASS_UID, &self.affected_sop_class_uid);
        c.set_us(tags::COMMAND_FIELD, command_field::C_STORE_RQ);
        c.set_us(tags::MESSAGE_ID, self.message_id);
        c.set_us(tags::PRIORITY, self.priority);
        c.set_us(tags::COMMAND_DATA_SET_TYPE, DATA_SET_PRESENT);
        c.set_uid(
            tags::AFFECTED_SOP_INSTANCE_UID,
            &self.affected_sop_instance_uid,
        );
        if let Some(ae) = &self.move_originator_ae_title {
            c.set_text(tags::MOVE_ORIGINATOR_AE_TITLE, ae);
        }
        if let Some(id) = self.move_originator_message_id {
            c.set_us(tags::MOVE_ORIGINATOR_MESSAGE_ID, id);
        }
        c
    }
}

/// C-STORE-RSP (PS3.7 §9.3.1.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CStoreRsp {
    pub message_id_being_responded_to: u16,
    pub affected_sop_class_uid: Option<String>,
    pub affected_sop_instance_uid: Option<String>,
    pub status: Status,
    /// Error Comment (0000,0902); written only with a warning or failure
    /// status, cut to 64 characters.
    pub error_comment: Option<String>,
}

impl CStoreRsp {
    pub fn from_command(c: &CommandSet) -> Result<CStoreRsp, FieldError> {
        Ok(CStoreRsp {
            message_id_being_responded_to: c.us(tags::MESSAGE_ID_BEING_RESPONDED_TO)?,
            affected_sop_class_uid: c.text_opt(tags::AFFECTED_SOP_CLASS_UID)?,
            affected_sop_instance_uid: c.text_opt(tags::AFFECTED_SOP_INSTANCE_UID)?,
            status: Status(c.us(tags::STATUS)?),
            error_comment: c.text_opt(tags::ERROR_COMMENT)?,
        })
    }

    pub fn to_command(&self) -> CommandSet {
        Response {
            command_field: command_field::C_STORE_RSP,
            message_id_being_responded_to: self.message_id_being_responded_to,
            affected_sop_class_uid: self.affected_sop_class_uid.as_deref(),
            affected_sop_instance_uid: self.affected_sop_instance_uid.as_deref(),
            status: self.status,
            error_comment: self.error_comment.as_deref(),
        }
        .to_command()
    }
}

/// A response without a data set to any request: what the typed responses
/// write, and what a handler uses to refuse a request it does not serve
/// (C-FIND, C-MOVE, C-GET for now; unknown operations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response<'a> {
    pub command_field: u16,
    pub message_id_being_responded_to: u16,
    pub affected_sop_class_uid: Option<&'a str>,
    pub affected_sop_instance_uid: Option<&'a str>,
    pub status: Status,
    pub error_comment: Option<&'a str>,
}

impl Response<'_> {
    pub fn to_command(&self) -> CommandSet {
        let mut c = CommandSet::new();
        if let Some(uid) = self.affected_sop_class_uid {
            c.set_uid(tags::AFFECTED_SOP_CLASS_UID, uid);
        }
        c.set_us(tags::COMMAND_FIELD, self.command_field);
        c.set_us(
            tags::MESSAGE_ID_BEING_RESPONDED_TO,
            self.message_id_being_responded_to,
        );
        c.set_us(tags::COMMAND_DATA_SET_TYPE, NO_DATA_SET);
        c.set_us(tags::STATUS, self.status.0);
        if let Some(text) = self.error_comment {
            if self.status.allows_error_comment() {
                c.set_text(tags::ERROR_COMMENT, &error_comment(text));
            }
        }
        if let Some(uid) = self.affected_sop_instance_uid {
            c.set_uid(tags::AFFECTED_SOP_INSTANCE_UID, uid);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn round_trip(c: &CommandSet) -> CommandSet {
        let (back, gl) = CommandSet::decode(&c.encode()).unwrap();
        assert_eq!(gl, super::super::command_set::GroupLength::Consistent);
        back
    }

    #[test]
    fn echo_round_trips() {
        let rq = CEchoRq {
            message_id: 0xFFFF,
            affected_sop_class_uid: "1.2.840.10008.1.1".into(),
        };
        let c = round_trip(&rq.to_command());
        assert_eq!(c.command_field(), Ok(command_field::C_ECHO_RQ));
        assert!(!c.has_data_set());
        assert_eq!(CEchoRq::from_command(&c).unwrap(), rq);

        let rsp = CEchoRsp {
            message_id_being_responded_to: 3,
            affected_sop_class_uid: Some("1.2.840.10008.1.1".into()),
            status: Status::SUCCESS,
        };
        let c = round_trip(&rsp.to_command());
        assert_eq!(c.command_field(), Ok(command_field::C_ECHO_RSP));
        assert!(!c.contains(tags::ERROR_COMMENT));
        assert_eq!(CEchoRsp::from_command(&c).unwrap(), rsp);
    }

    #[test]
    fn store_round_trips() {
        let rq = CStoreRq {
            message_id: 42,
            affected_sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            affected_sop_instance_uid: "1.2.3.4.5".into(),
            priority: priority::HIGH,
            move_originator_ae_title: Some("MOVER".into()),
            move_originator_message_id: Some(9),
        };
        let c = round_trip(&rq.to_command());
        assert!(c.has_data_set());
        assert_eq!(c.command_field(), Ok(command_field::C_STORE_RQ));
        assert_eq!(CStoreRq::from_command(&c).unwrap(), rq);

        let rsp = CStoreRsp {
            message_id_being_responded_to: 42,
            affected_sop_class_uid: Some(rq.affected_sop_class_uid.clone()),
            affected_sop_instance_uid: Some(rq.affected_sop_instance_uid.clone()),
            status: Status::CANNOT_UNDERSTAND,
            error_comment: Some("bad".into()),
        };
        let c = round_trip(&rsp.to_command());
        assert_eq!(c.command_field(), Ok(command_field::C_STORE_RSP));
        assert!(!c.has_data_set());
        assert_eq!(CStoreRsp::from_command(&c).unwrap(), rsp);
    }

    #[test]
    fn success_carries_no_error_comment() {
        let rsp = CStoreRsp {
            message_id_being_responded_to: 1,
            affected_sop_class_uid: None,
            affected_sop_instance_uid: None,
            status: Status::SUCCESS,
            error_comment: Some("ignored".into()),
        };
        assert!(!rsp.to_command().contains(tags::ERROR_COMMENT));
    }

    #[test]
    fn store_rq_missing_fields() {
        let full = CStoreRq {
            message_id: 1,
            affected_sop_class_uid: "1.2".into(),
            affected_sop_instance_uid: "1.3".into(),
            priority: priority::MEDIUM,
            move_originator_ae_title: None,
            move_originator_message_id: None,
        }
        .to_command();
        for tag in [
            tags::MESSAGE_ID,
            tags::AFFECTED_SOP_CLASS_UID,
            tags::AFFECTED_SOP_INSTANCE_UID,
        ] {
            let mut c = full.clone();
            c.remove(tag);
            assert_eq!(CStoreRq::from_command(&c), Err(FieldError::Missing(tag)));
        }
        let mut c = full.clone();
        c.remove(tags::PRIORITY);
        assert_eq!(
            CStoreRq::from_command(&c).unwrap().priority,
            priority::MEDIUM
        );
    }

    #[test]
    fn defined_command_fields() {
        for f in [0x0001, 0x8001, 0x0030, 0x8030, 0x0FFF, 0x0110, 0x8150] {
            assert!(command_field::is_defined(f), "{f:#06x}");
        }
        for f in [
            0x0000, 0x8000, 0x0ABC, 0x8ABC, 0x8FFF, 0xFFFF, 0x0002, 0x0160,
        ] {
            assert!(!command_field::is_defined(f), "{f:#06x}");
        }
    }

    #[test]
    fn response_fields() {
        assert!(command_field::is_response(command_field::C_STORE_RSP));
        assert!(!command_field::is_response(command_field::C_CANCEL_RQ));
        assert_eq!(
            command_field::response_to(command_field::C_FIND_RQ),
            command_field::C_FIND_RSP
        );
        assert_eq!(
            command_field::response_to(command_field::C_MOVE_RQ),
            command_field::C_MOVE_RSP
        );
        assert_eq!(
            command_field::response_to(command_field::C_GET_RQ),
            command_field::C_GET_RSP
        );
    }
}
