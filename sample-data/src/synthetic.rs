//! Hand-built Part 10 objects in explicit VR little endian.

/// Value representations written with a 4-byte length (PS3.5 Table 7.1-1).
fn long_vr(vr: &str) -> bool {
    matches!(
        vr,
        "OB" | "OD" | "OF" | "OL" | "OV" | "OW" | "SQ" | "SV" | "UC" | "UN" | "UR" | "UT" | "UV"
    )
}

/// One Explicit VR Little Endian element, its value padded to even length.
pub fn element(out: &mut Vec<u8>, tag: u32, vr: &str, value: &[u8]) {
    let mut v = value.to_vec();
    if v.len() % 2 == 1 {
        v.push(if vr == "UI" || vr == "OB" { 0 } else { b' ' });
    }
    out.extend_from_slice(&((tag >> 16) as u16).to_le_bytes());
    out.extend_from_slice(&((tag & 0xFFFF) as u16).to_le_bytes());
    out.extend_from_slice(vr.as_bytes());
    if long_vr(vr) {
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    } else {
        out.extend_from_slice(&(v.len() as u16).to_le_bytes());
    }
    out.extend_from_slice(&v);
}

/// A Part 10 file in explicit VR little endian from `(tag, VR, value)`
/// elements, which must be given in ascending tag order. Values are padded to
/// even length; the file meta is derived from SOP Class / Instance UID.
pub fn part10(elements: &[(u32, &str, Vec<u8>)]) -> Vec<u8> {
    let find = |t: u32| {
        elements
            .iter()
            .find(|e| e.0 == t)
            .map(|e| e.2.clone())
            .unwrap_or_default()
    };
    let mut meta = Vec::new();
    element(&mut meta, 0x0002_0001, "OB", &[0, 1]);
    element(&mut meta, 0x0002_0002, "UI", &find(0x0008_0016));
    element(&mut meta, 0x0002_0003, "UI", &find(0x0008_0018));
    element(&mut meta, 0x0002_0010, "UI", b"1.2.840.10008.1.2.1");
    element(&mut meta, 0x0002_0012, "UI", b"2.25.1");
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    element(
        &mut out,
        0x0002_0000,
        "UL",
        &(meta.len() as u32).to_le_bytes(),
    );
    out.extend_from_slice(&meta);
    for (tag, vr, value) in elements {
        element(&mut out, *tag, vr, value);
    }
    out
}

/// What a small synthetic CT object carries.
#[derive(Debug, Clone)]
pub struct Spec<'a> {
    pub study: &'a str,
    pub series: &'a str,
    pub sop: &'a str,
    pub patient_name: &'a str,
    pub patient_id: &'a str,
    pub study_date: &'a str,
    pub modality: &'a str,
    pub accession: &'a str,
    /// Bytes of (zero) pixel data.
    pub pixel_bytes: usize,
}

impl Default for Spec<'_> {
    fn default() -> Self {
        Spec {
            study: "1.2.3",
            series: "1.2.3.1",
            sop: "1.2.3.1.1",
            patient_name: "TEST^PATIENT",
            patient_id: "TEST-1",
            study_date: "20260101",
            modality: "CT",
            accession: "",
            pixel_bytes: 64,
        }
    }
}

/// A small CT-like object (UTF-8 character set) built from `spec`.
pub fn object(spec: &Spec) -> Vec<u8> {
    part10(&[
        (0x0008_0005, "CS", b"ISO_IR 192".to_vec()),
        (0x0008_0016, "UI", b"1.2.840.10008.5.1.4.1.1.2".to_vec()),
        (0x0008_0018, "UI", spec.sop.as_bytes().to_vec()),
        (0x0008_0020, "DA", spec.study_date.as_bytes().to_vec()),
        (0x0008_0050, "SH", spec.accession.as_bytes().to_vec()),
        (0x0008_0060, "CS", spec.modality.as_bytes().to_vec()),
        (0x0010_0010, "PN", spec.patient_name.as_bytes().to_vec()),
        (0x0010_0020, "LO", spec.patient_id.as_bytes().to_vec()),
        (0x0020_000D, "UI", spec.study.as_bytes().to_vec()),
        (0x0020_000E, "UI", spec.series.as_bytes().to_vec()),
        (0x7FE0_0010, "OW", vec![0u8; spec.pixel_bytes]),
    ])
}
