//! Acknowledgements (HL7 v2.5.1 2.9, original acknowledgement mode): MSA-1
//! `AA` accepted, `AE` application error (the content is wrong: a missing
//! or invalid field, an unknown order), `AR` application reject (the
//! message cannot be handled at all: unreadable, an unsupported type or
//! event, the archive unavailable). MSA-2 echoes MSH-10; an ERR segment
//! carries the reason (ERR-3 code from HL7 table 0357, ERR-4 severity,
//! ERR-8 text).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::message::{Charset, Delimiters, Message};

/// MSA-1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckCode {
    Accept,
    Error,
    Reject,
}

impl AckCode {
    pub fn as_str(self) -> &'static str {
        match self {
            AckCode::Accept => "AA",
            AckCode::Error => "AE",
            AckCode::Reject => "AR",
        }
    }
}

/// HL7 table 0357 message error condition codes used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 100 Segment sequence error (the message cannot be parsed).
    SegmentSequence,
    /// 101 Required field missing.
    RequiredFieldMissing,
    /// 102 Data type error.
    DataType,
    /// 200 Unsupported message type.
    UnsupportedMessageType,
    /// 201 Unsupported event code.
    UnsupportedEvent,
    /// 205 Duplicate key identifier.
    DuplicateKey,
    /// 204 Unknown key identifier.
    UnknownKey,
    /// 207 Application internal error.
    Internal,
}

impl ErrorCode {
    fn code(self) -> (&'static str, &'static str) {
        match self {
            ErrorCode::SegmentSequence => ("100", "Segment sequence error"),
            ErrorCode::RequiredFieldMissing => ("101", "Required field missing"),
            ErrorCode::DataType => ("102", "Data type error"),
            ErrorCode::UnsupportedMessageType => ("200", "Unsupported message type"),
            ErrorCode::UnsupportedEvent => ("201", "Unsupported event code"),
            ErrorCode::UnknownKey => ("204", "Unknown key identifier"),
            ErrorCode::DuplicateKey => ("205", "Duplicate key identifier"),
            ErrorCode::Internal => ("207", "Application internal error"),
        }
    }
}

static CONTROL: AtomicU64 = AtomicU64::new(1);

/// `YYYYMMDDHHMMSS` (UTC) of a Unix time.
pub fn timestamp(secs: u64) -> String {
    let rem = secs % 86_400;
    let (y, m, d) = pacs_core::audit_xml::civil_from_days((secs / 86_400) as i64);
    format!(
        "{y:04}{m:02}{d:02}{:02}{:02}{:02}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// The ACK of `original` (or of an unreadable message, `None`), encoded
/// in the original's character set.
pub fn ack(
    original: Option<&Message>,
    code: AckCode,
    error: Option<(ErrorCode, &str)>,
    now: u64,
) -> Vec<u8> {
    let d = Delimiters::default();
    let charset = original.map(|m| m.charset).unwrap_or(Charset::Latin1);
    let msh = |n: usize, c: usize| original.map(|m| m.msh(n, c)).unwrap_or_default();
    let e = |s: String| d.escape(&s);
    let trigger = msh(9, 2);
    let control = format!(
        "SEN{}{:06}",
        timestamp(now),
        CONTROL.fetch_add(1, Ordering::Relaxed) % 1_000_000
    );
    let version = Some(msh(12, 1))
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "2.5.1".into());
    let processing = Some(msh(11, 1))
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "P".into());
    let charset_field = if original.is_some_and(|m| m.msh(18, 1).is_empty()) {
        String::new()
    } else {
        charset.msh18().to_owned()
    };
    let mut text = format!(
        "MSH|^~\\&|{}|{}|{}|{}|{}||ACK^{}^ACK|{}|{}|{}||||||{}\rMSA|{}|{}",
        e(msh(5, 1)),
        e(msh(6, 1)),
        e(msh(3, 1)),
        e(msh(4, 1)),
        timestamp(now),
        e(trigger),
        control,
        e(processing),
        e(version),
        charset_field,
        code.as_str(),
        e(msh(10, 1)),
    );
    if let Some((err, message)) = error {
        let (c, meaning) = err.code();
        text.push_str(&format!(
            "\rERR|||{c}^{meaning}^HL70357|E||||{}",
            d.escape(message)
        ));
    }
    text.push('\r');
    charset.encode(&text)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(timestamp(0), "19700101000000");
        assert_eq!(timestamp(1_709_164_800), "20240229000000");
        assert_eq!(timestamp(1_796_545_230), "20261206082030");
    }

    #[test]
    fn ack_echoes_the_control_id() {
        let m = Message::parse(b"MSH|^~\\&|HIS|BV|PACS|BV|2026||ORM^O01|MSG-9|P|2.5.1\r").unwrap();
        let a = ack(
            Some(&m),
            AckCode::Error,
            Some((ErrorCode::RequiredFieldMissing, "PID-3|x")),
            0,
        );
        let a = Message::parse(&a).unwrap();
        assert_eq!(a.msh(3, 1), "PACS");
        assert_eq!(a.msh(5, 1), "HIS");
        assert_eq!(a.msh(9, 1), "ACK");
        assert_eq!(a.msh(9, 2), "O01");
        let msa = a.segment("MSA").unwrap();
        assert_eq!(a.get(msa, 1, 0, 1, 1), "AE");
        assert_eq!(a.get(msa, 2, 0, 1, 1), "MSG-9");
        let err = a.segment("ERR").unwrap();
        assert_eq!(a.get(err, 3, 0, 1, 1), "101");
        assert_eq!(a.get(err, 8, 0, 1, 1), "PID-3|x");
        let nak = Message::parse(&ack(None, AckCode::Reject, None, 0)).unwrap();
        assert_eq!(nak.get(nak.segment("MSA").unwrap(), 1, 0, 1, 1), "AR");
    }
}
