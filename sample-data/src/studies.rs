//! The sample studies: demographics, modules and pixel data.

use std::path::Path;

use anyhow::{ensure, Result};
use dicom_core::VR;
use dicom_dictionary_std::{tags, uids};

use crate::dataset::{self, ds, Ds};
use crate::manifest::ManifestEntry;
use crate::phantom;
use crate::uid::{is_valid_uid, uid};
use imaging::codec::{jpeg_baseline, rle};

/// Manufacturer (0008,0070) of every generated instance.
pub const MANUFACTURER: &str = "Sen PACS Sample Generator";
/// Specific Character Set for the Vietnamese studies (UTF-8).
pub const UTF8: &str = "ISO_IR 192";

/// Patient module values.
#[derive(Debug, Clone, Copy)]
pub struct Patient {
    /// Patient's Name (PN, DICOM `^`-separated).
    pub name: &'static str,
    /// Patient ID.
    pub id: &'static str,
    /// Patient's Birth Date (YYYYMMDD).
    pub birth_date: &'static str,
    /// Patient's Sex.
    pub sex: &'static str,
    /// Specific Character Set, `None` for the default repertoire.
    pub charset: Option<&'static str>,
}

/// General Study module values plus the output folder name.
#[derive(Debug, Clone, Copy)]
pub struct Study {
    /// Folder name under the output directory; also the UID name prefix.
    pub key: &'static str,
    /// The patient.
    pub patient: Patient,
    /// Patient's Age at the time of the study (AS).
    pub patient_age: &'static str,
    /// Study Date.
    pub date: &'static str,
    /// Study Time.
    pub time: &'static str,
    /// Accession Number.
    pub accession: &'static str,
    /// Study ID.
    pub study_id: &'static str,
    /// Study Description.
    pub description: &'static str,
    /// Referring Physician's Name.
    pub referring_physician: &'static str,
    /// Institution Name.
    pub institution: &'static str,
}

impl Study {
    /// Study Instance UID.
    pub fn uid(&self) -> String {
        uid(&format!("{}/study", self.key))
    }

    /// Frame of Reference UID (one per study).
    pub fn frame_of_reference_uid(&self) -> String {
        uid(&format!("{}/frame-of-reference", self.key))
    }
}

/// General Series module values.
#[derive(Debug, Clone, Copy)]
pub struct Series {
    /// Series Number.
    pub number: u32,
    /// Modality.
    pub modality: &'static str,
    /// Series Description.
    pub description: &'static str,
    /// Body Part Examined.
    pub body_part: &'static str,
    /// SOP Class UID of the instances.
    pub sop_class: &'static str,
    /// Patient Position (required for CT and MR), empty otherwise.
    pub patient_position: &'static str,
    /// Whether the series has a Frame of Reference.
    pub frame_of_reference: bool,
}

/// Vietnamese patient of the two CT studies.
pub const PATIENT_AN: Patient = Patient {
    name: "Nguyễn^Văn An",
    id: "VN-0001",
    birth_date: "19650412",
    sex: "M",
    charset: Some(UTF8),
};

/// Vietnamese patient of the MR study.
pub const PATIENT_BICH: Patient = Patient {
    name: "Trần^Thị Bích",
    id: "VN-0002",
    birth_date: "19780923",
    sex: "F",
    charset: Some(UTF8),
};

/// Vietnamese patient of the ultrasound study.
pub const PATIENT_NAM: Patient = Patient {
    name: "Lê^Hoàng Nam",
    id: "VN-0003",
    birth_date: "19900704",
    sex: "M",
    charset: Some(UTF8),
};

/// Patient of the CR study (default character repertoire).
pub const PATIENT_DOE: Patient = Patient {
    name: "DOE^JOHN",
    id: "EN-0004",
    birth_date: "19700101",
    sex: "M",
    charset: None,
};

const VN_INSTITUTION: &str = "Bệnh viện Mẫu Sen PACS";
const VN_REFERRING: &str = "Phạm^Minh Đức";

/// Current CT study of the phantom.
pub const CT_STUDY: Study = Study {
    key: "ct-phantom",
    patient: PATIENT_AN,
    patient_age: "060Y",
    date: "20260315",
    time: "091500",
    accession: "ACC-CT-0001",
    study_id: "CT0001",
    description: "CT Đầu – phantom",
    referring_physician: VN_REFERRING,
    institution: VN_INSTITUTION,
};

/// Prior CT study of the same patient and phantom.
pub const CT_PRIOR_STUDY: Study = Study {
    key: "ct-phantom-prior",
    patient: PATIENT_AN,
    patient_age: "059Y",
    date: "20250110",
    time: "143000",
    accession: "ACC-CT-0000",
    study_id: "CT0000",
    description: "CT Đầu – phantom (trước)",
    referring_physician: VN_REFERRING,
    institution: VN_INSTITUTION,
};

/// MR head study.
pub const MR_STUDY: Study = Study {
    key: "mr-head",
    patient: PATIENT_BICH,
    patient_age: "047Y",
    date: "20260402",
    time: "101000",
    accession: "ACC-MR-0001",
    study_id: "MR0001",
    description: "MR Sọ não – phantom",
    referring_physician: VN_REFERRING,
    institution: VN_INSTITUTION,
};

/// Ultrasound cine study.
pub const US_STUDY: Study = Study {
    key: "us-cine",
    patient: PATIENT_NAM,
    patient_age: "035Y",
    date: "20260410",
    time: "083000",
    accession: "ACC-US-0001",
    study_id: "US0001",
    description: "Siêu âm tim – cine",
    referring_physician: VN_REFERRING,
    institution: VN_INSTITUTION,
};

/// CR chest study.
pub const CR_STUDY: Study = Study {
    key: "cr-chest",
    patient: PATIENT_DOE,
    patient_age: "056Y",
    date: "20260220",
    time: "110000",
    accession: "ACC-CR-0001",
    study_id: "CR0001",
    description: "Chest PA",
    referring_physician: "SMITH^JANE",
    institution: "Sen PACS Sample Hospital",
};

/// All sample studies, in generation order.
pub const ALL_STUDIES: [&Study; 5] = [&CT_STUDY, &CT_PRIOR_STUDY, &MR_STUDY, &US_STUDY, &CR_STUDY];

/// Series of the CT studies.
pub const CT_SERIES: Series = Series {
    number: 1,
    modality: "CT",
    description: "Trục ngang 5 mm – phantom",
    body_part: "HEAD",
    sop_class: uids::CT_IMAGE_STORAGE,
    patient_position: "HFS",
    frame_of_reference: true,
};

/// Series of the MR study.
pub const MR_SERIES: Series = Series {
    number: 1,
    modality: "MR",
    description: "T2 trục ngang",
    body_part: "HEAD",
    sop_class: uids::MR_IMAGE_STORAGE,
    patient_position: "HFS",
    frame_of_reference: true,
};

/// Series of the ultrasound study.
pub const US_SERIES: Series = Series {
    number: 1,
    modality: "US",
    description: "Mặt cắt 4 buồng – cine",
    body_part: "HEART",
    sop_class: uids::ULTRASOUND_MULTI_FRAME_IMAGE_STORAGE,
    patient_position: "",
    frame_of_reference: false,
};

/// Series of the CR study.
pub const CR_SERIES: Series = Series {
    number: 1,
    modality: "CR",
    description: "Chest PA",
    body_part: "CHEST",
    sop_class: uids::COMPUTED_RADIOGRAPHY_IMAGE_STORAGE,
    patient_position: "",
    frame_of_reference: false,
};

/// SOP Instance UID of instance `number` of `series` in `study`.
pub fn instance_uid(study: &Study, series: &Series, number: u32) -> String {
    uid(&format!(
        "{}/series{}/instance{}",
        study.key, series.number, number
    ))
}

/// Series Instance UID.
pub fn series_uid(study: &Study, series: &Series) -> String {
    uid(&format!("{}/series{}", study.key, series.number))
}

/// Image dimensions recorded in the manifest.
#[derive(Debug, Clone, Copy)]
pub struct Dims {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub columns: u16,
    /// Number of frames.
    pub frames: u32,
}

/// The modules shared by every instance: SOP Common, Patient, General
/// Study, Patient Study, General Series, Frame of Reference, General
/// Equipment and General Image.
pub fn base_dataset(study: &Study, series: &Series, number: u32) -> Ds {
    let mut d = Ds::new();
    if let Some(cs) = study.patient.charset {
        d.str(tags::SPECIFIC_CHARACTER_SET, VR::CS, cs);
    }
    d.str(tags::SOP_CLASS_UID, VR::UI, series.sop_class)
        .str(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            &instance_uid(study, series, number),
        )
        .str(tags::STUDY_DATE, VR::DA, study.date)
        .str(tags::SERIES_DATE, VR::DA, study.date)
        .str(tags::CONTENT_DATE, VR::DA, study.date)
        .str(tags::STUDY_TIME, VR::TM, study.time)
        .str(tags::SERIES_TIME, VR::TM, study.time)
        .str(tags::CONTENT_TIME, VR::TM, study.time)
        .str(tags::ACCESSION_NUMBER, VR::SH, study.accession)
        .str(tags::MODALITY, VR::CS, series.modality)
        .str(tags::MANUFACTURER, VR::LO, MANUFACTURER)
        .str(tags::INSTITUTION_NAME, VR::LO, study.institution)
        .str(
            tags::REFERRING_PHYSICIAN_NAME,
            VR::PN,
            study.referring_physician,
        )
        .str(tags::STUDY_DESCRIPTION, VR::LO, study.description)
        .str(tags::SERIES_DESCRIPTION, VR::LO, series.description)
        .str(tags::MANUFACTURER_MODEL_NAME, VR::LO, "gen-sample-data")
        .str(tags::PATIENT_NAME, VR::PN, study.patient.name)
        .str(tags::PATIENT_ID, VR::LO, study.patient.id)
        .str(tags::PATIENT_BIRTH_DATE, VR::DA, study.patient.birth_date)
        .str(tags::PATIENT_SEX, VR::CS, study.patient.sex)
        .str(tags::PATIENT_AGE, VR::AS, study.patient_age)
        .str(tags::BODY_PART_EXAMINED, VR::CS, series.body_part)
        .str(tags::SOFTWARE_VERSIONS, VR::LO, "gen-sample-data")
        .str(tags::STUDY_INSTANCE_UID, VR::UI, &study.uid())
        .str(
            tags::SERIES_INSTANCE_UID,
            VR::UI,
            &series_uid(study, series),
        )
        .str(tags::STUDY_ID, VR::SH, study.study_id)
        .str(tags::SERIES_NUMBER, VR::IS, &series.number.to_string())
        .str(tags::INSTANCE_NUMBER, VR::IS, &number.to_string());
    if !series.patient_position.is_empty() {
        d.str(tags::PATIENT_POSITION, VR::CS, series.patient_position);
    }
    if series.frame_of_reference {
        d.str(
            tags::FRAME_OF_REFERENCE_UID,
            VR::UI,
            &study.frame_of_reference_uid(),
        )
        .str(tags::POSITION_REFERENCE_INDICATOR, VR::LO, "");
    }
    d
}

/// Image Pixel module for a single-sample greyscale image.
fn grey_pixel_module(d: &mut Ds, rows: usize, columns: usize, bits_stored: u16, signed: bool) {
    d.us(tags::SAMPLES_PER_PIXEL, 1)
        .str(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2")
        .us(tags::ROWS, rows as u16)
        .us(tags::COLUMNS, columns as u16)
        .us(tags::BITS_ALLOCATED, 16)
        .us(tags::BITS_STORED, bits_stored)
        .us(tags::HIGH_BIT, bits_stored - 1)
        .us(tags::PIXEL_REPRESENTATION, u16::from(signed));
}

/// Image Plane module for an axial slice.
fn axial_plane(d: &mut Ds, origin: (f64, f64), z: f64, spacing: f64, thickness: f64) {
    let (x, y) = (ds(origin.0), ds(origin.1));
    let z = ds(z);
    let spacing = ds(spacing);
    d.strs(tags::IMAGE_POSITION_PATIENT, VR::DS, &[&x, &y, &z])
        .strs(
            tags::IMAGE_ORIENTATION_PATIENT,
            VR::DS,
            &["1", "0", "0", "0", "1", "0"],
        )
        .strs(tags::PIXEL_SPACING, VR::DS, &[&spacing, &spacing])
        .str(tags::SLICE_THICKNESS, VR::DS, &ds(thickness))
        .str(tags::SLICE_LOCATION, VR::DS, &z);
}

/// Serialise `d` and write it under `out` as
/// `<study>/<series>/<instance:04>.dcm`, returning its manifest entry.
fn emit(
    out: &Path,
    study: &Study,
    series: &Series,
    number: u32,
    d: Ds,
    transfer_syntax: &str,
    dims: Dims,
) -> Result<ManifestEntry> {
    let rel = format!("{}/{}/{:04}.dcm", study.key, series.number, number);
    let sop_instance_uid = instance_uid(study, series, number);
    let study_instance_uid = study.uid();
    let series_instance_uid = series_uid(study, series);
    for u in [&sop_instance_uid, &study_instance_uid, &series_instance_uid] {
        ensure!(is_valid_uid(u), "generated an invalid UID {u}");
    }
    let bytes = d.into_file_bytes(transfer_syntax)?;
    dataset::write_bytes(&out.join(&rel), &bytes)?;
    Ok(ManifestEntry {
        path: rel,
        study: study.key.to_owned(),
        patient_id: study.patient.id.to_owned(),
        patient_name: study.patient.name.to_owned(),
        modality: series.modality.to_owned(),
        sop_class_uid: series.sop_class.to_owned(),
        sop_instance_uid,
        study_instance_uid,
        series_instance_uid,
        series_number: series.number,
        instance_number: number,
        transfer_syntax_uid: transfer_syntax.to_owned(),
        rows: dims.rows,
        columns: dims.columns,
        number_of_frames: dims.frames,
        size: bytes.len() as u64,
        sha256: dataset::sha256_hex(&bytes),
    })
}

/// z (mm) of slice `index` of the current CT study.
pub fn ct_z(index: usize) -> i32 {
    5 * index as i32
}

/// z (mm) of slice `index` of the prior CT study.
pub fn ct_prior_z(index: usize) -> i32 {
    40 + 5 * index as i32
}

/// Number of slices of the current CT study.
pub const CT_SLICES: usize = 24;
/// Number of slices of the prior CT study.
pub const CT_PRIOR_SLICES: usize = 8;
/// Lesion radius (mm) in the current CT study.
pub const CT_LESION_RADIUS: i32 = 22;
/// Lesion radius (mm) in the prior CT study.
pub const CT_PRIOR_LESION_RADIUS: i32 = 16;

/// Matrix size and spacing of a CT slice.
#[derive(Debug, Clone, Copy)]
pub struct CtGeometry {
    /// Rows = columns.
    pub size: usize,
    /// Pixel spacing in mm (both directions).
    pub spacing: f64,
    /// Slice thickness in mm.
    pub thickness: f64,
}

/// Geometry of the sample CT studies.
pub const CT_GEOMETRY: CtGeometry = CtGeometry {
    size: phantom::CT_SIZE,
    spacing: 1.0,
    thickness: 5.0,
};

/// The CT data set of one phantom slice (everything but file writing).
/// `size` is the matrix size, `spacing` the pixel spacing and `thickness`
/// the slice thickness in mm; the image centre is at x = y = 0.
pub fn ct_dataset(
    study: &Study,
    series: &Series,
    number: u32,
    z: i32,
    geometry: CtGeometry,
    pixels: &[i16],
) -> Ds {
    let mut d = base_dataset(study, series, number);
    let CtGeometry {
        size,
        spacing,
        thickness,
    } = geometry;
    let half = size as f64 / 2.0 * spacing;
    d.strs(tags::IMAGE_TYPE, VR::CS, &["ORIGINAL", "PRIMARY", "AXIAL"])
        .str(tags::KVP, VR::DS, "120")
        .str(tags::ACQUISITION_NUMBER, VR::IS, "1")
        .str(tags::CONVOLUTION_KERNEL, VR::SH, "STANDARD")
        .str(tags::RESCALE_INTERCEPT, VR::DS, "0")
        .str(tags::RESCALE_SLOPE, VR::DS, "1")
        .str(tags::RESCALE_TYPE, VR::LO, "HU")
        .str(tags::WINDOW_CENTER, VR::DS, "40")
        .str(tags::WINDOW_WIDTH, VR::DS, "400")
        .str(tags::WINDOW_CENTER_WIDTH_EXPLANATION, VR::LO, "SOFT TISSUE");
    axial_plane(&mut d, (-half, -half), f64::from(z), spacing, thickness);
    grey_pixel_module(&mut d, size, size, 16, true);
    d.native_pixels(dataset::i16_le_bytes(pixels));
    d
}

fn ct_study(
    out: &Path,
    study: &Study,
    slices: usize,
    z_of: fn(usize) -> i32,
    lesion_radius: i32,
) -> Result<Vec<ManifestEntry>> {
    let series = &CT_SERIES;
    let mut entries = Vec::with_capacity(slices);
    for index in 0..slices {
        let number = index as u32 + 1;
        let z = z_of(index);
        let pixels = phantom::ct_slice(z, lesion_radius);
        let d = ct_dataset(study, series, number, z, CT_GEOMETRY, &pixels);
        let dims = Dims {
            rows: phantom::CT_SIZE as u16,
            columns: phantom::CT_SIZE as u16,
            frames: 1,
        };
        entries.push(emit(
            out,
            study,
            series,
            number,
            d,
            uids::EXPLICIT_VR_LITTLE_ENDIAN,
            dims,
        )?);
    }
    Ok(entries)
}

/// Current CT phantom study: 24 slices, z = 0 ..= 115 mm.
pub fn ct_current(out: &Path) -> Result<Vec<ManifestEntry>> {
    ct_study(out, &CT_STUDY, CT_SLICES, ct_z, CT_LESION_RADIUS)
}

/// Prior CT phantom study: 8 slices, z = 40 ..= 75 mm, smaller lesion.
pub fn ct_prior(out: &Path) -> Result<Vec<ManifestEntry>> {
    ct_study(
        out,
        &CT_PRIOR_STUDY,
        CT_PRIOR_SLICES,
        ct_prior_z,
        CT_PRIOR_LESION_RADIUS,
    )
}

/// MR pixel spacing in mm.
pub const MR_PIXEL_SPACING: f64 = 1.2;

/// z (mm) of MR slice `index`.
pub fn mr_z(index: usize) -> i32 {
    5 * index as i32 - 40
}

/// MR head study: 16 RLE Lossless slices.
pub fn mr(out: &Path) -> Result<Vec<ManifestEntry>> {
    let (study, series) = (&MR_STUDY, &MR_SERIES);
    let size = phantom::MR_SIZE;
    let origin = -(size as f64 / 2.0) * MR_PIXEL_SPACING;
    let layout = rle::FrameLayout {
        rows: size,
        columns: size,
        samples_per_pixel: 1,
        bytes_per_sample: 2,
    };
    let mut entries = Vec::with_capacity(phantom::MR_SLICES);
    for index in 0..phantom::MR_SLICES {
        let number = index as u32 + 1;
        let pixels = phantom::mr_slice(index);
        let native = dataset::u16_le_bytes(&pixels);
        let fragment = rle::encode_frame(&native, layout)?;
        // Self-check: the fragment must decode back to the source exactly.
        ensure!(
            rle::decode_frame(&fragment, layout)? == native,
            "RLE round trip failed for MR slice {index}"
        );
        let mut d = base_dataset(study, series, number);
        d.strs(tags::IMAGE_TYPE, VR::CS, &["ORIGINAL", "PRIMARY", "OTHER"])
            .strs(tags::SCANNING_SEQUENCE, VR::CS, &["SE"])
            .strs(tags::SEQUENCE_VARIANT, VR::CS, &["NONE"])
            .str(tags::SCAN_OPTIONS, VR::CS, "")
            .str(tags::MR_ACQUISITION_TYPE, VR::CS, "2D")
            .str(tags::REPETITION_TIME, VR::DS, "4000")
            .str(tags::ECHO_TIME, VR::DS, "100")
            .str(tags::ECHO_TRAIN_LENGTH, VR::IS, "16")
            .str(tags::MAGNETIC_FIELD_STRENGTH, VR::DS, "1.5")
            .str(tags::SPACING_BETWEEN_SLICES, VR::DS, "5")
            .str(tags::ACQUISITION_NUMBER, VR::IS, "1")
            .str(tags::WINDOW_CENTER, VR::DS, "1200")
            .str(tags::WINDOW_WIDTH, VR::DS, "2400")
            .str(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
        axial_plane(
            &mut d,
            (origin, origin),
            f64::from(mr_z(index)),
            MR_PIXEL_SPACING,
            5.0,
        );
        grey_pixel_module(&mut d, size, size, 12, false);
        d.encapsulated_pixels(vec![fragment], false)?;
        let dims = Dims {
            rows: size as u16,
            columns: size as u16,
            frames: 1,
        };
        entries.push(emit(
            out,
            study,
            series,
            number,
            d,
            uids::RLE_LOSSLESS,
            dims,
        )?);
    }
    Ok(entries)
}

/// Ultrasound cine study: one 24-frame JPEG Baseline YBR_FULL_422 instance.
pub fn us(out: &Path) -> Result<Vec<ManifestEntry>> {
    let (study, series) = (&US_STUDY, &US_SERIES);
    let (w, h) = (phantom::US_WIDTH as u16, phantom::US_HEIGHT as u16);
    let mut fragments = Vec::with_capacity(phantom::US_FRAMES);
    let mut compressed = 0usize;
    for frame in 0..phantom::US_FRAMES {
        let rgb = phantom::us_frame(frame);
        let jpeg = jpeg_baseline::encode_rgb_frame(&rgb, w, h, jpeg_baseline::QUALITY)?;
        compressed += jpeg.len();
        fragments.push(jpeg);
    }
    let raw = phantom::US_FRAMES * phantom::US_WIDTH * phantom::US_HEIGHT * 3;
    let ratio = format!("{:.1}", raw as f64 / compressed as f64);
    let number = 1;
    let mut d = base_dataset(study, series, number);
    d.strs(
        tags::IMAGE_TYPE,
        VR::CS,
        &["ORIGINAL", "PRIMARY", "CHEST", "0011"],
    )
    .str(tags::PATIENT_ORIENTATION, VR::CS, "")
    .us(tags::SAMPLES_PER_PIXEL, 3)
    .str(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "YBR_FULL_422")
    .us(tags::PLANAR_CONFIGURATION, 0)
    .str(
        tags::NUMBER_OF_FRAMES,
        VR::IS,
        &phantom::US_FRAMES.to_string(),
    )
    .at(tags::FRAME_INCREMENT_POINTER, tags::FRAME_TIME)
    .str(tags::FRAME_TIME, VR::DS, "40")
    .str(tags::CINE_RATE, VR::IS, "25")
    .str(tags::RECOMMENDED_DISPLAY_FRAME_RATE, VR::IS, "25")
    .us(tags::ROWS, h)
    .us(tags::COLUMNS, w)
    .us(tags::BITS_ALLOCATED, 8)
    .us(tags::BITS_STORED, 8)
    .us(tags::HIGH_BIT, 7)
    .us(tags::PIXEL_REPRESENTATION, 0)
    .str(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "01")
    .str(tags::LOSSY_IMAGE_COMPRESSION_RATIO, VR::DS, &ratio)
    .str(tags::LOSSY_IMAGE_COMPRESSION_METHOD, VR::CS, "ISO_10918_1");
    d.encapsulated_pixels(fragments, true)?;
    let dims = Dims {
        rows: h,
        columns: w,
        frames: phantom::US_FRAMES as u32,
    };
    Ok(vec![emit(
        out,
        study,
        series,
        number,
        d,
        uids::JPEG_BASELINE8_BIT,
        dims,
    )?])
}

/// CR chest study: one 512×512 12-bit PA image.
pub fn cr(out: &Path) -> Result<Vec<ManifestEntry>> {
    let (study, series) = (&CR_STUDY, &CR_SERIES);
    let size = phantom::CR_SIZE;
    let pixels = phantom::cr_image();
    let number = 1;
    let mut d = base_dataset(study, series, number);
    d.strs(tags::IMAGE_TYPE, VR::CS, &["ORIGINAL", "PRIMARY"])
        .strs(tags::PATIENT_ORIENTATION, VR::CS, &["L", "F"])
        .str(tags::VIEW_POSITION, VR::CS, "PA")
        .str(tags::KVP, VR::DS, "125")
        .str(tags::ACQUISITION_NUMBER, VR::IS, "1")
        .strs(tags::IMAGER_PIXEL_SPACING, VR::DS, &["0.7", "0.7"])
        .strs(tags::PIXEL_SPACING, VR::DS, &["0.7", "0.7"])
        .str(tags::WINDOW_CENTER, VR::DS, "1600")
        .str(tags::WINDOW_WIDTH, VR::DS, "3200");
    grey_pixel_module(&mut d, size, size, 12, false);
    d.native_pixels(dataset::u16_le_bytes(&pixels));
    let dims = Dims {
        rows: size as u16,
        columns: size as u16,
        frames: 1,
    };
    Ok(vec![emit(
        out,
        study,
        series,
        number,
        d,
        uids::EXPLICIT_VR_LITTLE_ENDIAN,
        dims,
    )?])
}
