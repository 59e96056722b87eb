//! The PS3.19 Native DICOM Model (Annex A), `application/dicom+xml`,
//! written from DICOM JSON (PS3.18 Annex F): the form metadata is stored
//! in and search results are built in, so one converter serves both.
//!
//! Attributes come out in ascending tag order, with the PS3.6 keyword when
//! the standard dictionary knows the tag and the private creator of
//! private data elements when the data set holds it. `Value`s are numbered
//! from 1; PN values become `PersonName` with their components split on
//! `^`; sequence items become `Item`s; `BulkDataURI` becomes `BulkData`
//! (the URI unchanged) and `InlineBinary` stays base64. Text is escaped
//! and characters XML 1.0 does not allow are left out. No whitespace is
//! written between elements (the root declares `xml:space="preserve"`).

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use serde_json::{Map, Value};

/// The media type of one Native DICOM Model document.
pub const DICOM_XML: &str = "application/dicom+xml";

/// The namespace of the Native DICOM Model schema (PS3.19 A.1.6).
const NAMESPACE: &str = "http://dicom.nema.org/PS3.19/models/NativeDICOM";

const PN_GROUPS: [&str; 3] = ["Alphabetic", "Ideographic", "Phonetic"];
const PN_COMPONENTS: [&str; 5] = [
    "FamilyName",
    "GivenName",
    "MiddleName",
    "NamePrefix",
    "NameSuffix",
];

/// DICOM JSON that cannot be written as XML.
#[derive(Debug, thiserror::Error)]
pub enum XmlError {
    #[error("not DICOM JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("DICOM JSON data set expected, found {0}")]
    NotADataSet(&'static str),
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One document per data set of `json`: a DICOM JSON array (a search
/// result, study or series metadata) or a single data set.
pub fn documents(json: &[u8]) -> Result<Vec<Vec<u8>>, XmlError> {
    match serde_json::from_slice::<Value>(json)? {
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::Object(obj) => Ok(document(obj)),
                other => Err(XmlError::NotADataSet(kind(other))),
            })
            .collect(),
        Value::Object(obj) => Ok(vec![document(&obj)]),
        other => Err(XmlError::NotADataSet(kind(&other))),
    }
}

/// The complete XML document of one DICOM JSON data set.
pub fn document(dataset: &Map<String, Value>) -> Vec<u8> {
    let mut out = String::with_capacity(256 + dataset.len() * 96);
    out.push_str(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    out.push_str("\n<NativeDicomModel xmlns=\"");
    out.push_str(NAMESPACE);
    out.push_str("\" xml:space=\"preserve\">");
    write_dataset(&mut out, dataset);
    out.push_str("</NativeDicomModel>");
    out.into_bytes()
}

/// The tag of a DICOM JSON key (`GGGGEEEE`).
fn parse_tag(key: &str) -> Option<u32> {
    if key.len() == 8 && key.bytes().all(|b| b.is_ascii_hexdigit()) {
        u32::from_str_radix(key, 16).ok()
    } else {
        None
    }
}

fn write_dataset(out: &mut String, dataset: &Map<String, Value>) {
    let mut tags: Vec<(u32, &Value)> = dataset
        .iter()
        .filter_map(|(k, v)| Some((parse_tag(k)?, v)))
        .filter(|(tag, _)| tag & 0xFFFF != 0) // no group lengths (PS3.19 A.1)
        .collect();
    tags.sort_unstable_by_key(|(tag, _)| *tag);
    for (tag, attr) in tags {
        if let Value::Object(attr) = attr {
            write_attribute(out, tag, attr, dataset);
        }
    }
}

/// The PS3.6 keyword of a public tag.
fn keyword(tag: u32) -> Option<&'static str> {
    let group = (tag >> 16) as u16;
    if group % 2 == 1 {
        return None;
    }
    let entry = dicom_dictionary_std::StandardDataDictionary
        .by_tag(dicom_core::Tag(group, (tag & 0xFFFF) as u16))?;
    Some(entry.alias()).filter(|a| !a.is_empty())
}

/// The private creator of a private data element `(gggg,xxee)`, read from
/// `(gggg,00xx)` of the same data set.
fn private_creator(tag: u32, dataset: &Map<String, Value>) -> Option<&str> {
    let (group, element) = (tag >> 16, tag & 0xFFFF);
    if group % 2 == 0 || element < 0x1000 {
        return None;
    }
    let key = format!("{group:04X}00{:02X}", element >> 8);
    dataset
        .get(&key)?
        .get("Value")?
        .get(0)?
        .as_str()
        .map(|s| s.trim_matches([' ', '\0']))
        .filter(|s| !s.is_empty())
}

/// A VR as written: two upper-case letters, `UN` otherwise.
fn vr_of(attr: &Map<String, Value>) -> &str {
    attr.get("vr")
        .and_then(Value::as_str)
        .filter(|vr| vr.len() == 2 && vr.bytes().all(|b| b.is_ascii_uppercase()))
        .unwrap_or("UN")
}

fn write_attribute(
    out: &mut String,
    tag: u32,
    attr: &Map<String, Value>,
    dataset: &Map<String, Value>,
) {
    let vr = vr_of(attr);
    out.push_str(&format!("<DicomAttribute tag=\"{tag:08X}\" vr=\"{vr}\""));
    if let Some(k) = keyword(tag) {
        out.push_str(" keyword=\"");
        escape_into(out, k);
        out.push('"');
    }
    if let Some(creator) = private_creator(tag, dataset) {
        out.push_str(" privateCreator=\"");
        escape_into(out, creator);
        out.push('"');
    }
    let values = attr
        .get("Value")
        .and_then(Value::as_array)
        .filter(|v| !v.is_empty());
    if let Some(values) = values {
        out.push('>');
        for (i, v) in values.iter().enumerate() {
            let number = i + 1;
            match vr {
                "SQ" => write_item(out, number, v),
                "PN" => write_person_name(out, number, v),
                _ => write_value(out, number, v),
            }
        }
        out.push_str("</DicomAttribute>");
    } else if let Some(uri) = attr.get("BulkDataURI").and_then(Value::as_str) {
        out.push_str("><BulkData uri=\"");
        escape_into(out, uri);
        out.push_str("\"/></DicomAttribute>");
    } else if let Some(b64) = attr.get("InlineBinary").and_then(Value::as_str) {
        out.push_str("><InlineBinary>");
        escape_into(out, b64);
        out.push_str("</InlineBinary></DicomAttribute>");
    } else {
        out.push_str("/>");
    }
}

fn write_item(out: &mut String, number: usize, item: &Value) {
    match item {
        Value::Object(ds) if !ds.is_empty() => {
            out.push_str(&format!("<Item number=\"{number}\">"));
            write_dataset(out, ds);
            out.push_str("</Item>");
        }
        _ => out.push_str(&format!("<Item number=\"{number}\"/>")),
    }
}

fn write_value(out: &mut String, number: usize, v: &Value) {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        // An empty value of a multi-valued attribute.
        Value::Null | Value::Array(_) | Value::Object(_) => String::new(),
    };
    if text.is_empty() {
        out.push_str(&format!("<Value number=\"{number}\"/>"));
    } else {
        out.push_str(&format!("<Value number=\"{number}\">"));
        escape_into(out, &text);
        out.push_str("</Value>");
    }
}

fn write_person_name(out: &mut String, number: usize, v: &Value) {
    let mut groups = String::new();
    for group in PN_GROUPS {
        let text = match v {
            Value::Object(pn) => pn.get(group).and_then(Value::as_str),
            // Tolerated: a bare string is the alphabetic group.
            Value::String(s) if group == "Alphabetic" => Some(s.as_str()),
            _ => None,
        };
        let Some(text) = text else { continue };
        let mut components = String::new();
        for (name, part) in PN_COMPONENTS.iter().zip(text.split('^')) {
            if part.is_empty() {
                continue;
            }
            components.push_str(&format!("<{name}>"));
            escape_into(&mut components, part);
            components.push_str(&format!("</{name}>"));
        }
        if !components.is_empty() {
            groups.push_str(&format!("<{group}>{components}</{group}>"));
        }
    }
    if groups.is_empty() {
        out.push_str(&format!("<PersonName number=\"{number}\"/>"));
    } else {
        out.push_str(&format!(
            "<PersonName number=\"{number}\">{groups}</PersonName>"
        ));
    }
}

/// Whether XML 1.0 allows `c` in a document (its `Char` production; Rust
/// `char`s are never surrogates).
fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

/// Appends `s` escaped for element content and attribute values alike,
/// without the characters XML 1.0 does not allow. CR is written as a
/// character reference so that parsers do not normalise it away.
fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#13;"),
            c if xml_char(c) => out.push(c),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn xml_of(json: &str) -> String {
        let docs = documents(json.as_bytes()).unwrap();
        assert_eq!(docs.len(), 1);
        String::from_utf8(docs.into_iter().next().unwrap()).unwrap()
    }

    /// The content of the root element.
    fn body_of(json: &str) -> String {
        let doc = xml_of(json);
        let open = "xml:space=\"preserve\">";
        let start = doc.find(open).unwrap() + open.len();
        let end = doc.rfind("</NativeDicomModel>").unwrap();
        doc[start..end].to_owned()
    }

    #[test]
    fn a_whole_document() {
        let doc = xml_of(r#"{"00080018":{"vr":"UI","Value":["1.2.3"]}}"#);
        assert_eq!(
            doc,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <NativeDicomModel xmlns=\"http://dicom.nema.org/PS3.19/models/NativeDICOM\" \
             xml:space=\"preserve\">\
             <DicomAttribute tag=\"00080018\" vr=\"UI\" keyword=\"SOPInstanceUID\">\
             <Value number=\"1\">1.2.3</Value></DicomAttribute></NativeDicomModel>"
        );
    }

    #[test]
    fn tags_in_ascending_order_and_numbers_as_text() {
        let body = body_of(
            r#"{"00281050":{"vr":"DS","Value":[40,400.5]},
                "00280010":{"vr":"US","Value":[512]},
                "00200013":{"vr":"IS","Value":["7"]}}"#,
        );
        assert_eq!(
            body,
            "<DicomAttribute tag=\"00200013\" vr=\"IS\" keyword=\"InstanceNumber\">\
             <Value number=\"1\">7</Value></DicomAttribute>\
             <DicomAttribute tag=\"00280010\" vr=\"US\" keyword=\"Rows\">\
             <Value number=\"1\">512</Value></DicomAttribute>\
             <DicomAttribute tag=\"00281050\" vr=\"DS\" keyword=\"WindowCenter\">\
             <Value number=\"1\">40</Value><Value number=\"2\">400.5</Value></DicomAttribute>"
        );
    }

    #[test]
    fn person_name_components_and_groups() {
        let body = body_of(
            r#"{"00100010":{"vr":"PN","Value":[
                {"Alphabetic":"Nguyễn^Văn An^^Dr.","Ideographic":"阮^文安"},
                {"Alphabetic":"^^^^"},
                null]}}"#,
        );
        assert_eq!(
            body,
            "<DicomAttribute tag=\"00100010\" vr=\"PN\" keyword=\"PatientName\">\
             <PersonName number=\"1\">\
             <Alphabetic><FamilyName>Nguyễn</FamilyName><GivenName>Văn An</GivenName>\
             <NamePrefix>Dr.</NamePrefix></Alphabetic>\
             <Ideographic><FamilyName>阮</FamilyName><GivenName>文安</GivenName></Ideographic>\
             </PersonName>\
             <PersonName number=\"2\"/><PersonName number=\"3\"/></DicomAttribute>"
        );
        let body = body_of(r#"{"00100010":{"vr":"PN","Value":[{"Phonetic":"a^b^c^d^e"}]}}"#);
        assert!(body.contains(
            "<Phonetic><FamilyName>a</FamilyName><GivenName>b</GivenName>\
             <MiddleName>c</MiddleName><NamePrefix>d</NamePrefix><NameSuffix>e</NameSuffix>\
             </Phonetic>"
        ));
    }

    #[test]
    fn sequences_nest_items() {
        let body = body_of(
            r#"{"00081115":{"vr":"SQ","Value":[
                {"0020000E":{"vr":"UI","Value":["1.2"]},
                 "00081199":{"vr":"SQ","Value":[{"00081155":{"vr":"UI","Value":["1.2.3"]}}]}},
                {}]}}"#,
        );
        assert_eq!(
            body,
            "<DicomAttribute tag=\"00081115\" vr=\"SQ\" keyword=\"ReferencedSeriesSequence\">\
             <Item number=\"1\">\
             <DicomAttribute tag=\"00081199\" vr=\"SQ\" keyword=\"ReferencedSOPSequence\">\
             <Item number=\"1\">\
             <DicomAttribute tag=\"00081155\" vr=\"UI\" keyword=\"ReferencedSOPInstanceUID\">\
             <Value number=\"1\">1.2.3</Value></DicomAttribute></Item></DicomAttribute>\
             <DicomAttribute tag=\"0020000E\" vr=\"UI\" keyword=\"SeriesInstanceUID\">\
             <Value number=\"1\">1.2</Value></DicomAttribute>\
             </Item><Item number=\"2\"/></DicomAttribute>"
        );
    }

    #[test]
    fn escapes_and_drops_characters_xml_forbids() {
        let body = body_of(
            "{\"00081030\":{\"vr\":\"LO\",\"Value\":[\"a<b & \\\"c\\\" 'd'>\\u0001\\u001b\\t\\r\\n\\uffff end\"]}}",
        );
        assert_eq!(
            body,
            "<DicomAttribute tag=\"00081030\" vr=\"LO\" keyword=\"StudyDescription\">\
             <Value number=\"1\">a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;\t&#13;\n end</Value>\
             </DicomAttribute>"
        );
        let body = body_of(r#"{"00091010":{"vr":"UN","BulkDataURI":"/x?a=1&b=\"2\""}}"#);
        assert!(
            body.contains("<BulkData uri=\"/x?a=1&amp;b=&quot;2&quot;\"/>"),
            "{body}"
        );
    }

    #[test]
    fn bulk_data_inline_binary_and_empty_attributes() {
        let body = body_of(
            r#"{"7FE00010":{"vr":"OW","BulkDataURI":"/dw/studies/1/series/2/instances/3/bulkdata/7FE00010"},
                "00281201":{"vr":"OW","InlineBinary":"AQIDBA=="},
                "00080090":{"vr":"PN"},
                "00081110":{"vr":"SQ","Value":[]},
                "00200010":{"vr":"SH","Value":["A",null]}}"#,
        );
        assert_eq!(
            body,
            "<DicomAttribute tag=\"00080090\" vr=\"PN\" keyword=\"ReferringPhysicianName\"/>\
             <DicomAttribute tag=\"00081110\" vr=\"SQ\" keyword=\"ReferencedStudySequence\"/>\
             <DicomAttribute tag=\"00200010\" vr=\"SH\" keyword=\"StudyID\">\
             <Value number=\"1\">A</Value><Value number=\"2\"/></DicomAttribute>\
             <DicomAttribute tag=\"00281201\" vr=\"OW\" keyword=\"RedPaletteColorLookupTableData\">\
             <InlineBinary>AQIDBA==</InlineBinary></DicomAttribute>\
             <DicomAttribute tag=\"7FE00010\" vr=\"OW\" keyword=\"PixelData\">\
             <BulkData uri=\"/dw/studies/1/series/2/instances/3/bulkdata/7FE00010\"/>\
             </DicomAttribute>"
        );
    }

    #[test]
    fn private_tags_name_their_creator_not_a_keyword() {
        let body = body_of(
            r#"{"00290010":{"vr":"LO","Value":["SEN PACS TEST "]},
                "00291010":{"vr":"OB","InlineBinary":"AA=="},
                "00291110":{"vr":"LO","Value":["no creator"]}}"#,
        );
        assert_eq!(
            body,
            "<DicomAttribute tag=\"00290010\" vr=\"LO\"><Value number=\"1\">SEN PACS TEST </Value>\
             </DicomAttribute>\
             <DicomAttribute tag=\"00291010\" vr=\"OB\" privateCreator=\"SEN PACS TEST\">\
             <InlineBinary>AA==</InlineBinary></DicomAttribute>\
             <DicomAttribute tag=\"00291110\" vr=\"LO\"><Value number=\"1\">no creator</Value>\
             </DicomAttribute>"
        );
    }

    #[test]
    fn arrays_give_one_document_each_and_garbage_is_an_error() {
        let docs = documents(br#"[{"00080018":{"vr":"UI","Value":["1"]}},{}]"#).unwrap();
        assert_eq!(docs.len(), 2);
        assert!(String::from_utf8_lossy(&docs[1])
            .ends_with("xml:space=\"preserve\"></NativeDicomModel>"));
        assert!(documents(b"[]").unwrap().is_empty());
        assert!(matches!(
            documents(b"[1]"),
            Err(XmlError::NotADataSet("a number"))
        ));
        assert!(matches!(documents(b"{"), Err(XmlError::Json(_))));
        // Keys that are not tags are ignored; a VR that is not one is UN.
        let body = body_of(r#"{"junk":{"vr":"UI"},"00100020":{"vr":"x<","Value":["1"]}}"#);
        assert_eq!(
            body,
            "<DicomAttribute tag=\"00100020\" vr=\"UN\" keyword=\"PatientID\">\
             <Value number=\"1\">1</Value></DicomAttribute>"
        );
    }
}
