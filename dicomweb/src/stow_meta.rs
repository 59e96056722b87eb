//! STOW-RS of metadata and bulk data (PS3.18 10.5.1.2): a
//! `multipart/related; type="application/dicom+json"` request whose
//! `application/dicom+json` part(s) hold an array of DICOM JSON data sets,
//! and whose other parts hold the bulk data those data sets reference by
//! `BulkDataURI`, matched to a part's `Content-Location`.
//!
//! Each data set becomes a Part 10 object, then is stored exactly as an
//! `application/dicom` part would be (same checks, same durability).
//! Pixel Data given as `application/octet-stream` (or with
//! `transfer-syntax=1.2.840.10008.1.2.1`) is native, and the object is
//! written in Explicit VR Little Endian; Pixel Data given as a compressed
//! media type (`image/jpeg`, `image/jls`, `image/jp2`, `image/jphc`,
//! `image/dicom-rle`, with its `transfer-syntax` or the media type's
//! default) is one fragment of a single-frame object in that syntax.
//!
//! Refused per data set, with the reason: a `BulkDataURI` that no part
//! answers, bulk data inside a sequence, compressed Pixel Data of more than
//! one frame, missing SOP Class or Instance UID, JSON that is not DICOM
//! JSON. Non-goals: XML metadata (refused as a whole, 415).

use std::collections::HashMap;

use bytes::Bytes;
use dicom_core::value::{PixelFragmentSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};
use pacs_core::dicom::{encode_file_meta, FileMeta};
use serde_json::{Map, Value};

use crate::negotiate::MediaRange;

const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
const PIXEL_DATA: u32 = 0x7FE0_0010;

/// A bulk data part: its media type and bytes.
pub(crate) struct BulkPart {
    pub media: Option<MediaRange>,
    pub bytes: Bytes,
}

/// One data set of the metadata: its UIDs (for the response) and the Part
/// 10 object built from it, or why it could not be built.
pub(crate) struct Built {
    pub class: Option<String>,
    pub sop: Option<String>,
    pub part10: Result<Vec<u8>, String>,
}

/// The bulk data parts of a request by `Content-Location`, indexed so that
/// each `BulkDataURI` is resolved in time proportional to its own length,
/// whatever the number of parts.
#[derive(Default)]
pub(crate) struct BulkParts {
    parts: Vec<BulkPart>,
    /// The location exactly as sent.
    exact: HashMap<String, usize>,
    /// The location without leading `/`: found when a URI ends with
    /// `/` and it.
    tail: HashMap<String, usize>,
    /// Every piece of the location after one of its `/`: found when the
    /// location ends with `/` and a (relative) URI.
    ends: HashMap<String, usize>,
}

impl BulkParts {
    /// Adds a part; a location already present keeps its first part.
    pub fn insert(&mut self, location: String, part: BulkPart) {
        let i = self.parts.len();
        self.parts.push(part);
        let tail = location.trim_start_matches('/');
        if !tail.is_empty() {
            self.tail.entry(tail.to_owned()).or_insert(i);
        }
        for (at, _) in location.match_indices('/') {
            let end = &location[at + 1..];
            if !end.is_empty() {
                self.ends.entry(end.to_owned()).or_insert(i);
            }
        }
        self.exact.entry(location).or_insert(i);
    }

    /// The part a `BulkDataURI` names: the one whose `Content-Location` is
    /// the same, or, for relative and absolute forms of one URL, the one
    /// whose location ends the other (at a `/`).
    fn find(&self, uri: &str) -> Option<&BulkPart> {
        let hit = self.exact.get(uri).or_else(|| {
            uri.match_indices('/')
                .find_map(|(at, _)| self.tail.get(&uri[at + 1..]))
                .or_else(|| self.ends.get(uri.trim_start_matches('/')))
        })?;
        self.parts.get(*hit)
    }
}

/// The data sets of one metadata part (a DICOM JSON array, or a single
/// data set) built into Part 10 objects; `Err` when the part is not JSON.
pub(crate) fn build_all(metadata: &[u8], bulk: &BulkParts) -> Result<Vec<Built>, String> {
    let value: Value = serde_json::from_slice(metadata)
        .map_err(|e| format!("the metadata part is not JSON: {e}"))?;
    let datasets = match value {
        Value::Array(items) => items,
        obj @ Value::Object(_) => vec![obj],
        _ => return Err("the metadata part is neither a data set nor an array of them".into()),
    };
    Ok(datasets
        .into_iter()
        .map(|ds| match ds {
            Value::Object(map) => {
                let class = uid_of(&map, "00080016");
                let sop = uid_of(&map, "00080018");
                let part10 = build_one(map, bulk);
                Built { class, sop, part10 }
            }
            _ => Built {
                class: None,
                sop: None,
                part10: Err("an item of the metadata array is not a data set".into()),
            },
        })
        .collect())
}

fn uid_of(ds: &Map<String, Value>, key: &str) -> Option<String> {
    ds.get(key)?
        .get("Value")?
        .get(0)?
        .as_str()
        .map(|s| s.trim_end_matches(['\0', ' ']).to_owned())
        .filter(|s| !s.is_empty())
}

/// Whether a sequence item (at any depth) references bulk data.
fn nested_bulk(value: &Value) -> bool {
    match value {
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| k == "BulkDataURI" || nested_bulk(v)),
        Value::Array(items) => items.iter().any(nested_bulk),
        _ => false,
    }
}

/// The transfer syntax of compressed Pixel Data from its part's media type.
fn compressed_syntax(media: &MediaRange) -> Option<String> {
    if let Some(ts) = media.transfer_syntax() {
        return Some(ts.to_owned());
    }
    // PS3.18 Table 8.7.3-5: each media type's default.
    let default = match media.essence.as_str() {
        "image/jpeg" => "1.2.840.10008.1.2.4.70",
        "image/jls" => "1.2.840.10008.1.2.4.80",
        "image/jp2" => "1.2.840.10008.1.2.4.90",
        "image/jphc" => "1.2.840.10008.1.2.4.201",
        "image/dicom-rle" | "image/x-dicom-rle" => "1.2.840.10008.1.2.5",
        _ => return None,
    };
    Some(default.to_owned())
}

fn even(bytes: &Bytes) -> Vec<u8> {
    let mut v = bytes.to_vec();
    if v.len() % 2 == 1 {
        v.push(0);
    }
    v
}

fn build_one(mut ds: Map<String, Value>, bulk: &BulkParts) -> Result<Vec<u8>, String> {
    let class = uid_of(&ds, "00080016").ok_or("SOP Class UID (0008,0016) is missing")?;
    let sop = uid_of(&ds, "00080018").ok_or("SOP Instance UID (0008,0018) is missing")?;
    // Top-level bulk data: taken out of the JSON, put back as values.
    let mut resolved: Vec<(u32, VR, &BulkPart)> = Vec::new();
    for (key, element) in &ds {
        let Some(uri) = element.get("BulkDataURI").and_then(Value::as_str) else {
            if element
                .get("Value")
                .is_some_and(|v| element.get("vr") == Some(&Value::from("SQ")) && nested_bulk(v))
            {
                return Err(format!(
                    "{key}: bulk data inside a sequence is not supported; send it inline"
                ));
            }
            continue;
        };
        let tag = u32::from_str_radix(key, 16)
            .ok()
            .filter(|_| key.len() == 8)
            .ok_or_else(|| format!("{key:?} is not a tag"))?;
        let vr = element
            .get("vr")
            .and_then(Value::as_str)
            .and_then(|v| v.parse::<VR>().ok())
            .ok_or_else(|| format!("{key}: missing or unknown VR"))?;
        if !matches!(
            vr,
            VR::OB | VR::OW | VR::OD | VR::OF | VR::OL | VR::OV | VR::UN
        ) {
            return Err(format!("{key}: bulk data of VR {vr} is not supported"));
        }
        let part = bulk
            .find(uri)
            .ok_or_else(|| format!("{key}: no part of the request has Content-Location {uri}"))?;
        resolved.push((tag, vr, part));
    }
    for (tag, _, _) in &resolved {
        ds.remove(&format!("{tag:08X}"));
    }
    let mut obj: InMemDicomObject = dicom_json::from_value(Value::Object(ds))
        .map_err(|e| format!("the data set is not valid DICOM JSON: {e}"))?;
    let mut syntax = EXPLICIT_VR_LE.to_owned();
    for (tag, vr, part) in resolved {
        let compressed = (tag == PIXEL_DATA)
            .then(|| {
                part.media
                    .as_ref()
                    .filter(|m| m.essence.starts_with("image/"))
            })
            .flatten();
        match compressed {
            Some(media) => {
                let ts = compressed_syntax(media).ok_or_else(|| {
                    format!(
                        "Pixel Data of media type {} is not supported",
                        media.essence
                    )
                })?;
                let frames = obj
                    .get(dicom_dictionary_std::tags::NUMBER_OF_FRAMES)
                    .and_then(|e| e.to_int::<u32>().ok())
                    .unwrap_or(1);
                if frames > 1 {
                    return Err(format!(
                        "compressed Pixel Data of {frames} frames in one part is not supported; \
                         send the instance as application/dicom"
                    ));
                }
                syntax = ts;
                obj.put(DataElement::new(
                    Tag(0x7FE0, 0x0010),
                    VR::OB,
                    PixelFragmentSequence::new(vec![], vec![even(&part.bytes)]),
                ));
            }
            None => {
                if let Some(ts) = part.media.as_ref().and_then(MediaRange::transfer_syntax) {
                    if ts != EXPLICIT_VR_LE {
                        return Err(format!(
                            "bulk data of media type {} in transfer syntax {ts} is not supported",
                            part.media.as_ref().map_or("", |m| m.essence.as_str())
                        ));
                    }
                }
                obj.put(DataElement::new(
                    Tag((tag >> 16) as u16, tag as u16),
                    vr,
                    PrimitiveValue::U8(even(&part.bytes).into()),
                ));
            }
        }
    }
    let ts = TransferSyntaxRegistry
        .get(&syntax)
        .ok_or_else(|| format!("transfer syntax {syntax} is not known"))?;
    let meta = FileMeta {
        transfer_syntax_uid: syntax.clone(),
        media_storage_sop_class_uid: class,
        media_storage_sop_instance_uid: sop,
        implementation_class_uid: pacs_core::archive::IMPLEMENTATION_CLASS_UID.to_owned(),
        implementation_version_name: Some(
            pacs_core::archive::IMPLEMENTATION_VERSION_NAME.to_owned(),
        ),
        source_ae_title: None,
    };
    let mut out = encode_file_meta(&meta);
    obj.write_dataset_with_ts(&mut out, ts)
        .map_err(|e| format!("the data set cannot be encoded: {e}"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn part(tag: u8) -> BulkPart {
        BulkPart {
            media: None,
            bytes: Bytes::from(vec![tag]),
        }
    }

    fn found(parts: &BulkParts, uri: &str) -> Option<u8> {
        parts.find(uri).map(|p| p.bytes[0])
    }

    #[test]
    fn bulk_parts_are_found_by_exact_relative_or_absolute_location() {
        let mut parts = BulkParts::default();
        // Many parts: each lookup is a few hash probes, not a scan.
        for i in 0..20_000u32 {
            parts.insert(format!("http://h/x/{i}"), part(0));
        }
        parts.insert("bulk/1".into(), part(1));
        parts.insert("http://host/dicom-web/bulk/2".into(), part(2));
        parts.insert("cid:3".into(), part(3));
        parts.insert("bulk/1".into(), part(9));
        assert_eq!(found(&parts, "bulk/1"), Some(1), "first part wins");
        assert_eq!(found(&parts, "http://host/dicom-web/bulk/1"), Some(1));
        assert_eq!(found(&parts, "/bulk/2"), Some(2));
        assert_eq!(found(&parts, "dicom-web/bulk/2"), Some(2));
        assert_eq!(found(&parts, "cid:3"), Some(3));
        assert_eq!(found(&parts, "ulk/1"), None, "only whole path segments");
        assert_eq!(found(&parts, "http://host/bulk/4"), None);
        assert_eq!(found(&parts, "http://h/x/19999"), Some(0));
    }
}
