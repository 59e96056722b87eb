//! Verification SCP (PS3.4 A): C-ECHO, answered from the request alone.

use crate::message::{CEchoRq, CEchoRsp, CommandSet, FieldError};
use crate::status::Status;

/// The C-ECHO-RSP to a C-ECHO-RQ received on a Verification context, or
/// why the request cannot be read (the caller answers C000H).
pub(crate) fn echo(command: &CommandSet, abstract_syntax: &str) -> Result<CommandSet, FieldError> {
    let rq = CEchoRq::from_command(command)?;
    Ok(CEchoRsp {
        message_id_being_responded_to: rq.message_id,
        affected_sop_class_uid: Some(abstract_syntax.to_owned()),
        status: Status::SUCCESS,
    }
    .to_command())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::message::tags;

    #[test]
    fn echo_answers_its_message_id() {
        let rq = CEchoRq {
            message_id: 41,
            affected_sop_class_uid: "1.2.840.10008.1.1".into(),
        }
        .to_command();
        let rsp = CEchoRsp::from_command(&echo(&rq, "1.2.840.10008.1.1").unwrap()).unwrap();
        assert_eq!(rsp.message_id_being_responded_to, 41);
        assert_eq!(rsp.status, Status::SUCCESS);
        let mut bad = rq.clone();
        bad.remove(tags::MESSAGE_ID);
        assert!(echo(&bad, "1.2.840.10008.1.1").is_err());
    }
}
