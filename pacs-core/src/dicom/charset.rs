//! Specific Character Set (0008,0005): turning the bytes of text values into
//! Unicode (PS3.5 §6.1, PS3.3 §C.12.1.1.2).
//!
//! Only the VRs SH, LO, ST, LT, UT, UC and PN are affected by the Specific
//! Character Set (PS3.5 §6.1.2.3); every other string VR uses the default
//! repertoire ([`decode_default`]).
//!
//! Three families of character sets exist:
//!
//! * single-byte sets without code extensions (`ISO_IR 100`, `ISO_IR 144`, …):
//!   bytes below 0x80 are ASCII (G0), bytes from 0xA0 are the upper half of
//!   an ISO 8859 set (G1);
//! * the same sets with ISO 2022 code extensions (`ISO 2022 IR 100`,
//!   `ISO 2022 IR 87`, …, PS3.5 §6.1.2.5): escape sequences switch the G0 and
//!   G1 code elements within a value; value 1 of (0008,0005) is the set active
//!   at the start of every value (empty means the default repertoire) and the
//!   active sets go back to it at each control character, at `\` between
//!   values, and at `^` and `=` in PN (PS3.5 §6.1.2.5.3);
//! * sets without code extensions that are multi-byte throughout: `ISO_IR 192`
//!   (UTF-8), `GB18030` and `GBK`.
//!
//! The decoder honours every escape sequence of PS3.3 Table C.12-3/C.12-4 it
//! meets, whether or not (0008,0005) declared it, and never fails: bytes it
//! cannot map become U+FFFD. An unknown defined term is decoded as
//! `ISO_IR 100` (Latin-1) and reported so the caller can log it.

use encoding_rs::Encoding;
use std::sync::OnceLock;

const ESC: u8 = 0x1B;

/// The single-byte ISO 8859 sets (and TIS 620) that can be the G1 code element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Single {
    Latin2,
    Latin3,
    Latin4,
    Cyrillic,
    Arabic,
    Greek,
    Hebrew,
    Latin5,
    Thai,
}

const SINGLE_COUNT: usize = 9;

/// Upper halves (0xA0..=0xFF) of the single-byte sets, built once from
/// encoding_rs.
static TABLES: [OnceLock<[char; 96]>; SINGLE_COUNT] = [const { OnceLock::new() }; SINGLE_COUNT];

impl Single {
    fn index(self) -> usize {
        self as usize
    }

    fn encoding(self) -> &'static Encoding {
        match self {
            Single::Latin2 => encoding_rs::ISO_8859_2,
            Single::Latin3 => encoding_rs::ISO_8859_3,
            Single::Latin4 => encoding_rs::ISO_8859_4,
            Single::Cyrillic => encoding_rs::ISO_8859_5,
            Single::Arabic => encoding_rs::ISO_8859_6,
            Single::Greek => encoding_rs::ISO_8859_7,
            Single::Hebrew => encoding_rs::ISO_8859_8,
            // windows-1254 and windows-874 agree with ISO 8859-9 and TIS 620
            // on 0xA0..=0xFF, the only range we look up.
            Single::Latin5 => encoding_rs::WINDOWS_1254,
            Single::Thai => encoding_rs::WINDOWS_874,
        }
    }

    fn table(self) -> &'static [char; 96] {
        let cell = &TABLES[self.index()];
        cell.get_or_init(|| {
            let mut table = ['\u{FFFD}'; 96];
            for (slot, byte) in table.iter_mut().zip(0xA0u8..=0xFF) {
                let input = [byte];
                let (s, _) = self.encoding().decode_without_bom_handling(&input);
                *slot = s.chars().next().unwrap_or('\u{FFFD}');
            }
            table
        })
    }

    fn decode(self, byte: u8) -> char {
        if byte >= 0xA0 {
            self.table()[usize::from(byte - 0xA0)]
        } else {
            // C1 control characters (0x80..=0x9F) are the same in every
            // ISO 8859 set.
            char::from(byte)
        }
    }
}

/// What the G0 code element (bytes 0x21..=0x7E) currently means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum G0 {
    /// ISO-IR 6, ASCII.
    Ascii,
    /// ISO-IR 14, JIS X 0201 Romaji (ASCII except ¥ and ‾, read as ASCII so
    /// the value delimiter 5CH stays a delimiter).
    JisRoman,
    /// JIS X 0201 Katakana invoked into G0 (7-bit form, `ESC ( I`).
    Katakana,
    /// ISO-IR 87, JIS X 0208, two bytes per character.
    JisX0208,
    /// ISO-IR 159, JIS X 0212, two bytes per character.
    JisX0212,
}

/// What the G1 code element (bytes 0xA0..=0xFF) currently means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum G1 {
    /// Nothing designated (default repertoire); stray bytes read as Latin-1.
    None,
    /// ISO-IR 100, ISO 8859-1.
    Latin1,
    Single(Single),
    /// ISO-IR 13, JIS X 0201 Katakana.
    Katakana,
    /// ISO-IR 149, KS X 1001, two bytes per character (as in EUC-KR).
    KsX1001,
    /// ISO-IR 58, GB 2312, two bytes per character (as in EUC-CN).
    Gb2312,
}

/// Multi-byte sets used without code extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Whole {
    Utf8,
    Gb18030,
    Gbk,
}

/// A resolved Specific Character Set (0008,0005): how to decode the text
/// values of one data set. Cheap to copy; nested items inherit their
/// parent's unless they carry their own (0008,0005).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpecificCharacterSet {
    whole: Option<Whole>,
    g0: G0,
    g1: G1,
}

impl Default for SpecificCharacterSet {
    /// The default repertoire, ISO-IR 6 (PS3.5 §6.1.2.1).
    fn default() -> Self {
        SpecificCharacterSet {
            whole: None,
            g0: G0::Ascii,
            g1: G1::None,
        }
    }
}

/// What one defined term of (0008,0005) means.
enum Term {
    Initial(G0, G1),
    Whole(Whole),
    /// A code element that may only be reached through an escape sequence
    /// (JIS X 0208 / 0212 are G0 sets and cannot be the initial set).
    ExtensionOnly,
    Unknown,
}

fn classify(term: &str) -> Term {
    // Tolerate the common misspellings: case, and spaces, '_' or '-' in the
    // wrong places ("ISO_IR100", "ISO-IR 100", "iso 2022 ir 87").
    let key: String = term
        .chars()
        .filter(|c| !matches!(c, ' ' | '_' | '-'))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let ir = key
        .strip_prefix("ISO2022IR")
        .or_else(|| key.strip_prefix("ISOIR"));
    if let Some(number) = ir {
        let single = |s| Term::Initial(G0::Ascii, G1::Single(s));
        return match number {
            "6" => Term::Initial(G0::Ascii, G1::None),
            "100" => Term::Initial(G0::Ascii, G1::Latin1),
            "101" => single(Single::Latin2),
            "109" => single(Single::Latin3),
            "110" => single(Single::Latin4),
            "144" => single(Single::Cyrillic),
            "127" => single(Single::Arabic),
            "126" => single(Single::Greek),
            "138" => single(Single::Hebrew),
            "148" => single(Single::Latin5),
            "166" => single(Single::Thai),
            "13" => Term::Initial(G0::JisRoman, G1::Katakana),
            "87" | "159" => Term::ExtensionOnly,
            "149" => Term::Initial(G0::Ascii, G1::KsX1001),
            "58" => Term::Initial(G0::Ascii, G1::Gb2312),
            "192" => Term::Whole(Whole::Utf8),
            _ => Term::Unknown,
        };
    }
    match key.as_str() {
        "" => Term::Initial(G0::Ascii, G1::None),
        "GB18030" => Term::Whole(Whole::Gb18030),
        "GBK" => Term::Whole(Whole::Gbk),
        "UTF8" => Term::Whole(Whole::Utf8),
        "GB2312" => Term::Initial(G0::Ascii, G1::Gb2312),
        _ => Term::Unknown,
    }
}

impl SpecificCharacterSet {
    /// The set described by the (already split) values of (0008,0005).
    ///
    /// Returns the set and the defined terms that were not recognised; an
    /// unrecognised value 1 makes the set `ISO_IR 100` (Latin-1), an
    /// unrecognised later value is ignored (its escape sequence, if any, is
    /// still honoured by the decoder).
    pub fn from_terms<S: AsRef<str>>(terms: &[S]) -> (SpecificCharacterSet, Vec<String>) {
        let mut unknown = Vec::new();
        let mut set = SpecificCharacterSet::default();
        for (i, term) in terms.iter().enumerate() {
            let term = term.as_ref().trim_matches(|c: char| c == ' ' || c == '\0');
            match classify(term) {
                Term::Initial(g0, g1) => {
                    if i == 0 {
                        set.g0 = g0;
                        set.g1 = g1;
                    }
                }
                Term::Whole(w) => {
                    if i == 0 {
                        set.whole = Some(w);
                    }
                }
                Term::ExtensionOnly => {}
                Term::Unknown => {
                    if i == 0 {
                        set.g1 = G1::Latin1;
                    }
                    unknown.push(term.to_owned());
                }
            }
        }
        (set, unknown)
    }

    /// The set described by the raw value of (0008,0005) (a CS value,
    /// backslash-separated, default repertoire).
    pub fn from_value(value: &[u8]) -> (SpecificCharacterSet, Vec<String>) {
        let text = decode_default(value);
        let terms: Vec<&str> = text.split('\\').collect();
        Self::from_terms(&terms)
    }

    /// Whether this is the default repertoire (no (0008,0005), or empty).
    pub fn is_default(&self) -> bool {
        *self == SpecificCharacterSet::default()
    }

    /// Decodes one element value (all its values, backslashes included) to
    /// Unicode. Text VRs (SH, LO, ST, LT, UT, UC, PN) use this set; other
    /// VRs use the default repertoire. Padding is not trimmed here.
    pub fn decode(&self, bytes: &[u8], vr: [u8; 2]) -> String {
        if !is_text_vr(vr) {
            return decode_default(bytes);
        }
        // Characters at which the active sets revert to value 1
        // (PS3.5 §6.1.2.5.3), besides the control characters.
        let delimiters: &[u8] = match &vr {
            b"PN" => b"^=\\",
            b"ST" | b"LT" | b"UT" => b"",
            _ => b"\\",
        };
        match self.whole {
            Some(Whole::Utf8) => String::from_utf8_lossy(bytes).into_owned(),
            Some(Whole::Gb18030) => decode_with(encoding_rs::GB18030, bytes),
            Some(Whole::Gbk) => decode_with(encoding_rs::GBK, bytes),
            None => {
                if self.is_default() && !bytes.is_ascii() && !bytes.contains(&ESC) {
                    // Bytes outside the declared repertoire: real-world files
                    // that forget (0008,0005) are mostly UTF-8 or Latin-1.
                    return decode_default(bytes);
                }
                self.decode_iso2022(bytes, delimiters)
            }
        }
    }

    fn decode_iso2022(&self, bytes: &[u8], delimiters: &[u8]) -> String {
        let mut out = String::with_capacity(bytes.len());
        let mut run = Run::default();
        let (mut g0, mut g1) = (self.g0, self.g1);
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            if b == ESC {
                run.flush(&mut out);
                // ESC, intermediate bytes 0x20..=0x2F, final byte 0x30..=0x7E
                // (ISO 2022 §13.1).
                let mut j = i + 1;
                while bytes.get(j).is_some_and(|c| (0x20..=0x2F).contains(c)) {
                    j += 1;
                }
                match bytes.get(j) {
                    Some(&fin) if (0x30..=0x7E).contains(&fin) => {
                        let intermediates = bytes.get(i + 1..j).unwrap_or_default();
                        designate(intermediates, fin, &mut g0, &mut g1);
                        i = j + 1;
                    }
                    _ => {
                        // A broken escape sequence: drop the ESC alone.
                        i += 1;
                    }
                }
                continue;
            }
            if b >= 0x80 {
                match g1 {
                    G1::KsX1001 => run.push(encoding_rs::EUC_KR, &[b], &mut out),
                    G1::Gb2312 => run.push(encoding_rs::GBK, &[b], &mut out),
                    other => {
                        run.flush(&mut out);
                        out.push(decode_g1_single(other, b));
                    }
                }
                i += 1;
                continue;
            }
            if matches!(g0, G0::JisX0208 | G0::JisX0212) && (0x21..=0x7E).contains(&b) {
                match bytes.get(i + 1) {
                    Some(&b2) if (0x21..=0x7E).contains(&b2) => {
                        // JIS X 0208 is EUC-JP with the high bits set; JIS X
                        // 0212 is the same behind the SS3 byte 0x8F.
                        if g0 == G0::JisX0212 {
                            run.push(encoding_rs::EUC_JP, &[0x8F, b | 0x80, b2 | 0x80], &mut out);
                        } else {
                            run.push(encoding_rs::EUC_JP, &[b | 0x80, b2 | 0x80], &mut out);
                        }
                        i += 2;
                    }
                    _ => {
                        run.flush(&mut out);
                        out.push('\u{FFFD}');
                        i += 1;
                    }
                }
                continue;
            }
            run.flush(&mut out);
            let c = match g0 {
                G0::Katakana if (0x21..=0x5F).contains(&b) => katakana(u32::from(b - 0x21)),
                _ => char::from(b),
            };
            out.push(c);
            if b < 0x20 || delimiters.contains(&b) {
                g0 = self.g0;
                g1 = self.g1;
            }
            i += 1;
        }
        run.flush(&mut out);
        out
    }
}

/// A run of multi-byte code element bytes, decoded together.
#[derive(Default)]
struct Run {
    encoding: Option<&'static Encoding>,
    bytes: Vec<u8>,
}

impl Run {
    fn push(&mut self, encoding: &'static Encoding, bytes: &[u8], out: &mut String) {
        if self.encoding != Some(encoding) {
            self.flush(out);
            self.encoding = Some(encoding);
        }
        self.bytes.extend_from_slice(bytes);
    }

    fn flush(&mut self, out: &mut String) {
        if let Some(encoding) = self.encoding.take() {
            let (s, _) = encoding.decode_without_bom_handling(&self.bytes);
            out.push_str(&s);
        }
        self.bytes.clear();
    }
}

/// Applies the escape sequence `ESC <intermediates> <fin>` (PS3.3 Tables
/// C.12-3 and C.12-4). Unknown sequences leave the state as it was.
fn designate(intermediates: &[u8], fin: u8, g0: &mut G0, g1: &mut G1) {
    match (intermediates, fin) {
        (b"(", b'B') => *g0 = G0::Ascii,
        (b"(", b'J') => *g0 = G0::JisRoman,
        (b"(", b'I') => *g0 = G0::Katakana,
        (b")", b'I') => *g1 = G1::Katakana,
        // ESC $ @ is the 1978 edition of JIS X 0208; ESC $ ( B the long form.
        (b"$", b'B') | (b"$", b'@') | (b"$(", b'B') => *g0 = G0::JisX0208,
        (b"$(", b'D') => *g0 = G0::JisX0212,
        (b"$)", b'C') => *g1 = G1::KsX1001,
        (b"$)", b'A') => *g1 = G1::Gb2312,
        (b"-", f) => {
            let set = match f {
                b'A' => Some(G1::Latin1),
                b'B' => Some(G1::Single(Single::Latin2)),
                b'C' => Some(G1::Single(Single::Latin3)),
                b'D' => Some(G1::Single(Single::Latin4)),
                b'L' => Some(G1::Single(Single::Cyrillic)),
                b'G' => Some(G1::Single(Single::Arabic)),
                b'F' => Some(G1::Single(Single::Greek)),
                b'H' => Some(G1::Single(Single::Hebrew)),
                b'M' => Some(G1::Single(Single::Latin5)),
                b'T' => Some(G1::Single(Single::Thai)),
                _ => None,
            };
            if let Some(set) = set {
                *g1 = set;
            }
        }
        _ => {}
    }
}

fn katakana(offset: u32) -> char {
    // JIS X 0201 Katakana 0x21..=0x5F (0xA1..=0xDF in G1) is U+FF61..=U+FF9F.
    char::from_u32(0xFF61 + offset).unwrap_or('\u{FFFD}')
}

fn decode_g1_single(g1: G1, b: u8) -> char {
    match g1 {
        G1::None | G1::Latin1 => char::from(b),
        G1::Single(s) => s.decode(b),
        G1::Katakana if (0xA1..=0xDF).contains(&b) => katakana(u32::from(b - 0xA1)),
        G1::Katakana | G1::KsX1001 | G1::Gb2312 => '\u{FFFD}',
    }
}

fn decode_with(encoding: &'static Encoding, bytes: &[u8]) -> String {
    let (s, _) = encoding.decode_without_bom_handling(bytes);
    s.into_owned()
}

/// Decodes a value in the default repertoire (PS3.5 §6.1.2.1). Bytes outside
/// it are read as UTF-8 when they form valid UTF-8, else as ISO 8859-1, so
/// no byte is lost.
pub fn decode_default(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
    }
}

/// Whether (0008,0005) applies to values of this VR (PS3.5 §6.1.2.3).
pub fn is_text_vr(vr: [u8; 2]) -> bool {
    matches!(&vr, b"SH" | b"LO" | b"ST" | b"LT" | b"UT" | b"UC" | b"PN")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PN: [u8; 2] = *b"PN";
    const LO: [u8; 2] = *b"LO";

    fn set(terms: &[&str]) -> SpecificCharacterSet {
        let (set, unknown) = SpecificCharacterSet::from_terms(terms);
        assert!(unknown.is_empty(), "{unknown:?}");
        set
    }

    fn encode(encoding: &'static Encoding, s: &str) -> Vec<u8> {
        let (bytes, _, unmappable) = encoding.encode(s);
        assert!(!unmappable, "{s} in {}", encoding.name());
        bytes.into_owned()
    }

    /// JIS X 0208 bytes of `s`: its EUC-JP form with the high bits cleared.
    fn jis(s: &str) -> Vec<u8> {
        encode(encoding_rs::EUC_JP, s)
            .iter()
            .map(|b| b & 0x7F)
            .collect()
    }

    /// `ESC $ B <jis> ESC ( <back>`: a JIS X 0208 run in G0 (PS3.5 H.3.1).
    fn jis_run(s: &str, back: u8) -> Vec<u8> {
        let mut v = b"\x1b$B".to_vec();
        v.extend(jis(s));
        v.extend([ESC, b'(', back]);
        v
    }

    #[test]
    fn utf8() {
        let s = set(&["ISO_IR 192"]);
        let name = "Nguyễn^Văn An";
        assert_eq!(s.decode(name.as_bytes(), PN), name);
        // Invalid UTF-8 does not fail the value.
        assert_eq!(s.decode(b"a\xffb", PN), "a\u{FFFD}b");
    }

    #[test]
    fn latin1_french_and_german() {
        let s = set(&["ISO_IR 100"]);
        assert_eq!(s.decode(b"Buc^J\xe9r\xf4me", PN), "Buc^Jérôme");
        assert_eq!(s.decode(b"\xc4neas^R\xfcdiger", PN), "Äneas^Rüdiger");
    }

    #[test]
    fn single_byte_sets() {
        let cases: &[(&str, &'static Encoding, &str)] = &[
            ("ISO_IR 126", encoding_rs::ISO_8859_7, "Διονυσιος"),
            ("ISO_IR 144", encoding_rs::ISO_8859_5, "Люкceмбypг"),
            ("ISO_IR 138", encoding_rs::ISO_8859_8, "שרון^דבורה"),
            ("ISO_IR 127", encoding_rs::ISO_8859_6, "قباني^لنزار"),
            ("ISO_IR 166", encoding_rs::WINDOWS_874, "ภาษาไทย^ทดสอบ"),
            ("ISO_IR 101", encoding_rs::ISO_8859_2, "Dvořák^Łukasz"),
            ("ISO_IR 148", encoding_rs::WINDOWS_1254, "Öztürk^Şükrü"),
            ("ISO_IR 109", encoding_rs::ISO_8859_3, "Ġużeppi^Ħal"),
            ("ISO_IR 110", encoding_rs::ISO_8859_4, "Ģirts^Ļena"),
        ];
        for (term, encoding, text) in cases {
            let bytes = encode(encoding, text);
            assert!(!bytes.is_ascii());
            assert_eq!(set(&[term]).decode(&bytes, PN), *text, "{term}");
        }
    }

    #[test]
    fn iso2022_single_byte_with_escape() {
        // ISO 2022 IR 100 with a switch to Cyrillic and back at '^'.
        let s = set(&["ISO 2022 IR 100", "ISO 2022 IR 144"]);
        let mut bytes = b"J\xe9r\xf4me^".to_vec();
        bytes.extend(b"\x1b-L");
        bytes.extend(encode(encoding_rs::ISO_8859_5, "Люк"));
        bytes.extend(b"^");
        bytes.extend(b"\xe9");
        assert_eq!(s.decode(&bytes, PN), "Jérôme^Люк^é");
    }

    #[test]
    fn japanese_h31() {
        // PS3.5 H.3.1: (0008,0005) "\ISO 2022 IR 87".
        let s = set(&["", "ISO 2022 IR 87"]);
        let mut v = b"Yamada^Tarou=".to_vec();
        v.extend(jis_run("山田", b'B'));
        v.push(b'^');
        v.extend(jis_run("太郎", b'B'));
        v.push(b'=');
        v.extend(jis_run("やまだ", b'B'));
        v.push(b'^');
        v.extend(jis_run("たろう", b'B'));
        assert_eq!(s.decode(&v, PN), "Yamada^Tarou=山田^太郎=やまだ^たろう");
    }

    #[test]
    fn japanese_h32_katakana_initial() {
        // PS3.5 H.3.2: "ISO 2022 IR 13\ISO 2022 IR 87"; half-width katakana
        // in G1 from the start, JIS X 0208 runs ending with ESC ( J.
        let s = set(&["ISO 2022 IR 13", "ISO 2022 IR 87"]);
        let kana = |t: &str| -> Vec<u8> {
            t.chars()
                .map(|c| u8::try_from(c as u32 - 0xFF61 + 0xA1).unwrap_or(0))
                .collect()
        };
        let mut v = kana("ﾔﾏﾀﾞ");
        v.push(b'^');
        v.extend(kana("ﾀﾛｳ"));
        v.push(b'=');
        v.extend(jis_run("山田", b'J'));
        v.push(b'^');
        v.extend(jis_run("太郎", b'J'));
        v.push(b'=');
        v.extend(jis_run("やまだ", b'J'));
        v.push(b'^');
        v.extend(jis_run("たろう", b'J'));
        assert_eq!(s.decode(&v, PN), "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう");
    }

    #[test]
    fn japanese_jis_x_0212() {
        let s = set(&["", "ISO 2022 IR 87", "ISO 2022 IR 159"]);
        let expected = encoding_rs::EUC_JP
            .decode_without_bom_handling(&[0x8F, 0xB0, 0xA1])
            .0;
        assert!(!expected.contains('\u{FFFD}'));
        let v = b"A\x1b$(D\x30\x21\x1b(BZ";
        assert_eq!(s.decode(v, LO), format!("A{expected}Z"));
    }

    #[test]
    fn jis_second_byte_that_looks_like_a_delimiter() {
        // "ま" is 0x24 0x5E in JIS X 0208: the 0x5E is not a '^'.
        let s = set(&["", "ISO 2022 IR 87"]);
        assert_eq!(jis("ま"), vec![0x24, 0x5E]);
        assert_eq!(s.decode(&jis_run("まま", b'B'), PN), "まま");
    }

    #[test]
    fn korean_i2() {
        // PS3.5 I.2: "\ISO 2022 IR 149", ESC $ ) C before each KS X 1001 run.
        let s = set(&["", "ISO 2022 IR 149"]);
        let ks = |t: &str| {
            let mut v = b"\x1b$)C".to_vec();
            v.extend(encode(encoding_rs::EUC_KR, t));
            v
        };
        let mut v = b"Hong^Gildong=".to_vec();
        v.extend(ks("洪"));
        v.push(b'^');
        v.extend(ks("吉洞"));
        v.push(b'=');
        v.extend(ks("홍"));
        v.push(b'^');
        v.extend(ks("길동"));
        assert_eq!(s.decode(&v, PN), "Hong^Gildong=洪^吉洞=홍^길동");
    }

    #[test]
    fn korean_without_escape_as_initial_g1() {
        let s = set(&["ISO 2022 IR 149"]);
        let v = encode(encoding_rs::EUC_KR, "김희중");
        assert_eq!(s.decode(&v, PN), "김희중");
    }

    #[test]
    fn chinese_gb18030_j3() {
        // PS3.5 J.3: "GB18030".
        let s = set(&["GB18030"]);
        let mut v = b"Wang^XiaoDong=".to_vec();
        v.extend(encode(encoding_rs::GB18030, "王^小东="));
        assert_eq!(s.decode(&v, PN), "Wang^XiaoDong=王^小东=");
        let s = set(&["GBK"]);
        assert_eq!(s.decode(&v, PN), "Wang^XiaoDong=王^小东=");
    }

    #[test]
    fn chinese_gb2312_iso2022_ir58() {
        // PS3.5 J.2: "\ISO 2022 IR 58", ESC $ ) A before GB 2312 runs.
        let s = set(&["", "ISO 2022 IR 58"]);
        let gb = |t: &str| {
            let mut v = b"\x1b$)A".to_vec();
            v.extend(encode(encoding_rs::GBK, t));
            v
        };
        let mut v = b"Zhang^XiaoDong=".to_vec();
        v.extend(gb("张"));
        v.push(b'^');
        v.extend(gb("小东"));
        v.push(b'=');
        assert_eq!(s.decode(&v, PN), "Zhang^XiaoDong=张^小东=");
    }

    #[test]
    fn unknown_term_is_latin1_and_reported() {
        let (s, unknown) = SpecificCharacterSet::from_terms(&["ISO_IR 999"]);
        assert_eq!(unknown, vec!["ISO_IR 999".to_owned()]);
        assert_eq!(s.decode(b"J\xe9r\xf4me", PN), "Jérôme");
        let (_, unknown) = SpecificCharacterSet::from_terms(&["", "ISO 2022 IR 87", "KLINGON"]);
        assert_eq!(unknown, vec!["KLINGON".to_owned()]);
    }

    #[test]
    fn misspelled_terms_are_tolerated() {
        assert_eq!(set(&["ISO_IR100"]), set(&["ISO_IR 100"]));
        assert_eq!(set(&["iso-ir 192"]), set(&["ISO_IR 192"]));
        assert_eq!(set(&["ISO 2022 IR 6"]), SpecificCharacterSet::default());
    }

    #[test]
    fn from_value_splits_on_backslash() {
        let (s, unknown) = SpecificCharacterSet::from_value(b"\\ISO 2022 IR 87 ");
        assert!(unknown.is_empty());
        assert_eq!(s, set(&["", "ISO 2022 IR 87"]));
    }

    #[test]
    fn default_repertoire_fallbacks() {
        let s = SpecificCharacterSet::default();
        assert_eq!(s.decode(b"Smith^John", PN), "Smith^John");
        assert_eq!(s.decode("Jérôme".as_bytes(), PN), "Jérôme");
        assert_eq!(s.decode(b"J\xe9r\xf4me", PN), "Jérôme");
        // Non-text VRs ignore the set.
        let ru = set(&["ISO_IR 144"]);
        assert_eq!(ru.decode(b"ORIGINAL\\PRIMARY", *b"CS"), "ORIGINAL\\PRIMARY");
    }

    #[test]
    fn never_panics_on_odd_bytes() {
        let s = set(&["ISO 2022 IR 13", "ISO 2022 IR 87", "ISO 2022 IR 149"]);
        for v in [
            &b"\x1b"[..],
            b"\x1b$",
            b"\x1b$B\x30",
            b"\x1b$B\x30\x1b(B",
            b"\x1b$)C\xb0",
            b"\xff\xfe\x80",
            b"\x1b\x1b\x1b(",
        ] {
            let _ = s.decode(v, PN);
        }
    }
}
