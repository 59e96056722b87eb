//! The parsed data set and its typed accessors (value decoding per PS3.5 §6.2).

use super::charset::{decode_default, SpecificCharacterSet};
use super::{dictionary_vr, tags, Warning};

/// One data element (PS3.5 §7.1): tag, VR and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// `group << 16 | element`.
    pub tag: u32,
    /// The VR as two ASCII letters. For implicit VR data sets it comes from
    /// the standard dictionary (`UN` for tags it does not know); a value that
    /// the dictionary calls SQ but is not a valid sequence is kept as bytes
    /// with VR `UN`, and a UN value that turned out to be a sequence is
    /// reported as `SQ`.
    pub vr: [u8; 2],
    pub value: Value,
}

/// The value of an element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Raw value bytes, padding included, in the byte order of the data set
    /// that holds the element ([`DataSet::is_big_endian`]).
    Bytes(Vec<u8>),
    /// The items of a sequence (PS3.5 §7.5).
    Sequence(Vec<DataSet>),
    /// Encapsulated data below the top level (PS3.5 §A.4), such as the
    /// Pixel Data of an Icon Image Sequence item: the fragments in order, the
    /// first being the Basic Offset Table.
    Fragments(Vec<Vec<u8>>),
}

impl Element {
    /// The raw bytes, if the value is not a sequence or fragments.
    pub fn bytes(&self) -> Option<&[u8]> {
        match &self.value {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The items, if the value is a sequence.
    pub fn items(&self) -> Option<&[DataSet]> {
        match &self.value {
            Value::Sequence(items) => Some(items),
            _ => None,
        }
    }

    /// The VR as a string (`"??"` if the stream held non-ASCII bytes).
    pub fn vr_str(&self) -> &str {
        std::str::from_utf8(&self.vr).unwrap_or("??")
    }

    /// The VR the accessors interpret the value with: the stream's, except
    /// that `UN` is replaced by the dictionary's VR for the tag, when it
    /// knows one (PS3.5 §6.2.2; some converters write every element as UN).
    pub fn effective_vr(&self) -> [u8; 2] {
        if &self.vr == b"UN" {
            dictionary_vr(self.tag)
        } else {
            self.vr
        }
    }
}

/// A data set: elements ordered by tag, the character set its text values
/// are decoded with, and the byte order of its binary values.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DataSet {
    elements: Vec<Element>,
    charset: SpecificCharacterSet,
    big_endian: bool,
}

/// Whether values of this VR are character strings.
fn is_string_vr(vr: [u8; 2]) -> bool {
    matches!(
        &vr,
        b"AE"
            | b"AS"
            | b"CS"
            | b"DA"
            | b"DS"
            | b"DT"
            | b"IS"
            | b"LO"
            | b"LT"
            | b"PN"
            | b"SH"
            | b"ST"
            | b"TM"
            | b"UC"
            | b"UI"
            | b"UR"
            | b"UT"
    )
}

/// VRs with a single value in which `\` is an ordinary character.
fn is_single_valued_text(vr: [u8; 2]) -> bool {
    matches!(&vr, b"ST" | b"LT" | b"UT" | b"UR")
}

/// Removes padding: trailing spaces and NULs always; leading spaces except
/// where they are significant (ST, LT, UT; PS3.5 Table 6.2-1).
fn trim(s: &str, vr: [u8; 2]) -> &str {
    let s = s.trim_end_matches([' ', '\0']);
    if matches!(&vr, b"ST" | b"LT" | b"UT") {
        s
    } else {
        s.trim_start_matches(' ')
    }
}

#[derive(Debug, Clone, Copy)]
enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    fn as_i64(self) -> Option<i64> {
        match self {
            Num::Int(i) => Some(i),
            Num::Float(f) if f.fract() == 0.0 && f >= i64::MIN as f64 && f <= i64::MAX as f64 => {
                Some(f as i64)
            }
            Num::Float(_) => None,
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

fn parse_num(s: &str) -> Option<Num> {
    let s = s.trim_matches([' ', '\0']);
    if let Ok(i) = s.parse::<i64>() {
        return Some(Num::Int(i));
    }
    s.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .map(Num::Float)
}

impl DataSet {
    /// A little-endian data set from elements (sorted here by tag), its
    /// character set resolved from its own (0008,0005), recursively for the
    /// items of its sequences. Mostly useful to build test data.
    pub fn from_elements(elements: Vec<Element>) -> DataSet {
        let mut ds = DataSet::from_parsed(elements, false);
        let mut warnings = Vec::new();
        ds.resolve_charsets(&SpecificCharacterSet::default(), &mut warnings);
        ds
    }

    pub(crate) fn from_parsed(mut elements: Vec<Element>, big_endian: bool) -> DataSet {
        if !elements.is_sorted_by_key(|e| e.tag) {
            elements.sort_by_key(|e| e.tag);
        }
        DataSet {
            elements,
            charset: SpecificCharacterSet::default(),
            big_endian,
        }
    }

    /// Sets the character set of this data set and its items: its own
    /// (0008,0005) if present, else `inherited` (PS3.3 §C.12.1.1.2).
    pub(crate) fn resolve_charsets(
        &mut self,
        inherited: &SpecificCharacterSet,
        warnings: &mut Vec<Warning>,
    ) {
        self.charset = match self
            .get(tags::SPECIFIC_CHARACTER_SET)
            .and_then(Element::bytes)
        {
            Some(value) => {
                let (set, unknown) = SpecificCharacterSet::from_value(value);
                for term in unknown {
                    let w = Warning::UnknownCharacterSet { term };
                    if !warnings.contains(&w) {
                        warnings.push(w);
                    }
                }
                set
            }
            None => *inherited,
        };
        let charset = self.charset;
        for element in &mut self.elements {
            if let Value::Sequence(items) = &mut element.value {
                for item in items {
                    item.resolve_charsets(&charset, warnings);
                }
            }
        }
    }

    /// The element with this tag (the first, should the data set hold the
    /// tag twice).
    pub fn get(&self, tag: u32) -> Option<&Element> {
        let i = self.elements.partition_point(|e| e.tag < tag);
        self.elements.get(i).filter(|e| e.tag == tag)
    }

    /// Whether the data set holds this tag.
    pub fn contains(&self, tag: u32) -> bool {
        self.get(tag).is_some()
    }

    /// The elements in tag order.
    pub fn iter(&self) -> std::slice::Iter<'_, Element> {
        self.elements.iter()
    }

    /// Number of elements (not counting those inside sequences).
    pub fn len(&self) -> usize {
        self.elements.len()
    }

    /// Whether the data set has no element.
    pub fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }

    /// The character set text values are decoded with.
    pub fn charset(&self) -> &SpecificCharacterSet {
        &self.charset
    }

    /// Whether binary values are big endian (Explicit VR Big Endian; items of
    /// a UN sequence are always little endian, PS3.5 §6.2.2).
    pub fn is_big_endian(&self) -> bool {
        self.big_endian
    }

    /// The raw bytes of an element that is neither a sequence nor fragments.
    pub fn bytes(&self, tag: u32) -> Option<&[u8]> {
        self.get(tag).and_then(Element::bytes)
    }

    /// The items of a sequence.
    pub fn sequence(&self, tag: u32) -> Option<&[DataSet]> {
        self.get(tag).and_then(Element::items)
    }

    /// A string value decoded to Unicode (SH, LO, ST, LT, UT, UC and PN with
    /// this data set's Specific Character Set, other string VRs in the
    /// default repertoire), all values kept with their `\` separators,
    /// padding trimmed: trailing spaces and NULs, and leading spaces except
    /// in ST, LT and UT. `None` if absent, empty, or not a string VR.
    pub fn string(&self, tag: u32) -> Option<String> {
        let element = self.get(tag)?;
        let bytes = element.bytes()?;
        let vr = element.effective_vr();
        if !is_string_vr(vr) {
            return None;
        }
        let decoded = self.charset.decode(bytes, vr);
        let trimmed = trim(&decoded, vr);
        (!trimmed.is_empty()).then(|| trimmed.to_owned())
    }

    /// The values of a multi-valued string, split on `\` after decoding
    /// (so that `\` bytes inside multi-byte characters do not split), each
    /// trimmed as in [`DataSet::string`]. Empty values are kept (a leading
    /// empty value is meaningful in (0008,0005)); an absent or empty
    /// element gives no values. ST, LT, UT and UR have a single value.
    pub fn strings(&self, tag: u32) -> Vec<String> {
        let Some(element) = self.get(tag) else {
            return Vec::new();
        };
        let Some(bytes) = element.bytes() else {
            return Vec::new();
        };
        let vr = element.effective_vr();
        if !is_string_vr(vr) {
            return Vec::new();
        }
        let decoded = self.charset.decode(bytes, vr);
        if trim(&decoded, vr).is_empty() {
            return Vec::new();
        }
        if is_single_valued_text(vr) {
            return vec![trim(&decoded, vr).to_owned()];
        }
        decoded
            .split('\\')
            .map(|v| trim(v, vr).to_owned())
            .collect()
    }

    /// The first value of a UI element, without padding; `None` if absent
    /// or empty.
    pub fn uid(&self, tag: u32) -> Option<String> {
        let bytes = self.bytes(tag)?;
        let text = decode_default(bytes);
        let first = text.split('\\').next()?;
        let first = first.trim_matches([' ', '\0']);
        (!first.is_empty()).then(|| first.to_owned())
    }

    /// The first value as `u16` (US, SS, UL, SL, SV, UV, IS, DS, …), if it
    /// is an integer in range.
    pub fn u16(&self, tag: u32) -> Option<u16> {
        self.first_i64(tag).and_then(|v| u16::try_from(v).ok())
    }

    /// The first value as `u32`, if it is an integer in range.
    pub fn u32(&self, tag: u32) -> Option<u32> {
        self.first_i64(tag).and_then(|v| u32::try_from(v).ok())
    }

    /// The first value as `i32`, if it is an integer in range (IS values
    /// such as `"+12"` or `" 3 "` included).
    pub fn i32(&self, tag: u32) -> Option<i32> {
        self.first_i64(tag).and_then(|v| i32::try_from(v).ok())
    }

    /// Every value as `f64`: DS and IS strings, FL/FD/OF/OD floats, and the
    /// binary integer VRs. Values that do not parse are skipped.
    pub fn f64_values(&self, tag: u32) -> Vec<f64> {
        self.numbers(tag, usize::MAX)
            .into_iter()
            .map(Num::as_f64)
            .collect()
    }

    fn first_i64(&self, tag: u32) -> Option<i64> {
        self.numbers(tag, 1).first().and_then(|n| n.as_i64())
    }

    /// Up to `max` numeric values of an element.
    fn numbers(&self, tag: u32, max: usize) -> Vec<Num> {
        let Some(element) = self.get(tag) else {
            return Vec::new();
        };
        let Some(bytes) = element.bytes() else {
            return Vec::new();
        };
        let be = self.big_endian;
        fn take<const N: usize>(bytes: &[u8], max: usize, f: impl Fn([u8; N]) -> Num) -> Vec<Num> {
            bytes
                .chunks_exact(N)
                .take(max)
                .filter_map(|c| <[u8; N]>::try_from(c).ok())
                .map(f)
                .collect()
        }
        macro_rules! num {
            ($t:ty, $variant:ident, $conv:ty) => {
                take(bytes, max, |b| {
                    let v = if be {
                        <$t>::from_be_bytes(b)
                    } else {
                        <$t>::from_le_bytes(b)
                    };
                    Num::$variant(<$conv>::from(v))
                })
            };
        }
        match &element.effective_vr() {
            b"US" => num!(u16, Int, i64),
            b"SS" => num!(i16, Int, i64),
            b"UL" => num!(u32, Int, i64),
            b"SL" => num!(i32, Int, i64),
            b"SV" => num!(i64, Int, i64),
            b"UV" => take(bytes, max, |b| {
                let v = if be {
                    u64::from_be_bytes(b)
                } else {
                    u64::from_le_bytes(b)
                };
                i64::try_from(v).map_or(Num::Float(v as f64), Num::Int)
            }),
            b"FL" | b"OF" => num!(f32, Float, f64),
            b"FD" | b"OD" => num!(f64, Float, f64),
            vr if is_string_vr(*vr) => decode_default(bytes)
                .split('\\')
                .take(max)
                .filter_map(parse_num)
                .collect(),
            _ => Vec::new(),
        }
    }
}

impl<'a> IntoIterator for &'a DataSet {
    type Item = &'a Element;
    type IntoIter = std::slice::Iter<'a, Element>;

    fn into_iter(self) -> Self::IntoIter {
        self.elements.iter()
    }
}
