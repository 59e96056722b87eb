//! The command set codec (PS3.7 §6.3 and Annex E).
//!
//! A command set is a list of group 0000 elements, always encoded in
//! Implicit VR Little Endian whatever the presentation context's transfer
//! syntax (PS3.7 §6.3.1). Writing puts the elements in ascending tag order
//! with Command Group Length (0000,0000) first and correct. Reading is
//! tolerant of a missing or wrong group length (it is reported, not
//! trusted) and strict about everything that would make the command
//! ambiguous: elements outside group 0000, duplicates, undefined lengths,
//! values running past the end.

use std::collections::BTreeMap;

/// Tags of the command elements used by the services of this crate
/// (PS3.7 Annex E).
pub mod tags {
    pub const COMMAND_GROUP_LENGTH: u32 = 0x0000_0000;
    pub const AFFECTED_SOP_CLASS_UID: u32 = 0x0000_0002;
    pub const REQUESTED_SOP_CLASS_UID: u32 = 0x0000_0003;
    pub const COMMAND_FIELD: u32 = 0x0000_0100;
    pub const MESSAGE_ID: u32 = 0x0000_0110;
    pub const MESSAGE_ID_BEING_RESPONDED_TO: u32 = 0x0000_0120;
    pub const MOVE_DESTINATION: u32 = 0x0000_0600;
    pub const PRIORITY: u32 = 0x0000_0700;
    pub const COMMAND_DATA_SET_TYPE: u32 = 0x0000_0800;
    pub const STATUS: u32 = 0x0000_0900;
    pub const OFFENDING_ELEMENT: u32 = 0x0000_0901;
    pub const ERROR_COMMENT: u32 = 0x0000_0902;
    pub const ERROR_ID: u32 = 0x0000_0903;
    pub const AFFECTED_SOP_INSTANCE_UID: u32 = 0x0000_1000;
    pub const REQUESTED_SOP_INSTANCE_UID: u32 = 0x0000_1001;
    pub const EVENT_TYPE_ID: u32 = 0x0000_1002;
    pub const ACTION_TYPE_ID: u32 = 0x0000_1008;
    pub const NUMBER_OF_REMAINING_SUBOPERATIONS: u32 = 0x0000_1020;
    pub const NUMBER_OF_COMPLETED_SUBOPERATIONS: u32 = 0x0000_1021;
    pub const NUMBER_OF_FAILED_SUBOPERATIONS: u32 = 0x0000_1022;
    pub const NUMBER_OF_WARNING_SUBOPERATIONS: u32 = 0x0000_1023;
    pub const MOVE_ORIGINATOR_AE_TITLE: u32 = 0x0000_1030;
    pub const MOVE_ORIGINATOR_MESSAGE_ID: u32 = 0x0000_1031;
}

/// Largest Error Comment we write: LO holds 64 characters (PS3.5 §6.2).
pub const MAX_ERROR_COMMENT_LEN: usize = 64;

/// Why bytes are not a command set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandSetError {
    #[error("command set ends inside the element header at offset {offset}")]
    TruncatedHeader { offset: usize },
    #[error("command element ({:04X},{:04X}) declares {len} bytes but only {available} remain", .tag >> 16, .tag & 0xFFFF)]
    TruncatedValue {
        tag: u32,
        len: u64,
        available: usize,
    },
    #[error("command element ({:04X},{:04X}) has an undefined length", .tag >> 16, .tag & 0xFFFF)]
    UndefinedLength { tag: u32 },
    #[error("element ({:04X},{:04X}) is outside the command group 0000", .tag >> 16, .tag & 0xFFFF)]
    OutsideCommandGroup { tag: u32 },
    #[error("command element ({:04X},{:04X}) appears twice", .tag >> 16, .tag & 0xFFFF)]
    Duplicate { tag: u32 },
}

/// A command element that is missing or unreadable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error("command element ({:04X},{:04X}) is missing", .0 >> 16, .0 & 0xFFFF)]
    Missing(u32),
    #[error("command element ({:04X},{:04X}) has {len} bytes, expected {expected}", .tag >> 16, .tag & 0xFFFF)]
    BadLength {
        tag: u32,
        len: usize,
        expected: usize,
    },
    #[error("command element ({:04X},{:04X}) is not text in the default repertoire", .0 >> 16, .0 & 0xFFFF)]
    NotText(u32),
}

/// What the Command Group Length (0000,0000) of a decoded command said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupLength {
    /// Present and equal to the length of the elements after it.
    Consistent,
    /// Absent (tolerated).
    Missing,
    /// Present but wrong (tolerated; the elements were read to the end).
    Mismatch { declared: u64, actual: u64 },
}

/// A decoded or to-be-encoded command set: group 0000 elements by tag, each
/// holding its raw value bytes (padding included).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommandSet {
    elements: BTreeMap<u32, Vec<u8>>,
}

impl CommandSet {
    pub fn new() -> CommandSet {
        CommandSet::default()
    }

    /// Reads an Implicit VR Little Endian command set. The group length is
    /// checked but not used to delimit the set: the buffer is the set.
    pub fn decode(bytes: &[u8]) -> Result<(CommandSet, GroupLength), CommandSetError> {
        let mut elements = BTreeMap::new();
        let mut declared: Option<(u64, usize)> = None;
        let mut offset = 0usize;
        while offset < bytes.len() {
            let header = bytes
                .get(offset..offset + 8)
                .ok_or(CommandSetError::TruncatedHeader { offset })?;
            let group = u16::from_le_bytes([header[0], header[1]]);
            let element = u16::from_le_bytes([header[2], header[3]]);
            let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            let tag = (u32::from(group) << 16) | u32::from(element);
            if group != 0 {
                return Err(CommandSetError::OutsideCommandGroup { tag });
            }
            if len == u32::MAX {
                return Err(CommandSetError::UndefinedLength { tag });
            }
            let start = offset + 8;
            let available = bytes.len() - start;
            if len as usize > available {
                return Err(CommandSetError::TruncatedValue {
                    tag,
                    len: u64::from(len),
                    available,
                });
            }
            let value = &bytes[start..start + len as usize];
            offset = start + len as usize;
            if tag == tags::COMMAND_GROUP_LENGTH {
                if declared.is_some() {
                    return Err(CommandSetError::Duplicate { tag });
                }
                let n = match value {
                    [a, b, c, d] => u64::from(u32::from_le_bytes([*a, *b, *c, *d])),
                    _ => u64::MAX,
                };
                declared = Some((n, offset));
                continue;
            }
            if elements.insert(tag, value.to_vec()).is_some() {
                return Err(CommandSetError::Duplicate { tag });
            }
        }
        let group_length = match declared {
            None => GroupLength::Missing,
            Some((declared, after)) => {
                let actual = (bytes.len() - after) as u64;
                if declared == actual {
                    GroupLength::Consistent
                } else {
                    GroupLength::Mismatch { declared, actual }
                }
            }
        };
        Ok((CommandSet { elements }, group_length))
    }

    /// Writes the command set: (0000,0000) first with the byte count of the
    /// elements that follow, then every element in ascending tag order.
    pub fn encode(&self) -> Vec<u8> {
        let body_len: usize = self
            .elements
            .iter()
            .filter(|(tag, _)| **tag != tags::COMMAND_GROUP_LENGTH)
            .map(|(_, v)| 8 + v.len())
            .sum();
        let mut out = Vec::with_capacity(12 + body_len);
        push_element(
            &mut out,
            tags::COMMAND_GROUP_LENGTH,
            &(body_len as u32).to_le_bytes(),
        );
        for (tag, value) in &self.elements {
            if *tag != tags::COMMAND_GROUP_LENGTH {
                push_element(&mut out, *tag, value);
            }
        }
        out
    }

    /// Sets a US (unsigned short) element.
    pub fn set_us(&mut self, tag: u32, value: u16) {
        self.elements.insert(tag, value.to_le_bytes().to_vec());
    }

    /// Sets a UI element, NUL-padded to even length (PS3.5 §6.2).
    pub fn set_uid(&mut self, tag: u32, uid: &str) {
        let mut v = uid.as_bytes().to_vec();
        if v.len() % 2 == 1 {
            v.push(0);
        }
        self.elements.insert(tag, v);
    }

    /// Sets an AE, LO or other text element, space-padded to even length.
    pub fn set_text(&mut self, tag: u32, text: &str) {
        let mut v = text.as_bytes().to_vec();
        if v.len() % 2 == 1 {
            v.push(b' ');
        }
        self.elements.insert(tag, v);
    }

    /// Sets a raw value (the caller pads it).
    pub fn set_raw(&mut self, tag: u32, value: Vec<u8>) {
        self.elements.insert(tag, value);
    }

    pub fn remove(&mut self, tag: u32) -> Option<Vec<u8>> {
        self.elements.remove(&tag)
    }

    pub fn contains(&self, tag: u32) -> bool {
        self.elements.contains_key(&tag)
    }

    /// The raw value of an element.
    pub fn raw(&self, tag: u32) -> Option<&[u8]> {
        self.elements.get(&tag).map(Vec::as_slice)
    }

    /// A US element, `None` when absent.
    pub fn us_opt(&self, tag: u32) -> Result<Option<u16>, FieldError> {
        match self.elements.get(&tag) {
            None => Ok(None),
            Some(v) => match v.as_slice() {
                [a, b] => Ok(Some(u16::from_le_bytes([*a, *b]))),
                _ => Err(FieldError::BadLength {
                    tag,
                    len: v.len(),
                    expected: 2,
                }),
            },
        }
    }

    /// A required US element.
    pub fn us(&self, tag: u32) -> Result<u16, FieldError> {
        self.us_opt(tag)?.ok_or(FieldError::Missing(tag))
    }

    /// A text element without its NUL or space padding (leading spaces are
    /// not significant either), `None` when absent.
    pub fn text_opt(&self, tag: u32) -> Result<Option<String>, FieldError> {
        match self.elements.get(&tag) {
            None => Ok(None),
            Some(v) => {
                let s = std::str::from_utf8(v).map_err(|_| FieldError::NotText(tag))?;
                if s.chars().any(|c| c.is_control() && c != '\0') {
                    return Err(FieldError::NotText(tag));
                }
                Ok(Some(
                    s.trim_end_matches(['\0', ' '])
                        .trim_start_matches(' ')
                        .to_owned(),
                ))
            }
        }
    }

    /// A required text element.
    pub fn text(&self, tag: u32) -> Result<String, FieldError> {
        self.text_opt(tag)?.ok_or(FieldError::Missing(tag))
    }

    /// Command Field (0000,0100).
    pub fn command_field(&self) -> Result<u16, FieldError> {
        self.us(tags::COMMAND_FIELD)
    }

    /// Whether a data set follows: Command Data Set Type (0000,0800) other
    /// than 0101H (PS3.7 E.1). An absent value is read as "no data set":
    /// if one follows anyway, reassembly reports data without a command.
    pub fn has_data_set(&self) -> bool {
        matches!(self.us_opt(tags::COMMAND_DATA_SET_TYPE), Ok(Some(v)) if v != super::NO_DATA_SET)
    }

    /// Tags present, ascending (diagnostics and tests).
    pub fn tags(&self) -> impl Iterator<Item = u32> + '_ {
        self.elements.keys().copied()
    }
}

fn push_element(out: &mut Vec<u8>, tag: u32, value: &[u8]) {
    out.extend_from_slice(&((tag >> 16) as u16).to_le_bytes());
    out.extend_from_slice(&((tag & 0xFFFF) as u16).to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

/// Makes a string safe for an LO value: printable ASCII only (anything else
/// becomes `?`), no backslash (the value delimiter), at most
/// [`MAX_ERROR_COMMENT_LEN`] characters.
pub fn error_comment(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\\' => '/',
            ' '..='~' => c,
            _ => '?',
        })
        .take(MAX_ERROR_COMMENT_LEN)
        .collect::<String>()
        .trim_end()
        .to_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Builds implicit VR LE bytes from (tag, value) pairs, as written.
    fn raw(elements: &[(u32, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (tag, value) in elements {
            push_element(&mut out, *tag, value);
        }
        out
    }

    #[test]
    fn encode_writes_group_length_first_and_sorted() {
        let mut c = CommandSet::new();
        c.set_us(tags::MESSAGE_ID, 7);
        c.set_us(tags::COMMAND_FIELD, 0x0030);
        c.set_uid(tags::AFFECTED_SOP_CLASS_UID, "1.2.840.10008.1.1");
        c.set_us(tags::COMMAND_DATA_SET_TYPE, 0x0101);
        let bytes = c.encode();
        let expected = raw(&[
            (0x0000_0000, &56u32.to_le_bytes()),
            (0x0000_0002, b"1.2.840.10008.1.1\0"),
            (0x0000_0100, &[0x30, 0x00]),
            (0x0000_0110, &[7, 0]),
            (0x0000_0800, &[0x01, 0x01]),
        ]);
        assert_eq!(bytes, expected);
        // The group length counts exactly the bytes after the element.
        assert_eq!(bytes.len() - 12, 56);
        let (back, gl) = CommandSet::decode(&bytes).unwrap();
        assert_eq!(gl, GroupLength::Consistent);
        assert_eq!(back, c);
    }

    #[test]
    fn padding_is_even_and_stripped_on_read() {
        let mut c = CommandSet::new();
        c.set_uid(tags::AFFECTED_SOP_INSTANCE_UID, "1.2.3");
        c.set_text(tags::MOVE_ORIGINATOR_AE_TITLE, "ABC");
        assert_eq!(
            c.raw(tags::AFFECTED_SOP_INSTANCE_UID),
            Some(&b"1.2.3\0"[..])
        );
        assert_eq!(c.raw(tags::MOVE_ORIGINATOR_AE_TITLE), Some(&b"ABC "[..]));
        let (d, _) = CommandSet::decode(&c.encode()).unwrap();
        assert_eq!(d.text(tags::AFFECTED_SOP_INSTANCE_UID).unwrap(), "1.2.3");
        assert_eq!(d.text(tags::MOVE_ORIGINATOR_AE_TITLE).unwrap(), "ABC");
    }

    #[test]
    fn decode_table() {
        let echo_body: Vec<(u32, &[u8])> = vec![
            (0x0000_0002, b"1.2.840.10008.1.1\0"),
            (0x0000_0100, &[0x30, 0x00]),
            (0x0000_0110, &[1, 0]),
            (0x0000_0800, &[0x01, 0x01]),
        ];
        let body = raw(&echo_body);
        let with_gl = |n: u32| {
            let mut v = raw(&[(0, &n.to_le_bytes())]);
            v.extend_from_slice(&body);
            v
        };
        let mut two_gl = with_gl(body.len() as u32);
        two_gl.extend_from_slice(&raw(&[(0, &0u32.to_le_bytes())]));
        type Expect = Result<GroupLength, CommandSetError>;
        let cases: Vec<(&str, Vec<u8>, Expect)> = vec![
            (
                "consistent",
                with_gl(body.len() as u32),
                Ok(GroupLength::Consistent),
            ),
            (
                "missing group length",
                body.clone(),
                Ok(GroupLength::Missing),
            ),
            (
                "group length too small",
                with_gl(10),
                Ok(GroupLength::Mismatch {
                    declared: 10,
                    actual: body.len() as u64,
                }),
            ),
            (
                "group length too large",
                with_gl(0xFFFF_FFF0),
                Ok(GroupLength::Mismatch {
                    declared: 0xFFFF_FFF0,
                    actual: body.len() as u64,
                }),
            ),
            ("empty", Vec::new(), Ok(GroupLength::Missing)),
            (
                "truncated header",
                body[..body.len() - 5].to_vec(),
                Err(CommandSetError::TruncatedHeader { offset: 46 }),
            ),
            (
                "value past the end",
                raw(&[(0x0000_0110, &[1, 0])])[..9].to_vec(),
                Err(CommandSetError::TruncatedValue {
                    tag: 0x0000_0110,
                    len: 2,
                    available: 1,
                }),
            ),
            (
                "huge declared value",
                {
                    let mut v = vec![0x00, 0x00, 0x10, 0x01];
                    v.extend_from_slice(&0x7FFF_FFFFu32.to_le_bytes());
                    v
                },
                Err(CommandSetError::TruncatedValue {
                    tag: 0x0000_0110,
                    len: 0x7FFF_FFFF,
                    available: 0,
                }),
            ),
            (
                "undefined length",
                {
                    let mut v = vec![0x00, 0x00, 0x10, 0x01];
                    v.extend_from_slice(&u32::MAX.to_le_bytes());
                    v
                },
                Err(CommandSetError::UndefinedLength { tag: 0x0000_0110 }),
            ),
            (
                "data set element in a command",
                raw(&[(0x0008_0018, b"1.2\0")]),
                Err(CommandSetError::OutsideCommandGroup { tag: 0x0008_0018 }),
            ),
            (
                "duplicate element",
                raw(&[(0x0000_0110, &[1, 0]), (0x0000_0110, &[2, 0])]),
                Err(CommandSetError::Duplicate { tag: 0x0000_0110 }),
            ),
            (
                "duplicate group length",
                two_gl,
                Err(CommandSetError::Duplicate { tag: 0 }),
            ),
        ];
        for (name, bytes, expect) in cases {
            let got = CommandSet::decode(&bytes).map(|(_, gl)| gl);
            assert_eq!(got, expect, "{name}");
        }
    }

    #[test]
    fn field_accessors() {
        let bytes = raw(&[
            (0x0000_0100, &[0x01, 0x00]),
            (0x0000_0110, &[0x05]),
            (0x0000_0700, &[0, 0, 0, 0]),
            (0x0000_1000, b"1.2\x01"),
            (0x0000_1030, &[0xFF, 0xFE]),
        ]);
        let (c, _) = CommandSet::decode(&bytes).unwrap();
        assert_eq!(c.command_field(), Ok(1));
        assert_eq!(
            c.us(tags::MESSAGE_ID),
            Err(FieldError::BadLength {
                tag: tags::MESSAGE_ID,
                len: 1,
                expected: 2
            })
        );
        assert!(matches!(
            c.us(tags::PRIORITY),
            Err(FieldError::BadLength { .. })
        ));
        assert_eq!(c.us(tags::STATUS), Err(FieldError::Missing(tags::STATUS)));
        assert_eq!(c.us_opt(tags::STATUS), Ok(None));
        assert_eq!(
            c.text(tags::AFFECTED_SOP_INSTANCE_UID),
            Err(FieldError::NotText(0x0000_1000))
        );
        assert_eq!(
            c.text(tags::MOVE_ORIGINATOR_AE_TITLE),
            Err(FieldError::NotText(0x0000_1030))
        );
        assert!(!c.has_data_set(), "absent data set type reads as none");
    }

    #[test]
    fn data_set_type() {
        let mut c = CommandSet::new();
        c.set_us(tags::COMMAND_DATA_SET_TYPE, 0x0101);
        assert!(!c.has_data_set());
        for v in [0x0000, 0x0001, 0x0102, 0xFEFE] {
            c.set_us(tags::COMMAND_DATA_SET_TYPE, v);
            assert!(c.has_data_set(), "{v:#x}");
        }
    }

    /// Deterministic pseudo-random bytes (xorshift), for the no-panic sweeps.
    fn rng(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    #[test]
    fn decode_never_panics_and_re_encodes_what_it_reads() {
        let mut valid = CommandSet::new();
        valid.set_uid(tags::AFFECTED_SOP_CLASS_UID, "1.2.840.10008.5.1.4.1.1.2");
        valid.set_us(tags::COMMAND_FIELD, 1);
        valid.set_us(tags::MESSAGE_ID, 1);
        valid.set_us(tags::COMMAND_DATA_SET_TYPE, 0);
        valid.set_uid(tags::AFFECTED_SOP_INSTANCE_UID, "1.2.3.4.5.6.7");
        let valid = valid.encode();
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for i in 0..20_000 {
            let mut bytes = if i % 2 == 0 {
                valid.clone()
            } else {
                let len = (rng(&mut seed) % 300) as usize;
                (0..len).map(|_| rng(&mut seed) as u8).collect()
            };
            // Flip a few bytes and sometimes cut the end.
            for _ in 0..(rng(&mut seed) % 4) {
                if !bytes.is_empty() {
                    let at = (rng(&mut seed) as usize) % bytes.len();
                    bytes[at] = rng(&mut seed) as u8;
                }
            }
            if matches!(rng(&mut seed) % 3, 0) {
                let keep = (rng(&mut seed) as usize) % (bytes.len() + 1);
                bytes.truncate(keep);
            }
            if let Ok((set, _)) = CommandSet::decode(&bytes) {
                let (again, gl) = CommandSet::decode(&set.encode()).unwrap();
                assert_eq!(again, set);
                assert_eq!(gl, GroupLength::Consistent);
                let _ = (
                    set.command_field(),
                    set.text_opt(tags::AFFECTED_SOP_INSTANCE_UID),
                    set.has_data_set(),
                );
            }
        }
    }

    #[test]
    fn error_comments_are_lo_safe() {
        assert_eq!(error_comment("plain"), "plain");
        assert_eq!(error_comment("a\\b\nc é"), "a/b?c ?");
        let long = "x".repeat(200);
        assert_eq!(error_comment(&long).len(), MAX_ERROR_COMMENT_LEN);
    }
}
