//! HL7 v2 messages in ER7 ("pipe and hat") encoding: segments, fields,
//! repetitions, components, subcomponents and escape sequences (HL7 v2.5.1
//! chapter 2, 2.5 and 2.7), and the character set named by MSH-18.
//!
//! Parsing takes bytes and gives values, with no IO. Values are kept as
//! received and unescaped only when read ([`Segment::get`]), after they were
//! split at the delimiters, so an escaped delimiter never splits a value.

use std::fmt;

/// Why a message cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the message does not start with an MSH segment")]
    NoMsh,
    #[error("MSH-1/MSH-2 do not define the delimiters")]
    BadDelimiters,
    #[error("character set {0:?} (MSH-18) is not supported: use UNICODE UTF-8 or 8859/1")]
    Charset(String),
    #[error("the message is not valid {0}")]
    Encoding(&'static str),
}

/// The character sets of MSH-18 we read (HL7 table 0211).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// `UNICODE UTF-8` (also `UNICODE`).
    Utf8,
    /// `8859/1`, and the default: ASCII (a subset) when MSH-18 is empty.
    Latin1,
}

impl Charset {
    /// The charset named by MSH-18 (empty: the default, ASCII, read as
    /// ISO 8859-1 so stray 8-bit bytes are not lost).
    pub fn from_msh18(value: &str) -> Result<Charset, ParseError> {
        let first = value.split('~').next().unwrap_or("").trim();
        match first.to_ascii_uppercase().as_str() {
            "" | "ASCII" | "8859/1" => Ok(Charset::Latin1),
            "UNICODE UTF-8" | "UNICODE" | "UTF-8" => Ok(Charset::Utf8),
            _ => Err(ParseError::Charset(first.to_owned())),
        }
    }

    /// The MSH-18 value naming this charset.
    pub fn msh18(self) -> &'static str {
        match self {
            Charset::Utf8 => "UNICODE UTF-8",
            Charset::Latin1 => "8859/1",
        }
    }

    pub fn decode(self, bytes: &[u8]) -> Result<String, ParseError> {
        match self {
            Charset::Utf8 => String::from_utf8(bytes.to_vec())
                .map_err(|_| ParseError::Encoding("UTF-8 (MSH-18 says UNICODE UTF-8)")),
            Charset::Latin1 => Ok(bytes.iter().map(|&b| char::from(b)).collect()),
        }
    }

    /// Encodes `text`; characters Latin-1 cannot hold become `?`.
    pub fn encode(self, text: &str) -> Vec<u8> {
        match self {
            Charset::Utf8 => text.as_bytes().to_vec(),
            Charset::Latin1 => text
                .chars()
                .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
                .collect(),
        }
    }
}

/// The delimiters of a message (MSH-1 and MSH-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delimiters {
    pub field: char,
    pub component: char,
    pub repetition: char,
    pub escape: char,
    pub subcomponent: char,
}

impl Default for Delimiters {
    fn default() -> Self {
        Delimiters {
            field: '|',
            component: '^',
            repetition: '~',
            escape: '\\',
            subcomponent: '&',
        }
    }
}

impl Delimiters {
    /// Escapes the delimiters in `text` (HL7 v2.5.1 2.7.1).
    pub fn escape(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            let code = match c {
                c if c == self.escape => 'E',
                c if c == self.field => 'F',
                c if c == self.component => 'S',
                c if c == self.subcomponent => 'T',
                c if c == self.repetition => 'R',
                '\r' | '\n' => {
                    out.push(' ');
                    continue;
                }
                c => {
                    out.push(c);
                    continue;
                }
            };
            out.push(self.escape);
            out.push(code);
            out.push(self.escape);
        }
        out
    }

    /// Replaces escape sequences (HL7 v2.5.1 2.7): `\F\ \S\ \T\ \R\ \E\`,
    /// `\Xhh...\` (bytes in the message's character set); formatting
    /// escapes (`\H\`, `\N\`, `\.br\`…) are dropped; an unterminated escape
    /// is kept as it is.
    pub fn unescape(&self, text: &str, charset: Charset) -> String {
        if !text.contains(self.escape) {
            return text.to_owned();
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find(self.escape) {
            out.push_str(&rest[..start]);
            let after = &rest[start + self.escape.len_utf8()..];
            let Some(end) = after.find(self.escape) else {
                out.push_str(&rest[start..]);
                return out;
            };
            let seq = &after[..end];
            match seq {
                "F" => out.push(self.field),
                "S" => out.push(self.component),
                "T" => out.push(self.subcomponent),
                "R" => out.push(self.repetition),
                "E" => out.push(self.escape),
                s if s.starts_with('X') && s.len() % 2 == 1 => {
                    let bytes: Option<Vec<u8>> = (1..s.len())
                        .step_by(2)
                        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
                        .collect();
                    if let Some(t) = bytes.and_then(|b| charset.decode(&b).ok()) {
                        out.push_str(&t);
                    }
                }
                _ => {}
            }
            rest = &after[end + self.escape.len_utf8()..];
        }
        out.push_str(rest);
        out
    }
}

/// One segment: its name and its fields as received (escaped). Field `n`
/// is HL7's SEG-n; for MSH, field 1 is the field separator itself, so
/// MSH-n is `field(n)` there too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub name: String,
    fields: Vec<String>,
}

/// A parsed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub delimiters: Delimiters,
    pub charset: Charset,
    pub segments: Vec<Segment>,
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl Segment {
    /// Field `n` as received (escaped), `""` if absent.
    pub fn raw(&self, n: usize) -> &str {
        self.fields.get(n).map(String::as_str).unwrap_or("")
    }
}

impl Message {
    /// Parses an ER7 message (the content of one MLLP frame).
    pub fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
        let start = bytes
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(bytes.len());
        let bytes = &bytes[start..];
        if !bytes.starts_with(b"MSH") || bytes.len() < 8 {
            return Err(ParseError::NoMsh);
        }
        let field = bytes[3];
        let enc_end = bytes[4..]
            .iter()
            .position(|&b| b == field || b == b'\r' || b == b'\n')
            .map(|p| p + 4)
            .unwrap_or(bytes.len());
        let enc = &bytes[4..enc_end];
        if enc.len() < 4
            || !field.is_ascii_punctuation()
            || !enc.iter().all(u8::is_ascii_punctuation)
            || enc.contains(&field)
        {
            return Err(ParseError::BadDelimiters);
        }
        let delimiters = Delimiters {
            field: char::from(field),
            component: char::from(enc[0]),
            repetition: char::from(enc[1]),
            escape: char::from(enc[2]),
            subcomponent: char::from(enc[3]),
        };
        // MSH-18 is read from the bytes (the MSH segment is ASCII) before
        // the message is decoded with the charset it names.
        let msh_end = bytes
            .iter()
            .position(|&b| b == b'\r' || b == b'\n')
            .unwrap_or(bytes.len());
        let msh18 = bytes[..msh_end]
            .split(|&b| b == field)
            .nth(17)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        let charset = Charset::from_msh18(&msh18)?;
        let text = charset.decode(bytes)?;
        let segments = text
            .split(['\r', '\n'])
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                let mut fields: Vec<String> =
                    s.split(delimiters.field).map(str::to_owned).collect();
                let name = fields.first().cloned().unwrap_or_default();
                if name == "MSH" {
                    fields.insert(1, delimiters.field.to_string());
                }
                Segment { name, fields }
            })
            .collect();
        Ok(Message {
            delimiters,
            charset,
            segments,
        })
    }

    /// The first segment named `name`.
    pub fn segment(&self, name: &str) -> Option<&Segment> {
        self.segments.iter().find(|s| s.name == name)
    }

    /// MSH-n, component `c` (1-based), first repetition, unescaped.
    pub fn msh(&self, n: usize, c: usize) -> String {
        match self.segment("MSH") {
            Some(s) if n <= 2 => s.raw(n).to_owned(),
            Some(s) => self.get(s, n, 0, c, 1),
            None => String::new(),
        }
    }

    /// The repetitions of field `n` of `seg`, as received.
    pub fn repetitions<'a>(&self, seg: &'a Segment, n: usize) -> Vec<&'a str> {
        let raw = seg.raw(n);
        if raw.is_empty() {
            return Vec::new();
        }
        raw.split(self.delimiters.repetition).collect()
    }

    /// SEG-n, repetition `rep` (0-based), component `c` and subcomponent
    /// `s` (1-based), unescaped; `""` where absent. HL7's `""` (explicit
    /// null) reads as empty.
    pub fn get(&self, seg: &Segment, n: usize, rep: usize, c: usize, s: usize) -> String {
        let raw = self.repetitions(seg, n).get(rep).copied().unwrap_or("");
        self.part(raw, c, s)
    }

    /// Component `c`, subcomponent `s` (1-based) of one repetition.
    pub fn part(&self, repetition: &str, c: usize, s: usize) -> String {
        let v = repetition
            .split(self.delimiters.component)
            .nth(c.saturating_sub(1))
            .unwrap_or("")
            .split(self.delimiters.subcomponent)
            .nth(s.saturating_sub(1))
            .unwrap_or("");
        if v == "\"\"" {
            return String::new();
        }
        self.delimiters.unescape(v, self.charset).trim().to_owned()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn fields_components_repetitions_and_escapes() {
        let m = Message::parse(
            b"MSH|^~\\&|HIS|BV|PACS|BV|20261206083000||ORM^O01|MSG1|P|2.5.1\rPID|1||A1^^^BV~B2^^^CCCD||D\\S\\oe\\T\\x^J\\F\\n\\E\\y\\X41\\|\r",
        )
        .unwrap();
        assert_eq!(m.msh(9, 1), "ORM");
        assert_eq!(m.msh(9, 2), "O01");
        assert_eq!(m.msh(10, 1), "MSG1");
        assert_eq!(m.msh(1, 1), "|");
        let pid = m.segment("PID").unwrap();
        assert_eq!(m.repetitions(pid, 3).len(), 2);
        assert_eq!(m.get(pid, 3, 1, 1, 1), "B2");
        assert_eq!(m.get(pid, 3, 1, 4, 1), "CCCD");
        assert_eq!(m.get(pid, 5, 0, 1, 1), "D^oe&x");
        assert_eq!(m.get(pid, 5, 0, 2, 1), "J|n\\yA");
        assert_eq!(m.get(pid, 7, 0, 1, 1), "");
    }

    #[test]
    fn charsets_from_msh18() {
        let latin1 =
            b"MSH|^~\\&|A|B|C|D|2026||ORM^O01|1|P|2.5.1||||||8859/1\rPID|1||X||Nguy\xe9n\r";
        let m = Message::parse(latin1).unwrap();
        assert_eq!(m.charset, Charset::Latin1);
        assert_eq!(m.get(m.segment("PID").unwrap(), 5, 0, 1, 1), "Nguyén");
        let utf8 =
            "MSH|^~\\&|A|B|C|D|2026||ORM^O01|1|P|2.5.1||||||UNICODE UTF-8\rPID|1||X||Nguyễn\r";
        let m = Message::parse(utf8.as_bytes()).unwrap();
        assert_eq!(m.get(m.segment("PID").unwrap(), 5, 0, 1, 1), "Nguyễn");
        // UTF-8 declared, Latin-1 sent.
        let bad =
            b"MSH|^~\\&|A|B|C|D|2026||ORM^O01|1|P|2.5.1||||||UNICODE UTF-8\rPID|1||X||Nguy\xe9n\r";
        assert!(matches!(Message::parse(bad), Err(ParseError::Encoding(_))));
        let other = b"MSH|^~\\&|A|B|C|D|2026||ORM^O01|1|P|2.5.1||||||ISO IR87\r";
        assert!(matches!(Message::parse(other), Err(ParseError::Charset(_))));
        // \X..\ in the message's charset.
        let hex =
            "MSH|^~\\&|A|B|C|D|2026||ORM^O01|1|P|2.5.1||||||UNICODE UTF-8\rPID|1||X||\\XE1BB85\\\r";
        let m = Message::parse(hex.as_bytes()).unwrap();
        assert_eq!(m.get(m.segment("PID").unwrap(), 5, 0, 1, 1), "ễ");
    }

    #[test]
    fn malformed_messages() {
        assert_eq!(Message::parse(b"PID|1"), Err(ParseError::NoMsh));
        assert_eq!(Message::parse(b""), Err(ParseError::NoMsh));
        assert_eq!(
            Message::parse(b"MSHabcdefgh"),
            Err(ParseError::BadDelimiters)
        );
        assert_eq!(Message::parse(b"MSH|^~|"), Err(ParseError::NoMsh));
    }

    #[test]
    fn escape_round_trip() {
        let d = Delimiters::default();
        let text = "a|b^c&d~e\\f";
        assert_eq!(d.unescape(&d.escape(text), Charset::Utf8), text);
    }
}
