//! `mpr-ct`: small CT volumes of known geometry for the viewer's MPR tests
//! (not committed; made at test time). Three studies of one patient:
//!
//! - `ACC-MPR-0001`: a regular axial stack that forms a volume, with a bright
//!   cube (the fiducial) centred at a known patient coordinate;
//! - `ACC-MPR-0002`: the same body scanned with a gantry tilt of
//!   [`TILT_DEGREES`] (planes tilted about x, slices stepped along z);
//! - `ACC-MPR-0003`: the regular stack with two slices missing (irregular
//!   spacing).
//!
//! Every pixel is the phantom evaluated at the pixel's own patient
//! coordinate (PS3.3 C.7.6.2.1.1), so the data are true to their geometry.

use std::path::Path;

use anyhow::Result;
use dicom_core::VR;
use dicom_dictionary_std::{tags, uids};

use crate::dataset::{self, ds, Ds};
use crate::studies::{self, Patient, Series, Study};

/// Matrix size (rows = columns).
pub const SIZE: usize = 128;
/// Pixel spacing (mm).
pub const PIXEL_MM: f64 = 1.0;
/// Slices of the regular stack.
pub const SLICES: usize = 60;
/// Distance between slices (mm).
pub const SLICE_MM: f64 = 2.0;
/// z of the first slice (mm).
pub const FIRST_Z: f64 = -50.0;
/// Centre of the fiducial cube (patient coordinates, mm).
pub const FIDUCIAL: [f64; 3] = [20.0, -24.0, 10.0];
/// Half the edge of the fiducial cube (mm).
pub const FIDUCIAL_HALF: f64 = 3.0;
/// Hounsfield units of the fiducial, of the body and of the air around it.
pub const FIDUCIAL_HU: i16 = 2000;
const BODY_HU: i16 = 40;
const AIR_HU: i16 = -1000;
/// Radius of the body cylinder (mm).
const BODY_RADIUS: f64 = 55.0;
/// Gantry tilt of the tilted study (degrees).
pub const TILT_DEGREES: f64 = 15.0;
/// Slices left out of the irregular study (indices into the regular stack).
pub const MISSING: [usize; 2] = [40, 41];

const PATIENT: Patient = Patient {
    name: "MPR^PHANTOM",
    id: "MPR-0001",
    birth_date: "19700101",
    sex: "O",
    charset: None,
};

const fn study(key: &'static str, accession: &'static str, description: &'static str) -> Study {
    Study {
        key,
        patient: PATIENT,
        patient_age: "056Y",
        date: "20260301",
        time: "090000",
        accession,
        study_id: "MPR",
        description,
        referring_physician: "",
        institution: "Sen PACS Sample Hospital",
    }
}

/// The three studies: regular, tilted, irregular.
pub const STUDIES: [Study; 3] = [
    study("mpr-regular", "ACC-MPR-0001", "MPR phantom - regular"),
    study("mpr-tilted", "ACC-MPR-0002", "MPR phantom - gantry tilt"),
    study(
        "mpr-irregular",
        "ACC-MPR-0003",
        "MPR phantom - irregular spacing",
    ),
];

const SERIES: Series = Series {
    number: 1,
    modality: "CT",
    description: "Axial 2 mm - fiducial",
    body_part: "ABDOMEN",
    sop_class: uids::CT_IMAGE_STORAGE,
    patient_position: "HFS",
    frame_of_reference: true,
};

/// The phantom at a patient coordinate (mm).
fn hu_at(p: [f64; 3]) -> i16 {
    if (0..3).all(|k| (p[k] - FIDUCIAL[k]).abs() <= FIDUCIAL_HALF) {
        FIDUCIAL_HU
    } else if p[0].hypot(p[1]) <= BODY_RADIUS {
        BODY_HU
    } else {
        AIR_HU
    }
}

/// One slice: its position (top left pixel centre), its row and column
/// directions, and pixels evaluated in that plane.
pub(crate) fn slice(position: [f64; 3], row: [f64; 3], col: [f64; 3]) -> Vec<i16> {
    let mut out = Vec::with_capacity(SIZE * SIZE);
    for r in 0..SIZE {
        for c in 0..SIZE {
            let (dc, dr) = (c as f64 * PIXEL_MM, r as f64 * PIXEL_MM);
            out.push(hu_at([
                position[0] + dc * row[0] + dr * col[0],
                position[1] + dc * row[1] + dr * col[1],
                position[2] + dc * row[2] + dr * col[2],
            ]));
        }
    }
    out
}

/// Image Position and Orientation (Patient) of a slice (PS3.3 C.7.6.2).
pub(crate) fn set_plane(d: &mut Ds, position: [f64; 3], row: [f64; 3], col: [f64; 3]) {
    let p: Vec<String> = position.iter().map(|v| ds(*v)).collect();
    let o: Vec<String> = row.iter().chain(col.iter()).map(|v| ds(*v)).collect();
    d.strs(
        tags::IMAGE_POSITION_PATIENT,
        VR::DS,
        &p.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .strs(
        tags::IMAGE_ORIENTATION_PATIENT,
        VR::DS,
        &o.iter().map(String::as_str).collect::<Vec<_>>(),
    );
}

/// Write the three studies under `out/<key>/NNNN.dcm`; returns the file count.
pub fn mpr_ct(out: &Path) -> Result<usize> {
    let half = SIZE as f64 / 2.0 * PIXEL_MM;
    let geometry = studies::CtGeometry {
        size: SIZE,
        spacing: PIXEL_MM,
        thickness: SLICE_MM,
    };
    let tilt = TILT_DEGREES.to_radians();
    let mut files = 0;
    for (variant, study) in STUDIES.iter().enumerate() {
        let (row, col) = if variant == 1 {
            ([1.0, 0.0, 0.0], [0.0, tilt.cos(), tilt.sin()])
        } else {
            ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0])
        };
        for k in 0..SLICES {
            if variant == 2 && MISSING.contains(&k) {
                continue;
            }
            let z = FIRST_Z + k as f64 * SLICE_MM;
            // The centre of every plane on the z axis; instance numbers run
            // from head to feet, the reverse of z, as many scanners write them.
            let position = [-half, -half * col[1], z - half * col[2]];
            let pixels = slice(position, row, col);
            let number = u32::try_from(SLICES - k)?;
            let mut d = studies::ct_dataset(study, &SERIES, number, 0, geometry, &pixels);
            set_plane(&mut d, position, row, col);
            d.str(tags::SLICE_LOCATION, VR::DS, &ds(z)).str(
                tags::GANTRY_DETECTOR_TILT,
                VR::DS,
                &ds(if variant == 1 { TILT_DEGREES } else { 0.0 }),
            );
            let bytes = d.into_file_bytes(uids::EXPLICIT_VR_LITTLE_ENDIAN)?;
            dataset::write_bytes(
                &out.join(study.key).join(format!("{number:04}.dcm")),
                &bytes,
            )?;
            files += 1;
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fiducial_is_where_it_is_said_to_be() {
        let half = SIZE as f64 / 2.0 * PIXEL_MM;
        // The slice through the fiducial's centre: bright at its pixel, body beside it.
        let z = FIDUCIAL[2];
        let s = slice([-half, -half, z], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]);
        let px = |x: f64, y: f64| {
            s[((y + half) / PIXEL_MM) as usize * SIZE + ((x + half) / PIXEL_MM) as usize]
        };
        assert_eq!(px(FIDUCIAL[0], FIDUCIAL[1]), FIDUCIAL_HU);
        assert_eq!(px(FIDUCIAL[0] + 10.0, FIDUCIAL[1]), BODY_HU);
        assert_eq!(px(-FIDUCIAL[0], FIDUCIAL[1]), BODY_HU);
        // A slice 12 mm above it has no fiducial.
        let s = slice([-half, -half, z + 12.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]);
        assert!(!s.contains(&FIDUCIAL_HU));
    }
}
