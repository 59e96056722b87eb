//! The index records of the four DICOM query/retrieve levels, and their
//! extraction from an instance's header.
//!
//! Each record holds what C-FIND (PS3.4 C.6.1.1 / C.6.2.1 required and unique
//! keys) and QIDO-RS (PS3.18 Table 10.6.1-5) match on and return, plus the
//! counters the index maintains (related series / instances, modalities in
//! study). Extraction reads only the header (everything before Pixel Data).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::dicom::{tags, DataSet, Header};
use crate::matching::fold_text;
use crate::Uid;

/// The patient level. Patients are keyed by Issuer of Patient ID plus
/// Patient ID (see [`patient_key`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientRecord {
    pub patient_id: String,
    pub issuer_of_patient_id: String,
    pub patient_name: String,
    pub patient_birth_date: String,
    pub patient_sex: String,
    pub other_patient_ids: Vec<String>,
    /// Maintained: studies of this patient in the archive.
    pub num_studies: u32,
    pub num_series: u32,
    pub num_instances: u32,
}

/// The study level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StudyRecord {
    pub study_instance_uid: Uid,
    pub patient_key: String,
    pub patient_id: String,
    pub issuer_of_patient_id: String,
    pub patient_name: String,
    pub patient_birth_date: String,
    pub patient_sex: String,
    pub patient_age: String,
    pub study_date: String,
    pub study_time: String,
    pub accession_number: String,
    pub referring_physician_name: String,
    pub study_description: String,
    pub study_id: String,
    pub institution_name: String,
    pub timezone_offset_from_utc: String,
    /// Maintained: number of series per modality (ModalitiesInStudy is the
    /// set of keys).
    pub modalities: BTreeMap<String, u32>,
    /// Maintained: number of instances per SOP class (SOPClassesInStudy).
    pub sop_classes: BTreeMap<String, u32>,
    pub num_series: u32,
    pub num_instances: u32,
}

/// One item of Request Attributes Sequence (0040,0275), kept for sequence
/// matching at the series level (PS3.18 Table 10.6.1-5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestAttributes {
    pub scheduled_procedure_step_id: String,
    pub requested_procedure_id: String,
}

/// The series level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeriesRecord {
    pub series_instance_uid: Uid,
    pub study_instance_uid: Uid,
    pub modality: String,
    pub series_number: String,
    pub series_description: String,
    pub series_date: String,
    pub series_time: String,
    pub body_part_examined: String,
    pub performed_procedure_step_start_date: String,
    pub performed_procedure_step_start_time: String,
    pub request_attributes: Vec<RequestAttributes>,
    pub timezone_offset_from_utc: String,
    /// Maintained: instances in this series.
    pub num_instances: u32,
}

/// The instance (IMAGE) level, plus where and how the object is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub sop_instance_uid: Uid,
    pub sop_class_uid: Uid,
    pub series_instance_uid: Uid,
    pub study_instance_uid: Uid,
    pub instance_number: String,
    pub rows: Option<u16>,
    pub columns: Option<u16>,
    pub bits_allocated: Option<u16>,
    pub number_of_frames: Option<u32>,
    pub photometric_interpretation: String,
    pub content_date: String,
    pub content_time: String,
    pub transfer_syntax_uid: String,
    /// Storage key of the Part 10 blob.
    pub blob_key: String,
    pub size: u64,
    /// Hex SHA-256 of the stored blob.
    pub sha256: String,
    /// File offset of the Pixel Data element, when present.
    pub pixel_data_offset: Option<u64>,
    /// When the archive accepted the object (milliseconds since the epoch).
    pub received_at_ms: u64,
}

/// Everything one instance contributes to the four levels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceAttributes {
    pub patient: PatientRecord,
    pub study: StudyRecord,
    pub series: SeriesRecord,
    pub instance: InstanceRecord,
    /// The instance's DICOM JSON (PS3.18 Annex F), built once at ingest.
    pub metadata: Vec<u8>,
}

/// Why an object's header cannot be indexed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    #[error("{attribute} is missing or empty")]
    Missing { attribute: &'static str },
    #[error("{attribute} {value:?} is not a valid UID: {reason}")]
    BadUid {
        attribute: &'static str,
        value: String,
        reason: crate::UidError,
    },
    /// The instance's DICOM JSON exceeds `Limits::max_metadata_bytes`.
    #[error("its DICOM JSON metadata is {size} bytes, over the {limit}-byte limit")]
    MetadataTooLarge { size: u64, limit: u64 },
}

/// The index key of a patient: issuer and Patient ID joined by a NUL byte
/// (neither may contain one after decoding).
pub fn patient_key(issuer: &str, patient_id: &str) -> String {
    format!("{issuer}\u{0}{patient_id}")
}

/// Folded words of a person name for the name index and fuzzy search.
pub fn name_words(name: &str) -> Vec<String> {
    let folded = fold_text(name);
    let mut words: Vec<String> = folded
        .split(['^', '=', ' ', ','])
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect();
    words.sort();
    words.dedup();
    words
}

/// A person name with empty trailing components and component groups
/// removed (PS3.5 6.2.1.1 permits omitting them), so `A^B^^=` indexes as
/// `A^B`. The stored object keeps its bytes.
pub fn normalize_person_name(name: &str) -> String {
    let groups: Vec<String> = name
        .split('=')
        .map(|g| g.trim_end_matches(['^', ' ']).to_owned())
        .collect();
    let keep = groups
        .iter()
        .rposition(|g| !g.is_empty())
        .map_or(0, |i| i + 1);
    groups[..keep].join("=")
}

fn pn(ds: &DataSet, tag: u32) -> String {
    normalize_person_name(&s(ds, tag))
}

fn s(ds: &DataSet, tag: u32) -> String {
    ds.string(tag).unwrap_or_default()
}

fn required_uid(ds: &DataSet, tag: u32, attribute: &'static str) -> Result<Uid, ExtractError> {
    let value = ds
        .uid(tag)
        .filter(|v| !v.is_empty())
        .ok_or(ExtractError::Missing { attribute })?;
    Uid::parse(&value).map_err(|reason| ExtractError::BadUid {
        attribute,
        value,
        reason,
    })
}

impl InstanceAttributes {
    /// Extracts the records from a parsed header. The blob key, size and
    /// checksum are filled in later by the archive.
    pub fn from_header(header: &Header) -> Result<Self, ExtractError> {
        let ds = &header.dataset;
        let sop_instance_uid = match ds.uid(tags::SOP_INSTANCE_UID).filter(|v| !v.is_empty()) {
            Some(_) => required_uid(ds, tags::SOP_INSTANCE_UID, "SOPInstanceUID")?,
            None if !header.meta.media_storage_sop_instance_uid.is_empty() => {
                Uid::parse(&header.meta.media_storage_sop_instance_uid).map_err(|reason| {
                    ExtractError::BadUid {
                        attribute: "MediaStorageSOPInstanceUID",
                        value: header.meta.media_storage_sop_instance_uid.clone(),
                        reason,
                    }
                })?
            }
            None => {
                return Err(ExtractError::Missing {
                    attribute: "SOPInstanceUID",
                })
            }
        };
        let sop_class_uid = match ds.uid(tags::SOP_CLASS_UID).filter(|v| !v.is_empty()) {
            Some(_) => required_uid(ds, tags::SOP_CLASS_UID, "SOPClassUID")?,
            None if !header.meta.media_storage_sop_class_uid.is_empty() => {
                Uid::parse(&header.meta.media_storage_sop_class_uid).map_err(|reason| {
                    ExtractError::BadUid {
                        attribute: "MediaStorageSOPClassUID",
                        value: header.meta.media_storage_sop_class_uid.clone(),
                        reason,
                    }
                })?
            }
            None => {
                return Err(ExtractError::Missing {
                    attribute: "SOPClassUID",
                })
            }
        };
        let study_instance_uid = required_uid(ds, tags::STUDY_INSTANCE_UID, "StudyInstanceUID")?;
        let series_instance_uid = required_uid(ds, tags::SERIES_INSTANCE_UID, "SeriesInstanceUID")?;

        let patient_id = s(ds, tags::PATIENT_ID).replace('\0', "");
        let issuer = s(ds, tags::ISSUER_OF_PATIENT_ID).replace('\0', "");
        let patient_name = pn(ds, tags::PATIENT_NAME);
        let patient_birth_date = s(ds, tags::PATIENT_BIRTH_DATE);
        let patient_sex = s(ds, tags::PATIENT_SEX);
        let modality = s(ds, tags::MODALITY);
        let tz = s(ds, tags::TIMEZONE_OFFSET_FROM_UTC);

        let patient = PatientRecord {
            patient_id: patient_id.clone(),
            issuer_of_patient_id: issuer.clone(),
            patient_name: patient_name.clone(),
            patient_birth_date: patient_birth_date.clone(),
            patient_sex: patient_sex.clone(),
            other_patient_ids: ds.strings(tags::OTHER_PATIENT_IDS),
            num_studies: 0,
            num_series: 0,
            num_instances: 0,
        };
        let study = StudyRecord {
            study_instance_uid: study_instance_uid.clone(),
            patient_key: patient_key(&issuer, &patient_id),
            patient_id,
            issuer_of_patient_id: issuer,
            patient_name,
            patient_birth_date,
            patient_sex,
            patient_age: s(ds, tags::PATIENT_AGE),
            study_date: s(ds, tags::STUDY_DATE),
            study_time: s(ds, tags::STUDY_TIME),
            accession_number: s(ds, tags::ACCESSION_NUMBER),
            referring_physician_name: pn(ds, tags::REFERRING_PHYSICIAN_NAME),
            study_description: s(ds, tags::STUDY_DESCRIPTION),
            study_id: s(ds, tags::STUDY_ID),
            institution_name: s(ds, tags::INSTITUTION_NAME),
            timezone_offset_from_utc: tz.clone(),
            modalities: BTreeMap::new(),
            sop_classes: BTreeMap::new(),
            num_series: 0,
            num_instances: 0,
        };
        let request_attributes = ds
            .sequence(tags::REQUEST_ATTRIBUTES_SEQUENCE)
            .map(|items| {
                items
                    .iter()
                    .map(|item| RequestAttributes {
                        scheduled_procedure_step_id: s(item, tags::SCHEDULED_PROCEDURE_STEP_ID),
                        requested_procedure_id: s(item, tags::REQUESTED_PROCEDURE_ID),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let series = SeriesRecord {
            series_instance_uid: series_instance_uid.clone(),
            study_instance_uid: study_instance_uid.clone(),
            modality,
            series_number: s(ds, tags::SERIES_NUMBER),
            series_description: s(ds, tags::SERIES_DESCRIPTION),
            series_date: s(ds, tags::SERIES_DATE),
            series_time: s(ds, tags::SERIES_TIME),
            body_part_examined: s(ds, tags::BODY_PART_EXAMINED),
            performed_procedure_step_start_date: s(ds, tags::PERFORMED_PROCEDURE_STEP_START_DATE),
            performed_procedure_step_start_time: s(ds, tags::PERFORMED_PROCEDURE_STEP_START_TIME),
            request_attributes,
            timezone_offset_from_utc: tz,
            num_instances: 0,
        };
        let instance = InstanceRecord {
            sop_instance_uid,
            sop_class_uid,
            series_instance_uid,
            study_instance_uid,
            instance_number: s(ds, tags::INSTANCE_NUMBER),
            rows: ds.u16(tags::ROWS),
            columns: ds.u16(tags::COLUMNS),
            bits_allocated: ds.u16(tags::BITS_ALLOCATED),
            number_of_frames: ds
                .string(tags::NUMBER_OF_FRAMES)
                .and_then(|v| v.trim().parse::<u32>().ok()),
            photometric_interpretation: s(ds, tags::PHOTOMETRIC_INTERPRETATION),
            content_date: s(ds, tags::CONTENT_DATE),
            content_time: s(ds, tags::CONTENT_TIME),
            transfer_syntax_uid: header.meta.transfer_syntax_uid.clone(),
            blob_key: String::new(),
            size: 0,
            sha256: String::new(),
            pixel_data_offset: header.pixel_data.as_ref().map(|p| p.offset),
            received_at_ms: 0,
        };
        Ok(InstanceAttributes {
            patient,
            study,
            series,
            instance,
            metadata: crate::json::instance_json(header),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_person_name as n;

    #[test]
    fn person_names_lose_empty_trailing_parts() {
        assert_eq!(n("Wang^XiaoDong=王^小東="), "Wang^XiaoDong=王^小東");
        assert_eq!(n("A^B^^"), "A^B");
        assert_eq!(n("A^B^^=="), "A^B");
        assert_eq!(n("=山田^太郎"), "=山田^太郎");
        assert_eq!(n(""), "");
        assert_eq!(n("^^"), "");
        assert_eq!(n("Nguyễn^Văn An"), "Nguyễn^Văn An");
    }
}
