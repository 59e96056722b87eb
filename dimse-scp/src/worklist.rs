//! The Modality Worklist SCP: C-FIND in the Modality Worklist Information
//! Model – FIND (1.2.840.10008.5.1.4.31, PS3.4 Annex K) over the archive's
//! orders (`pacs_core::orders`).
//!
//! The identifier has no Query/Retrieve Level (K.6.1). Matching keys
//! (K.6.1.2, Table K.6-1 "R" keys and a few more):
//! - inside the single item of Scheduled Procedure Step Sequence
//!   (0040,0100), by sequence matching (C.2.2.2.6): Scheduled Station AE
//!   Title, Modality, SPS Start Date and Time (each a single value or a
//!   range; both ranges together are one date-time range, C.2.2.2.5),
//!   Scheduled Performing Physician's Name, SPS Status, SPS ID, Station Name
//!   and Location;
//! - at the top level: Patient's Name (case- and diacritic-insensitive, as
//!   C-FIND names: `pacs_core::matching::fuzzy_name_match`, or the PS3.4
//!   rule), Patient ID (also against Other Patient IDs), Accession Number,
//!   Requested Procedure ID and Study Instance UID.
//!
//! Without an SPS Status key only SCHEDULED steps answer. Every response
//! carries the Type 1 and 2 return keys of Table K.6-1 (empty when unknown)
//! plus any other key asked for (empty when not kept), and Specific
//! Character Set ISO_IR 192: values are UTF-8.
//!
//! Non-goals: MPPS, the Worklist's relational queries (none are defined),
//! and the `.wl` folder (the binary loads it into the order store).

use std::collections::{BTreeMap, VecDeque};

use pacs_core::audit::AuditObject;
use pacs_core::dicom::DataSet;
use pacs_core::matching::{fuzzy_name_match, parse_matcher, Matcher, ValueKind};
use pacs_core::orders::{OrderFilter, OrderRecord, OrderStatus};
use pacs_core::Archive;
use tracing::{debug, info, warn};

use crate::audit::Peer;
use crate::identifier::{encode as encode_elements, OutElement, OutValue, Refusal};
use crate::message::command_set::CommandSet;
use crate::qr::QrRequest;
use crate::status::Status;

/// The Modality Worklist Information Model – FIND SOP Class.
pub const MODALITY_WORKLIST_FIND: &str = "1.2.840.10008.5.1.4.31";

const SPECIFIC_CHARACTER_SET: u32 = 0x0008_0005;
const ACCESSION_NUMBER: u32 = 0x0008_0050;
const MODALITY: u32 = 0x0008_0060;
const REFERRING_PHYSICIAN_NAME: u32 = 0x0008_0090;
const REFERENCED_STUDY_SEQUENCE: u32 = 0x0008_1110;
const REFERENCED_PATIENT_SEQUENCE: u32 = 0x0008_1120;
const PATIENT_NAME: u32 = 0x0010_0010;
const PATIENT_ID: u32 = 0x0010_0020;
const ISSUER_OF_PATIENT_ID: u32 = 0x0010_0021;
const PATIENT_BIRTH_DATE: u32 = 0x0010_0030;
const PATIENT_SEX: u32 = 0x0010_0040;
const OTHER_PATIENT_IDS_SEQUENCE: u32 = 0x0010_1002;
const STUDY_INSTANCE_UID: u32 = 0x0020_000D;
const REQUESTING_PHYSICIAN: u32 = 0x0032_1032;
const REQUESTED_PROCEDURE_DESCRIPTION: u32 = 0x0032_1060;
const REQUESTED_CONTRAST_AGENT: u32 = 0x0032_1070;
const ADMISSION_ID: u32 = 0x0038_0010;
const SCHEDULED_STATION_AE_TITLE: u32 = 0x0040_0001;
const SPS_START_DATE: u32 = 0x0040_0002;
const SPS_START_TIME: u32 = 0x0040_0003;
const SCHEDULED_PERFORMING_PHYSICIAN: u32 = 0x0040_0006;
const SPS_DESCRIPTION: u32 = 0x0040_0007;
const SPS_ID: u32 = 0x0040_0009;
const SCHEDULED_STATION_NAME: u32 = 0x0040_0010;
const SPS_LOCATION: u32 = 0x0040_0011;
const PRE_MEDICATION: u32 = 0x0040_0012;
const SPS_STATUS: u32 = 0x0040_0020;
const SPS_SEQUENCE: u32 = 0x0040_0100;
const REQUESTED_PROCEDURE_ID: u32 = 0x0040_1001;
const REQUESTED_PROCEDURE_PRIORITY: u32 = 0x0040_1003;
const PATIENT_TRANSPORT_ARRANGEMENTS: u32 = 0x0040_1004;
const PLACER_ORDER_NUMBER: u32 = 0x0040_2016;
const FILLER_ORDER_NUMBER: u32 = 0x0040_2017;
const TYPE_OF_PATIENT_ID: u32 = 0x0010_0022;

/// What an attribute of a response is made of.
#[derive(Clone, Copy)]
enum Field {
    Text(fn(&OrderRecord) -> &str),
    EmptySequence,
    OtherIds,
}

/// The top-level attributes we answer (Table K.6-1), with their VR, source,
/// and whether they are returned even when not asked for (Type 1 and 2).
const TOP: &[(u32, [u8; 2], Field, bool)] = &[
    (
        ACCESSION_NUMBER,
        *b"SH",
        Field::Text(|o| &o.accession_number),
        true,
    ),
    (
        REFERRING_PHYSICIAN_NAME,
        *b"PN",
        Field::Text(|o| &o.referring_physician_name),
        true,
    ),
    (
        REFERENCED_STUDY_SEQUENCE,
        *b"SQ",
        Field::EmptySequence,
        true,
    ),
    (
        REFERENCED_PATIENT_SEQUENCE,
        *b"SQ",
        Field::EmptySequence,
        true,
    ),
    (PATIENT_NAME, *b"PN", Field::Text(|o| &o.patient_name), true),
    (PATIENT_ID, *b"LO", Field::Text(|o| &o.patient_id), true),
    (
        ISSUER_OF_PATIENT_ID,
        *b"LO",
        Field::Text(|o| &o.issuer_of_patient_id),
        true,
    ),
    (
        PATIENT_BIRTH_DATE,
        *b"DA",
        Field::Text(|o| &o.patient_birth_date),
        true,
    ),
    (PATIENT_SEX, *b"CS", Field::Text(|o| &o.patient_sex), true),
    (OTHER_PATIENT_IDS_SEQUENCE, *b"SQ", Field::OtherIds, false),
    (
        STUDY_INSTANCE_UID,
        *b"UI",
        Field::Text(|o| &o.study_instance_uid),
        true,
    ),
    (
        REQUESTING_PHYSICIAN,
        *b"PN",
        Field::Text(|o| &o.referring_physician_name),
        true,
    ),
    (
        REQUESTED_PROCEDURE_DESCRIPTION,
        *b"LO",
        Field::Text(|o| &o.requested_procedure_description),
        true,
    ),
    (ADMISSION_ID, *b"LO", Field::Text(|_| ""), true),
    (
        REQUESTED_PROCEDURE_ID,
        *b"SH",
        Field::Text(|o| &o.requested_procedure_id),
        true,
    ),
    (
        REQUESTED_PROCEDURE_PRIORITY,
        *b"SH",
        Field::Text(|_| ""),
        true,
    ),
    (
        PATIENT_TRANSPORT_ARRANGEMENTS,
        *b"LO",
        Field::Text(|_| ""),
        true,
    ),
    (
        PLACER_ORDER_NUMBER,
        *b"LO",
        Field::Text(|o| &o.placer_order_number),
        false,
    ),
    (
        FILLER_ORDER_NUMBER,
        *b"LO",
        Field::Text(|o| &o.filler_order_number),
        false,
    ),
];

/// The attributes of the Scheduled Procedure Step item.
const STEP: &[(u32, [u8; 2], Field, bool)] = &[
    (MODALITY, *b"CS", Field::Text(|o| &o.modality), true),
    (REQUESTED_CONTRAST_AGENT, *b"LO", Field::Text(|_| ""), true),
    (
        SCHEDULED_STATION_AE_TITLE,
        *b"AE",
        Field::Text(|o| &o.station_ae_title),
        true,
    ),
    (SPS_START_DATE, *b"DA", Field::Text(|o| &o.start_date), true),
    (SPS_START_TIME, *b"TM", Field::Text(|o| &o.start_time), true),
    (
        SCHEDULED_PERFORMING_PHYSICIAN,
        *b"PN",
        Field::Text(|o| &o.performing_physician_name),
        true,
    ),
    (
        SPS_DESCRIPTION,
        *b"LO",
        Field::Text(|o| &o.sps_description),
        true,
    ),
    (SPS_ID, *b"SH", Field::Text(|o| &o.sps_id), true),
    (
        SCHEDULED_STATION_NAME,
        *b"SH",
        Field::Text(|o| &o.station_name),
        true,
    ),
    (SPS_LOCATION, *b"SH", Field::Text(|o| &o.location), true),
    (PRE_MEDICATION, *b"LO", Field::Text(|_| ""), true),
    (
        SPS_STATUS,
        *b"CS",
        Field::Text(|o| o.status.as_dicom()),
        true,
    ),
];

/// One matching key: the attribute's value in an order, and the matcher.
struct Key {
    tag: u32,
    kind: ValueKind,
    raw: String,
    matcher: Matcher,
}

/// A parsed worklist identifier.
#[derive(Default)]
pub(crate) struct WorklistQuery {
    keys: Vec<Key>,
    /// Start date and time ranges given together: one date-time range.
    start: Option<Matcher>,
    /// SPS Status asked for; `None`: SCHEDULED only.
    statuses: Option<Vec<OrderStatus>>,
    /// Other top-level keys asked for (returned empty when not kept).
    extra_top: Vec<(u32, [u8; 2])>,
    /// Other step keys asked for.
    extra_step: Vec<(u32, [u8; 2])>,
    /// Top-level attributes asked for that are returned only when asked.
    asked_tags: Vec<u32>,
    /// Keys as text, for the audit record.
    text: Vec<String>,
}

fn refuse(comment: impl Into<String>) -> Refusal {
    Refusal {
        status: Status::CANNOT_UNDERSTAND,
        comment: comment.into(),
    }
}

fn value_of(o: &OrderRecord, tag: u32) -> String {
    TOP.iter()
        .chain(STEP)
        .find(|(t, ..)| *t == tag)
        .and_then(|(_, _, f, _)| match f {
            Field::Text(get) => Some(get(o).to_owned()),
            _ => None,
        })
        .unwrap_or_default()
}

impl WorklistQuery {
    /// Reads the identifier (K.6.1.2): the matching keys and what to return.
    pub(crate) fn parse(ds: &DataSet) -> Result<WorklistQuery, Refusal> {
        let mut q = WorklistQuery::default();
        for e in ds.iter() {
            match e.tag {
                SPECIFIC_CHARACTER_SET | SPS_SEQUENCE => {}
                0x0008_0052 => {
                    // Query/Retrieve Level has no place in an MWL identifier
                    // (K.6.1); tolerated and ignored.
                }
                PATIENT_NAME
                | PATIENT_ID
                | ACCESSION_NUMBER
                | REQUESTED_PROCEDURE_ID
                | STUDY_INSTANCE_UID => {
                    let vr = TOP
                        .iter()
                        .find(|(t, ..)| *t == e.tag)
                        .map(|(_, vr, ..)| *vr)
                        .unwrap_or(*b"LO");
                    q.add_key(ds, e.tag, vr)?;
                }
                tag if TOP.iter().any(|(t, ..)| *t == tag) => q.asked_tags.push(tag),
                tag if tag & 0xFFFF == 0 || (tag >> 16) % 2 == 1 => {}
                tag => q.extra_top.push((tag, e.effective_vr())),
            }
        }
        if let Some(items) = ds.sequence(SPS_SEQUENCE) {
            if items.len() > 1 {
                return Err(refuse(
                    "Scheduled Procedure Step Sequence holds more than one item (PS3.4 C.2.2.2.6)",
                ));
            }
            if let Some(item) = items.first() {
                for e in item.iter() {
                    match e.tag {
                        SPS_STATUS => {
                            let raw = item.string(SPS_STATUS).unwrap_or_default();
                            let mut statuses = Vec::new();
                            for v in raw.split('\\').map(str::trim).filter(|v| !v.is_empty()) {
                                if v == "*" {
                                    statuses = OrderStatus::ALL.to_vec();
                                    break;
                                }
                                match OrderStatus::from_dicom(v) {
                                    Some(s) => statuses.push(s),
                                    None => {
                                        return Err(refuse(format!(
                                            "Scheduled Procedure Step Status {v:?} is not a defined term"
                                        )))
                                    }
                                }
                            }
                            if !statuses.is_empty() {
                                q.text.push(format!("(0040,0020)={raw}"));
                                q.statuses = Some(statuses);
                            }
                        }
                        tag if STEP.iter().any(|(t, ..)| *t == tag) => {
                            let vr = STEP
                                .iter()
                                .find(|(t, ..)| *t == tag)
                                .map(|(_, vr, ..)| *vr)
                                .unwrap_or(*b"LO");
                            q.add_key(item, tag, vr)?;
                        }
                        tag if tag & 0xFFFF == 0 || (tag >> 16) % 2 == 1 => {}
                        tag => q.extra_step.push((tag, e.effective_vr())),
                    }
                }
            }
        }
        q.combine_start();
        Ok(q)
    }

    /// Adds the matching key `tag` of `item` (a universal key only asks
    /// for the attribute to be returned).
    fn add_key(&mut self, item: &DataSet, tag: u32, vr: [u8; 2]) -> Result<(), Refusal> {
        let Some(raw) = item.string(tag) else {
            return Ok(());
        };
        let raw = raw.trim().to_owned();
        let Some(kind) = ValueKind::from_vr(std::str::from_utf8(&vr).unwrap_or("")) else {
            return Ok(());
        };
        self.text
            .push(format!("({:04X},{:04X})={raw}", tag >> 16, tag & 0xFFFF));
        let matcher = parse_matcher(kind, &raw).map_err(|e| refuse(e.to_string()))?;
        if !matcher.is_universal() {
            self.keys.push(Key {
                tag,
                kind,
                raw,
                matcher,
            });
        }
        Ok(())
    }

    /// SPS Start Date and Time both given as ranges mean one date-time
    /// range (PS3.4 C.2.2.2.5.1, "combined" matching).
    fn combine_start(&mut self) {
        let range = |tag| {
            self.keys.iter().find_map(|k| match &k.matcher {
                Matcher::Range { from, to } if k.tag == tag => Some((from.clone(), to.clone())),
                _ => None,
            })
        };
        let (Some((df, dt)), Some((tf, tt))) = (range(SPS_START_DATE), range(SPS_START_TIME))
        else {
            return;
        };
        let join = |d: Option<String>, t: Option<String>, end: &str| {
            d.map(|d| format!("{d}{}", t.unwrap_or_else(|| end.to_owned())))
        };
        let from = join(df, tf, "000000");
        let to = join(dt, tt, "235959.999999");
        let raw = format!(
            "{}-{}",
            from.clone().unwrap_or_default(),
            to.clone().unwrap_or_default()
        );
        if let Ok(m) = parse_matcher(ValueKind::DateTime, &raw) {
            self.keys
                .retain(|k| k.tag != SPS_START_DATE && k.tag != SPS_START_TIME);
            self.start = Some(m);
        }
    }

    /// Whether a step matches every key.
    pub(crate) fn matches(&self, o: &OrderRecord) -> bool {
        let statuses_ok = match &self.statuses {
            None => o.status == OrderStatus::Scheduled,
            Some(s) => s.contains(&o.status),
        };
        if !statuses_ok {
            return false;
        }
        if let Some(start) = &self.start {
            let when = format!("{}{}", o.start_date, o.start_time);
            if o.start_date.is_empty() || !start.matches(ValueKind::DateTime, Some(&when)) {
                return false;
            }
        }
        self.keys.iter().all(|k| match k.tag {
            PATIENT_NAME => {
                k.matcher.matches(k.kind, Some(&o.patient_name))
                    || fuzzy_name_match(&k.raw, &o.patient_name)
            }
            PATIENT_ID => {
                k.matcher.matches(k.kind, Some(&o.patient_id))
                    || o.other_patient_ids
                        .iter()
                        .any(|p| k.matcher.matches(k.kind, Some(&p.id)))
            }
            SCHEDULED_PERFORMING_PHYSICIAN => {
                k.matcher
                    .matches(k.kind, Some(&o.performing_physician_name))
                    || fuzzy_name_match(&k.raw, &o.performing_physician_name)
            }
            tag => {
                let v = value_of(o, tag);
                k.matcher
                    .matches(k.kind, (!v.is_empty()).then_some(v.as_str()))
            }
        })
    }

    /// The response identifier of one step.
    pub(crate) fn response(&self, o: &OrderRecord, explicit_vr: bool) -> Vec<u8> {
        let field = |tag: u32, vr: [u8; 2], f: &Field| match f {
            Field::Text(get) => OutElement::text(tag, vr, get(o)),
            Field::EmptySequence => OutElement {
                tag,
                vr,
                value: OutValue::Sequence(Vec::new()),
            },
            Field::OtherIds => OutElement {
                tag,
                vr,
                value: OutValue::Sequence(
                    o.other_patient_ids
                        .iter()
                        .map(|p| {
                            vec![
                                OutElement::text(PATIENT_ID, *b"LO", &p.id),
                                OutElement::text(ISSUER_OF_PATIENT_ID, *b"LO", &p.issuer),
                                OutElement::text(TYPE_OF_PATIENT_ID, *b"CS", "TEXT"),
                            ]
                        })
                        .collect(),
                ),
            },
        };
        let empty = |tag: u32, vr: [u8; 2]| OutElement {
            tag,
            vr,
            value: if vr == *b"SQ" {
                OutValue::Sequence(Vec::new())
            } else {
                OutValue::Bytes(Vec::new())
            },
        };
        let mut step: BTreeMap<u32, OutElement> = STEP
            .iter()
            .map(|(tag, vr, f, _)| (*tag, field(*tag, *vr, f)))
            .collect();
        for (tag, vr) in &self.extra_step {
            step.entry(*tag).or_insert_with(|| empty(*tag, *vr));
        }
        let mut top: BTreeMap<u32, OutElement> = TOP
            .iter()
            .filter(|(tag, _, _, always)| *always || self.asked(*tag))
            .map(|(tag, vr, f, _)| (*tag, field(*tag, *vr, f)))
            .collect();
        for (tag, vr) in &self.extra_top {
            top.entry(*tag).or_insert_with(|| empty(*tag, *vr));
        }
        top.insert(
            SPECIFIC_CHARACTER_SET,
            OutElement::text(SPECIFIC_CHARACTER_SET, *b"CS", "ISO_IR 192"),
        );
        top.insert(
            SPS_SEQUENCE,
            OutElement {
                tag: SPS_SEQUENCE,
                vr: *b"SQ",
                value: OutValue::Sequence(vec![step.into_values().collect()]),
            },
        );
        let elements: Vec<OutElement> = top.into_values().collect();
        encode_elements(&elements, explicit_vr)
    }

    fn asked(&self, tag: u32) -> bool {
        self.keys.iter().any(|k| k.tag == tag) || self.asked_tags.contains(&tag)
    }
}

/// A worklist C-FIND in progress: its responses, encoded, sent one per
/// step of the association loop so a C-CANCEL between them is honoured.
pub(crate) struct WorklistOp {
    pub rq: QrRequest,
    pub responses: VecDeque<Vec<u8>>,
    pub cancelled: bool,
}

impl WorklistOp {
    /// The next response and whether it is the last (PS3.4 K.4.1.3.1:
    /// Pending per match, then Success, or Cancel).
    pub(crate) fn step(&mut self) -> (CommandSet, Option<Vec<u8>>, bool) {
        if self.cancelled {
            return (
                self.rq.response(Status::CANCEL, None, None, false),
                None,
                true,
            );
        }
        match self.responses.pop_front() {
            Some(identifier) => (
                self.rq.response(Status::PENDING, None, None, true),
                Some(identifier),
                false,
            ),
            None => (
                self.rq.response(Status::SUCCESS, None, None, false),
                None,
                true,
            ),
        }
    }
}

/// Runs a worklist query: the matching steps (at most `max_results`),
/// audited as a Query (a query that cannot be audited is refused, 0xA700).
pub(crate) async fn prepare(
    archive: &Archive,
    peer: &Peer,
    rq: QrRequest,
    dataset: &DataSet,
    max_results: usize,
) -> Result<WorklistOp, (QrRequest, Refusal)> {
    let query = match WorklistQuery::parse(dataset) {
        Ok(q) => q,
        Err(r) => return Err((rq, r)),
    };
    let Some(store) = archive.orders() else {
        return Ok(WorklistOp {
            rq,
            responses: VecDeque::new(),
            cancelled: false,
        });
    };
    let orders = match store.list(&OrderFilter::default()).await {
        Ok(o) => o,
        Err(e) => {
            warn!(error = %e, "worklist query failed");
            return Err((
                rq,
                Refusal {
                    status: Status::OUT_OF_RESOURCES,
                    comment: "the order store is unavailable".into(),
                },
            ));
        }
    };
    let total_scanned = orders.len();
    let matches: Vec<OrderRecord> = orders
        .into_iter()
        .filter(|o| query.matches(o))
        .take(max_results.saturating_add(1))
        .collect();
    if matches.len() > max_results {
        info!(max_results, "worklist matches capped at max_find_results");
    }
    debug!(
        matches = matches.len(),
        scanned = total_scanned,
        "worklist C-FIND"
    );
    let mut event = crate::audit::dicom_query(peer, MODALITY_WORKLIST_FIND, query.text.join("\n"));
    let patients: std::collections::BTreeSet<&str> = matches
        .iter()
        .map(|o| o.patient_id.as_str())
        .take(1000)
        .collect();
    for p in patients {
        event = event.object(AuditObject::Patient {
            id: p.to_owned(),
            name: None,
        });
    }
    if let Err(e) = archive.audit().record(event).await {
        warn!(error = %e, "worklist C-FIND refused: its audit record could not be written");
        return Err((
            rq,
            Refusal {
                status: Status::OUT_OF_RESOURCES,
                comment: "the audit record could not be written".into(),
            },
        ));
    }
    let explicit_vr = rq.explicit_vr;
    let responses = matches
        .iter()
        .take(max_results)
        .map(|o| query.response(o, explicit_vr))
        .collect();
    Ok(WorklistOp {
        rq,
        responses,
        cancelled: false,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use pacs_core::dicom::{parse_dataset, TransferSyntax};
    use pacs_core::Limits;

    type KeyText = (u32, [u8; 2], &'static str);

    fn identifier(top: &[KeyText], steps: &[&[KeyText]]) -> DataSet {
        let mut elements: Vec<OutElement> = top
            .iter()
            .map(|(t, vr, v)| OutElement::text(*t, *vr, v))
            .collect();
        elements.push(OutElement {
            tag: SPS_SEQUENCE,
            vr: *b"SQ",
            value: OutValue::Sequence(
                steps
                    .iter()
                    .map(|s| {
                        s.iter()
                            .map(|(t, vr, v)| OutElement::text(*t, *vr, v))
                            .collect()
                    })
                    .collect(),
            ),
        });
        elements.sort_by_key(|e| e.tag);
        let bytes = encode_elements(&elements, true);
        parse_dataset(
            &bytes,
            &TransferSyntax::explicit_vr_little_endian(),
            true,
            &Limits::default(),
        )
        .unwrap()
        .dataset
    }

    fn step(acc: &str, date: &str, time: &str) -> OrderRecord {
        OrderRecord {
            patient_id: "P".into(),
            patient_name: "Nguyễn^Văn An".into(),
            accession_number: acc.into(),
            modality: "CT".into(),
            station_ae_title: "CT1".into(),
            start_date: date.into(),
            start_time: time.into(),
            ..OrderRecord::default()
        }
    }

    #[test]
    fn matching_table() {
        let a = step("A", "20261206", "0930");
        let cases: &[(&[KeyText], &[KeyText], bool)] = &[
            (&[], &[], true),
            (&[(PATIENT_NAME, *b"PN", "nguyen")], &[], true),
            (&[(PATIENT_NAME, *b"PN", "NGUYỄN^VĂN AN")], &[], true),
            (&[(PATIENT_NAME, *b"PN", "tran")], &[], false),
            (&[], &[(SCHEDULED_STATION_AE_TITLE, *b"AE", "CT1")], true),
            (&[], &[(SCHEDULED_STATION_AE_TITLE, *b"AE", "CT2")], false),
            (&[], &[(MODALITY, *b"CS", "C*")], true),
            (&[], &[(SPS_START_DATE, *b"DA", "20261201-20261206")], true),
            (&[], &[(SPS_START_DATE, *b"DA", "20261207-")], false),
            (&[], &[(SPS_START_TIME, *b"TM", "0900-1000")], true),
            (
                &[],
                &[
                    (SPS_START_DATE, *b"DA", "20261205-20261206"),
                    (SPS_START_TIME, *b"TM", "1000-1200"),
                ],
                // One range from the 5th 10:00 to the 6th 12:00 (PS3.4
                // C.2.2.2.5.1 combined): 09:30 on the 6th is inside.
                true,
            ),
            (
                &[],
                &[
                    (SPS_START_DATE, *b"DA", "20261206-20261206"),
                    (SPS_START_TIME, *b"TM", "1000-1200"),
                ],
                false,
            ),
            (&[], &[(SPS_STATUS, *b"CS", "COMPLETED")], false),
            (&[], &[(SPS_STATUS, *b"CS", "SCHEDULED")], true),
            (&[(ACCESSION_NUMBER, *b"SH", "A")], &[], true),
            (&[(ACCESSION_NUMBER, *b"SH", "B")], &[], false),
        ];
        for (top, sps, want) in cases {
            let q = WorklistQuery::parse(&identifier(top, &[sps])).unwrap();
            assert_eq!(q.matches(&a), *want, "{top:?} {sps:?}");
        }
        let mut done = a.clone();
        done.status = OrderStatus::Completed;
        let q = WorklistQuery::parse(&identifier(&[], &[&[]])).unwrap();
        assert!(!q.matches(&done), "only scheduled steps by default");
    }

    #[test]
    fn bad_identifiers_are_refused() {
        let two = identifier(&[], &[&[], &[]]);
        assert!(WorklistQuery::parse(&two).is_err());
        let date = identifier(&[], &[&[(SPS_START_DATE, *b"DA", "2026-13-01")]]);
        assert!(WorklistQuery::parse(&date).is_err());
        let status = identifier(&[], &[&[(SPS_STATUS, *b"CS", "LATE")]]);
        assert!(WorklistQuery::parse(&status).is_err());
    }

    #[test]
    fn cancel_ends_with_fe00() {
        let rq = QrRequest {
            context_id: 1,
            field: crate::message::command_field::C_FIND_RQ,
            message_id: 7,
            sop_class: MODALITY_WORKLIST_FIND.into(),
            explicit_vr: true,
        };
        let mut op = WorklistOp {
            rq,
            responses: vec![vec![0u8; 8], vec![0u8; 8]].into(),
            cancelled: false,
        };
        let (c, id, last) = op.step();
        assert_eq!(c.us(crate::message::tags::STATUS).unwrap(), 0xFF00);
        assert!(id.is_some() && !last);
        op.cancelled = true;
        let (c, id, last) = op.step();
        assert_eq!(c.us(crate::message::tags::STATUS).unwrap(), 0xFE00);
        assert!(id.is_none() && last);
    }
}
