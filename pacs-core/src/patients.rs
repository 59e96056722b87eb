//! Patient updates and merges, applied on read (design piece 6).
//!
//! The HIS (HL7 ADT A08 / A40) and an administrator (`/api/v1/patients`)
//! correct demographics and merge patients. The stored objects are never
//! rewritten: each change is kept as a versioned record (who, when, the
//! values before and after) and as a *coercion*: for an original patient
//! key (Issuer of Patient ID, NUL, Patient ID, as found in the objects),
//! the values every answer must show instead.
//!
//! - The index rows of the affected studies are rebuilt from their blobs
//!   with the coercion applied ([`PatientCoercion::apply_to_attrs`]), so
//!   C-FIND, QIDO-RS (including the folded name column) and WADO-RS
//!   metadata answer the corrected values at their usual speed. A store,
//!   a reindex and the recovery scan apply the same coercion to every
//!   entry they build, so `pacs reindex` keeps the changes.
//! - Retrieved objects (WADO-RS, WADO-URI, C-GET / C-MOVE sub-operations,
//!   conversions) get their Patient Module attributes rewritten in the data
//!   set header as they are streamed ([`coerce_part10`]); pixel data is
//!   copied byte for byte, never decoded.
//!
//! What this does not do: it keeps no patient master record of its own
//! (a patient is known by the studies and orders that name it), does not
//! undo a merge, and does not rewrite deflated objects on the way out (they
//! are sent as stored; the index still answers corrected values).

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

use crate::dicom::{tags, Header};
use crate::ports::PortError;
use crate::records::{normalize_person_name, patient_key, InstanceAttributes};

/// A patient as the objects and the HIS name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PatientKey {
    pub issuer: String,
    pub patient_id: String,
}

impl PatientKey {
    pub fn new(issuer: &str, patient_id: &str) -> PatientKey {
        PatientKey {
            issuer: issuer.to_owned(),
            patient_id: patient_id.to_owned(),
        }
    }

    /// The index key (`records::patient_key`).
    pub fn index_key(&self) -> String {
        patient_key(&self.issuer, &self.patient_id)
    }

    /// Checks the ID and issuer against their VRs (LO, PS3.5 6.2): at
    /// most 64 characters, no control characters or backslash, and no
    /// wildcard (they are used as matching keys).
    pub fn validate(&self) -> Result<(), PatientError> {
        if self.patient_id.trim().is_empty() {
            return Err(PatientError::Invalid("the patient ID is empty".into()));
        }
        for (what, v) in [("patient ID", &self.patient_id), ("issuer", &self.issuer)] {
            if v.chars().count() > 64 {
                return Err(PatientError::Invalid(format!(
                    "the {what} is longer than 64 characters"
                )));
            }
            if v.chars()
                .any(|c| c.is_control() || matches!(c, '\\' | '*' | '?'))
            {
                return Err(PatientError::Invalid(format!(
                    "the {what} holds a control character, a backslash or a wildcard"
                )));
            }
        }
        Ok(())
    }
}

/// Demographic values a change sets; `None` leaves a value as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Demographics {
    /// Patient's Name (PN, DICOM form `family^given^middle^prefix^suffix`).
    pub name: Option<String>,
    /// Patient's Birth Date (DA, `YYYYMMDD`, or empty).
    pub birth_date: Option<String>,
    /// Patient's Sex (CS: M, F, O, or empty).
    pub sex: Option<String>,
}

impl Demographics {
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.birth_date.is_none() && self.sex.is_none()
    }

    /// `other`'s values where it has them, ours elsewhere.
    pub fn overlaid(&self, other: &Demographics) -> Demographics {
        Demographics {
            name: other.name.clone().or_else(|| self.name.clone()),
            birth_date: other.birth_date.clone().or_else(|| self.birth_date.clone()),
            sex: other.sex.clone().or_else(|| self.sex.clone()),
        }
    }

    /// Checks the values against their VRs (PN: 64 characters per
    /// component group, no backslash or control characters; DA; CS).
    pub fn validate(&self) -> Result<(), PatientError> {
        if let Some(n) = &self.name {
            if n.split('=').any(|g| g.chars().count() > 64) || n.split('=').count() > 3 {
                return Err(PatientError::Invalid(
                    "the name has a component group over 64 characters, or more than three".into(),
                ));
            }
            if n.chars().any(|c| c.is_control() || c == '\\') {
                return Err(PatientError::Invalid(
                    "the name holds a control character or a backslash".into(),
                ));
            }
        }
        if let Some(d) = &self.birth_date {
            if !d.is_empty() && !crate::orders::is_valid_date(d) {
                return Err(PatientError::Invalid(format!(
                    "birth date {d:?} is not a date (YYYYMMDD)"
                )));
            }
        }
        if let Some(s) = &self.sex {
            if !matches!(s.as_str(), "" | "M" | "F" | "O") {
                return Err(PatientError::Invalid(format!(
                    "sex {s:?} is not M, F, O or empty"
                )));
            }
        }
        Ok(())
    }
}

/// What every answer shows for the objects of one original patient key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientCoercion {
    /// The patient the objects now belong to (itself, or the survivor of
    /// a merge).
    pub target: PatientKey,
    pub demographics: Demographics,
}

/// What kind of change a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeKind {
    /// Demographics corrected (ADT^A08, A31, PATCH).
    Update,
    /// `from` merged into `into` (ADT^A40, POST .../merge).
    Merge,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Update => "update",
            ChangeKind::Merge => "merge",
        }
    }
}

/// One change, as kept in the history (never rewritten or removed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientChange {
    /// Assigned by the store, increasing.
    pub id: u64,
    /// Seconds since the epoch.
    pub time: u64,
    /// Who: `hl7:<sending application>` or the principal's name.
    pub actor: String,
    /// `hl7` or `rest`.
    pub source: String,
    pub kind: ChangeKind,
    /// The patient changed (update), or merged away (merge).
    pub from: PatientKey,
    /// The patient the objects belong to afterwards (`from` for an update).
    pub into: PatientKey,
    /// The values shown before, where known.
    pub before: Demographics,
    /// The values set.
    pub after: Demographics,
}

/// Where changes and coercions are kept (the index's database in a server).
#[async_trait]
pub trait PatientStore: Send + Sync + 'static {
    /// Every coercion, by original patient key.
    async fn coercions(&self) -> Result<Vec<(PatientKey, PatientCoercion)>, PortError>;
    /// Appends `change` to the history (its id assigned here) and sets
    /// `coercions`, atomically and durably; the recorded change.
    async fn record(
        &self,
        change: PatientChange,
        coercions: Vec<(PatientKey, PatientCoercion)>,
    ) -> Result<PatientChange, PortError>;
    /// [`PatientStore::record`], only if the newest change recorded (by
    /// any node) is still `seen`, atomically with the check: `None`, and
    /// nothing written, when another change came first.
    async fn record_if_latest(
        &self,
        seen: Option<u64>,
        change: PatientChange,
        coercions: Vec<(PatientKey, PatientCoercion)>,
    ) -> Result<Option<PatientChange>, PortError>;
    /// The changes that name `key` (as `from` or `into`), oldest first.
    async fn history(&self, key: &PatientKey) -> Result<Vec<PatientChange>, PortError>;
    /// The id of the newest change recorded (by any node sharing the
    /// store), `None` before the first. A change committed after this
    /// answer gets a greater id, so a reader that saw id `n` and then
    /// read the coercions holds every change up to `n` (one indexed read:
    /// nodes ask it every few seconds to tell whether to reload).
    async fn latest_change_id(&self) -> Result<Option<u64>, PortError>;
}

#[derive(Debug, thiserror::Error)]
pub enum PatientError {
    #[error("{0}")]
    Invalid(String),
    #[error("no such patient")]
    NotFound,
    #[error("patient changes are not available on this archive")]
    Unavailable,
    #[error("the audit record could not be written: {0}")]
    Audit(String),
    #[error("{0}")]
    Port(#[from] PortError),
    #[error("{0}")]
    Archive(String),
}

/// The coercions in memory (a few per corrected patient), with the set of
/// target keys so a read can tell cheaply whether a study may need one.
#[derive(Debug, Default, Clone)]
pub struct CoercionMap {
    by_original: HashMap<PatientKey, PatientCoercion>,
    targets: HashSet<String>,
}

impl CoercionMap {
    pub fn new(entries: impl IntoIterator<Item = (PatientKey, PatientCoercion)>) -> CoercionMap {
        let mut map = CoercionMap::default();
        for (k, c) in entries {
            map.by_original.insert(k, c);
        }
        map.rebuild_targets();
        map
    }

    fn rebuild_targets(&mut self) {
        self.targets = self
            .by_original
            .values()
            .map(|c| c.target.index_key())
            .collect();
    }

    pub fn is_empty(&self) -> bool {
        self.by_original.is_empty()
    }

    pub fn get(&self, original: &PatientKey) -> Option<&PatientCoercion> {
        self.by_original.get(original)
    }

    /// Whether objects indexed under this (current) patient key may carry
    /// a coercion.
    pub fn is_target(&self, index_key: &str) -> bool {
        self.targets.contains(index_key)
    }

    /// The entries whose target is `key`.
    pub fn targeting(&self, key: &PatientKey) -> Vec<(PatientKey, PatientCoercion)> {
        self.by_original
            .iter()
            .filter(|(_, c)| c.target == *key)
            .map(|(k, c)| (k.clone(), c.clone()))
            .collect()
    }

    pub fn set(&mut self, entries: &[(PatientKey, PatientCoercion)]) {
        for (k, c) in entries {
            self.by_original.insert(k.clone(), c.clone());
        }
        self.rebuild_targets();
    }

    /// Applies the coercion of the entry's own (original) patient, if any.
    pub fn apply_to_attrs(&self, attrs: &mut InstanceAttributes) {
        if self.is_empty() {
            return;
        }
        let original = PatientKey::new(
            &attrs.patient.issuer_of_patient_id,
            &attrs.patient.patient_id,
        );
        if let Some(c) = self.get(&original) {
            c.apply_to_attrs(attrs);
        }
    }
}

impl PatientCoercion {
    /// Puts the coerced values into an index entry: the patient and study
    /// records (and so the patient key, the study's patient ID, issuer
    /// and name indexes) and the instance's DICOM JSON.
    pub fn apply_to_attrs(&self, attrs: &mut InstanceAttributes) {
        let d = &self.demographics;
        let p = &mut attrs.patient;
        p.patient_id = self.target.patient_id.clone();
        p.issuer_of_patient_id = self.target.issuer.clone();
        let s = &mut attrs.study;
        s.patient_id = self.target.patient_id.clone();
        s.issuer_of_patient_id = self.target.issuer.clone();
        s.patient_key = self.target.index_key();
        if let Some(n) = &d.name {
            let n = normalize_person_name(n);
            attrs.patient.patient_name = n.clone();
            attrs.study.patient_name = n;
        }
        if let Some(v) = &d.birth_date {
            attrs.patient.patient_birth_date = v.clone();
            attrs.study.patient_birth_date = v.clone();
        }
        if let Some(v) = &d.sex {
            attrs.patient.patient_sex = v.clone();
            attrs.study.patient_sex = v.clone();
        }
        if let Some(json) = self.coerce_json(&attrs.metadata) {
            attrs.metadata = json;
        }
    }

    /// The values to write, tag by tag, in tag order.
    fn values(&self) -> Vec<(u32, [u8; 2], String)> {
        let d = &self.demographics;
        let mut v = Vec::new();
        if let Some(n) = &d.name {
            v.push((tags::PATIENT_NAME, *b"PN", normalize_person_name(n)));
        }
        v.push((tags::PATIENT_ID, *b"LO", self.target.patient_id.clone()));
        v.push((
            tags::ISSUER_OF_PATIENT_ID,
            *b"LO",
            self.target.issuer.clone(),
        ));
        if let Some(b) = &d.birth_date {
            v.push((tags::PATIENT_BIRTH_DATE, *b"DA", b.clone()));
        }
        if let Some(s) = &d.sex {
            v.push((tags::PATIENT_SEX, *b"CS", s.clone()));
        }
        v
    }

    /// The instance's DICOM JSON with the coerced values (PS3.18 F.2).
    fn coerce_json(&self, json: &[u8]) -> Option<Vec<u8>> {
        let mut value: serde_json::Value = serde_json::from_slice(json).ok()?;
        let obj = value.as_object_mut()?;
        for (tag, vr, v) in self.values() {
            let key = format!("{tag:08X}");
            let mut el = serde_json::Map::new();
            el.insert("vr".into(), serde_json::Value::String(vr_str(vr)));
            if !v.is_empty() {
                let item = if &vr == b"PN" {
                    crate::json::person_name(&v)
                } else {
                    serde_json::Value::String(v)
                };
                el.insert("Value".into(), serde_json::Value::Array(vec![item]));
            }
            if v_is_empty_issuer(tag, &el) && !obj.contains_key(&key) {
                continue;
            }
            obj.insert(key, serde_json::Value::Object(el));
        }
        serde_json::to_vec(&value).ok()
    }
}

fn vr_str(vr: [u8; 2]) -> String {
    String::from_utf8_lossy(&vr).into_owned()
}

/// An empty Issuer of Patient ID is not added where the object had none.
fn v_is_empty_issuer(tag: u32, el: &serde_json::Map<String, serde_json::Value>) -> bool {
    tag == tags::ISSUER_OF_PATIENT_ID && !el.contains_key("Value")
}

// ---------------------------------------------------------------------
// Part 10 header rewrite.

/// How text is written into the object.
enum TextEncoding {
    Ascii,
    Utf8,
    Latin1,
}

/// The object's Part 10 bytes (at least up to Pixel Data) with the
/// Patient Module attributes of `c` written in its data set. `None` when
/// the object cannot be rewritten (deflated data set, or elements the
/// walker cannot follow): the caller sends it as stored.
///
/// Only top-level elements up to group 0010 are walked (sequences skipped
/// by their lengths and delimiters, PS3.5 7.5); everything after the last
/// Patient Module attribute, pixel data included, is copied unchanged. A
/// Group Length (0010,0000) is dropped (retired, PS3.5 7.2). Text goes in
/// the object's own character set when it can hold it; an object in the
/// default repertoire is switched to ISO_IR 192 (ASCII is a subset of
/// UTF-8, so its other values keep their meaning); otherwise characters the
/// character set lacks lose their diacritics.
pub fn coerce_part10(bytes: &[u8], header: &Header, c: &PatientCoercion) -> Option<Vec<u8>> {
    if header.syntax.deflated() {
        return None;
    }
    let w = Walker {
        b: bytes,
        big: header.syntax.big_endian(),
        explicit: header.syntax.explicit_vr(),
    };
    let start = usize::try_from(header.dataset_offset).ok()?;
    // Top-level elements up to the end of group 0010.
    let mut elements: Vec<(u32, usize, usize)> = Vec::new();
    let mut pos = start;
    let mut stop = bytes.len();
    while pos < bytes.len() {
        let tag = w.tag(pos)?;
        if tag > 0x0010_FFFF {
            stop = pos;
            break;
        }
        let end = w.skip_element(pos, 0)?;
        elements.push((tag, pos, end));
        pos = end;
    }
    if pos >= bytes.len() {
        stop = bytes.len();
    }

    let charset = header
        .dataset
        .string(tags::SPECIFIC_CHARACTER_SET)
        .unwrap_or_default();
    let terms: Vec<&str> = charset
        .split('\\')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    let values = c.values();
    let all_ascii = values.iter().all(|(_, _, v)| v.is_ascii());
    let (encoding, new_charset) = if all_ascii {
        (TextEncoding::Ascii, None)
    } else if terms == ["ISO_IR 192"] {
        (TextEncoding::Utf8, None)
    } else if terms.is_empty() {
        (TextEncoding::Utf8, Some("ISO_IR 192".to_owned()))
    } else if terms == ["ISO_IR 100"]
        && values
            .iter()
            .all(|(_, _, v)| v.chars().all(|ch| (ch as u32) < 0x100))
    {
        (TextEncoding::Latin1, None)
    } else {
        (TextEncoding::Ascii, None)
    };

    let mut replace: Vec<(u32, Vec<u8>)> = values
        .iter()
        .filter(|(tag, _, v)| !(*tag == tags::ISSUER_OF_PATIENT_ID && v.is_empty()))
        .map(|(tag, vr, v)| (*tag, w.encode(*tag, *vr, &encode_text(v, &encoding, *vr))))
        .collect();
    if let Some(cs) = new_charset {
        replace.push((
            tags::SPECIFIC_CHARACTER_SET,
            w.encode(tags::SPECIFIC_CHARACTER_SET, *b"CS", cs.as_bytes()),
        ));
    }
    // An empty issuer removes one the object had.
    let mut drop: Vec<u32> = vec![0x0010_0000];
    if c.target.issuer.is_empty() {
        drop.push(tags::ISSUER_OF_PATIENT_ID);
    }
    replace.sort_by_key(|(t, _)| *t);

    let mut out = Vec::with_capacity(bytes.len() + 256);
    out.extend_from_slice(&bytes[..start]);
    let mut pending = replace.into_iter().peekable();
    for (tag, from, to) in &elements {
        while let Some((t, _)) = pending.peek() {
            if *t < *tag {
                if let Some((_, enc)) = pending.next() {
                    out.extend_from_slice(&enc);
                }
            } else {
                break;
            }
        }
        if pending.peek().is_some_and(|(t, _)| t == tag) {
            if let Some((_, enc)) = pending.next() {
                out.extend_from_slice(&enc);
            }
            continue;
        }
        if drop.contains(tag) {
            continue;
        }
        out.extend_from_slice(&bytes[*from..*to]);
    }
    for (_, enc) in pending {
        out.extend_from_slice(&enc);
    }
    out.extend_from_slice(&bytes[stop..]);
    Some(out)
}

fn encode_text(v: &str, enc: &TextEncoding, vr: [u8; 2]) -> Vec<u8> {
    let mut b = match enc {
        TextEncoding::Utf8 => v.as_bytes().to_vec(),
        TextEncoding::Latin1 => v.chars().map(|c| c as u32 as u8).collect(),
        TextEncoding::Ascii => without_diacritics(v).into_bytes(),
    };
    if b.len() % 2 == 1 {
        // PS3.5 6.2: text values are padded with a space (UI with NUL).
        b.push(if &vr == b"UI" { 0 } else { b' ' });
    }
    b
}

/// ASCII letters for a character set that lacks the originals: combining
/// marks dropped after canonical decomposition, `đ`/`Đ` as `d`/`D`, any
/// other non-ASCII character as `?`.
fn without_diacritics(v: &str) -> String {
    v.nfd()
        .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
        .map(|c| match c {
            'đ' => 'd',
            'Đ' => 'D',
            c if c.is_ascii() => c,
            _ => '?',
        })
        .collect()
}

/// A bounded walker over encoded elements (no allocation, no values read).
struct Walker<'a> {
    b: &'a [u8],
    big: bool,
    explicit: bool,
}

const ITEM: u32 = 0xFFFE_E000;
const ITEM_END: u32 = 0xFFFE_E00D;
const SEQ_END: u32 = 0xFFFE_E0DD;
const UNDEFINED: u32 = 0xFFFF_FFFF;
const MAX_DEPTH: usize = 64;

impl Walker<'_> {
    fn u16(&self, at: usize) -> Option<u16> {
        let s: [u8; 2] = self.b.get(at..at + 2)?.try_into().ok()?;
        Some(if self.big {
            u16::from_be_bytes(s)
        } else {
            u16::from_le_bytes(s)
        })
    }

    fn u32(&self, at: usize) -> Option<u32> {
        let s: [u8; 4] = self.b.get(at..at + 4)?.try_into().ok()?;
        Some(if self.big {
            u32::from_be_bytes(s)
        } else {
            u32::from_le_bytes(s)
        })
    }

    fn tag(&self, at: usize) -> Option<u32> {
        Some((u32::from(self.u16(at)?) << 16) | u32::from(self.u16(at + 2)?))
    }

    /// (VR if explicit, value length, offset of the value).
    fn header(&self, at: usize, explicit: bool) -> Option<(Option<[u8; 2]>, u32, usize)> {
        let tag = self.tag(at)?;
        if !explicit || tag >> 16 == 0xFFFE {
            return Some((None, self.u32(at + 4)?, at + 8));
        }
        let vr: [u8; 2] = self.b.get(at + 4..at + 6)?.try_into().ok()?;
        if crate::dicom::has_long_length(vr) {
            Some((Some(vr), self.u32(at + 8)?, at + 12))
        } else {
            Some((Some(vr), u32::from(self.u16(at + 6)?), at + 8))
        }
    }

    fn skip_element(&self, at: usize, depth: usize) -> Option<usize> {
        self.skip_in(at, depth, self.explicit)
    }

    fn skip_in(&self, at: usize, depth: usize, explicit: bool) -> Option<usize> {
        if depth > MAX_DEPTH {
            return None;
        }
        let (vr, len, value) = self.header(at, explicit)?;
        if len != UNDEFINED {
            let end = value.checked_add(len as usize)?;
            return (end <= self.b.len()).then_some(end);
        }
        // Undefined length: a sequence (or UN holding one, implicit VR
        // little endian inside, PS3.5 6.2.2).
        let inner_explicit = explicit && vr != Some(*b"UN");
        let mut pos = value;
        loop {
            let tag = self.tag(pos)?;
            match tag {
                SEQ_END => return Some(pos + 8),
                ITEM => {
                    let ilen = self.u32(pos + 4)?;
                    if ilen != UNDEFINED {
                        pos = (pos + 8).checked_add(ilen as usize)?;
                        if pos > self.b.len() {
                            return None;
                        }
                        continue;
                    }
                    pos += 8;
                    loop {
                        if self.tag(pos)? == ITEM_END {
                            pos += 8;
                            break;
                        }
                        pos = self.skip_in(pos, depth + 1, inner_explicit)?;
                    }
                }
                _ => return None,
            }
        }
    }

    fn encode(&self, tag: u32, vr: [u8; 2], value: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(value.len() + 8);
        let (g, e) = ((tag >> 16) as u16, tag as u16);
        let put16 = |out: &mut Vec<u8>, v: u16| {
            out.extend_from_slice(&if self.big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            })
        };
        put16(&mut out, g);
        put16(&mut out, e);
        // Values here are short (LO, PN, DA, CS: at most a few hundred bytes).
        let len = value.len().min(u16::MAX as usize) as u16;
        if self.explicit {
            out.extend_from_slice(&vr);
            put16(&mut out, len);
        } else {
            let l = u32::from(len);
            out.extend_from_slice(&if self.big {
                l.to_be_bytes()
            } else {
                l.to_le_bytes()
            });
        }
        out.extend_from_slice(&value[..len as usize]);
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::dicom::parse_part10;
    use crate::records::name_words;
    use crate::Limits;

    fn el_explicit(tag: u32, vr: &[u8; 2], v: &[u8]) -> Vec<u8> {
        let mut o = Vec::new();
        o.extend_from_slice(&((tag >> 16) as u16).to_le_bytes());
        o.extend_from_slice(&(tag as u16).to_le_bytes());
        o.extend_from_slice(vr);
        if crate::dicom::has_long_length(*vr) {
            o.extend_from_slice(&[0, 0]);
            o.extend_from_slice(&(v.len() as u32).to_le_bytes());
        } else {
            o.extend_from_slice(&(v.len() as u16).to_le_bytes());
        }
        o.extend_from_slice(v);
        o
    }

    /// A small explicit VR LE object with an undefined-length sequence in
    /// group 0008 and 16 bytes of pixel data.
    fn object(charset: Option<&[u8]>) -> Vec<u8> {
        let ts = b"1.2.840.10008.1.2.1\0";
        let mut meta_body = el_explicit(0x0002_0010, b"UI", ts);
        meta_body.extend(el_explicit(0x0002_0002, b"UI", b"1.2.3\0"));
        meta_body.extend(el_explicit(0x0002_0003, b"UI", b"1.2.3.4\0"));
        let mut f = vec![0u8; 128];
        f.extend_from_slice(b"DICM");
        f.extend(el_explicit(
            0x0002_0000,
            b"UL",
            &(meta_body.len() as u32).to_le_bytes(),
        ));
        f.extend(meta_body);
        if let Some(cs) = charset {
            f.extend(el_explicit(0x0008_0005, b"CS", cs));
        }
        f.extend(el_explicit(0x0008_0016, b"UI", b"1.2.3\0"));
        f.extend(el_explicit(0x0008_0018, b"UI", b"1.2.3.4\0"));
        // (0008,1110) SQ undefined length, one undefined-length item.
        let mut sq = Vec::new();
        sq.extend_from_slice(&0x0008u16.to_le_bytes());
        sq.extend_from_slice(&0x1110u16.to_le_bytes());
        sq.extend_from_slice(b"SQ\0\0");
        sq.extend_from_slice(&UNDEFINED.to_le_bytes());
        sq.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
        sq.extend_from_slice(&UNDEFINED.to_le_bytes());
        sq.extend(el_explicit(0x0008_1150, b"UI", b"1.2\0"));
        sq.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
        sq.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        f.extend(sq);
        f.extend(el_explicit(0x0010_0010, b"PN", b"OLD^NAME"));
        f.extend(el_explicit(0x0010_0020, b"LO", b"P1"));
        f.extend(el_explicit(0x0010_0040, b"CS", b"M "));
        f.extend(el_explicit(0x0020_000D, b"UI", b"1.2.5\0"));
        f.extend(el_explicit(0x0020_000E, b"UI", b"1.2.6\0"));
        f.extend(el_explicit(0x7FE0_0010, b"OW", &[7u8; 16]));
        f
    }

    fn coercion(name: &str) -> PatientCoercion {
        PatientCoercion {
            target: PatientKey::new("HIS", "P2"),
            demographics: Demographics {
                name: Some(name.into()),
                birth_date: Some("19800102".into()),
                sex: None,
            },
        }
    }

    #[test]
    fn the_header_is_rewritten_and_the_pixels_kept() {
        let f = object(None);
        let limits = Limits::default();
        let h = parse_part10(&f, true, &limits).unwrap();
        let out = coerce_part10(&f, &h, &coercion("NEW^NAME")).unwrap();
        let h2 = parse_part10(&out, true, &limits).unwrap();
        let ds = &h2.dataset;
        assert_eq!(ds.string(tags::PATIENT_NAME).unwrap(), "NEW^NAME");
        assert_eq!(ds.string(tags::PATIENT_ID).unwrap(), "P2");
        assert_eq!(ds.string(tags::ISSUER_OF_PATIENT_ID).unwrap(), "HIS");
        assert_eq!(ds.string(tags::PATIENT_BIRTH_DATE).unwrap(), "19800102");
        assert_eq!(ds.string(tags::PATIENT_SEX).unwrap(), "M");
        assert_eq!(ds.uid(tags::STUDY_INSTANCE_UID).unwrap(), "1.2.5");
        assert!(ds.sequence(0x0008_1110).is_some());
        assert!(out.ends_with(&[7u8; 16]));
        let px = h2.pixel_data.unwrap();
        assert_eq!(
            &out[px.value_offset as usize..],
            &f[h.pixel_data.unwrap().value_offset as usize..]
        );
    }

    #[test]
    fn non_ascii_names_follow_the_character_set() {
        let limits = Limits::default();
        // Default repertoire: switched to UTF-8.
        let f = object(None);
        let h = parse_part10(&f, true, &limits).unwrap();
        let out = coerce_part10(&f, &h, &coercion("Nguyễn^Văn An")).unwrap();
        let ds = parse_part10(&out, true, &limits).unwrap().dataset;
        assert_eq!(ds.string(tags::PATIENT_NAME).unwrap(), "Nguyễn^Văn An");
        assert_eq!(
            ds.string(tags::SPECIFIC_CHARACTER_SET).unwrap(),
            "ISO_IR 192"
        );
        // Latin-1 that can hold it.
        let f = object(Some(b"ISO_IR 100"));
        let h = parse_part10(&f, true, &limits).unwrap();
        let out = coerce_part10(&f, &h, &coercion("Müller^Jürgen")).unwrap();
        let ds = parse_part10(&out, true, &limits).unwrap().dataset;
        assert_eq!(ds.string(tags::PATIENT_NAME).unwrap(), "Müller^Jürgen");
        // Latin-1 that cannot: diacritics dropped.
        let out = coerce_part10(&f, &h, &coercion("Nguyễn^Đức")).unwrap();
        let ds = parse_part10(&out, true, &limits).unwrap().dataset;
        assert_eq!(ds.string(tags::PATIENT_NAME).unwrap(), "Nguyen^Duc");
    }

    #[test]
    fn a_truncated_sequence_is_not_rewritten() {
        let f = object(None);
        let limits = Limits::default();
        let h = parse_part10(&f, true, &limits).unwrap();
        // Cut inside the sequence: the walker gives up instead of guessing.
        let cut = h.dataset_offset as usize + 60;
        assert!(coerce_part10(&f[..cut], &h, &coercion("X")).is_none());
    }

    #[test]
    fn index_entries_and_json_take_the_coerced_values() {
        let f = object(None);
        let h = parse_part10(&f, true, &Limits::default()).unwrap();
        let mut attrs = InstanceAttributes::from_header(&h).unwrap();
        let map = CoercionMap::new([(PatientKey::new("", "P1"), coercion("Trần^Thị B"))]);
        assert!(map.is_target(&PatientKey::new("HIS", "P2").index_key()));
        map.apply_to_attrs(&mut attrs);
        assert_eq!(attrs.study.patient_key, patient_key("HIS", "P2"));
        assert_eq!(attrs.patient.patient_name, "Trần^Thị B");
        assert_eq!(attrs.study.patient_sex, "M");
        let json: serde_json::Value = serde_json::from_slice(&attrs.metadata).unwrap();
        assert_eq!(json["00100010"]["Value"][0]["Alphabetic"], "Trần^Thị B");
        assert_eq!(json["00100020"]["Value"][0], "P2");
        assert_eq!(json["00100021"]["Value"][0], "HIS");
        assert_eq!(
            name_words(&attrs.study.patient_name),
            vec!["B", "THI", "TRAN"]
        );
    }

    #[test]
    fn demographics_are_checked() {
        let bad = Demographics {
            birth_date: Some("1980-01-02".into()),
            ..Demographics::default()
        };
        assert!(bad.validate().is_err());
        let bad = Demographics {
            sex: Some("X".into()),
            ..Demographics::default()
        };
        assert!(bad.validate().is_err());
        assert!(PatientKey::new("", "A*").validate().is_err());
        assert!(PatientKey::new("", "").validate().is_err());
    }
}
