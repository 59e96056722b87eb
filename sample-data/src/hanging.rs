//! `hanging`: small studies for the viewer's hanging-protocol test (not
//! committed; made at test time).
//!
//! - Patient `HP^CHEST` (`HP-0001`): a CT chest (`ACC-HP-0001`, 2026) whose
//!   series are numbered lung first, then soft tissue, then a coronal
//!   reformat; a CT head (`ACC-HP-0002`, 2025-10), the most recent prior
//!   but not a relevant one; and a CT chest prior (`ACC-HP-0003`, 2025-04).
//! - Patient `HP^BRAIN` (`HP-0002`): an MR brain (`ACC-HP-0004`) with
//!   T2 FLAIR, DWI, T2 and T1 series in that order.
//!
//! Pixels are the MPR phantom (`mpr.rs`), five slices per series.

use std::path::Path;

use anyhow::Result;
use dicom_dictionary_std::uids;

use crate::dataset;
use crate::mpr;
use crate::studies::{self, Patient, Series, Study};

const CHEST: Patient = Patient {
    name: "HP^CHEST",
    id: "HP-0001",
    birth_date: "19600101",
    sex: "M",
    charset: None,
};

const BRAIN: Patient = Patient {
    name: "HP^BRAIN",
    id: "HP-0002",
    birth_date: "19800101",
    sex: "F",
    charset: None,
};

const fn study(
    key: &'static str,
    patient: Patient,
    date: &'static str,
    accession: &'static str,
    description: &'static str,
) -> Study {
    Study {
        key,
        patient,
        patient_age: "050Y",
        date,
        time: "100000",
        accession,
        study_id: "HP",
        description,
        referring_physician: "",
        institution: "Sen PACS Sample Hospital",
    }
}

const fn series(
    number: u32,
    modality: &'static str,
    description: &'static str,
    body_part: &'static str,
) -> Series {
    Series {
        number,
        modality,
        description,
        body_part,
        sop_class: if matches!(modality.as_bytes(), b"MR") {
            uids::MR_IMAGE_STORAGE
        } else {
            uids::CT_IMAGE_STORAGE
        },
        patient_position: "HFS",
        frame_of_reference: true,
    }
}

/// Axial or coronal planes.
#[derive(Clone, Copy)]
enum Plane {
    Axial,
    Coronal,
}

/// Every study with its series and each series' plane.
const STUDIES: [(Study, &[(Series, Plane)]); 4] = [
    (
        study("hp-chest", CHEST, "20260401", "ACC-HP-0001", "CT chest"),
        &[
            (series(1, "CT", "Lung 1 mm", "CHEST"), Plane::Axial),
            (series(2, "CT", "Soft tissue 2 mm", "CHEST"), Plane::Axial),
            (
                series(3, "CT", "Coronal soft tissue", "CHEST"),
                Plane::Coronal,
            ),
        ],
    ),
    (
        study("hp-head", CHEST, "20251001", "ACC-HP-0002", "CT head"),
        &[(series(1, "CT", "Brain 5 mm", "HEAD"), Plane::Axial)],
    ),
    (
        study(
            "hp-chest-prior",
            CHEST,
            "20250401",
            "ACC-HP-0003",
            "CT chest (prior)",
        ),
        &[
            (series(1, "CT", "Mediastinum 5 mm", "CHEST"), Plane::Axial),
            (series(2, "CT", "Lung 5 mm", "CHEST"), Plane::Axial),
        ],
    ),
    (
        study("hp-brain", BRAIN, "20260402", "ACC-HP-0004", "MR brain"),
        &[
            (series(1, "MR", "T2 FLAIR ax", "BRAIN"), Plane::Axial),
            (series(2, "MR", "DWI b1000", "BRAIN"), Plane::Axial),
            (series(3, "MR", "T2 TSE ax", "BRAIN"), Plane::Axial),
            (series(4, "MR", "T1 SE ax", "BRAIN"), Plane::Axial),
        ],
    ),
];

/// Slices per series.
const SLICES: u32 = 5;

/// Write the studies under `out/<key>/<series>-NNNN.dcm`; returns the file count.
pub fn hanging(out: &Path) -> Result<usize> {
    let half = mpr::SIZE as f64 / 2.0 * mpr::PIXEL_MM;
    let geometry = studies::CtGeometry {
        size: mpr::SIZE,
        spacing: mpr::PIXEL_MM,
        thickness: 4.0,
    };
    let mut files = 0;
    for (study, list) in &STUDIES {
        for (series, plane) in list.iter() {
            for k in 0..SLICES {
                let step = f64::from(k) * 4.0;
                let (position, col) = match plane {
                    Plane::Axial => ([-half, -half, step], [0.0, 1.0, 0.0]),
                    Plane::Coronal => ([-half, step - 8.0, 2.0 * half], [0.0, 0.0, -1.0]),
                };
                let row = [1.0, 0.0, 0.0];
                let pixels = mpr::slice(position, row, col);
                let number = k + 1;
                let mut d = studies::ct_dataset(study, series, number, 0, geometry, &pixels);
                mpr::set_plane(&mut d, position, row, col);
                let bytes = d.into_file_bytes(uids::EXPLICIT_VR_LITTLE_ENDIAN)?;
                let name = format!("{}-{number:04}.dcm", series.number);
                dataset::write_bytes(&out.join(study.key).join(name), &bytes)?;
                files += 1;
            }
        }
    }
    Ok(files)
}
