//! Query/Retrieve identifiers (PS3.4 C.4.1.1.3, C.4.2.1.4, C.4.3.1.3),
//! without IO: the C-FIND request identifier becomes a
//! [`pacs_core::query::Query`] plus the list of keys to return; a result
//! row becomes a response identifier; a C-MOVE / C-GET identifier becomes
//! the set of entities to retrieve. Also the small data set encoder the
//! responses need (Implicit and Explicit VR Little Endian only: the Q/R
//! contexts accept nothing else).
//!
//! Policy choices, all documented in CONFORMANCE.md:
//! - Keys the archive does not index are returned zero-length and the
//!   matches are answered with Pending FF01 (optional keys not supported).
//! - A matching key of a level below the query's is refused (A900); the
//!   same key as a universal (return) key is returned zero-length (FF01).
//! - A malformed value (a bad date range, a UID with wild cards) is C000.

use pacs_core::dicom::{dictionary_vr, DataSet};
use pacs_core::matching::{parse_matcher, ValueKind};
use pacs_core::query::{
    attribute_by_tag, computed, row_values, Level, Match, Query, QueryError, RequestAttributesKey,
};
use pacs_core::Uid;

use crate::negotiation::QrModel;
use crate::status::Status;

pub const SPECIFIC_CHARACTER_SET: u32 = 0x0008_0005;
pub const QUERY_RETRIEVE_LEVEL: u32 = 0x0008_0052;
pub const RETRIEVE_AE_TITLE: u32 = 0x0008_0054;
pub const INSTANCE_AVAILABILITY: u32 = 0x0008_0056;
pub const FAILED_SOP_INSTANCE_UID_LIST: u32 = 0x0008_0058;
pub const PATIENT_ID: u32 = 0x0010_0020;
pub const STUDY_INSTANCE_UID: u32 = 0x0020_000D;
pub const SERIES_INSTANCE_UID: u32 = 0x0020_000E;
pub const SOP_INSTANCE_UID: u32 = 0x0008_0018;
const SCHEDULED_PROCEDURE_STEP_ID: u32 = computed::SCHEDULED_PROCEDURE_STEP_ID;
const REQUESTED_PROCEDURE_ID: u32 = computed::REQUESTED_PROCEDURE_ID;
const REQUEST_ATTRIBUTES_SEQUENCE: u32 = computed::REQUEST_ATTRIBUTES_SEQUENCE;
const ITEM: u32 = 0xFFFE_E000;

/// A request the handler refuses: status and Error Comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: Status,
    pub comment: String,
}

fn refuse(status: Status, comment: impl Into<String>) -> Refusal {
    Refusal {
        status,
        comment: comment.into(),
    }
}

/// The levels of an information model (PS3.4 C.6.1, C.6.2).
fn level_allowed(model: QrModel, level: Level) -> bool {
    model == QrModel::PatientRoot || level != Level::Patient
}

/// Reads Query/Retrieve Level (0008,0052): missing, unknown, or not a level
/// of the model is "Identifier does not match SOP Class" (A900).
pub fn query_level(ds: &DataSet, model: QrModel) -> Result<Level, Refusal> {
    let Some(value) = ds.string(QUERY_RETRIEVE_LEVEL) else {
        return Err(refuse(
            Status::IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
            "Query/Retrieve Level (0008,0052) is missing",
        ));
    };
    match Level::from_dicom(&value) {
        Some(level) if level_allowed(model, level) => Ok(level),
        _ => Err(refuse(
            Status::IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
            "Query/Retrieve Level is not a level of this model",
        )),
    }
}

/// How a requested key is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// From the row, by `row_values`.
    Row,
    /// Our AE title.
    RetrieveAeTitle,
    /// "ONLINE".
    Availability,
    /// The series' Request Attributes Sequence.
    RequestAttributes,
    /// Not kept by the archive: zero-length.
    Empty,
}

/// One key of the response identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ReturnKey {
    tag: u32,
    vr: [u8; 2],
    source: Source,
}

/// A decoded C-FIND request.
#[derive(Debug, Clone)]
pub struct FindRequest {
    pub query: Query,
    /// Some key is neither indexed nor computed: answer matches with FF01.
    pub optional_keys_unsupported: bool,
    keys: Vec<ReturnKey>,
}

fn vr_of(tag: u32) -> [u8; 2] {
    match attribute_by_tag(tag) {
        Some(a) => {
            let b = a.vr.as_bytes();
            [
                b.first().copied().unwrap_or(b'U'),
                b.get(1).copied().unwrap_or(b'N'),
            ]
        }
        None => dictionary_vr(tag),
    }
}

/// The unique keys always returned at `level` (the level's own and those
/// of the levels above it in `model`, PS3.4 C.4.1.2.1).
fn unique_keys(model: QrModel, level: Level) -> Vec<u32> {
    let mut keys = Vec::new();
    if model == QrModel::PatientRoot {
        keys.push(PATIENT_ID);
    }
    if level >= Level::Study {
        keys.push(STUDY_INSTANCE_UID);
    }
    if level >= Level::Series {
        keys.push(SERIES_INSTANCE_UID);
    }
    if level >= Level::Instance {
        keys.push(SOP_INSTANCE_UID);
    }
    keys
}

impl FindRequest {
    /// Builds the query from every element of the identifier but Specific
    /// Character Set and Query/Retrieve Level; `limit` caps the matches.
    pub fn from_identifier(
        ds: &DataSet,
        model: QrModel,
        limit: usize,
    ) -> Result<FindRequest, Refusal> {
        let level = query_level(ds, model)?;
        let mut query = Query::new(level);
        query.limit = Some(limit);
        let mut keys: Vec<ReturnKey> = Vec::new();
        let mut unsupported = false;
        for element in ds.iter() {
            let tag = element.tag;
            if tag == SPECIFIC_CHARACTER_SET
                || tag == QUERY_RETRIEVE_LEVEL
                || tag & 0xFFFF == 0
                || tag >> 16 == 0x0002
            {
                continue;
            }
            let vr = if element.vr == *b"UN" {
                vr_of(tag)
            } else {
                element.vr
            };
            let mut key = ReturnKey {
                tag,
                vr,
                source: Source::Row,
            };
            match tag {
                RETRIEVE_AE_TITLE => key.source = Source::RetrieveAeTitle,
                INSTANCE_AVAILABILITY => key.source = Source::Availability,
                REQUEST_ATTRIBUTES_SEQUENCE => {
                    key.vr = *b"SQ";
                    if level == Level::Series {
                        key.source = Source::RequestAttributes;
                        query.request_attributes = request_attributes_key(ds)?;
                    } else {
                        key.source = Source::Empty;
                        unsupported = true;
                    }
                }
                _ => {
                    let value = ds.string(tag).unwrap_or_default();
                    match query.add_key(tag, &value) {
                        Ok(()) => {}
                        Err(QueryError::UnsupportedKey(_)) => {
                            key.source = Source::Empty;
                            unsupported = true;
                        }
                        Err(QueryError::NotMatchable { .. }) => unsupported = true,
                        Err(QueryError::WrongLevel { keyword, .. }) => {
                            if !value.is_empty() {
                                return Err(refuse(
                                    Status::IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
                                    format!("{keyword} is below the Query/Retrieve Level"),
                                ));
                            }
                            key.source = Source::Empty;
                            unsupported = true;
                        }
                        Err(e @ QueryError::BadValue { .. }) => {
                            return Err(refuse(Status::CANNOT_UNDERSTAND, e.to_string()))
                        }
                    }
                }
            }
            keys.push(key);
        }
        for tag in unique_keys(model, level) {
            if !keys.iter().any(|k| k.tag == tag) {
                keys.push(ReturnKey {
                    tag,
                    vr: vr_of(tag),
                    source: Source::Row,
                });
            }
        }
        if !keys.iter().any(|k| k.tag == RETRIEVE_AE_TITLE) {
            keys.push(ReturnKey {
                tag: RETRIEVE_AE_TITLE,
                vr: *b"AE",
                source: Source::RetrieveAeTitle,
            });
        }
        keys.sort_by_key(|k| k.tag);
        Ok(FindRequest {
            query,
            optional_keys_unsupported: unsupported,
            keys,
        })
    }

    /// The response identifier for one match: exactly the requested keys
    /// (plus Query/Retrieve Level, Retrieve AE Title, the unique keys, and
    /// Specific Character Set "ISO_IR 192" when a value is not ASCII), in
    /// the context's transfer syntax.
    pub fn response(&self, row: &Match, our_ae: &str, explicit_vr: bool) -> Vec<u8> {
        let mut elements: Vec<OutElement> = Vec::with_capacity(self.keys.len() + 2);
        elements.push(OutElement::text(
            QUERY_RETRIEVE_LEVEL,
            *b"CS",
            self.query.level.as_dicom(),
        ));
        for key in &self.keys {
            let element = match key.source {
                Source::Row => {
                    let values = row_values(row, key.tag).unwrap_or_default();
                    OutElement::text(key.tag, key.vr, &values.join("\\"))
                }
                Source::RetrieveAeTitle => OutElement::text(key.tag, key.vr, our_ae),
                Source::Availability => OutElement::text(key.tag, key.vr, "ONLINE"),
                Source::RequestAttributes => {
                    let items = row
                        .series
                        .as_ref()
                        .map(|s| {
                            s.request_attributes
                                .iter()
                                .map(|item| {
                                    vec![
                                        OutElement::text(
                                            SCHEDULED_PROCEDURE_STEP_ID,
                                            *b"SH",
                                            &item.scheduled_procedure_step_id,
                                        ),
                                        OutElement::text(
                                            REQUESTED_PROCEDURE_ID,
                                            *b"SH",
                                            &item.requested_procedure_id,
                                        ),
                                    ]
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    OutElement {
                        tag: key.tag,
                        vr: *b"SQ",
                        value: OutValue::Sequence(items),
                    }
                }
                Source::Empty => OutElement {
                    tag: key.tag,
                    vr: key.vr,
                    value: if key.vr == *b"SQ" {
                        OutValue::Sequence(Vec::new())
                    } else {
                        OutValue::Bytes(Vec::new())
                    },
                },
            };
            elements.push(element);
        }
        if elements.iter().any(OutElement::non_ascii) {
            elements.push(OutElement::text(
                SPECIFIC_CHARACTER_SET,
                *b"CS",
                "ISO_IR 192",
            ));
        }
        elements.sort_by_key(|e| e.tag);
        encode(&elements, explicit_vr)
    }
}

/// Sequence matching on the first item of Request Attributes Sequence.
fn request_attributes_key(ds: &DataSet) -> Result<Option<RequestAttributesKey>, Refusal> {
    let Some(item) = ds
        .sequence(REQUEST_ATTRIBUTES_SEQUENCE)
        .and_then(|s| s.first())
    else {
        return Ok(None);
    };
    let matcher = |tag: u32| -> Result<_, Refusal> {
        match item.string(tag) {
            None => Ok(None),
            Some(v) => parse_matcher(ValueKind::Text, &v)
                .map(|m| (!m.is_universal()).then_some(m))
                .map_err(|e| refuse(Status::CANNOT_UNDERSTAND, e.to_string())),
        }
    };
    let key = RequestAttributesKey {
        scheduled_procedure_step_id: matcher(SCHEDULED_PROCEDURE_STEP_ID)?,
        requested_procedure_id: matcher(REQUESTED_PROCEDURE_ID)?,
    };
    Ok(Some(key))
}

/// What a C-MOVE or C-GET identifier asks for (PS3.4 C.4.2.2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetrieveKeys {
    /// Patient Root, PATIENT level: one Patient ID.
    Patient(String),
    Studies(Vec<Uid>),
    Series(Vec<Uid>),
    Instances(Vec<Uid>),
}

/// Reads a retrieve identifier: the level and the unique key(s) of that
/// level (a list of UIDs is allowed, PS3.4 C.4.2.2.1).
pub fn retrieve_keys(ds: &DataSet, model: QrModel) -> Result<RetrieveKeys, Refusal> {
    let level = query_level(ds, model)?;
    if level == Level::Patient {
        let Some(id) = ds.string(PATIENT_ID) else {
            return Err(refuse(
                Status::IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
                "PATIENT level retrieve needs a Patient ID",
            ));
        };
        if id.contains(['*', '?', '\\']) {
            return Err(refuse(
                Status::CANNOT_UNDERSTAND,
                "Patient ID of a retrieve must be a single value",
            ));
        }
        return Ok(RetrieveKeys::Patient(id));
    }
    let tag = match level {
        Level::Study => STUDY_INSTANCE_UID,
        Level::Series => SERIES_INSTANCE_UID,
        _ => SOP_INSTANCE_UID,
    };
    let values = ds.strings(tag);
    if values.is_empty() {
        return Err(refuse(
            Status::IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
            format!(
                "the unique key of the {} level is missing",
                level.as_dicom()
            ),
        ));
    }
    let mut uids = Vec::with_capacity(values.len());
    for v in values {
        let uid = Uid::parse(v.trim_end_matches('\0'))
            .map_err(|e| refuse(Status::CANNOT_UNDERSTAND, format!("unique key: {e}")))?;
        if !uids.contains(&uid) {
            uids.push(uid);
        }
    }
    Ok(match level {
        Level::Study => RetrieveKeys::Studies(uids),
        Level::Series => RetrieveKeys::Series(uids),
        _ => RetrieveKeys::Instances(uids),
    })
}

/// The identifier of a final C-MOVE / C-GET response with failures:
/// Failed SOP Instance UID List (0008,0058), PS3.4 C.4.2.1.4.2.
pub fn failed_instances_identifier(uids: &[String], explicit_vr: bool) -> Vec<u8> {
    encode(
        &[OutElement::text(
            FAILED_SOP_INSTANCE_UID_LIST,
            *b"UI",
            &uids.join("\\"),
        )],
        explicit_vr,
    )
}

/// An element to encode.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OutElement {
    pub tag: u32,
    pub vr: [u8; 2],
    pub value: OutValue,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum OutValue {
    Bytes(Vec<u8>),
    Sequence(Vec<Vec<OutElement>>),
}

impl OutElement {
    /// A value given as text: string VRs are UTF-8, padded to even length
    /// (UI with NUL, others with space); the binary integer VRs are
    /// converted, values that do not parse dropped.
    pub(crate) fn text(tag: u32, vr: [u8; 2], text: &str) -> OutElement {
        let value = match &vr {
            b"US" | b"SS" => text
                .split('\\')
                .filter_map(|v| v.trim().parse::<i64>().ok())
                .flat_map(|n| (n as u16).to_le_bytes())
                .collect(),
            b"UL" | b"SL" => text
                .split('\\')
                .filter_map(|v| v.trim().parse::<i64>().ok())
                .flat_map(|n| (n as u32).to_le_bytes())
                .collect(),
            _ => {
                let mut v = text.as_bytes().to_vec();
                if v.len() % 2 == 1 {
                    v.push(if &vr == b"UI" { 0 } else { b' ' });
                }
                v
            }
        };
        OutElement {
            tag,
            vr,
            value: OutValue::Bytes(value),
        }
    }

    #[cfg(test)]
    pub(crate) fn tag(&self) -> u32 {
        self.tag
    }

    /// A sequence of items.
    pub(crate) fn sequence(tag: u32, items: Vec<Vec<OutElement>>) -> OutElement {
        OutElement {
            tag,
            vr: *b"SQ",
            value: OutValue::Sequence(items),
        }
    }

    fn non_ascii(&self) -> bool {
        match &self.value {
            OutValue::Bytes(b) => !b.is_ascii(),
            OutValue::Sequence(items) => items.iter().flatten().any(OutElement::non_ascii),
        }
    }
}

/// A parsed data set written back (Little Endian, explicit VR or not),
/// its values as they were read. Fragments (encapsulated data below the
/// top level) are left out: no data set the services re-encode has any.
pub(crate) fn encode_dataset(ds: &DataSet, explicit_vr: bool) -> Vec<u8> {
    fn out(ds: &DataSet) -> Vec<OutElement> {
        ds.iter()
            .filter_map(|e| {
                let value = match &e.value {
                    pacs_core::dicom::Value::Bytes(b) => OutValue::Bytes(b.clone()),
                    pacs_core::dicom::Value::Sequence(items) => {
                        OutValue::Sequence(items.iter().map(out).collect())
                    }
                    pacs_core::dicom::Value::Fragments(_) => return None,
                };
                Some(OutElement {
                    tag: e.tag,
                    vr: e.vr,
                    value,
                })
            })
            .collect()
    }
    encode(&out(ds), explicit_vr)
}

pub(crate) fn encode(elements: &[OutElement], explicit_vr: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for e in elements {
        encode_element(&mut out, e, explicit_vr);
    }
    out
}

fn push_tag(out: &mut Vec<u8>, tag: u32) {
    out.extend_from_slice(&((tag >> 16) as u16).to_le_bytes());
    out.extend_from_slice(&((tag & 0xFFFF) as u16).to_le_bytes());
}

fn encode_element(out: &mut Vec<u8>, e: &OutElement, explicit_vr: bool) {
    let value = match &e.value {
        OutValue::Bytes(b) => b.clone(),
        OutValue::Sequence(items) => {
            let mut v = Vec::new();
            for item in items {
                let body = encode(item, explicit_vr);
                push_tag(&mut v, ITEM);
                v.extend_from_slice(&(body.len() as u32).to_le_bytes());
                v.extend_from_slice(&body);
            }
            v
        }
    };
    // A value too long for a 2-byte length is written as UN (never the
    // case for the indexed attributes; a safeguard, not a feature).
    let vr = if explicit_vr && !pacs_core::dicom::has_long_length(e.vr) && value.len() > 0xFFFE {
        *b"UN"
    } else {
        e.vr
    };
    push_tag(out, e.tag);
    if explicit_vr {
        out.extend_from_slice(&vr);
        if pacs_core::dicom::has_long_length(vr) {
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        } else {
            out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        }
    } else {
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(&value);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use pacs_core::dicom::{parse_dataset, TransferSyntax};
    use pacs_core::records::{PatientRecord, StudyRecord};
    use pacs_core::Limits;

    fn identifier(elements: &[(u32, &[u8; 2], &str)], explicit: bool) -> DataSet {
        let out: Vec<OutElement> = elements
            .iter()
            .map(|(t, vr, v)| OutElement::text(*t, **vr, v))
            .collect();
        let bytes = encode(&out, explicit);
        let ts = if explicit {
            TransferSyntax::explicit_vr_little_endian()
        } else {
            TransferSyntax::implicit_vr_little_endian()
        };
        parse_dataset(&bytes, &ts, true, &Limits::default())
            .unwrap()
            .dataset
    }

    fn study_row() -> Match {
        let name = "Nguyễn^Văn An".to_owned();
        Match {
            patient: Some(PatientRecord {
                patient_id: "VN-0001".into(),
                issuer_of_patient_id: String::new(),
                patient_name: name.clone(),
                patient_birth_date: String::new(),
                patient_sex: String::new(),
                other_patient_ids: Vec::new(),
                num_studies: 1,
                num_series: 1,
                num_instances: 1,
            }),
            study: Some(StudyRecord {
                study_instance_uid: Uid::parse("1.2.3").unwrap(),
                patient_key: String::new(),
                patient_id: "VN-0001".into(),
                issuer_of_patient_id: String::new(),
                patient_name: name,
                patient_birth_date: String::new(),
                patient_sex: String::new(),
                patient_age: String::new(),
                study_date: "20240102".into(),
                study_time: String::new(),
                accession_number: String::new(),
                referring_physician_name: String::new(),
                study_description: String::new(),
                study_id: String::new(),
                institution_name: String::new(),
                timezone_offset_from_utc: String::new(),
                modalities: [("CT".to_owned(), 3), ("SR".to_owned(), 1)]
                    .into_iter()
                    .collect(),
                sop_classes: Default::default(),
                num_series: 2,
                num_instances: 4,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn levels_per_model() {
        let cases: &[(QrModel, &str, Option<Level>)] = &[
            (QrModel::PatientRoot, "PATIENT", Some(Level::Patient)),
            (QrModel::StudyRoot, "PATIENT", None),
            (QrModel::StudyRoot, "STUDY", Some(Level::Study)),
            (QrModel::StudyRoot, "SERIES", Some(Level::Series)),
            (QrModel::PatientRoot, "IMAGE", Some(Level::Instance)),
            (QrModel::StudyRoot, "FRAME", None),
            (QrModel::StudyRoot, "", None),
        ];
        for (model, value, expect) in cases {
            let ds = identifier(&[(QUERY_RETRIEVE_LEVEL, b"CS", value)], true);
            let got = query_level(&ds, *model);
            match expect {
                Some(level) => assert_eq!(got, Ok(*level), "{value}"),
                None => assert_eq!(
                    got.unwrap_err().status,
                    Status::IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
                    "{value}"
                ),
            }
        }
    }

    #[test]
    fn find_request_keys_and_refusals() {
        for explicit in [true, false] {
            let ds = identifier(
                &[
                    (QUERY_RETRIEVE_LEVEL, b"CS", "STUDY"),
                    (0x0008_0020, b"DA", "20240101-20241231"),
                    (0x0008_0061, b"CS", ""),
                    (0x0010_0010, b"PN", "Nguy*"),
                    (0x0009_0010, b"LO", ""),
                    (0x0032_1060, b"LO", ""),
                ],
                explicit,
            );
            let rq = FindRequest::from_identifier(&ds, QrModel::StudyRoot, 5).unwrap();
            assert_eq!(rq.query.level, Level::Study);
            assert_eq!(rq.query.limit, Some(5));
            let matched: Vec<u32> = rq.query.keys.iter().map(|k| k.attribute.tag).collect();
            assert_eq!(matched, vec![0x0008_0020, 0x0010_0010]);
            assert!(rq.optional_keys_unsupported);
        }
        let bad_date = identifier(
            &[
                (QUERY_RETRIEVE_LEVEL, b"CS", "STUDY"),
                (0x0008_0020, b"DA", "2024-13-45"),
            ],
            true,
        );
        assert_eq!(
            FindRequest::from_identifier(&bad_date, QrModel::StudyRoot, 5)
                .unwrap_err()
                .status,
            Status::CANNOT_UNDERSTAND
        );
        let below = identifier(
            &[
                (QUERY_RETRIEVE_LEVEL, b"CS", "STUDY"),
                (0x0008_0060, b"CS", "CT"),
            ],
            true,
        );
        assert_eq!(
            FindRequest::from_identifier(&below, QrModel::StudyRoot, 5)
                .unwrap_err()
                .status,
            Status::IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
        );
        let no_level = identifier(&[(0x0010_0010, b"PN", "A*")], true);
        assert_eq!(
            FindRequest::from_identifier(&no_level, QrModel::StudyRoot, 5)
                .unwrap_err()
                .status,
            Status::IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
        );
    }

    #[test]
    fn response_holds_the_requested_keys() {
        let ds = identifier(
            &[
                (QUERY_RETRIEVE_LEVEL, b"CS", "STUDY"),
                (0x0008_0061, b"CS", ""),
                (0x0010_0010, b"PN", ""),
                (0x0032_1060, b"LO", ""),
            ],
            false,
        );
        let rq = FindRequest::from_identifier(&ds, QrModel::PatientRoot, 10).unwrap();
        for explicit in [true, false] {
            let bytes = rq.response(&study_row(), "PACS", explicit);
            let ts = if explicit {
                TransferSyntax::explicit_vr_little_endian()
            } else {
                TransferSyntax::implicit_vr_little_endian()
            };
            let out = parse_dataset(&bytes, &ts, true, &Limits::default())
                .unwrap()
                .dataset;
            let tags: Vec<u32> = out.iter().map(|e| e.tag).collect();
            assert_eq!(
                tags,
                vec![
                    SPECIFIC_CHARACTER_SET,
                    QUERY_RETRIEVE_LEVEL,
                    RETRIEVE_AE_TITLE,
                    0x0008_0061,
                    0x0010_0010,
                    PATIENT_ID,
                    STUDY_INSTANCE_UID,
                    0x0032_1060,
                ]
            );
            assert_eq!(out.string(SPECIFIC_CHARACTER_SET).unwrap(), "ISO_IR 192");
            assert_eq!(out.string(0x0010_0010).unwrap(), "Nguyễn^Văn An");
            assert_eq!(out.strings(0x0008_0061), vec!["CT", "SR"]);
            assert_eq!(out.uid(STUDY_INSTANCE_UID).unwrap(), "1.2.3");
            assert_eq!(out.string(RETRIEVE_AE_TITLE).unwrap(), "PACS");
            assert_eq!(out.bytes(0x0032_1060).unwrap(), b"");
        }
        // ASCII values only: no Specific Character Set.
        let mut row = study_row();
        if let Some(s) = row.study.as_mut() {
            s.patient_name = "DOE^JOHN".into();
        }
        row.patient = None;
        let bytes = rq.response(&row, "PACS", true);
        let out = parse_dataset(
            &bytes,
            &TransferSyntax::explicit_vr_little_endian(),
            true,
            &Limits::default(),
        )
        .unwrap()
        .dataset;
        assert!(!out.contains(SPECIFIC_CHARACTER_SET));
    }

    #[test]
    fn retrieve_identifiers() {
        let ds = identifier(
            &[
                (QUERY_RETRIEVE_LEVEL, b"CS", "STUDY"),
                (STUDY_INSTANCE_UID, b"UI", "1.2.3\\1.2.4\\1.2.3"),
            ],
            true,
        );
        assert_eq!(
            retrieve_keys(&ds, QrModel::StudyRoot),
            Ok(RetrieveKeys::Studies(vec![
                Uid::parse("1.2.3").unwrap(),
                Uid::parse("1.2.4").unwrap()
            ]))
        );
        let ds = identifier(
            &[
                (QUERY_RETRIEVE_LEVEL, b"CS", "SERIES"),
                (SERIES_INSTANCE_UID, b"UI", "../etc"),
            ],
            true,
        );
        assert_eq!(
            retrieve_keys(&ds, QrModel::StudyRoot).unwrap_err().status,
            Status::CANNOT_UNDERSTAND
        );
        let ds = identifier(&[(QUERY_RETRIEVE_LEVEL, b"CS", "IMAGE")], true);
        assert_eq!(
            retrieve_keys(&ds, QrModel::StudyRoot).unwrap_err().status,
            Status::IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
        );
        let ds = identifier(
            &[
                (QUERY_RETRIEVE_LEVEL, b"CS", "PATIENT"),
                (PATIENT_ID, b"LO", "VN-0001"),
            ],
            true,
        );
        assert_eq!(
            retrieve_keys(&ds, QrModel::PatientRoot),
            Ok(RetrieveKeys::Patient("VN-0001".into()))
        );
        assert!(retrieve_keys(&ds, QrModel::StudyRoot).is_err());
    }

    #[test]
    fn failed_list_encodes() {
        let bytes = failed_instances_identifier(&["1.2.3".into(), "1.2.45".into()], false);
        let out = parse_dataset(
            &bytes,
            &TransferSyntax::implicit_vr_little_endian(),
            true,
            &Limits::default(),
        )
        .unwrap()
        .dataset;
        assert_eq!(
            out.strings(FAILED_SOP_INSTANCE_UID_LIST),
            vec!["1.2.3", "1.2.45"]
        );
    }
}
