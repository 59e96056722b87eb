//! Tags of the attributes the archive reads, as `u32` values `group << 16 | element`.
//!
//! Names follow the keywords of PS3.6 (Data Dictionary) in `SCREAMING_SNAKE_CASE`.
//! Only the attributes the archive indexes or needs to find its way through an
//! object are listed; [`super::dictionary_vr`] covers the rest of the dictionary.

/// Builds a tag from its group and element numbers.
pub const fn tag(group: u16, element: u16) -> u32 {
    (group as u32) << 16 | element as u32
}

/// The group number of a tag.
pub const fn group(tag: u32) -> u16 {
    (tag >> 16) as u16
}

/// The element number of a tag.
pub const fn element(tag: u32) -> u16 {
    (tag & 0xFFFF) as u16
}

// --- File Meta Information, group 0002 (PS3.10 §7.1) ---

/// (0002,0000) File Meta Information Group Length, UL.
pub const FILE_META_INFORMATION_GROUP_LENGTH: u32 = 0x0002_0000;
/// (0002,0001) File Meta Information Version, OB.
pub const FILE_META_INFORMATION_VERSION: u32 = 0x0002_0001;
/// (0002,0002) Media Storage SOP Class UID, UI.
pub const MEDIA_STORAGE_SOP_CLASS_UID: u32 = 0x0002_0002;
/// (0002,0003) Media Storage SOP Instance UID, UI.
pub const MEDIA_STORAGE_SOP_INSTANCE_UID: u32 = 0x0002_0003;
/// (0002,0010) Transfer Syntax UID, UI.
pub const TRANSFER_SYNTAX_UID: u32 = 0x0002_0010;
/// (0002,0012) Implementation Class UID, UI.
pub const IMPLEMENTATION_CLASS_UID: u32 = 0x0002_0012;
/// (0002,0013) Implementation Version Name, SH.
pub const IMPLEMENTATION_VERSION_NAME: u32 = 0x0002_0013;
/// (0002,0016) Source Application Entity Title, AE.
pub const SOURCE_APPLICATION_ENTITY_TITLE: u32 = 0x0002_0016;
/// (0002,0017) Sending Application Entity Title, AE.
pub const SENDING_APPLICATION_ENTITY_TITLE: u32 = 0x0002_0017;
/// (0002,0018) Receiving Application Entity Title, AE.
pub const RECEIVING_APPLICATION_ENTITY_TITLE: u32 = 0x0002_0018;
/// (0002,0100) Private Information Creator UID, UI.
pub const PRIVATE_INFORMATION_CREATOR_UID: u32 = 0x0002_0100;
/// (0002,0102) Private Information, OB.
pub const PRIVATE_INFORMATION: u32 = 0x0002_0102;

// --- SOP Common, General Study / Series / Equipment / Image ---

/// (0008,0005) Specific Character Set, CS.
pub const SPECIFIC_CHARACTER_SET: u32 = 0x0008_0005;
/// (0008,0008) Image Type, CS.
pub const IMAGE_TYPE: u32 = 0x0008_0008;
/// (0008,0012) Instance Creation Date, DA.
pub const INSTANCE_CREATION_DATE: u32 = 0x0008_0012;
/// (0008,0013) Instance Creation Time, TM.
pub const INSTANCE_CREATION_TIME: u32 = 0x0008_0013;
/// (0008,0016) SOP Class UID, UI.
pub const SOP_CLASS_UID: u32 = 0x0008_0016;
/// (0008,0018) SOP Instance UID, UI.
pub const SOP_INSTANCE_UID: u32 = 0x0008_0018;
/// (0008,0020) Study Date, DA.
pub const STUDY_DATE: u32 = 0x0008_0020;
/// (0008,0021) Series Date, DA.
pub const SERIES_DATE: u32 = 0x0008_0021;
/// (0008,0023) Content Date, DA.
pub const CONTENT_DATE: u32 = 0x0008_0023;
/// (0008,0030) Study Time, TM.
pub const STUDY_TIME: u32 = 0x0008_0030;
/// (0008,0031) Series Time, TM.
pub const SERIES_TIME: u32 = 0x0008_0031;
/// (0008,0033) Content Time, TM.
pub const CONTENT_TIME: u32 = 0x0008_0033;
/// (0008,0050) Accession Number, SH.
pub const ACCESSION_NUMBER: u32 = 0x0008_0050;
/// (0008,0060) Modality, CS.
pub const MODALITY: u32 = 0x0008_0060;
/// (0008,0061) Modalities in Study, CS.
pub const MODALITIES_IN_STUDY: u32 = 0x0008_0061;
/// (0008,0070) Manufacturer, LO.
pub const MANUFACTURER: u32 = 0x0008_0070;
/// (0008,0080) Institution Name, LO.
pub const INSTITUTION_NAME: u32 = 0x0008_0080;
/// (0008,0090) Referring Physician's Name, PN.
pub const REFERRING_PHYSICIAN_NAME: u32 = 0x0008_0090;
/// (0008,0201) Timezone Offset From UTC, SH.
pub const TIMEZONE_OFFSET_FROM_UTC: u32 = 0x0008_0201;
/// (0008,1030) Study Description, LO.
pub const STUDY_DESCRIPTION: u32 = 0x0008_1030;
/// (0008,103E) Series Description, LO.
pub const SERIES_DESCRIPTION: u32 = 0x0008_103E;

// --- Patient ---

/// (0010,0010) Patient's Name, PN.
pub const PATIENT_NAME: u32 = 0x0010_0010;
/// (0010,0020) Patient ID, LO.
pub const PATIENT_ID: u32 = 0x0010_0020;
/// (0010,0021) Issuer of Patient ID, LO.
pub const ISSUER_OF_PATIENT_ID: u32 = 0x0010_0021;
/// (0010,0030) Patient's Birth Date, DA.
pub const PATIENT_BIRTH_DATE: u32 = 0x0010_0030;
/// (0010,0040) Patient's Sex, CS.
pub const PATIENT_SEX: u32 = 0x0010_0040;
/// (0010,1000) Other Patient IDs, LO (retired, still common).
pub const OTHER_PATIENT_IDS: u32 = 0x0010_1000;
/// (0010,1010) Patient's Age, AS.
pub const PATIENT_AGE: u32 = 0x0010_1010;

// --- Acquisition, study / series / instance identification ---

/// (0018,0015) Body Part Examined, CS.
pub const BODY_PART_EXAMINED: u32 = 0x0018_0015;
/// (0020,000D) Study Instance UID, UI.
pub const STUDY_INSTANCE_UID: u32 = 0x0020_000D;
/// (0020,000E) Series Instance UID, UI.
pub const SERIES_INSTANCE_UID: u32 = 0x0020_000E;
/// (0020,0010) Study ID, SH.
pub const STUDY_ID: u32 = 0x0020_0010;
/// (0020,0011) Series Number, IS.
pub const SERIES_NUMBER: u32 = 0x0020_0011;
/// (0020,0013) Instance Number, IS.
pub const INSTANCE_NUMBER: u32 = 0x0020_0013;

// --- Image Pixel ---

/// (0028,0002) Samples per Pixel, US.
pub const SAMPLES_PER_PIXEL: u32 = 0x0028_0002;
/// (0028,0004) Photometric Interpretation, CS.
pub const PHOTOMETRIC_INTERPRETATION: u32 = 0x0028_0004;
/// (0028,0008) Number of Frames, IS.
pub const NUMBER_OF_FRAMES: u32 = 0x0028_0008;
/// (0028,0010) Rows, US.
pub const ROWS: u32 = 0x0028_0010;
/// (0028,0011) Columns, US.
pub const COLUMNS: u32 = 0x0028_0011;
/// (0028,0100) Bits Allocated, US.
pub const BITS_ALLOCATED: u32 = 0x0028_0100;
/// (0028,0101) Bits Stored, US.
pub const BITS_STORED: u32 = 0x0028_0101;
/// (0028,0103) Pixel Representation, US.
pub const PIXEL_REPRESENTATION: u32 = 0x0028_0103;

// --- Procedure ---

/// (0040,0009) Scheduled Procedure Step ID, SH.
pub const SCHEDULED_PROCEDURE_STEP_ID: u32 = 0x0040_0009;
/// (0040,0244) Performed Procedure Step Start Date, DA.
pub const PERFORMED_PROCEDURE_STEP_START_DATE: u32 = 0x0040_0244;
/// (0040,0245) Performed Procedure Step Start Time, TM.
pub const PERFORMED_PROCEDURE_STEP_START_TIME: u32 = 0x0040_0245;
/// (0040,0275) Request Attributes Sequence, SQ.
pub const REQUEST_ATTRIBUTES_SEQUENCE: u32 = 0x0040_0275;
/// (0040,1001) Requested Procedure ID, SH.
pub const REQUESTED_PROCEDURE_ID: u32 = 0x0040_1001;

// --- Pixel data (PS3.5 §8) ---

/// (7FE0,0001) Extended Offset Table, OV.
pub const EXTENDED_OFFSET_TABLE: u32 = 0x7FE0_0001;
/// (7FE0,0008) Float Pixel Data, OF.
pub const FLOAT_PIXEL_DATA: u32 = 0x7FE0_0008;
/// (7FE0,0009) Double Float Pixel Data, OD.
pub const DOUBLE_FLOAT_PIXEL_DATA: u32 = 0x7FE0_0009;
/// (7FE0,0010) Pixel Data, OB or OW.
pub const PIXEL_DATA: u32 = 0x7FE0_0010;

// --- Items and delimiters (PS3.5 §7.5) ---

/// (FFFE,E000) Item.
pub const ITEM: u32 = 0xFFFE_E000;
/// (FFFE,E00D) Item Delimitation Item.
pub const ITEM_DELIMITATION_ITEM: u32 = 0xFFFE_E00D;
/// (FFFE,E0DD) Sequence Delimitation Item.
pub const SEQUENCE_DELIMITATION_ITEM: u32 = 0xFFFE_E0DD;

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::dictionary::DataDictionary;
    use dicom_dictionary_std::StandardDataDictionary;

    /// Every constant agrees with the standard dictionary's keyword.
    #[test]
    fn constants_match_the_dictionary() {
        let cases: &[(&str, u32)] = &[
            (
                "FileMetaInformationGroupLength",
                FILE_META_INFORMATION_GROUP_LENGTH,
            ),
            ("FileMetaInformationVersion", FILE_META_INFORMATION_VERSION),
            ("MediaStorageSOPClassUID", MEDIA_STORAGE_SOP_CLASS_UID),
            ("MediaStorageSOPInstanceUID", MEDIA_STORAGE_SOP_INSTANCE_UID),
            ("TransferSyntaxUID", TRANSFER_SYNTAX_UID),
            ("ImplementationClassUID", IMPLEMENTATION_CLASS_UID),
            ("ImplementationVersionName", IMPLEMENTATION_VERSION_NAME),
            (
                "SourceApplicationEntityTitle",
                SOURCE_APPLICATION_ENTITY_TITLE,
            ),
            (
                "SendingApplicationEntityTitle",
                SENDING_APPLICATION_ENTITY_TITLE,
            ),
            (
                "ReceivingApplicationEntityTitle",
                RECEIVING_APPLICATION_ENTITY_TITLE,
            ),
            (
                "PrivateInformationCreatorUID",
                PRIVATE_INFORMATION_CREATOR_UID,
            ),
            ("PrivateInformation", PRIVATE_INFORMATION),
            ("SpecificCharacterSet", SPECIFIC_CHARACTER_SET),
            ("ImageType", IMAGE_TYPE),
            ("InstanceCreationDate", INSTANCE_CREATION_DATE),
            ("InstanceCreationTime", INSTANCE_CREATION_TIME),
            ("SOPClassUID", SOP_CLASS_UID),
            ("SOPInstanceUID", SOP_INSTANCE_UID),
            ("StudyDate", STUDY_DATE),
            ("SeriesDate", SERIES_DATE),
            ("ContentDate", CONTENT_DATE),
            ("StudyTime", STUDY_TIME),
            ("SeriesTime", SERIES_TIME),
            ("ContentTime", CONTENT_TIME),
            ("AccessionNumber", ACCESSION_NUMBER),
            ("Modality", MODALITY),
            ("ModalitiesInStudy", MODALITIES_IN_STUDY),
            ("Manufacturer", MANUFACTURER),
            ("InstitutionName", INSTITUTION_NAME),
            ("ReferringPhysicianName", REFERRING_PHYSICIAN_NAME),
            ("TimezoneOffsetFromUTC", TIMEZONE_OFFSET_FROM_UTC),
            ("StudyDescription", STUDY_DESCRIPTION),
            ("SeriesDescription", SERIES_DESCRIPTION),
            ("PatientName", PATIENT_NAME),
            ("PatientID", PATIENT_ID),
            ("IssuerOfPatientID", ISSUER_OF_PATIENT_ID),
            ("PatientBirthDate", PATIENT_BIRTH_DATE),
            ("PatientSex", PATIENT_SEX),
            ("OtherPatientIDs", OTHER_PATIENT_IDS),
            ("PatientAge", PATIENT_AGE),
            ("BodyPartExamined", BODY_PART_EXAMINED),
            ("StudyInstanceUID", STUDY_INSTANCE_UID),
            ("SeriesInstanceUID", SERIES_INSTANCE_UID),
            ("StudyID", STUDY_ID),
            ("SeriesNumber", SERIES_NUMBER),
            ("InstanceNumber", INSTANCE_NUMBER),
            ("SamplesPerPixel", SAMPLES_PER_PIXEL),
            ("PhotometricInterpretation", PHOTOMETRIC_INTERPRETATION),
            ("NumberOfFrames", NUMBER_OF_FRAMES),
            ("Rows", ROWS),
            ("Columns", COLUMNS),
            ("BitsAllocated", BITS_ALLOCATED),
            ("BitsStored", BITS_STORED),
            ("PixelRepresentation", PIXEL_REPRESENTATION),
            ("ScheduledProcedureStepID", SCHEDULED_PROCEDURE_STEP_ID),
            (
                "PerformedProcedureStepStartDate",
                PERFORMED_PROCEDURE_STEP_START_DATE,
            ),
            (
                "PerformedProcedureStepStartTime",
                PERFORMED_PROCEDURE_STEP_START_TIME,
            ),
            ("RequestAttributesSequence", REQUEST_ATTRIBUTES_SEQUENCE),
            ("RequestedProcedureID", REQUESTED_PROCEDURE_ID),
            ("ExtendedOffsetTable", EXTENDED_OFFSET_TABLE),
            ("FloatPixelData", FLOAT_PIXEL_DATA),
            ("DoubleFloatPixelData", DOUBLE_FLOAT_PIXEL_DATA),
            ("PixelData", PIXEL_DATA),
        ];
        for (name, value) in cases {
            let entry = StandardDataDictionary.by_name(name);
            let found = entry.map(|e| {
                let t = dicom_core::dictionary::DataDictionaryEntry::tag(e);
                tag(t.group(), t.element())
            });
            assert_eq!(found, Some(*value), "{name}");
        }
    }

    #[test]
    fn tag_parts() {
        assert_eq!(tag(0x0010, 0x0010), PATIENT_NAME);
        assert_eq!(group(PIXEL_DATA), 0x7FE0);
        assert_eq!(element(PIXEL_DATA), 0x0010);
    }
}
