//! Patient updates and merges from ADT messages (HL7 v2.5.1 chapter 3):
//! the mapping of segments to patient changes. Pure.
//!
//! | event | meaning | read from |
//! |---|---|---|
//! | A08 | update patient information | PID-3 (the patient, primary identifier chosen as for orders), PID-5 name, PID-7 birth date, PID-8 sex |
//! | A31 | update person information | same as A08 |
//! | A40 | merge patient – patient identifier list | each PID (the surviving patient and its demographics) with the MRG after it: MRG-1 the prior patient identifier (ID, assigning authority in component 4) |
//!
//! An empty PID-5, -7 or -8 leaves the stored value as it is (HL7 v2.5.1
//! 2.5.3: a field not sent is not changed); the explicit null `""` reads
//! the same way here, so a value cannot be cleared by ADT.

use pacs_core::orders::OrderRecord;
use pacs_core::patients::{ChangeKind, Demographics, PatientKey};

use crate::ack::ErrorCode;
use crate::message::Message;
use crate::orders::{patient, Mapping, MappingError};

/// One change an ADT message asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdtChange {
    pub kind: ChangeKind,
    pub from: PatientKey,
    pub into: PatientKey,
    pub demographics: Demographics,
}

fn some(v: String) -> Option<String> {
    (!v.is_empty()).then_some(v)
}

fn pid_patient(
    m: &Message,
    pid: &crate::message::Segment,
    mapping: &Mapping,
) -> Result<(PatientKey, Demographics), MappingError> {
    let mut o = OrderRecord::default();
    patient(m, pid, mapping, &mut o)?;
    Ok((
        PatientKey::new(&o.issuer_of_patient_id, &o.patient_id),
        Demographics {
            name: some(o.patient_name),
            birth_date: some(o.patient_birth_date),
            sex: some(o.patient_sex),
        },
    ))
}

/// The changes of an ADT^A08, A31 or A40 message.
pub fn changes_of(m: &Message, mapping: &Mapping) -> Result<Vec<AdtChange>, MappingError> {
    let event = m.msh(9, 2);
    match event.as_str() {
        "A08" | "A31" => {
            let pid = m
                .segment("PID")
                .ok_or((ErrorCode::SegmentSequence, "PID segment missing".to_owned()))?;
            let (key, demographics) = pid_patient(m, pid, mapping)?;
            if demographics.is_empty() {
                return Err((
                    ErrorCode::RequiredFieldMissing,
                    "PID-5, PID-7 or PID-8 is required (nothing to update)".to_owned(),
                ));
            }
            Ok(vec![AdtChange {
                kind: ChangeKind::Update,
                from: key.clone(),
                into: key,
                demographics,
            }])
        }
        "A40" => {
            let mut out = Vec::new();
            let mut survivor: Option<(PatientKey, Demographics)> = None;
            for seg in &m.segments {
                match seg.name.as_str() {
                    "PID" => survivor = Some(pid_patient(m, seg, mapping)?),
                    "MRG" => {
                        let Some((into, demographics)) = survivor.take() else {
                            return Err((
                                ErrorCode::SegmentSequence,
                                "MRG without a PID before it".to_owned(),
                            ));
                        };
                        let prior_id = m.get(seg, 1, 0, 1, 1);
                        if prior_id.is_empty() {
                            return Err((
                                ErrorCode::RequiredFieldMissing,
                                "MRG-1 (prior patient identifier) is required".to_owned(),
                            ));
                        }
                        let prior_issuer = m.get(seg, 1, 0, 4, 1);
                        out.push(AdtChange {
                            kind: ChangeKind::Merge,
                            from: PatientKey::new(&prior_issuer, &prior_id),
                            into,
                            demographics,
                        });
                    }
                    _ => {}
                }
            }
            if out.is_empty() {
                return Err((
                    ErrorCode::SegmentSequence,
                    "A40 needs a PID and an MRG segment".to_owned(),
                ));
            }
            Ok(out)
        }
        _ => Err((
            ErrorCode::UnsupportedEvent,
            "unsupported ADT event (A08, A31, A40)".to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn msg(s: &str) -> Message {
        Message::parse(s.replace('\n', "\r").as_bytes()).unwrap()
    }

    #[test]
    fn a08_and_a40_map_to_changes() {
        let m = msg("MSH|^~\\&|HIS|H|PACS|H|20260101||ADT^A08|1|P|2.5.1\nPID|||P1^^^BV||TRAN^THI B||19800102|F");
        let c = changes_of(&m, &Mapping::default()).unwrap();
        assert_eq!(c[0].kind, ChangeKind::Update);
        assert_eq!(c[0].from, PatientKey::new("BV", "P1"));
        assert_eq!(c[0].demographics.name.as_deref(), Some("TRAN^THI B"));
        assert_eq!(c[0].demographics.birth_date.as_deref(), Some("19800102"));
        let m = msg("MSH|^~\\&|HIS|H|PACS|H|20260101||ADT^A40^ADT_A39|2|P|2.5.1\nPID|||P2^^^BV||NEW^NAME\nMRG|P1^^^BV");
        let c = changes_of(&m, &Mapping::default()).unwrap();
        assert_eq!(c[0].kind, ChangeKind::Merge);
        assert_eq!(c[0].from, PatientKey::new("BV", "P1"));
        assert_eq!(c[0].into, PatientKey::new("BV", "P2"));
    }

    #[test]
    fn bad_adt_says_why() {
        let no_mrg = msg("MSH|^~\\&|HIS|H|PACS|H|20260101||ADT^A40|2|P|2.5.1\nPID|||P2");
        assert_eq!(
            changes_of(&no_mrg, &Mapping::default()).unwrap_err().0,
            ErrorCode::SegmentSequence
        );
        let empty = msg("MSH|^~\\&|HIS|H|PACS|H|20260101||ADT^A08|2|P|2.5.1\nPID|||P2");
        assert_eq!(
            changes_of(&empty, &Mapping::default()).unwrap_err().0,
            ErrorCode::RequiredFieldMissing
        );
        let bad_date =
            msg("MSH|^~\\&|HIS|H|PACS|H|20260101||ADT^A08|2|P|2.5.1\nPID|||P2||A^B||1980-01-02");
        assert_eq!(
            changes_of(&bad_date, &Mapping::default()).unwrap_err().0,
            ErrorCode::DataType
        );
        let other = msg("MSH|^~\\&|HIS|H|PACS|H|20260101||ADT^A01|2|P|2.5.1\nPID|||P2");
        assert_eq!(
            changes_of(&other, &Mapping::default()).unwrap_err().0,
            ErrorCode::UnsupportedEvent
        );
    }
}
