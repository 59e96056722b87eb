//! Orders from ORM^O01 (HL7 v2.3.1/2.4 style, IHE RAD SWF) and OMI^O23
//! (v2.5.1): the mapping of segments to [`OrderRecord`] fields. Pure.
//!
//! | order field | ORM^O01 | OMI^O23 |
//! |---|---|---|
//! | Patient ID, issuer, other IDs | PID-3 (repetitions; the one whose assigning authority is `hl7_issuer` is primary) | same |
//! | Patient's Name, Birth Date, Sex | PID-5, PID-7, PID-8 | same |
//! | order control | ORC-1: NW new, XO change, CA cancel, DC discontinue | same |
//! | placer / filler order number | ORC-2 / ORC-3 | same |
//! | Accession Number | OBR-18 | IPC-1 |
//! | Requested Procedure ID | OBR-19 | IPC-2 |
//! | Study Instance UID | ZDS-1 | IPC-3 |
//! | SPS ID | OBR-20 | IPC-4 |
//! | Modality | OBR-24 | IPC-5 |
//! | SPS Description | OBR-4 text | IPC-6 text, else OBR-4 |
//! | Station Name / Location | – | IPC-7 / IPC-8 |
//! | Scheduled Station AE Title | OBR-21, else `hl7_station_aes[modality]` | IPC-9, else OBR-21, else the map |
//! | SPS Start Date/Time | OBR-27 (TQ-4), else ORC-7 (TQ-4) | TQ1-7, else OBR-27 |
//! | Requested Procedure Description | OBR-44 text, else OBR-4 text | same |
//! | Referring Physician | OBR-16 | same |
//! | Scheduled Performing Physician | OBR-34 | same |

use std::collections::BTreeMap;

use pacs_core::orders::{OrderRecord, OrderSource, OtherPatientId};

use crate::ack::ErrorCode;
use crate::message::{Message, Segment};

/// ORC-1 (HL7 table 0119), the ones an order placer sends to a filler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    New,
    Change,
    Cancel,
    Discontinue,
}

/// How identifiers and stations are chosen.
#[derive(Debug, Clone, Default)]
pub struct Mapping {
    /// The assigning authority (PID-3.4) of the primary identifier.
    pub issuer: String,
    /// Station AE title by modality, when the message names none.
    pub station_aes: BTreeMap<String, String>,
}

/// One order of a message: what to do, and the step.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderMessage {
    pub control: Control,
    pub order: OrderRecord,
}

/// Why a message's orders cannot be read (its ACK's ERR).
pub type MappingError = (ErrorCode, String);

fn missing(what: &str) -> MappingError {
    (
        ErrorCode::RequiredFieldMissing,
        format!("{what} is required"),
    )
}

/// `YYYYMMDD[HHMM[SS[.S]]][+/-ZZZZ]` → (date, time).
fn split_dtm(v: &str) -> Result<(String, String), MappingError> {
    let v = v.trim();
    if v.is_empty() {
        return Ok((String::new(), String::new()));
    }
    let core: String = v
        .split(['+', '-', '.'])
        .next()
        .unwrap_or("")
        .chars()
        .collect();
    let bad = || {
        (
            ErrorCode::DataType,
            format!("{v:?} is not a date/time (DTM)"),
        )
    };
    if core.len() < 8 || !core.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let date = core[..8].to_owned();
    let time: String = core[8..].chars().take(6).collect();
    if !pacs_core::orders::is_valid_date(&date)
        || (!time.is_empty() && !pacs_core::orders::is_valid_time(&time))
    {
        return Err(bad());
    }
    Ok((date, time))
}

/// A person (XPN, or XCN without its ID) as a DICOM PN:
/// family^given^middle^prefix^suffix.
fn person(m: &Message, rep: &str, first: usize) -> String {
    let c = |i: usize| m.part(rep, first + i, 1);
    let family = c(0);
    let mut pn = [family, c(1), c(2), c(4), c(3)].join("^");
    while pn.ends_with('^') {
        pn.pop();
    }
    pn
}

/// The patient of PID: the primary identifier by `issuer`, the others.
pub(crate) fn patient(
    m: &Message,
    pid: &Segment,
    mapping: &Mapping,
    o: &mut OrderRecord,
) -> Result<(), MappingError> {
    let ids: Vec<(String, String)> = m
        .repetitions(pid, 3)
        .iter()
        .map(|r| (m.part(r, 1, 1), m.part(r, 4, 1)))
        .filter(|(id, _)| !id.is_empty())
        .collect();
    let primary = ids
        .iter()
        .position(|(_, issuer)| !mapping.issuer.is_empty() && *issuer == mapping.issuer)
        .unwrap_or(0);
    let Some((id, issuer)) = ids.get(primary).cloned() else {
        return Err(missing("PID-3 (patient identifier)"));
    };
    o.patient_id = id;
    o.issuer_of_patient_id = issuer;
    o.other_patient_ids = ids
        .into_iter()
        .enumerate()
        .filter(|(i, _)| *i != primary)
        .map(|(_, (id, issuer))| OtherPatientId { id, issuer })
        .collect();
    o.patient_name = m
        .repetitions(pid, 5)
        .first()
        .map(|r| person(m, r, 1))
        .unwrap_or_default();
    let birth = m.get(pid, 7, 0, 1, 1);
    o.patient_birth_date = birth.chars().take(8).collect();
    if !o.patient_birth_date.is_empty() && !pacs_core::orders::is_valid_date(&o.patient_birth_date)
    {
        return Err((
            ErrorCode::DataType,
            format!("PID-7 {birth:?} is not a date"),
        ));
    }
    // HL7 table 0001: A (ambiguous), N (not applicable), U, O → DICOM O.
    o.patient_sex = match m.get(pid, 8, 0, 1, 1).as_str() {
        "M" => "M".into(),
        "F" => "F".into(),
        "O" | "A" | "N" | "U" => "O".into(),
        _ => String::new(),
    };
    Ok(())
}

/// The orders of an ORM^O01 or OMI^O23 message.
pub fn orders_of(m: &Message, mapping: &Mapping) -> Result<Vec<OrderMessage>, MappingError> {
    let omi = m.msh(9, 1) == "OMI";
    let pid = m.segment("PID").ok_or_else(|| missing("PID segment"))?;
    let mut base = OrderRecord {
        source: OrderSource::Hl7,
        ..OrderRecord::default()
    };
    patient(m, pid, mapping, &mut base)?;
    // Groups: each ORC with the OBR, TQ1, IPC and ZDS segments after it.
    let mut groups: Vec<Vec<&Segment>> = Vec::new();
    for s in &m.segments {
        match s.name.as_str() {
            "ORC" => groups.push(vec![s]),
            "OBR" | "TQ1" | "IPC" | "ZDS" => {
                if let Some(g) = groups.last_mut() {
                    g.push(s);
                }
            }
            _ => {}
        }
    }
    if groups.is_empty() {
        return Err(missing("ORC segment"));
    }
    let mut out = Vec::new();
    for g in groups {
        let find = |name: &str| g.iter().copied().find(|s| s.name == name);
        let orc = g[0];
        let control = match m.get(orc, 1, 0, 1, 1).as_str() {
            "NW" => Control::New,
            "XO" => Control::Change,
            "CA" => Control::Cancel,
            "DC" => Control::Discontinue,
            other => {
                return Err((
                    ErrorCode::DataType,
                    format!("ORC-1 {other:?} is not supported (NW, XO, CA, DC)"),
                ))
            }
        };
        let obr = find("OBR").ok_or_else(|| missing("OBR segment"))?;
        let mut o = base.clone();
        o.placer_order_number = m.get(orc, 2, 0, 1, 1);
        o.filler_order_number = m.get(orc, 3, 0, 1, 1);
        let service = m.get(obr, 4, 0, 2, 1);
        o.sps_description = service.clone();
        o.requested_procedure_description = Some(m.get(obr, 44, 0, 2, 1))
            .filter(|v| !v.is_empty())
            .unwrap_or(service);
        o.referring_physician_name = m
            .repetitions(obr, 16)
            .first()
            .map(|r| person(m, r, 2))
            .unwrap_or_default();
        // OBR-34 Technician (NDL): its first component is a CNN whose
        // subcomponents are ID & family & given.
        o.performing_physician_name = {
            let r = m.repetitions(obr, 34).first().copied().unwrap_or("");
            let sub = |s| m.part(r, 1, s);
            let mut pn = [sub(2), sub(3)].join("^");
            while pn.ends_with('^') {
                pn.pop();
            }
            pn
        };
        o.station_ae_title = m.get(obr, 21, 0, 1, 1);
        let mut start = m.get(obr, 27, 0, 4, 1);
        if start.is_empty() {
            start = m.get(orc, 7, 0, 4, 1);
        }
        let ipcs: Vec<&Segment> = g.iter().copied().filter(|s| s.name == "IPC").collect();
        if omi {
            if let Some(tq1) = find("TQ1") {
                let t = m.get(tq1, 7, 0, 1, 1);
                if !t.is_empty() {
                    start = t;
                }
            }
        }
        (o.start_date, o.start_time) = split_dtm(&start)?;
        let steps: Vec<OrderRecord> = if omi {
            if ipcs.is_empty() {
                return Err(missing("IPC segment (OMI^O23)"));
            }
            ipcs.iter()
                .map(|ipc| {
                    let mut s = o.clone();
                    s.accession_number = m.get(ipc, 1, 0, 1, 1);
                    s.requested_procedure_id = m.get(ipc, 2, 0, 1, 1);
                    s.study_instance_uid = m.get(ipc, 3, 0, 1, 1);
                    s.sps_id = m.get(ipc, 4, 0, 1, 1);
                    s.modality = m.get(ipc, 5, 0, 1, 1);
                    let protocol = m.get(ipc, 6, 0, 2, 1);
                    if !protocol.is_empty() {
                        s.sps_description = protocol;
                    }
                    s.station_name = m.get(ipc, 7, 0, 1, 1);
                    s.location = m.get(ipc, 8, 0, 1, 1);
                    let ae = m.get(ipc, 9, 0, 1, 1);
                    if !ae.is_empty() {
                        s.station_ae_title = ae;
                    }
                    s
                })
                .collect()
        } else {
            o.accession_number = m.get(obr, 18, 0, 1, 1);
            o.requested_procedure_id = m.get(obr, 19, 0, 1, 1);
            o.sps_id = m.get(obr, 20, 0, 1, 1);
            o.modality = m.get(obr, 24, 0, 1, 1);
            if let Some(zds) = find("ZDS") {
                o.study_instance_uid = m.get(zds, 1, 0, 1, 1);
            }
            vec![o]
        };
        for mut s in steps {
            if s.accession_number.is_empty() {
                return Err(missing(if omi {
                    "IPC-1 (accession number)"
                } else {
                    "OBR-18 (accession number)"
                }));
            }
            if s.modality.is_empty() && control == Control::New {
                return Err(missing(if omi {
                    "IPC-5 (modality)"
                } else {
                    "OBR-24 (modality)"
                }));
            }
            if s.station_ae_title.is_empty() {
                if let Some(ae) = mapping.station_aes.get(&s.modality) {
                    s.station_ae_title = ae.clone();
                }
            }
            if s.sps_id.is_empty() {
                s.sps_id = s.accession_number.clone();
            }
            if s.requested_procedure_id.is_empty() {
                s.requested_procedure_id = s.accession_number.clone();
            }
            out.push(OrderMessage { control, order: s });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const ORM: &str =
        "MSH|^~\\&|HIS|BV|PACS|BV|20261206080000||ORM^O01|M1|P|2.3.1||||||UNICODE UTF-8\r\
PID|1||MRN1^^^BV^MR~079123456789^^^CCCD^NI||Nguyễn^Văn^An||19800215|M\r\
ORC|NW|P1|F1\r\
OBR|1|P1|F1|CT01^CT ngực||||||||||||DR1^Trần^Bình||ACC1|RP1|SPS1|CT1|||CT|||^^^20261206093000\r\
ZDS|1.2.3.4^PACS^Application^DICOM\r";

    #[test]
    fn orm_maps_every_field() {
        let m = Message::parse(ORM.as_bytes()).unwrap();
        let mapping = Mapping {
            issuer: "CCCD".into(),
            ..Mapping::default()
        };
        let out = orders_of(&m, &mapping).unwrap();
        assert_eq!(out.len(), 1);
        let o = &out[0].order;
        assert_eq!(out[0].control, Control::New);
        assert_eq!(o.patient_id, "079123456789");
        assert_eq!(o.issuer_of_patient_id, "CCCD");
        assert_eq!(
            o.other_patient_ids,
            vec![OtherPatientId {
                id: "MRN1".into(),
                issuer: "BV".into()
            }]
        );
        assert_eq!(o.patient_name, "Nguyễn^Văn^An");
        assert_eq!(
            (o.patient_birth_date.as_str(), o.patient_sex.as_str()),
            ("19800215", "M")
        );
        assert_eq!(o.accession_number, "ACC1");
        assert_eq!(o.requested_procedure_id, "RP1");
        assert_eq!(o.sps_id, "SPS1");
        assert_eq!(o.station_ae_title, "CT1");
        assert_eq!(o.modality, "CT");
        assert_eq!(
            (o.start_date.as_str(), o.start_time.as_str()),
            ("20261206", "093000")
        );
        assert_eq!(o.study_instance_uid, "1.2.3.4");
        assert_eq!(o.sps_description, "CT ngực");
        assert_eq!(o.referring_physician_name, "Trần^Bình");
        assert_eq!(o.placer_order_number, "P1");
        o.validate().unwrap();
        // Without the issuer configured, the first repetition is primary.
        let out = orders_of(&m, &Mapping::default()).unwrap();
        assert_eq!(out[0].order.patient_id, "MRN1");
    }

    #[test]
    fn omi_takes_steps_from_ipc() {
        let omi = "MSH|^~\\&|HIS|BV|PACS|BV|20261206080000||OMI^O23^OMI_O23|M2|P|2.5.1\r\
PID|1||P9^^^BV||Le^Mai\r\
ORC|NW|P2\r\
TQ1|1||||||20261207140000\r\
OBR|1|P2||MR01^MR sọ\r\
IPC|ACC2|RP2|1.2.3.5|SPS2|MR|^MR brain|MR-ROOM|ROOM 3|\r\
IPC|ACC2|RP2|1.2.3.5|SPS3|MR\r";
        let m = Message::parse(omi.as_bytes()).unwrap();
        let mapping = Mapping {
            station_aes: [("MR".to_string(), "MR1".to_string())].into(),
            ..Mapping::default()
        };
        let out = orders_of(&m, &mapping).unwrap();
        assert_eq!(out.len(), 2);
        let a = &out[0].order;
        assert_eq!(
            (a.accession_number.as_str(), a.sps_id.as_str()),
            ("ACC2", "SPS2")
        );
        assert_eq!(a.station_ae_title, "MR1");
        assert_eq!(a.station_name, "MR-ROOM");
        assert_eq!(a.location, "ROOM 3");
        assert_eq!(a.sps_description, "MR brain");
        assert_eq!(
            (a.start_date.as_str(), a.start_time.as_str()),
            ("20261207", "140000")
        );
        assert_eq!(out[1].order.sps_id, "SPS3");
    }

    #[test]
    fn bad_orders_say_why() {
        let no_pid = "MSH|^~\\&|HIS|BV|PACS|BV|2026||ORM^O01|M3|P|2.3.1\rORC|NW\rOBR|1\r";
        let m = Message::parse(no_pid.as_bytes()).unwrap();
        assert_eq!(
            orders_of(&m, &Mapping::default()).unwrap_err().0,
            ErrorCode::RequiredFieldMissing
        );
        let no_acc = ORM.replace("|ACC1|", "||");
        let m = Message::parse(no_acc.as_bytes()).unwrap();
        assert!(orders_of(&m, &Mapping::default())
            .unwrap_err()
            .1
            .contains("OBR-18"));
        let bad_date = ORM.replace("20261206093000", "2026-12-06");
        let m = Message::parse(bad_date.as_bytes()).unwrap();
        assert_eq!(
            orders_of(&m, &Mapping::default()).unwrap_err().0,
            ErrorCode::DataType
        );
        let bad_control = ORM.replace("ORC|NW", "ORC|ZZ");
        let m = Message::parse(bad_control.as_bytes()).unwrap();
        assert!(orders_of(&m, &Mapping::default())
            .unwrap_err()
            .1
            .contains("ORC-1"));
    }
}
