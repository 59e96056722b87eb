//! An [`AuditEvent`] as a DICOM audit message: the `AuditMessage` XML of
//! PS3.15 A.5.1 (the IHE ATNA / RFC 3881 schema as DICOM constrains it).
//!
//! Element order follows the schema: `EventIdentification`, then every
//! `ActiveParticipant`, then `AuditSourceIdentification`, then every
//! `ParticipantObjectIdentification`. Codes use the `csd-code` /
//! `codeSystemName` / `originalText` attributes of PS3.15 A.5.1's
//! CodedValueType.
//!
//! Non-goals: no XML parsing, no schema validation, no transport (the log
//! writer and any syslog sender carry the text).

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;

use crate::audit::{
    AuditActor, AuditEvent, AuditObject, DCM_EVENT_TYPES, DCM_ROLES, LOCAL_CODING_SCHEME,
};

/// `AuditMessage` XML for `event`, as emitted by `source_id` (our AE title
/// or host name: AuditSourceIdentification/@AuditSourceID).
pub fn audit_message(event: &AuditEvent, source_id: &str) -> String {
    let mut x = String::with_capacity(1024);
    x.push_str("<AuditMessage>");
    let _ = write!(
        x,
        "<EventIdentification EventActionCode=\"{}\" EventDateTime=\"{}\" EventOutcomeIndicator=\"{}\">",
        event.action.code(),
        utc_timestamp(event.time),
        event.outcome.code()
    );
    coded(
        &mut x,
        "EventID",
        event.id.code(),
        "DCM",
        event.id.meaning(),
    );
    if let Some((code, meaning)) = &event.event_type {
        // PS3.15 A.5.1: DCM codes from CID 401; anything else is ours.
        let system = if DCM_EVENT_TYPES.iter().any(|(c, _)| c == code) {
            "DCM"
        } else {
            LOCAL_CODING_SCHEME
        };
        coded(&mut x, "EventTypeCode", code, system, meaning);
    }
    if let Some(d) = &event.outcome_description {
        let _ = write!(
            x,
            "<EventOutcomeDescription>{}</EventOutcomeDescription>",
            escape(d)
        );
    }
    x.push_str("</EventIdentification>");
    for a in &event.actors {
        actor(&mut x, a);
    }
    let _ = write!(
        x,
        "<AuditSourceIdentification AuditSourceID=\"{}\">",
        escape(source_id)
    );
    // RFC 3881 / DCM audit source type 4: application server process.
    coded(
        &mut x,
        "AuditSourceTypeCode",
        "4",
        "DCM",
        "Application Server Process",
    );
    x.push_str("</AuditSourceIdentification>");
    for o in &event.objects {
        object(&mut x, o);
    }
    x.push_str("</AuditMessage>");
    x
}

fn coded(x: &mut String, element: &str, code: &str, system: &str, meaning: &str) {
    let _ = write!(
        x,
        "<{element} csd-code=\"{}\" codeSystemName=\"{}\" originalText=\"{}\"/>",
        escape(code),
        escape(system),
        escape(meaning)
    );
}

fn actor(x: &mut String, a: &AuditActor) {
    let _ = write!(x, "<ActiveParticipant UserID=\"{}\"", escape(&a.user_id));
    if let Some(alt) = &a.alt_user_id {
        let _ = write!(x, " AlternativeUserID=\"{}\"", escape(alt));
    }
    let _ = write!(x, " UserIsRequestor=\"{}\"", a.requestor);
    if let Some(addr) = &a.address {
        // PS3.15 A.5.1: 1 = machine name, 2 = IP address.
        let kind = if addr.parse::<std::net::IpAddr>().is_ok() {
            "2"
        } else {
            "1"
        };
        let _ = write!(
            x,
            " NetworkAccessPointID=\"{}\" NetworkAccessPointTypeCode=\"{kind}\"",
            escape(addr)
        );
    }
    x.push('>');
    if let Some(role) = &a.role {
        // PS3.16 CID 402 (Audit Active Participant Role ID Code); other
        // roles (the access table's role names) are local codes.
        match DCM_ROLES.iter().find(|(name, _, _)| name == role) {
            Some((_, code, meaning)) => coded(x, "RoleIDCode", code, "DCM", meaning),
            None => coded(x, "RoleIDCode", role, LOCAL_CODING_SCHEME, role),
        }
    }
    x.push_str("</ActiveParticipant>");
}

/// Study Root Query/Retrieve Information Model - FIND (PS3.4 C.6.2).
const STUDY_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";

fn object(x: &mut String, o: &AuditObject) {
    // ParticipantObjectTypeCode: 1 person, 2 system object;
    // ParticipantObjectTypeCodeRole: 1 patient, 3 report (RFC 3881 5.5,
    // PS3.15 A.5.2). PS3.15 A.5.3.2 gives a query role 3 and the SOP Class
    // UID as its ID, whatever carried it: a QIDO-RS query is a query of the
    // Study Root information model (PS3.18 10.6), so both transports write
    // the same object.
    let (id, type_code, role, (code, system, meaning)) = match o {
        AuditObject::Patient { id, .. } => (id.as_str(), 1, 1, ("2", "RFC-3881", "Patient Number")),
        AuditObject::Study { uid } => (uid.as_str(), 2, 3, ("110180", "DCM", "Study Instance UID")),
        AuditObject::Query { .. } => (STUDY_ROOT_FIND, 2, 3, ("110181", "DCM", "SOP Class UID")),
        AuditObject::DicomQuery { sop_class, .. } => {
            (sop_class.as_str(), 2, 3, ("110181", "DCM", "SOP Class UID"))
        }
        AuditObject::Other { kind, id } => (
            id.as_str(),
            2,
            3,
            (kind.as_str(), LOCAL_CODING_SCHEME, kind.as_str()),
        ),
    };
    let _ = write!(
        x,
        "<ParticipantObjectIdentification ParticipantObjectID=\"{}\" ParticipantObjectTypeCode=\"{type_code}\" ParticipantObjectTypeCodeRole=\"{role}\">",
        escape(id)
    );
    coded(x, "ParticipantObjectIDTypeCode", code, system, meaning);
    match o {
        AuditObject::Patient {
            name: Some(name), ..
        } => {
            let _ = write!(
                x,
                "<ParticipantObjectName>{}</ParticipantObjectName>",
                escape(name)
            );
        }
        AuditObject::Query { text } | AuditObject::DicomQuery { text, .. } => {
            // PS3.15 A.5.3.2: the query, base64-encoded.
            let _ = write!(
                x,
                "<ParticipantObjectQuery>{}</ParticipantObjectQuery>",
                base64::engine::general_purpose::STANDARD.encode(text.as_bytes())
            );
        }
        _ => {}
    }
    x.push_str("</ParticipantObjectIdentification>");
}

/// Escapes text for an XML attribute value or element content. Characters
/// XML 1.0 cannot carry at all (most C0 controls) become U+FFFD.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// `time` as an XML Schema dateTime in UTC with milliseconds
/// (`2026-12-06T04:21:47.123Z`); times before 1970 are written as the epoch.
pub fn utc_timestamp(time: SystemTime) -> String {
    let d = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (H.
/// Hinnant's `civil_from_days`).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditAction, AuditEventId, AuditOutcome};
    use std::time::Duration;

    #[test]
    fn timestamps_are_utc_iso() {
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_164_800_123 + 86_399_000);
        assert_eq!(utc_timestamp(t), "2024-02-29T23:59:59.123Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // leap century
        assert_eq!(utc_timestamp(t), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn escapes_markup_and_controls() {
        assert_eq!(
            escape("a<b>&\"c'\u{1}\n"),
            "a&lt;b&gt;&amp;&quot;c&apos;\u{FFFD}&#10;"
        );
    }

    #[test]
    fn message_has_the_schema_order_and_escapes_values() {
        let e = AuditEvent::new(
            AuditEventId::Query,
            AuditAction::Execute,
            AuditOutcome::Success,
        )
        .actor(AuditActor {
            user_id: "WS<1>".into(),
            alt_user_id: Some("WS\"1".into()),
            role: Some("Source".into()),
            address: Some("10.0.0.7".into()),
            requestor: true,
        })
        .object(AuditObject::Patient {
            id: "P&1".into(),
            name: Some("DOE^JANE".into()),
        })
        .object(AuditObject::DicomQuery {
            sop_class: "1.2.840.10008.5.1.4.1.2.2.1".into(),
            text: "PatientID=P&1".into(),
        });
        let x = audit_message(&e, "PACS");
        let order = [
            "<AuditMessage><EventIdentification EventActionCode=\"E\"",
            "<EventID csd-code=\"110112\" codeSystemName=\"DCM\" originalText=\"Query\"/>",
            "<ActiveParticipant UserID=\"WS&lt;1&gt;\" AlternativeUserID=\"WS&quot;1\" UserIsRequestor=\"true\" NetworkAccessPointID=\"10.0.0.7\" NetworkAccessPointTypeCode=\"2\">",
            "<RoleIDCode csd-code=\"110153\"",
            "<AuditSourceIdentification AuditSourceID=\"PACS\">",
            "ParticipantObjectID=\"P&amp;1\" ParticipantObjectTypeCode=\"1\" ParticipantObjectTypeCodeRole=\"1\"",
            "<ParticipantObjectName>DOE^JANE</ParticipantObjectName>",
            "<ParticipantObjectQuery>UGF0aWVudElEPVAmMQ==</ParticipantObjectQuery>",
            "</AuditMessage>",
        ];
        let mut at = 0;
        for part in order {
            let found = x[at..].find(part);
            assert!(found.is_some(), "{part} not after {at} in {x}");
            at += found.unwrap_or(0) + part.len();
        }
    }

    #[test]
    fn http_and_dimse_queries_write_the_same_query_object() {
        let query = |o: AuditObject| {
            let e = AuditEvent::new(
                AuditEventId::Query,
                AuditAction::Execute,
                AuditOutcome::Success,
            )
            .object(o);
            let x = audit_message(&e, "PACS");
            let start = x.find("<ParticipantObjectIdentification").unwrap_or(0);
            let end = x.find("<ParticipantObjectQuery>").unwrap_or(x.len());
            x[start..end].to_owned()
        };
        let http = query(AuditObject::Query {
            text: "PatientID=P1".into(),
        });
        let dimse = query(AuditObject::DicomQuery {
            sop_class: STUDY_ROOT_FIND.into(),
            text: "PatientID=P1".into(),
        });
        // PS3.15 A.5.3.2: system object, role 3 (report), the SOP Class UID.
        assert_eq!(http, dimse);
        assert!(
            http.contains(
                "ParticipantObjectID=\"1.2.840.10008.5.1.4.1.2.2.1\" ParticipantObjectTypeCode=\"2\" ParticipantObjectTypeCodeRole=\"3\""
            ),
            "{http}"
        );
    }

    #[test]
    fn event_types_and_roles_carry_their_coding_scheme() {
        let x = |e: AuditEvent| audit_message(&e, "PACS");
        let base = || {
            AuditEvent::new(
                AuditEventId::Export,
                AuditAction::Read,
                AuditOutcome::Success,
            )
        };
        let m = x(base()
            .event_type(
                crate::audit::event_type::LOGIN.0,
                crate::audit::event_type::LOGIN.1,
            )
            .actor(AuditActor {
                user_id: "study.zip".into(),
                role: Some("Destination Media".into()),
                ..AuditActor::default()
            })
            .actor(AuditActor {
                user_id: "alice".into(),
                role: Some("radiologist".into()),
                ..AuditActor::default()
            }));
        assert!(m.contains("<EventTypeCode csd-code=\"110122\" codeSystemName=\"DCM\" originalText=\"Login\"/>"), "{m}");
        assert!(m.contains("<RoleIDCode csd-code=\"110154\" codeSystemName=\"DCM\" originalText=\"Destination Media\"/>"), "{m}");
        assert!(
            m.contains("<RoleIDCode csd-code=\"radiologist\" codeSystemName=\"99SENPACS\""),
            "{m}"
        );
        // A local event type is not passed off as a DCM code.
        let m = x(base().event_type("SEN-SHARE-USED", "Share link used"));
        assert!(
            m.contains("<EventTypeCode csd-code=\"SEN-SHARE-USED\" codeSystemName=\"99SENPACS\""),
            "{m}"
        );
    }
}
