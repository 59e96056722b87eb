//! The query model shared by C-FIND and QIDO-RS.
//!
//! A [`Query`] names a level and a list of keys, each an attribute from
//! [`ATTRIBUTES`] with a [`Matcher`] built by the PS3.4 C.2.2.2 rules. The
//! index plans the query (most selective key first) and applies
//! [`Query::matches`] to every candidate. Keys of a higher level than the
//! query's are matched against the parent records (Study Root relational
//! keys), so `/series?PatientName=...` works.

use crate::matching::{fuzzy_name_match, parse_matcher, MatchError, Matcher, ValueKind};
use crate::records::{InstanceRecord, PatientRecord, SeriesRecord, StudyRecord};

/// Query/Retrieve level (PS3.4 C.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Patient,
    Study,
    Series,
    Instance,
}

impl Level {
    /// The value of Query/Retrieve Level (0008,0052) for this level.
    pub fn as_dicom(self) -> &'static str {
        match self {
            Level::Patient => "PATIENT",
            Level::Study => "STUDY",
            Level::Series => "SERIES",
            Level::Instance => "IMAGE",
        }
    }

    pub fn from_dicom(s: &str) -> Option<Level> {
        match s.trim() {
            "PATIENT" => Some(Level::Patient),
            "STUDY" => Some(Level::Study),
            "SERIES" => Some(Level::Series),
            "IMAGE" => Some(Level::Instance),
            _ => None,
        }
    }
}

/// An attribute the archive can match on and return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribute {
    pub tag: u32,
    pub keyword: &'static str,
    pub vr: &'static str,
    pub level: Level,
    pub kind: ValueKind,
    /// False for attributes that are only returned (counts).
    pub matchable: bool,
}

const fn a(
    tag: u32,
    keyword: &'static str,
    vr: &'static str,
    level: Level,
    kind: ValueKind,
) -> Attribute {
    Attribute {
        tag,
        keyword,
        vr,
        level,
        kind,
        matchable: true,
    }
}

const fn count(tag: u32, keyword: &'static str, level: Level) -> Attribute {
    Attribute {
        tag,
        keyword,
        vr: "IS",
        level,
        kind: ValueKind::Number,
        matchable: false,
    }
}

/// Tags of attributes the archive computes rather than reads from files.
pub mod computed {
    pub const MODALITIES_IN_STUDY: u32 = 0x0008_0061;
    pub const SOP_CLASSES_IN_STUDY: u32 = 0x0008_0062;
    pub const NUMBER_OF_PATIENT_RELATED_STUDIES: u32 = 0x0020_1200;
    pub const NUMBER_OF_PATIENT_RELATED_SERIES: u32 = 0x0020_1202;
    pub const NUMBER_OF_PATIENT_RELATED_INSTANCES: u32 = 0x0020_1204;
    pub const NUMBER_OF_STUDY_RELATED_SERIES: u32 = 0x0020_1206;
    pub const NUMBER_OF_STUDY_RELATED_INSTANCES: u32 = 0x0020_1208;
    pub const NUMBER_OF_SERIES_RELATED_INSTANCES: u32 = 0x0020_1209;
    pub const REQUEST_ATTRIBUTES_SEQUENCE: u32 = 0x0040_0275;
    pub const SCHEDULED_PROCEDURE_STEP_ID: u32 = 0x0040_0009;
    pub const REQUESTED_PROCEDURE_ID: u32 = 0x0040_1001;
}

use Level::{Instance as I, Patient as P, Series as Se, Study as St};
use ValueKind as K;

/// Every attribute the index keeps, with the level that owns it. Covers the
/// PS3.4 C.6.1.1 / C.6.2.1 required and unique keys and PS3.18 Table 10.6.1-5.
pub const ATTRIBUTES: &[Attribute] = &[
    a(0x0010_0010, "PatientName", "PN", P, K::PersonName),
    a(0x0010_0020, "PatientID", "LO", P, K::Text),
    a(0x0010_0021, "IssuerOfPatientID", "LO", P, K::Text),
    a(0x0010_0030, "PatientBirthDate", "DA", P, K::Date),
    a(0x0010_0040, "PatientSex", "CS", P, K::CaseSensitiveText),
    a(0x0010_1000, "OtherPatientIDs", "LO", P, K::Text),
    count(
        computed::NUMBER_OF_PATIENT_RELATED_STUDIES,
        "NumberOfPatientRelatedStudies",
        P,
    ),
    count(
        computed::NUMBER_OF_PATIENT_RELATED_SERIES,
        "NumberOfPatientRelatedSeries",
        P,
    ),
    count(
        computed::NUMBER_OF_PATIENT_RELATED_INSTANCES,
        "NumberOfPatientRelatedInstances",
        P,
    ),
    a(0x0020_000D, "StudyInstanceUID", "UI", St, K::Uid),
    a(0x0008_0020, "StudyDate", "DA", St, K::Date),
    a(0x0008_0030, "StudyTime", "TM", St, K::Time),
    a(0x0008_0050, "AccessionNumber", "SH", St, K::Text),
    a(
        0x0008_0090,
        "ReferringPhysicianName",
        "PN",
        St,
        K::PersonName,
    ),
    a(0x0008_1030, "StudyDescription", "LO", St, K::Text),
    a(0x0020_0010, "StudyID", "SH", St, K::Text),
    a(0x0010_1010, "PatientAge", "AS", St, K::Text),
    a(0x0008_0080, "InstitutionName", "LO", St, K::Text),
    a(0x0008_0201, "TimezoneOffsetFromUTC", "SH", St, K::Text),
    a(
        computed::MODALITIES_IN_STUDY,
        "ModalitiesInStudy",
        "CS",
        St,
        K::CaseSensitiveText,
    ),
    a(
        computed::SOP_CLASSES_IN_STUDY,
        "SOPClassesInStudy",
        "UI",
        St,
        K::Uid,
    ),
    count(
        computed::NUMBER_OF_STUDY_RELATED_SERIES,
        "NumberOfStudyRelatedSeries",
        St,
    ),
    count(
        computed::NUMBER_OF_STUDY_RELATED_INSTANCES,
        "NumberOfStudyRelatedInstances",
        St,
    ),
    a(0x0020_000E, "SeriesInstanceUID", "UI", Se, K::Uid),
    a(0x0008_0060, "Modality", "CS", Se, K::CaseSensitiveText),
    a(0x0020_0011, "SeriesNumber", "IS", Se, K::Number),
    a(0x0008_103E, "SeriesDescription", "LO", Se, K::Text),
    a(0x0008_0021, "SeriesDate", "DA", Se, K::Date),
    a(0x0008_0031, "SeriesTime", "TM", Se, K::Time),
    a(
        0x0018_0015,
        "BodyPartExamined",
        "CS",
        Se,
        K::CaseSensitiveText,
    ),
    a(
        0x0040_0244,
        "PerformedProcedureStepStartDate",
        "DA",
        Se,
        K::Date,
    ),
    a(
        0x0040_0245,
        "PerformedProcedureStepStartTime",
        "TM",
        Se,
        K::Time,
    ),
    count(
        computed::NUMBER_OF_SERIES_RELATED_INSTANCES,
        "NumberOfSeriesRelatedInstances",
        Se,
    ),
    a(0x0008_0018, "SOPInstanceUID", "UI", I, K::Uid),
    a(0x0008_0016, "SOPClassUID", "UI", I, K::Uid),
    a(0x0020_0013, "InstanceNumber", "IS", I, K::Number),
    a(0x0028_0010, "Rows", "US", I, K::Number),
    a(0x0028_0011, "Columns", "US", I, K::Number),
    a(0x0028_0100, "BitsAllocated", "US", I, K::Number),
    a(0x0028_0008, "NumberOfFrames", "IS", I, K::Number),
    a(
        0x0028_0004,
        "PhotometricInterpretation",
        "CS",
        I,
        K::CaseSensitiveText,
    ),
    a(0x0008_0023, "ContentDate", "DA", I, K::Date),
    a(0x0008_0033, "ContentTime", "TM", I, K::Time),
];

/// Looks an attribute up by tag.
pub fn attribute_by_tag(tag: u32) -> Option<&'static Attribute> {
    ATTRIBUTES.iter().find(|a| a.tag == tag)
}

/// Looks an attribute up by keyword (case-sensitive, as PS3.6 spells it).
pub fn attribute_by_keyword(keyword: &str) -> Option<&'static Attribute> {
    ATTRIBUTES.iter().find(|a| a.keyword == keyword)
}

/// Why a query cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("attribute ({:04X},{:04X}) is not supported as a matching key", .0 >> 16, .0 & 0xFFFF)]
    UnsupportedKey(u32),
    #[error("{keyword} is returned by the archive but cannot be matched on")]
    NotMatchable { keyword: &'static str },
    #[error("{keyword}: {source}")]
    BadValue {
        keyword: &'static str,
        #[source]
        source: MatchError,
    },
    #[error(
        "{keyword} is a {level:?}-level attribute and cannot be a key of a {query:?}-level query"
    )]
    WrongLevel {
        keyword: &'static str,
        level: Level,
        query: Level,
    },
}

/// One matching key.
#[derive(Debug, Clone)]
pub struct Key {
    pub attribute: &'static Attribute,
    pub matcher: Matcher,
    /// The key value as given, for fuzzy name matching.
    pub raw: String,
}

/// Sequence matching on Request Attributes Sequence (series level).
#[derive(Debug, Clone, Default)]
pub struct RequestAttributesKey {
    pub scheduled_procedure_step_id: Option<Matcher>,
    pub requested_procedure_id: Option<Matcher>,
}

/// A query at one level.
#[derive(Debug, Clone)]
pub struct Query {
    pub level: Level,
    pub keys: Vec<Key>,
    pub request_attributes: Option<RequestAttributesKey>,
    /// Person names match case- and diacritic-insensitively, by word prefix
    /// (QIDO-RS `fuzzymatching=true`).
    pub fuzzy: bool,
    pub offset: usize,
    pub limit: Option<usize>,
}

/// One result row: the record at the query level and its parents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Match {
    pub patient: Option<PatientRecord>,
    pub study: Option<StudyRecord>,
    pub series: Option<SeriesRecord>,
    pub instance: Option<InstanceRecord>,
}

/// The rows of one page and whether more matched than were returned.
#[derive(Debug, Clone, Default)]
pub struct FindResult {
    pub matches: Vec<Match>,
    /// Total matches before offset/limit were applied.
    pub total: usize,
}

impl FindResult {
    pub fn truncated(&self, offset: usize) -> bool {
        offset + self.matches.len() < self.total
    }
}

impl Query {
    pub fn new(level: Level) -> Query {
        Query {
            level,
            keys: Vec::new(),
            request_attributes: None,
            fuzzy: false,
            offset: 0,
            limit: None,
        }
    }

    /// Adds a key by tag. Universal keys (empty value) are accepted and
    /// dropped, since they match everything.
    pub fn add_key(&mut self, tag: u32, value: &str) -> Result<(), QueryError> {
        let attribute = attribute_by_tag(tag).ok_or(QueryError::UnsupportedKey(tag))?;
        if attribute.level > self.level && self.level != Level::Patient {
            return Err(QueryError::WrongLevel {
                keyword: attribute.keyword,
                level: attribute.level,
                query: self.level,
            });
        }
        if !attribute.matchable {
            if value.is_empty() {
                return Ok(());
            }
            return Err(QueryError::NotMatchable {
                keyword: attribute.keyword,
            });
        }
        let matcher =
            parse_matcher(attribute.kind, value).map_err(|source| QueryError::BadValue {
                keyword: attribute.keyword,
                source,
            })?;
        if !matcher.is_universal() {
            self.keys.push(Key {
                attribute,
                matcher,
                raw: value.to_owned(),
            });
        }
        Ok(())
    }

    /// Confines the query to `studies` with a Study Instance UID list key
    /// (PS3.4 C.2.2.2.2), placed first so the index looks rows up by it;
    /// the query's own keys still apply (keys are ANDed).
    pub fn confine_to_studies<'a>(&mut self, studies: impl Iterator<Item = &'a crate::Uid>) {
        let values: Vec<String> = studies.map(|u| u.as_str().to_owned()).collect();
        let raw = values.join("\\");
        let Some(attribute) = attribute_by_tag(0x0020_000D) else {
            return;
        };
        self.keys.insert(
            0,
            Key {
                attribute,
                matcher: Matcher::UidList(values),
                raw,
            },
        );
    }

    /// The study-level part of a series or instance query: its keys of the
    /// study and patient levels, at the study level (what an index plans
    /// the candidate studies with).
    pub fn study_level(&self) -> Query {
        let mut sq = Query::new(Level::Study);
        sq.fuzzy = self.fuzzy;
        sq.keys = self
            .keys
            .iter()
            .filter(|k| k.attribute.level <= Level::Study)
            .cloned()
            .collect();
        sq
    }

    /// The key on `tag`, if any.
    pub fn key(&self, tag: u32) -> Option<&Matcher> {
        self.keys
            .iter()
            .find(|k| k.attribute.tag == tag)
            .map(|k| &k.matcher)
    }

    /// Full matching of one candidate row against every key.
    pub fn matches(&self, row: &Match) -> bool {
        self.keys.iter().all(|key| self.key_matches(key, row)) && self.sequence_matches(row)
    }

    fn key_matches(&self, key: &Key, row: &Match) -> bool {
        let values = match row_values(row, key.attribute.tag) {
            Some(v) => v,
            // The row lacks the level that owns the key: not a match.
            None => return false,
        };
        if self.fuzzy && key.attribute.kind == ValueKind::PersonName {
            return values.iter().any(|v| fuzzy_name_match(&key.raw, v));
        }
        key.matcher.matches_any(key.attribute.kind, &values)
    }

    fn sequence_matches(&self, row: &Match) -> bool {
        let Some(rq) = &self.request_attributes else {
            return true;
        };
        let Some(series) = &row.series else {
            return false;
        };
        series.request_attributes.iter().any(|item| {
            rq.scheduled_procedure_step_id
                .as_ref()
                .is_none_or(|m| m.matches(ValueKind::Text, Some(&item.scheduled_procedure_step_id)))
                && rq
                    .requested_procedure_id
                    .as_ref()
                    .is_none_or(|m| m.matches(ValueKind::Text, Some(&item.requested_procedure_id)))
        })
    }
}

fn nz(s: &str) -> Vec<String> {
    if s.is_empty() {
        Vec::new()
    } else {
        vec![s.to_owned()]
    }
}

/// The values of `tag` in a row, taken from the record of the attribute's
/// level. `None` when the row has no record of that level.
pub fn row_values(row: &Match, tag: u32) -> Option<Vec<String>> {
    use computed::*;
    let level = attribute_by_tag(tag)?.level;
    Some(match level {
        Level::Patient => {
            if let Some(p) = &row.patient {
                match tag {
                    0x0010_0010 => nz(&p.patient_name),
                    0x0010_0020 => nz(&p.patient_id),
                    0x0010_0021 => nz(&p.issuer_of_patient_id),
                    0x0010_0030 => nz(&p.patient_birth_date),
                    0x0010_0040 => nz(&p.patient_sex),
                    0x0010_1000 => p.other_patient_ids.clone(),
                    NUMBER_OF_PATIENT_RELATED_STUDIES => vec![p.num_studies.to_string()],
                    NUMBER_OF_PATIENT_RELATED_SERIES => vec![p.num_series.to_string()],
                    NUMBER_OF_PATIENT_RELATED_INSTANCES => vec![p.num_instances.to_string()],
                    _ => Vec::new(),
                }
            } else {
                // Study records carry the patient attributes (Study Root).
                let s = row.study.as_ref()?;
                match tag {
                    0x0010_0010 => nz(&s.patient_name),
                    0x0010_0020 => nz(&s.patient_id),
                    0x0010_0021 => nz(&s.issuer_of_patient_id),
                    0x0010_0030 => nz(&s.patient_birth_date),
                    0x0010_0040 => nz(&s.patient_sex),
                    _ => Vec::new(),
                }
            }
        }
        Level::Study => {
            let s = row.study.as_ref()?;
            match tag {
                0x0020_000D => vec![s.study_instance_uid.to_string()],
                0x0008_0020 => nz(&s.study_date),
                0x0008_0030 => nz(&s.study_time),
                0x0008_0050 => nz(&s.accession_number),
                0x0008_0090 => nz(&s.referring_physician_name),
                0x0008_1030 => nz(&s.study_description),
                0x0020_0010 => nz(&s.study_id),
                0x0010_1010 => nz(&s.patient_age),
                0x0008_0080 => nz(&s.institution_name),
                0x0008_0201 => nz(&s.timezone_offset_from_utc),
                MODALITIES_IN_STUDY => s.modalities.keys().cloned().collect(),
                SOP_CLASSES_IN_STUDY => s.sop_classes.keys().cloned().collect(),
                NUMBER_OF_STUDY_RELATED_SERIES => vec![s.num_series.to_string()],
                NUMBER_OF_STUDY_RELATED_INSTANCES => vec![s.num_instances.to_string()],
                _ => Vec::new(),
            }
        }
        Level::Series => {
            let s = row.series.as_ref()?;
            match tag {
                0x0020_000E => vec![s.series_instance_uid.to_string()],
                0x0008_0060 => nz(&s.modality),
                0x0020_0011 => nz(&s.series_number),
                0x0008_103E => nz(&s.series_description),
                0x0008_0021 => nz(&s.series_date),
                0x0008_0031 => nz(&s.series_time),
                0x0018_0015 => nz(&s.body_part_examined),
                0x0040_0244 => nz(&s.performed_procedure_step_start_date),
                0x0040_0245 => nz(&s.performed_procedure_step_start_time),
                NUMBER_OF_SERIES_RELATED_INSTANCES => vec![s.num_instances.to_string()],
                _ => Vec::new(),
            }
        }
        Level::Instance => {
            let i = row.instance.as_ref()?;
            let num = |v: Option<u16>| v.map(|n| vec![n.to_string()]).unwrap_or_default();
            match tag {
                0x0008_0018 => vec![i.sop_instance_uid.to_string()],
                0x0008_0016 => vec![i.sop_class_uid.to_string()],
                0x0020_0013 => nz(&i.instance_number),
                0x0028_0010 => num(i.rows),
                0x0028_0011 => num(i.columns),
                0x0028_0100 => num(i.bits_allocated),
                0x0028_0008 => i
                    .number_of_frames
                    .map(|n| vec![n.to_string()])
                    .unwrap_or_default(),
                0x0028_0004 => nz(&i.photometric_interpretation),
                0x0008_0023 => nz(&i.content_date),
                0x0008_0033 => nz(&i.content_time),
                _ => Vec::new(),
            }
        }
    })
}
