//! DICOM JSON (PS3.18 Annex F) of an instance's header, produced once at
//! ingest and kept in the index, so metadata requests assemble stored JSON
//! instead of re-reading files.
//!
//! Binary values larger than [`INLINE_BINARY_MAX`] at the top level, and
//! Pixel Data always, become `BulkDataURI`s relative to the instance
//! resource (`bulkdata/GGGGEEEE`); smaller ones are `InlineBinary`. The
//! DICOMweb layer resolves or rewrites these URIs when it serves them.
//! Group lengths and the file meta group are left out (PS3.18 F.2).

use base64::Engine;
use serde_json::{json, Map, Value};

use crate::dicom::{DataSet, Element, Header};

/// Largest binary value written inline (base64) at the top level.
pub const INLINE_BINARY_MAX: usize = 1024;

fn tag_key(tag: u32) -> String {
    format!("{tag:08X}")
}

fn vr_text(vr: [u8; 2]) -> String {
    String::from_utf8_lossy(&vr).into_owned()
}

fn is_binary(vr: &[u8; 2]) -> bool {
    matches!(vr, b"OB" | b"OD" | b"OF" | b"OL" | b"OV" | b"OW" | b"UN")
}

/// A PN value as its DICOM JSON object (PS3.18 F.2.2): component groups
/// split on `=` into Alphabetic / Ideographic / Phonetic.
pub fn person_name(v: &str) -> Value {
    let mut obj = Map::new();
    for (key, group) in ["Alphabetic", "Ideographic", "Phonetic"]
        .iter()
        .zip(v.split('='))
    {
        if !group.is_empty() {
            obj.insert((*key).to_owned(), Value::String(group.to_owned()));
        }
    }
    Value::Object(obj)
}

/// A DS or IS value as a JSON number, or the trimmed string when it does
/// not parse (PS3.18 F.2.3 allows strings for malformed numbers).
pub fn number_or_string(v: &str) -> Value {
    let t = v.trim();
    if let Ok(i) = t.parse::<i64>() {
        return json!(i);
    }
    match t.parse::<f64>() {
        Ok(f) if f.is_finite() => json!(f),
        _ => Value::String(t.to_owned()),
    }
}

fn element_json(ds: &DataSet, el: &Element, top_level: bool) -> Value {
    let vr = el.effective_vr();
    let mut obj = Map::new();
    obj.insert("vr".into(), Value::String(vr_text(vr)));
    if let Some(items) = el.items() {
        if !items.is_empty() {
            obj.insert(
                "Value".into(),
                Value::Array(items.iter().map(|i| dataset_json(i, false)).collect()),
            );
        }
        return Value::Object(obj);
    }
    let Some(bytes) = el.bytes() else {
        // Encapsulated fragments inside an item: refer to them.
        obj.insert(
            "BulkDataURI".into(),
            json!(format!("bulkdata/{}", tag_key(el.tag))),
        );
        return Value::Object(obj);
    };
    if bytes.is_empty() {
        return Value::Object(obj);
    }
    let values: Vec<Value> = match &vr {
        v if is_binary(v) => {
            if top_level && bytes.len() > INLINE_BINARY_MAX {
                obj.insert(
                    "BulkDataURI".into(),
                    json!(format!("bulkdata/{}", tag_key(el.tag))),
                );
            } else {
                obj.insert(
                    "InlineBinary".into(),
                    json!(base64::engine::general_purpose::STANDARD.encode(bytes)),
                );
            }
            return Value::Object(obj);
        }
        b"PN" => ds.strings(el.tag).iter().map(|v| person_name(v)).collect(),
        b"DS" | b"IS" => ds
            .strings(el.tag)
            .iter()
            .map(|v| number_or_string(v))
            .collect(),
        b"US" | b"SS" | b"UL" | b"SL" | b"FL" | b"FD" | b"SV" | b"UV" => ds
            .f64_values(el.tag)
            .into_iter()
            .map(|f| {
                if f.fract() == 0.0 && f.abs() < 9.0e15 {
                    json!(f as i64)
                } else if f.is_finite() {
                    json!(f)
                } else {
                    Value::Null
                }
            })
            .collect(),
        b"AT" => bytes
            .chunks_exact(4)
            .map(|c| {
                let (g, e) = if ds.is_big_endian() {
                    (
                        u16::from_be_bytes([c[0], c[1]]),
                        u16::from_be_bytes([c[2], c[3]]),
                    )
                } else {
                    (
                        u16::from_le_bytes([c[0], c[1]]),
                        u16::from_le_bytes([c[2], c[3]]),
                    )
                };
                json!(format!("{g:04X}{e:04X}"))
            })
            .collect(),
        _ => ds
            .strings(el.tag)
            .into_iter()
            .map(|v| {
                if v.is_empty() {
                    Value::Null
                } else {
                    Value::String(v)
                }
            })
            .collect(),
    };
    if !values.is_empty() {
        obj.insert("Value".into(), Value::Array(values));
    }
    Value::Object(obj)
}

fn dataset_json(ds: &DataSet, top_level: bool) -> Value {
    let mut obj = Map::new();
    for el in ds.iter() {
        let (group, element) = (el.tag >> 16, el.tag & 0xFFFF);
        if group == 0x0002 || element == 0x0000 {
            continue;
        }
        obj.insert(tag_key(el.tag), element_json(ds, el, top_level));
    }
    Value::Object(obj)
}

/// The DICOM JSON object of one instance (its header, plus a `BulkDataURI`
/// for Pixel Data when present), serialized.
pub fn instance_json(header: &Header) -> Vec<u8> {
    let mut value = dataset_json(&header.dataset, true);
    if let (Some(p), Value::Object(obj)) = (&header.pixel_data, &mut value) {
        let tag = 0x7FE0_0010u32;
        obj.insert(
            tag_key(tag),
            json!({ "vr": vr_text(p.vr), "BulkDataURI": format!("bulkdata/{}", tag_key(tag)) }),
        );
    }
    serde_json::to_vec(&value).unwrap_or_else(|_| b"{}".to_vec())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::dicom::parse_part10;
    use crate::Limits;

    fn file(elements: &[(u32, &str, &[u8])]) -> Vec<u8> {
        let mut out = vec![0u8; 128];
        out.extend_from_slice(b"DICM");
        let push = |out: &mut Vec<u8>, tag: u32, vr: &str, v: &[u8]| {
            out.extend_from_slice(&((tag >> 16) as u16).to_le_bytes());
            out.extend_from_slice(&((tag & 0xFFFF) as u16).to_le_bytes());
            out.extend_from_slice(vr.as_bytes());
            if matches!(vr, "OB" | "OW" | "SQ" | "UN" | "UT") {
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            } else {
                out.extend_from_slice(&(v.len() as u16).to_le_bytes());
            }
            out.extend_from_slice(v);
        };
        push(&mut out, 0x0002_0010, "UI", b"1.2.840.10008.1.2.1\0");
        for (t, vr, v) in elements {
            push(&mut out, *t, vr, v);
        }
        out
    }

    #[test]
    fn encodes_the_value_kinds_of_ps3_18_annex_f() {
        let bytes = file(&[
            (0x0008_0005, "CS", b"ISO_IR 192"),
            (0x0008_0018, "UI", b"1.2.3.4\0"),
            (0x0010_0010, "PN", "Nguyễn^Văn An=阮^文安".as_bytes()),
            (0x0018_0050, "DS", b"2.5 "),
            (0x0020_0013, "IS", b"7 "),
            (0x0028_0010, "US", &512u16.to_le_bytes()),
            (0x0028_1050, "DS", b"40\\400 "),
            (0x0029_1010, "OB", &[1, 2, 3, 4]),
            (0x7FE0_0010, "OW", &[0u8; 8]),
        ]);
        let header = parse_part10(&bytes, true, &Limits::default()).unwrap();
        let v: Value = serde_json::from_slice(&instance_json(&header)).unwrap();
        assert_eq!(v["00080018"], json!({"vr": "UI", "Value": ["1.2.3.4"]}));
        assert_eq!(
            v["00100010"]["Value"][0],
            json!({"Alphabetic": "Nguyễn^Văn An", "Ideographic": "阮^文安"})
        );
        assert_eq!(v["00180050"]["Value"], json!([2.5]));
        assert_eq!(v["00200013"]["Value"], json!([7]));
        assert_eq!(v["00280010"], json!({"vr": "US", "Value": [512]}));
        assert_eq!(v["00281050"]["Value"], json!([40, 400]));
        assert_eq!(v["00291010"]["InlineBinary"], json!("AQIDBA=="));
        assert_eq!(v["7FE00010"]["BulkDataURI"], json!("bulkdata/7FE00010"));
        assert!(
            v.get("00020010").is_none(),
            "file meta is not part of the data set"
        );
    }
}
