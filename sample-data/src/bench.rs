//! `bench-ct`: many large CT slices for ingest benchmarks (not committed).

use std::path::Path;

use anyhow::Result;
use dicom_dictionary_std::uids;

use crate::dataset;
use crate::phantom;
use crate::studies::{self, Patient, Series, Study};

/// Patient of the benchmark study.
pub const BENCH_PATIENT: Patient = Patient {
    name: "BENCH^CT",
    id: "BENCH-0001",
    birth_date: "19800101",
    sex: "O",
    charset: None,
};

/// The benchmark study.
pub const BENCH_STUDY: Study = Study {
    key: "bench-ct",
    patient: BENCH_PATIENT,
    patient_age: "046Y",
    date: "20260101",
    time: "120000",
    accession: "ACC-BENCH-0001",
    study_id: "BENCH1",
    description: "Ingest benchmark CT",
    referring_physician: "",
    institution: "Sen PACS Sample Hospital",
};

/// The benchmark series.
pub const BENCH_SERIES: Series = Series {
    number: 1,
    modality: "CT",
    description: "Benchmark 512x512 slices",
    body_part: "HEAD",
    sop_class: uids::CT_IMAGE_STORAGE,
    patient_position: "HFS",
    frame_of_reference: true,
};

/// 512×512 at 0.5 mm (the phantom at twice the resolution), 1 mm slices.
const GEOMETRY: studies::CtGeometry = studies::CtGeometry {
    size: phantom::BENCH_CT_SIZE,
    spacing: 0.5,
    thickness: 1.0,
};

/// Write `count` 512×512 16-bit CT slices (Explicit VR Little Endian) as
/// `out/000001.dcm`, `out/000002.dcm`, ... Returns the total bytes written.
pub fn bench_ct(out: &Path, count: u32) -> Result<u64> {
    std::fs::create_dir_all(out)?;
    let mut total = 0u64;
    for index in 0..count {
        let number = index + 1;
        // 1 mm slices; the z of slice i is i mm.
        let z = i32::try_from(index).unwrap_or(i32::MAX);
        let pixels = phantom::bench_ct_slice(index, z);
        let d = studies::ct_dataset(&BENCH_STUDY, &BENCH_SERIES, number, z, GEOMETRY, &pixels);
        let bytes = d.into_file_bytes(uids::EXPLICIT_VR_LITTLE_ENDIAN)?;
        total += bytes.len() as u64;
        dataset::write_bytes(&out.join(format!("{number:06}.dcm")), &bytes)?;
    }
    Ok(total)
}
