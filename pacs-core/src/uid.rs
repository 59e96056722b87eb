//! A validated DICOM Unique Identifier (PS3.5 §9.1).
//!
//! Every UID that becomes part of a storage key or an index key passes through
//! [`Uid::parse`] first, so a client string such as `../../x` or a 200-character
//! value can never reach a path.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Maximum length of a UID in characters (PS3.5 §9.1).
pub const MAX_UID_LEN: usize = 64;

/// A UID that obeys the PS3.5 §9.1 grammar: 1 to 64 characters, components of
/// digits separated by single dots, no empty component. Leading zeros inside a
/// component are tolerated (real modalities emit them) because they cannot
/// escape a key.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Uid(String);

/// Why a string is not a UID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UidError {
    #[error("UID is empty")]
    Empty,
    #[error("UID is {0} characters long; at most 64 are allowed")]
    TooLong(usize),
    #[error("UID contains {0:?}; only digits and dots are allowed")]
    BadCharacter(char),
    #[error("UID has an empty component (leading, trailing or double dot)")]
    EmptyComponent,
}

impl Uid {
    /// Validates `s` after removing the trailing NUL or space padding DICOM
    /// allows for even length.
    pub fn parse(s: &str) -> Result<Uid, UidError> {
        let s = s.trim_end_matches(['\0', ' ']).trim_start_matches(' ');
        if s.is_empty() {
            return Err(UidError::Empty);
        }
        if s.len() > MAX_UID_LEN {
            return Err(UidError::TooLong(s.chars().count()));
        }
        if let Some(c) = s.chars().find(|c| !c.is_ascii_digit() && *c != '.') {
            return Err(UidError::BadCharacter(c));
        }
        if s.split('.').any(str::is_empty) {
            return Err(UidError::EmptyComponent);
        }
        Ok(Uid(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Uid {
    type Error = UidError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Uid::parse(&s)
    }
}

impl From<Uid> for String {
    fn from(u: Uid) -> String {
        u.0
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uid({})", self.0)
    }
}

impl std::str::FromStr for Uid {
    type Err = UidError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uid::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_uids() {
        for s in [
            "1.2.840.10008.1.2",
            "1",
            "1.2.3\0",
            "2.25.123456789012345678901234567890",
        ] {
            assert!(Uid::parse(s).is_ok(), "{s}");
        }
        assert_eq!(Uid::parse("1.2.3\0").map(|u| u.0), Ok("1.2.3".into()));
    }

    #[test]
    fn rejects_invalid_uids() {
        let long = "1.".repeat(100) + "1";
        let cases: &[(&str, UidError)] = &[
            ("", UidError::Empty),
            ("\0", UidError::Empty),
            ("../../x", UidError::BadCharacter('/')),
            ("1.2.a", UidError::BadCharacter('a')),
            ("1..2", UidError::EmptyComponent),
            (".1.2", UidError::EmptyComponent),
            ("1.2.", UidError::EmptyComponent),
            ("/etc/passwd", UidError::BadCharacter('/')),
            ("1.2\\3", UidError::BadCharacter('\\')),
            (&long, UidError::TooLong(201)),
        ];
        for (s, e) in cases {
            assert_eq!(Uid::parse(s).as_ref(), Err(e), "{s}");
        }
    }
}
