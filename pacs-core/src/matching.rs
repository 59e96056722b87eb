//! Attribute matching for queries: the PS3.4 §C.2.2.2 rules as pure functions
//! over already-decoded strings, plus accent-insensitive name folding for
//! fuzzy search.
//!
//! C-FIND (DIMSE) and QIDO-RS both turn each key of a request into a
//! [`Matcher`] with [`parse_matcher`], then test index records with
//! [`Matcher::matches`] (single-valued attributes) or [`Matcher::matches_any`]
//! (multi-valued ones such as Modalities in Study, §C.2.2.3). Values reach this
//! module as Rust strings: the character set has been decoded elsewhere.
//! DICOM padding (spaces, and NUL for UIDs) is insignificant and is trimmed
//! again here, so callers need not be exact about it.
//!
//! # Interpretations of the standard
//!
//! Where PS3.4 leaves a choice to the implementation (to be stated in the
//! conformance statement), this module chooses:
//!
//! * **Person names** (§C.2.2.2.1.1, §C.2.2.2.4) are matched insensitive to
//!   case (simple per-character case folding) and to Unicode encoding variants
//!   (both sides are NFC-normalised), but *not* to accents: `Nguyen*` does not
//!   find `Nguyễn`. Accent-insensitive search is [`fuzzy_name_match`]. Trailing
//!   empty components and component groups are insignificant (`Smith^John^^`
//!   equals `Smith^John`). A key matches if it matches the whole value (all
//!   component groups) or any single component group (alphabetic,
//!   ideographic, phonetic); a key that itself contains `=` is matched group by
//!   group, an empty key group constraining nothing.
//! * **Dates, times and date-times** are matched by meaning
//!   (§C.2.2.2.1.3). A stored value, and a single-value key, stands for the
//!   earliest instant its precision allows (`1030` is 10:30:00.000000). In a
//!   range (§C.2.2.2.5) the start likewise stands for its earliest instant and
//!   the end for its *latest*: `10-12` runs from 10:00:00.000000 through
//!   12:59:59.999999, `2020-2020` covers the whole year, so a range whose two
//!   ends are equal matches everything within the stated precision. Missing
//!   seconds at a range end are filled with 59 (leap seconds are not
//!   considered). Legacy ACR-NEMA forms `YYYY.MM.DD` and `HH:MM:SS` are
//!   accepted in keys and in stored values. A range whose start is after its
//!   end is rejected (a time range cannot cross midnight).
//! * **UTC offsets** of DT values (§C.2.2.2.5.3 d) are taken into account when
//!   *both* compared values carry one (both are brought to UTC); when either
//!   lacks one, the wall-clock values are compared and the offset is ignored,
//!   because a value without offset is in an unknown local time zone. Timezone
//!   query adjustment (Timezone Offset From UTC in the identifier) is left to
//!   the caller.
//! * **Value lists**: a key with several values (backslash-separated) for a
//!   non-UID attribute matches if any of its values matches. Empty values in
//!   such a list are ignored; a list containing `*` is universal. For UIDs,
//!   `,` is accepted as a separator beside `\` (QIDO-RS uses commas; no UID
//!   contains one). There is no escape for `\`, `*` or `?` (§C.2.2.2.4 note 4).
//! * A DT key that reads only as a reversed range but is one valid date-time
//!   with a negative UTC offset (`20200101120000-0500`) is taken as that
//!   single value, although §C.2.2.2.1.3 note 3 reserves `-` for ranges.
//! * **Empty or absent stored values** match only universal keys.
//! * A key of `*` (or any run of `*`), or a lone `-` for dates and times, is
//!   universal for every kind (§C.2.2.2.4 note 1).
//! * **Numbers** (IS, DS, US, UL, …) are compared numerically, so `5` matches
//!   `5.0`; wildcards and ranges are not defined for them (§C.2.2.2.4,
//!   §C.2.2.2.5.4).

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};
use unicode_normalization::char::{canonical_combining_class, is_combining_mark};
use unicode_normalization::UnicodeNormalization;

/// The kind of value being matched, which decides the rules that apply
/// (PS3.4 §C.2.2.2 distinguishes them by Value Representation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueKind {
    /// SH, LO, LT, ST, UT, UC, UR, AS: exact, case-sensitive single value
    /// matching (§C.2.2.2.1) and case-sensitive wild card matching
    /// (§C.2.2.2.4).
    Text,
    /// CS, AE: the same rules as [`ValueKind::Text`] (both are case-sensitive
    /// in PS3.4); kept apart so callers can state the VR family.
    CaseSensitiveText,
    /// PN: case-insensitive, component-group aware (§C.2.2.2.1.1); see the
    /// module documentation for the exact choice.
    PersonName,
    /// UI: single value or list of UID matching (§C.2.2.2.2); no wild cards.
    Uid,
    /// DA: single value or range matching (§C.2.2.2.5.1).
    Date,
    /// TM: single value or range matching (§C.2.2.2.5.2).
    Time,
    /// DT: single value or range matching (§C.2.2.2.5.3).
    DateTime,
    /// IS, DS, US, UL, SS, SL, FL, FD, SV, UV: exact numeric comparison
    /// (§C.2.2.2.1 c).
    Number,
}

impl ValueKind {
    /// The kind for a two-letter Value Representation, or `None` for VRs that
    /// are not matched as strings (SQ, OB, OW, …).
    pub fn from_vr(vr: &str) -> Option<ValueKind> {
        Some(match vr {
            "AE" | "CS" => ValueKind::CaseSensitiveText,
            "AS" | "LO" | "LT" | "SH" | "ST" | "UC" | "UR" | "UT" => ValueKind::Text,
            "PN" => ValueKind::PersonName,
            "UI" => ValueKind::Uid,
            "DA" => ValueKind::Date,
            "TM" => ValueKind::Time,
            "DT" => ValueKind::DateTime,
            "IS" | "DS" | "US" | "UL" | "SS" | "SL" | "FL" | "FD" | "SV" | "UV" => {
                ValueKind::Number
            }
            _ => return None,
        })
    }
}

impl fmt::Display for ValueKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ValueKind::Text => "text",
            ValueKind::CaseSensitiveText => "code strings",
            ValueKind::PersonName => "person names",
            ValueKind::Uid => "UIDs",
            ValueKind::Date => "dates (DA)",
            ValueKind::Time => "times (TM)",
            ValueKind::DateTime => "date-times (DT)",
            ValueKind::Number => "numbers",
        })
    }
}

/// A parsed key value: how one attribute of a query is matched
/// (PS3.4 §C.2.2.2).
///
/// Strings inside are in canonical form when built by [`parse_matcher`]:
/// dates `YYYYMMDD`, times `HHMMSS.FFFFFF`, date-times
/// `YYYYMMDDHHMMSS.FFFFFF` with an optional `+HHMM`/`-HHMM` suffix, numbers in
/// shortest decimal form, person names as [`normalize_value`] gives them
/// (case-folded). [`normalize_value`] puts stored values in the same form, for
/// index look-ups.
#[derive(Debug, Clone, PartialEq)]
pub enum Matcher {
    /// §C.2.2.2.3 Universal Matching: a zero-length key (or `*`) matches
    /// every entity, including those where the attribute is absent or empty.
    Universal,
    /// §C.2.2.2.1 Single Value Matching: the value must match exactly (by
    /// meaning for dates, times and numbers; case-insensitively for names).
    Single(String),
    /// §C.2.2.2.4 Wild Card Matching: `*` matches any run of characters,
    /// including none; `?` matches exactly one character (a Unicode scalar
    /// value, not a byte).
    Wildcard(WildcardPattern),
    /// §C.2.2.2.2 List of UID Matching: the value must equal one of the UIDs.
    UidList(Vec<String>),
    /// §C.2.2.2.5 Range Matching of DA, TM and DT values, both ends
    /// inclusive; `None` leaves that end open (`-20201231`, `20200101-`).
    Range {
        from: Option<String>,
        to: Option<String>,
    },
    /// A key with several values for a non-UID attribute: matches when any
    /// of its members matches (an OR).
    ValueList(Vec<Matcher>),
}

/// Why a key value cannot be used for matching. Each message names the
/// offending value and says what would be accepted; [`MatchError::with_attribute`]
/// prefixes it with the attribute name (`StudyDate: …`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatchError {
    /// A DA key that is neither a date nor a date range (§C.2.2.2.5.1).
    #[error(
        "{}'{value}' is not a date: {reason} (expected YYYYMMDD, or a range YYYYMMDD-YYYYMMDD, -YYYYMMDD or YYYYMMDD-)",
        attr_prefix(.attribute)
    )]
    BadDate {
        attribute: String,
        value: String,
        reason: String,
    },
    /// A TM key that is neither a time nor a time range (§C.2.2.2.5.2).
    #[error(
        "{}'{value}' is not a time: {reason} (expected HHMMSS.FFFFFF, where HH, HHMM and HHMMSS are also accepted, or a range such as 0800-1730)",
        attr_prefix(.attribute)
    )]
    BadTime {
        attribute: String,
        value: String,
        reason: String,
    },
    /// A DT key that is neither a date-time nor a range (§C.2.2.2.5.3).
    #[error(
        "{}'{value}' is not a date-time: {reason} (expected YYYYMMDDHHMMSS.FFFFFF, trailing parts may be left off, with an optional +HHMM offset, or two such values separated by '-' for a range)",
        attr_prefix(.attribute)
    )]
    BadDateTime {
        attribute: String,
        value: String,
        reason: String,
    },
    /// A range whose start is after its end (§C.2.2.2.5 requires
    /// start ≤ end).
    #[error(
        "{}'{value}' is an empty range: its start is after its end; put the earlier bound first (a time range cannot cross midnight)",
        attr_prefix(.attribute)
    )]
    ReversedRange { attribute: String, value: String },
    /// A UI key value that is not a UID (§C.2.2.2.2).
    #[error(
        "{}'{value}' is not a UID: {reason} (UIDs are digits and dots, at most 64 characters; separate several UIDs with '\\')",
        attr_prefix(.attribute)
    )]
    BadUid {
        attribute: String,
        value: String,
        reason: String,
    },
    /// A UI key with `*` or `?` other than a lone `*` (wild cards are not
    /// defined for UI, §C.2.2.2.4).
    #[error(
        "{}'{value}': UIDs cannot be matched with '*' or '?'; give whole UIDs (several separated by '\\'), or leave the value empty to match any",
        attr_prefix(.attribute)
    )]
    UidWildcard { attribute: String, value: String },
    /// A key for a numeric attribute that is not a number.
    #[error(
        "{}'{value}' is not a number (numeric attributes match an exact value; ranges and wild cards are not supported for them)",
        attr_prefix(.attribute)
    )]
    BadNumber { attribute: String, value: String },
    /// `*` or `?` in a key of a kind where wild cards are not defined
    /// (§C.2.2.2.4 lists the VRs that allow them).
    #[error(
        "{}'{value}': '*' and '?' are not supported for {kind}; {hint}",
        attr_prefix(.attribute),
        hint = wildcard_hint(*.kind)
    )]
    WildcardNotSupported {
        attribute: String,
        value: String,
        kind: ValueKind,
    },
}

fn attr_prefix(attribute: &str) -> String {
    if attribute.is_empty() {
        String::new()
    } else {
        format!("{attribute}: ")
    }
}

fn wildcard_hint(kind: ValueKind) -> &'static str {
    match kind {
        ValueKind::Date => "use a range such as 20200101-20201231",
        ValueKind::Time => "use a range such as 0800-1200",
        ValueKind::DateTime => "use a range such as 20200101-20200131",
        _ => "give the exact value",
    }
}

impl MatchError {
    /// Names the attribute the key belonged to, so the message reads
    /// `StudyDate: '2020-13-45' is not a date …`.
    pub fn with_attribute(mut self, name: &str) -> Self {
        match &mut self {
            MatchError::BadDate { attribute, .. }
            | MatchError::BadTime { attribute, .. }
            | MatchError::BadDateTime { attribute, .. }
            | MatchError::ReversedRange { attribute, .. }
            | MatchError::BadUid { attribute, .. }
            | MatchError::UidWildcard { attribute, .. }
            | MatchError::BadNumber { attribute, .. }
            | MatchError::WildcardNotSupported { attribute, .. } => *attribute = name.to_owned(),
        }
        self
    }

    /// The attribute name given with [`MatchError::with_attribute`], or `""`.
    pub fn attribute(&self) -> &str {
        match self {
            MatchError::BadDate { attribute, .. }
            | MatchError::BadTime { attribute, .. }
            | MatchError::BadDateTime { attribute, .. }
            | MatchError::ReversedRange { attribute, .. }
            | MatchError::BadUid { attribute, .. }
            | MatchError::UidWildcard { attribute, .. }
            | MatchError::BadNumber { attribute, .. }
            | MatchError::WildcardNotSupported { attribute, .. } => attribute,
        }
    }

    /// The offending key value (one member of a value list when the key had
    /// several).
    pub fn value(&self) -> &str {
        match self {
            MatchError::BadDate { value, .. }
            | MatchError::BadTime { value, .. }
            | MatchError::BadDateTime { value, .. }
            | MatchError::ReversedRange { value, .. }
            | MatchError::BadUid { value, .. }
            | MatchError::UidWildcard { value, .. }
            | MatchError::BadNumber { value, .. }
            | MatchError::WildcardNotSupported { value, .. } => value,
        }
    }
}

// ---------------------------------------------------------------------------
// Wild card patterns (§C.2.2.2.4)
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Literal(char),
    AnyOne,
    AnyRun,
}

/// A §C.2.2.2.4 wild card pattern: `*` matches any run of characters
/// (including none), `?` exactly one character (a Unicode scalar value).
/// There is no escape character. Matching takes O(pattern × value) time at
/// worst (greedy scan, backtracking only to the last `*`), never exponential.
#[derive(Debug, Clone)]
pub struct WildcardPattern {
    pattern: String,
    tokens: Vec<Token>,
}

impl PartialEq for WildcardPattern {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern
    }
}

impl Eq for WildcardPattern {}

impl WildcardPattern {
    /// Compiles `pattern`; every character other than `*` and `?` is literal.
    pub fn new(pattern: &str) -> Self {
        let mut tokens = Vec::with_capacity(pattern.len());
        for c in pattern.chars() {
            let token = match c {
                '*' => Token::AnyRun,
                '?' => Token::AnyOne,
                c => Token::Literal(c),
            };
            // Consecutive stars are one star.
            if token == Token::AnyRun && tokens.last() == Some(&Token::AnyRun) {
                continue;
            }
            tokens.push(token);
        }
        WildcardPattern {
            pattern: pattern.to_owned(),
            tokens,
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// True when the pattern is only `*` (§C.2.2.2.4 note 1: equivalent to
    /// universal matching) or empty.
    pub fn is_universal(&self) -> bool {
        self.tokens.iter().all(|t| *t == Token::AnyRun)
    }

    /// The literal characters before the first `*` or `?` (may be empty).
    pub fn literal_prefix(&self) -> &str {
        let end = self.pattern.find(['*', '?']).unwrap_or(self.pattern.len());
        &self.pattern[..end]
    }

    /// Case-sensitive match of the whole `value`.
    pub fn is_match(&self, value: &str) -> bool {
        let chars: Vec<char> = value.chars().collect();
        match_tokens(&self.tokens, &chars, false)
    }

    /// Match of the whole `value`, insensitive to case (simple per-character
    /// folding, so `?` still stands for exactly one character).
    pub fn is_match_ignore_case(&self, value: &str) -> bool {
        let chars: Vec<char> = value.chars().map(fold_case_char).collect();
        match_tokens(&self.tokens, &chars, true)
    }
}

/// True when `s` contains a §C.2.2.2.4 wild card character.
fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?'])
}

/// Greedy two-pointer wild card match. On a mismatch it backtracks only to the
/// most recent `*`, letting it absorb one more character: O(tokens × value).
/// With `folded`, `value` is already case-folded and literals are folded here.
fn match_tokens(tokens: &[Token], value: &[char], folded: bool) -> bool {
    let mut t = 0;
    let mut v = 0;
    // (token index just after the last star, value index that star resumes at)
    let mut star: Option<(usize, usize)> = None;
    while v < value.len() {
        if let Some(token) = tokens.get(t) {
            match *token {
                Token::AnyRun => {
                    star = Some((t + 1, v));
                    t += 1;
                    continue;
                }
                Token::AnyOne => {
                    t += 1;
                    v += 1;
                    continue;
                }
                Token::Literal(c) => {
                    let c = if folded { fold_case_char(c) } else { c };
                    if c == value[v] {
                        t += 1;
                        v += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((after_star, resume)) => {
                t = after_star;
                v = resume + 1;
                star = Some((after_star, resume + 1));
            }
            None => return false,
        }
    }
    tokens[t.min(tokens.len())..]
        .iter()
        .all(|token| *token == Token::AnyRun)
}

// ---------------------------------------------------------------------------
// Parsing keys
// ---------------------------------------------------------------------------

const PADDING: [char; 2] = [' ', '\0'];

fn trim_padding(s: &str) -> &str {
    s.trim_matches(PADDING)
}

/// Parses the value of a Key Attribute of a query into a [`Matcher`]
/// (PS3.4 §C.2.2.2): universal for an empty key or `*`; list of UID matching
/// for several UIDs; wild card matching for text and names containing `*` or
/// `?`; range matching for dates and times containing `-`; single value
/// matching otherwise. A key with several backslash-separated values becomes
/// a [`Matcher::ValueList`].
///
/// Date, time, date-time, UID and number keys are validated; an invalid key
/// is a [`MatchError`] rather than a query that silently matches nothing.
pub fn parse_matcher(kind: ValueKind, key_value: &str) -> Result<Matcher, MatchError> {
    let key = trim_padding(key_value);
    if key.is_empty() || key.chars().all(|c| c == '*') {
        return Ok(Matcher::Universal);
    }
    if kind == ValueKind::Uid {
        return parse_uid_key(key);
    }
    let mut members = Vec::new();
    for part in key.split('\\').map(trim_padding) {
        if part.is_empty() {
            continue;
        }
        let matcher = parse_one(kind, part)?;
        if matcher.is_universal() {
            return Ok(Matcher::Universal);
        }
        members.push(matcher);
    }
    Ok(match members.len() {
        0 => Matcher::Universal,
        1 => members.pop().unwrap_or(Matcher::Universal),
        _ => Matcher::ValueList(members),
    })
}

/// One value of a (possibly multi-valued) key; `part` is trimmed, non-empty.
fn parse_one(kind: ValueKind, part: &str) -> Result<Matcher, MatchError> {
    if part.chars().all(|c| c == '*') {
        return Ok(Matcher::Universal);
    }
    match kind {
        ValueKind::Text | ValueKind::CaseSensitiveText => Ok(if has_wildcard(part) {
            Matcher::Wildcard(WildcardPattern::new(part))
        } else {
            Matcher::Single(part.to_owned())
        }),
        ValueKind::PersonName => {
            let name = normalize_pn(part);
            if name.is_empty() {
                return Ok(Matcher::Universal);
            }
            if has_wildcard(&name) {
                let pattern = WildcardPattern::new(&name);
                if pattern.is_universal() {
                    return Ok(Matcher::Universal);
                }
                Ok(Matcher::Wildcard(pattern))
            } else {
                Ok(Matcher::Single(name))
            }
        }
        ValueKind::Uid => parse_uid_key(part),
        ValueKind::Date | ValueKind::Time | ValueKind::DateTime if has_wildcard(part) => {
            Err(MatchError::WildcardNotSupported {
                attribute: String::new(),
                value: part.to_owned(),
                kind,
            })
        }
        ValueKind::Date => parse_date_key(part),
        ValueKind::Time => parse_time_key(part),
        ValueKind::DateTime => parse_datetime_key(part),
        ValueKind::Number => match parse_number(part) {
            Some(n) => Ok(Matcher::Single(canonical_number(n))),
            None => Err(MatchError::BadNumber {
                attribute: String::new(),
                value: part.to_owned(),
            }),
        },
    }
}

/// §C.2.2.2.2: one UID, or a list separated by `\` (or `,`).
fn parse_uid_key(key: &str) -> Result<Matcher, MatchError> {
    let mut uids = Vec::new();
    for item in key.split(['\\', ',']).map(trim_padding) {
        if item.is_empty() {
            continue;
        }
        if item.chars().all(|c| c == '*') {
            return Ok(Matcher::Universal);
        }
        if has_wildcard(item) {
            return Err(MatchError::UidWildcard {
                attribute: String::new(),
                value: item.to_owned(),
            });
        }
        let uid = crate::uid::Uid::parse(item).map_err(|e| MatchError::BadUid {
            attribute: String::new(),
            value: item.to_owned(),
            reason: e.to_string(),
        })?;
        uids.push(uid.as_str().to_owned());
    }
    Ok(match uids.len() {
        0 => Matcher::Universal,
        1 => Matcher::Single(uids.pop().unwrap_or_default()),
        _ => Matcher::UidList(uids),
    })
}

/// Splits a DA or TM key at its single `-`. `Ok(None)`: no dash.
fn split_simple_range(key: &str) -> Result<Option<(&str, &str)>, String> {
    match key.matches('-').count() {
        0 => Ok(None),
        1 => Ok(key.split_once('-').map(|(a, b)| (a.trim(), b.trim()))),
        _ => Err("it has more than one '-'".to_owned()),
    }
}

fn looks_like_iso_date(key: &str) -> bool {
    let b = key.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

/// §C.2.2.2.5.1: `D`, `D1-D2`, `-D`, `D-`.
fn parse_date_key(key: &str) -> Result<Matcher, MatchError> {
    let bad = |reason: String| MatchError::BadDate {
        attribute: String::new(),
        value: key.to_owned(),
        reason,
    };
    if key == "-" {
        return Ok(Matcher::Universal);
    }
    let split = split_simple_range(key).map_err(|reason| {
        if looks_like_iso_date(key) {
            bad("dates are written YYYYMMDD, without '-'".to_owned())
        } else {
            bad(reason)
        }
    })?;
    let Some((from, to)) = split else {
        let date = parse_date(key).map_err(bad)?;
        return Ok(Matcher::Single(date.to_string()));
    };
    let from = optional(from, parse_date).map_err(bad)?;
    let to = optional(to, parse_date).map_err(bad)?;
    if let (Some(a), Some(b)) = (from, to) {
        if a > b {
            return Err(MatchError::ReversedRange {
                attribute: String::new(),
                value: key.to_owned(),
            });
        }
    }
    Ok(Matcher::Range {
        from: from.map(|d| d.to_string()),
        to: to.map(|d| d.to_string()),
    })
}

/// §C.2.2.2.5.2: `T`, `T1-T2`, `-T`, `T-`; range ends widened to their
/// precision.
fn parse_time_key(key: &str) -> Result<Matcher, MatchError> {
    let bad = |reason: String| MatchError::BadTime {
        attribute: String::new(),
        value: key.to_owned(),
        reason,
    };
    if key == "-" {
        return Ok(Matcher::Universal);
    }
    let Some((from, to)) = split_simple_range(key).map_err(bad)? else {
        let time = parse_time(key).map_err(bad)?;
        return Ok(Matcher::Single(time.lower().to_string()));
    };
    let from = optional(from, parse_time).map_err(bad)?;
    let to = optional(to, parse_time).map_err(bad)?;
    let from = from.map(|t| t.lower());
    let to = to.map(|t| t.upper());
    if let (Some(a), Some(b)) = (from, to) {
        if a > b {
            return Err(MatchError::ReversedRange {
                attribute: String::new(),
                value: key.to_owned(),
            });
        }
    }
    Ok(Matcher::Range {
        from: from.map(|t| t.to_string()),
        to: to.map(|t| t.to_string()),
    })
}

/// §C.2.2.2.5.3. A `-` may also start a negative UTC offset, so every dash is
/// tried as the range separator and the split whose both sides parse (and
/// that is not reversed) wins; a key without `-` is a single value. PS3.4
/// §C.2.2.2.1.3 note 3 says a `-` always means a range; as a leniency, a key
/// whose every range reading is reversed but which is one valid date-time
/// with a negative offset (`20200101120000-0500`) is taken as that value.
fn parse_datetime_key(key: &str) -> Result<Matcher, MatchError> {
    let bad = |reason: String| MatchError::BadDateTime {
        attribute: String::new(),
        value: key.to_owned(),
        reason,
    };
    if key == "-" {
        return Ok(Matcher::Universal);
    }
    let dashes: Vec<usize> = key
        .bytes()
        .enumerate()
        .filter(|(_, b)| *b == b'-')
        .map(|(i, _)| i)
        .collect();
    if dashes.is_empty() {
        let dt = parse_datetime(key).map_err(bad)?;
        return Ok(Matcher::Single(dt.lower().to_string()));
    }
    let mut candidates = Vec::new();
    let mut first_error = None;
    for i in dashes {
        // '-' is ASCII, so both slices fall on character boundaries.
        let (left, right) = (key[..i].trim(), key[i + 1..].trim());
        match (
            optional(left, parse_datetime),
            optional(right, parse_datetime),
        ) {
            (Ok(a), Ok(b)) => candidates.push((a.map(|d| d.lower()), b.map(|d| d.upper()))),
            (Err(e), _) | (_, Err(e)) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let is_ordered = |(a, b): &(Option<FullDateTime>, Option<FullDateTime>)| match (a, b) {
        (Some(a), Some(b)) => compare_datetimes(a, b) != Ordering::Greater,
        _ => true,
    };
    let ordered: Vec<_> = candidates.iter().filter(|c| is_ordered(c)).collect();
    match (ordered.as_slice(), candidates.is_empty()) {
        ([(from, to)], _) => Ok(Matcher::Range {
            from: from.map(|d| d.to_string()),
            to: to.map(|d| d.to_string()),
        }),
        ([], true) => Err(bad(first_error.unwrap_or_else(|| {
            "it cannot be split into two date-times at a '-'".to_owned()
        }))),
        // Every range reading is reversed: if the whole key is one date-time
        // with a negative UTC offset, that is what was meant.
        ([], false) => match parse_datetime(key) {
            Ok(dt) if dt.offset.is_some_and(|o| o < 0) => {
                Ok(Matcher::Single(dt.lower().to_string()))
            }
            _ => Err(MatchError::ReversedRange {
                attribute: String::new(),
                value: key.to_owned(),
            }),
        },
        (_, _) => Err(bad(
            "it can be read as more than one range; write negative UTC offsets only in ranges with both ends given".to_owned(),
        )),
    }
}

fn optional<T>(s: &str, parse: fn(&str) -> Result<T, String>) -> Result<Option<T>, String> {
    if s.is_empty() {
        Ok(None)
    } else {
        parse(s).map(Some)
    }
}

// ---------------------------------------------------------------------------
// Dates, times, date-times
// ---------------------------------------------------------------------------

/// Value of a run of ASCII digits already checked; at most 9 digits.
fn digits_value(bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .fold(0u32, |acc, b| acc * 10 + u32::from(b.wrapping_sub(b'0')))
}

fn all_digits(bytes: &[u8]) -> bool {
    bytes.iter().all(u8::is_ascii_digit)
}

fn is_leap_year(y: u32) -> bool {
    matches!((y % 400, y % 100, y % 4), (0, _, _) | (1.., 1.., 0))
}

fn days_in_month(y: u32, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(y) => 29,
        2 => 28,
        _ => 0,
    }
}

fn check_month_day(y: u32, m: u32, d: Option<u32>) -> Result<(), String> {
    if !(1..=12).contains(&m) {
        return Err(format!("month {m:02} does not exist"));
    }
    if let Some(d) = d {
        if d == 0 || d > days_in_month(y, m) {
            return Err(format!("day {d:02} does not exist in {y:04}-{m:02}"));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Ymd {
    y: u32,
    m: u32,
    d: u32,
}

impl fmt::Display for Ymd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}{:02}{:02}", self.y, self.m, self.d)
    }
}

/// A DA value: `YYYYMMDD`, or the ACR-NEMA `YYYY.MM.DD`.
fn parse_date(s: &str) -> Result<Ymd, String> {
    let b = s.trim_matches(PADDING).as_bytes();
    let compact: Vec<u8> = if b.len() == 10 && b[4] == b'.' && b[7] == b'.' {
        b[..4]
            .iter()
            .chain(&b[5..7])
            .chain(&b[8..])
            .copied()
            .collect()
    } else {
        b.to_vec()
    };
    if compact.len() != 8 || !all_digits(&compact) {
        return Err("a date has exactly 8 digits".to_owned());
    }
    let (y, m, d) = (
        digits_value(&compact[..4]),
        digits_value(&compact[4..6]),
        digits_value(&compact[6..]),
    );
    check_month_day(y, m, Some(d))?;
    Ok(Ymd { y, m, d })
}

/// A time of day at full precision; field order makes the derived ordering
/// chronological.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct FullTime {
    h: u32,
    m: u32,
    s: u32,
    us: u32,
}

impl fmt::Display for FullTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}{:02}{:02}.{:06}", self.h, self.m, self.s, self.us)
    }
}

/// A TM value at the precision it was written with.
#[derive(Debug, Clone, Copy)]
struct PartialTime {
    h: u32,
    m: Option<u32>,
    s: Option<u32>,
    /// Fraction digits' value and count (1 to 6).
    frac: Option<(u32, u32)>,
}

impl PartialTime {
    fn lower(&self) -> FullTime {
        FullTime {
            h: self.h,
            m: self.m.unwrap_or(0),
            s: self.s.unwrap_or(0),
            us: frac_bounds(self.frac).0,
        }
    }

    fn upper(&self) -> FullTime {
        FullTime {
            h: self.h,
            m: self.m.unwrap_or(59),
            s: self.s.unwrap_or(59),
            us: frac_bounds(self.frac).1,
        }
    }
}

/// Earliest and latest microsecond a written fraction stands for.
fn frac_bounds(frac: Option<(u32, u32)>) -> (u32, u32) {
    match frac {
        None => (0, 999_999),
        Some((value, count)) => {
            let unit = 10u32.pow(6u32.saturating_sub(count));
            let low = value * unit;
            (low, low + unit - 1)
        }
    }
}

/// Parses `HH[MM[SS[.F{1,6}]]]` from ASCII bytes (no separators).
fn parse_compact_time(b: &[u8]) -> Result<PartialTime, String> {
    let (main, frac) = match b.iter().position(|c| *c == b'.') {
        Some(i) => (&b[..i], Some(&b[i + 1..])),
        None => (b, None),
    };
    if !matches!(main.len(), 2 | 4 | 6) || !all_digits(main) {
        return Err(
            "a time is HH, HHMM or HHMMSS digits, optionally followed by .FFFFFF".to_owned(),
        );
    }
    let h = digits_value(&main[..2]);
    let m = (main.len() >= 4).then(|| digits_value(&main[2..4]));
    let s = (main.len() >= 6).then(|| digits_value(&main[4..6]));
    if h > 23 {
        return Err(format!("hour {h:02} does not exist"));
    }
    if let Some(m) = m.filter(|m| *m > 59) {
        return Err(format!("minute {m:02} does not exist"));
    }
    if let Some(s) = s.filter(|s| *s > 60) {
        return Err(format!("second {s:02} does not exist"));
    }
    let frac = match frac {
        None => None,
        Some(_) if main.len() != 6 => {
            return Err("a fraction of a second needs hours, minutes and seconds".to_owned())
        }
        Some([]) => None,
        Some(f) if f.len() <= 6 && all_digits(f) => Some((digits_value(f), f.len() as u32)),
        Some(_) => return Err("the fraction of a second has more than 6 digits".to_owned()),
    };
    Ok(PartialTime { h, m, s, frac })
}

/// A TM value: `HHMMSS.FFFFFF` with trailing parts optional, or the
/// ACR-NEMA `HH:MM[:SS[.FFFFFF]]`.
fn parse_time(s: &str) -> Result<PartialTime, String> {
    let b = s.trim_matches(PADDING).as_bytes();
    if !b.contains(&b':') {
        return parse_compact_time(b);
    }
    let parts: Vec<&[u8]> = b.split(|c| *c == b':').collect();
    let well_formed = matches!(parts.len(), 2 | 3)
        && parts[0].len() == 2
        && parts[1].len() == 2
        && parts.get(2).is_none_or(|p| p.len() >= 2);
    if !well_formed {
        return Err("the legacy form is HH:MM or HH:MM:SS.FFFFFF".to_owned());
    }
    parse_compact_time(&parts.concat())
}

/// A date-time at full precision, with its UTC offset in minutes if given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FullDateTime {
    date: Ymd,
    time: FullTime,
    offset: Option<i32>,
}

impl FullDateTime {
    /// Microseconds since 1970-01-01T00:00 of the wall-clock value.
    fn civil_micros(&self) -> i64 {
        let days = days_from_civil(self.date.y, self.date.m, self.date.d);
        let secs =
            i64::from(self.time.h) * 3600 + i64::from(self.time.m) * 60 + i64::from(self.time.s);
        (days * 86_400 + secs) * 1_000_000 + i64::from(self.time.us)
    }
}

impl fmt::Display for FullDateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.date, self.time)?;
        if let Some(offset) = self.offset {
            let sign = if offset < 0 { '-' } else { '+' };
            let abs = offset.unsigned_abs();
            write!(f, "{sign}{:02}{:02}", abs / 60, abs % 60)?;
        }
        Ok(())
    }
}

/// Days from 1970-01-01 to the given proleptic Gregorian date.
fn days_from_civil(y: u32, m: u32, d: u32) -> i64 {
    let (y, m, d) = (i64::from(y), i64::from(m), i64::from(d));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_from_march = (m + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + d - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Orders two date-times: in UTC when both carry an offset, otherwise by
/// wall clock (see the module documentation).
fn compare_datetimes(a: &FullDateTime, b: &FullDateTime) -> Ordering {
    match (a.offset, b.offset) {
        (Some(oa), Some(ob)) => {
            let ua = a.civil_micros() - i64::from(oa) * 60_000_000;
            let ub = b.civil_micros() - i64::from(ob) * 60_000_000;
            ua.cmp(&ub)
        }
        _ => a.civil_micros().cmp(&b.civil_micros()),
    }
}

/// A DT value at the precision it was written with.
#[derive(Debug, Clone, Copy)]
struct PartialDateTime {
    y: u32,
    m: Option<u32>,
    d: Option<u32>,
    time: Option<PartialTime>,
    offset: Option<i32>,
}

impl PartialDateTime {
    fn lower(&self) -> FullDateTime {
        FullDateTime {
            date: Ymd {
                y: self.y,
                m: self.m.unwrap_or(1),
                d: self.d.unwrap_or(1),
            },
            time: self.time.map_or(
                FullTime {
                    h: 0,
                    m: 0,
                    s: 0,
                    us: 0,
                },
                |t| t.lower(),
            ),
            offset: self.offset,
        }
    }

    fn upper(&self) -> FullDateTime {
        let m = self.m.unwrap_or(12);
        FullDateTime {
            date: Ymd {
                y: self.y,
                m,
                d: self.d.unwrap_or_else(|| days_in_month(self.y, m)),
            },
            time: self.time.map_or(
                FullTime {
                    h: 23,
                    m: 59,
                    s: 59,
                    us: 999_999,
                },
                |t| t.upper(),
            ),
            offset: self.offset,
        }
    }
}

/// A DT value: `YYYY[MM[DD[HH[MM[SS[.F{1,6}]]]]]][&ZZXX]`.
fn parse_datetime(s: &str) -> Result<PartialDateTime, String> {
    let b = s.trim_matches(PADDING).as_bytes();
    let (body, offset) = match b.len().checked_sub(5) {
        Some(i) if i > 0 && matches!(b[i], b'+' | b'-') => (&b[..i], Some(parse_offset(&b[i..])?)),
        _ => (b, None),
    };
    let (main, frac) = match body.iter().position(|c| *c == b'.') {
        Some(i) => (&body[..i], Some(&body[i..])),
        None => (body, None),
    };
    if !matches!(main.len(), 4 | 6 | 8 | 10 | 12 | 14) || !all_digits(main) {
        return Err(
            "a date-time starts with YYYY and adds MM, DD, HH, MM and SS in turn".to_owned(),
        );
    }
    let y = digits_value(&main[..4]);
    let m = (main.len() >= 6).then(|| digits_value(&main[4..6]));
    let d = (main.len() >= 8).then(|| digits_value(&main[6..8]));
    if let Some(m) = m {
        check_month_day(y, m, d)?;
    }
    let time = if main.len() >= 10 {
        let mut time_bytes = main[8..].to_vec();
        if let Some(f) = frac {
            if main.len() != 14 {
                return Err("a fraction of a second needs all of YYYYMMDDHHMMSS".to_owned());
            }
            time_bytes.extend_from_slice(f);
        }
        Some(parse_compact_time(&time_bytes)?)
    } else if frac.is_some() {
        return Err("a fraction of a second needs all of YYYYMMDDHHMMSS".to_owned());
    } else {
        None
    };
    Ok(PartialDateTime {
        y,
        m,
        d,
        time,
        offset,
    })
}

/// `+HHMM` / `-HHMM`, PS3.5 allows -1200 to +1400.
fn parse_offset(b: &[u8]) -> Result<i32, String> {
    let digits = &b[1..];
    if digits.len() != 4 || !all_digits(digits) {
        return Err("a UTC offset is +HHMM or -HHMM".to_owned());
    }
    let (h, m) = (digits_value(&digits[..2]), digits_value(&digits[2..]));
    if h > 14 || m > 59 {
        return Err(format!(
            "UTC offset {}{h:02}{m:02} does not exist",
            char::from(b[0])
        ));
    }
    let minutes = (h * 60 + m) as i32;
    Ok(if b[0] == b'-' { -minutes } else { minutes })
}

// ---------------------------------------------------------------------------
// Numbers
// ---------------------------------------------------------------------------

fn parse_number(s: &str) -> Option<f64> {
    let s = s.trim_matches(PADDING);
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'))
    {
        return None;
    }
    s.parse::<f64>().ok().filter(|n| n.is_finite())
}

fn canonical_number(n: f64) -> String {
    if n == 0.0 {
        "0".to_owned()
    } else {
        n.to_string()
    }
}

// ---------------------------------------------------------------------------
// Person names
// ---------------------------------------------------------------------------

/// Simple case folding of one character that never changes the character
/// count: lower then upper case, each step kept only when it yields exactly
/// one character (so `ß` and `ẞ` fold together, `Σ`/`σ`/`ς` too).
fn fold_case_char(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_uppercase();
    }
    let lower = single(c.to_lowercase()).unwrap_or(c);
    single(lower.to_uppercase()).unwrap_or(lower)
}

fn single(mut it: impl Iterator<Item = char>) -> Option<char> {
    match (it.next(), it.next()) {
        (Some(c), None) => Some(c),
        _ => None,
    }
}

/// NFC, padding around components removed, trailing empty components and
/// component groups dropped. Case is kept.
fn canonical_pn(s: &str) -> String {
    let nfc: String = s.nfc().collect();
    let mut groups: Vec<String> = nfc
        .split('=')
        .map(|group| {
            let mut joined = group
                .split('^')
                .map(trim_padding)
                .collect::<Vec<_>>()
                .join("^");
            while joined.ends_with('^') {
                joined.pop();
            }
            joined
        })
        .collect();
    while groups.last().is_some_and(String::is_empty) {
        groups.pop();
    }
    groups.join("=")
}

/// [`canonical_pn`], case-folded: the form person names are compared in.
fn normalize_pn(s: &str) -> String {
    canonical_pn(s).chars().map(fold_case_char).collect()
}

/// For index planning: the distinct leading runs, 1 to `max` characters
/// long, of each component group of a stored person name, in the folded
/// form names are compared in. A key `P*` (see
/// [`Matcher::pn_prefix_pattern`]) with `P` at most `max` characters long
/// matches the name exactly when `P` is one of them.
pub fn pn_lead_prefixes(value: &str, max: usize) -> Vec<String> {
    let name = normalize_pn(value);
    let mut out = std::collections::BTreeSet::new();
    for group in name.split('=') {
        let mut lead = String::new();
        for c in group.chars().take(max) {
            lead.push(c);
            out.insert(lead.clone());
        }
    }
    out.into_iter().collect()
}

fn eq_folded(a: &str, b: &str) -> bool {
    a.chars()
        .map(fold_case_char)
        .eq(b.chars().map(fold_case_char))
}

/// Single value matching of a PN key against a stored PN value, both
/// normalised.
fn pn_single_match(key: &str, value: &str) -> bool {
    if eq_folded(key, value) {
        return true;
    }
    let groups: Vec<&str> = value.split('=').collect();
    if key.contains('=') {
        key.split('=')
            .enumerate()
            .all(|(i, k)| k.is_empty() || eq_folded(k, groups.get(i).copied().unwrap_or("")))
    } else {
        groups.len() > 1 && groups.iter().any(|g| eq_folded(key, g))
    }
}

/// Wild card matching of a PN pattern against a normalised stored PN value.
fn pn_wildcard_match(pattern: &WildcardPattern, value: &str) -> bool {
    let chars: Vec<char> = value.chars().map(fold_case_char).collect();
    if match_tokens(&pattern.tokens, &chars, true) {
        return true;
    }
    let is_separator = |c: &char| *c == '=';
    let groups: Vec<&[char]> = chars.split(is_separator).collect();
    let separator = Token::Literal('=');
    if pattern.tokens.contains(&separator) {
        pattern
            .tokens
            .split(|t| *t == separator)
            .enumerate()
            .all(|(i, k)| {
                k.is_empty() || match_tokens(k, groups.get(i).copied().unwrap_or(&[]), true)
            })
    } else {
        groups.len() > 1
            && groups
                .iter()
                .any(|g| match_tokens(&pattern.tokens, g, true))
    }
}

// ---------------------------------------------------------------------------
// Matching
// ---------------------------------------------------------------------------

/// The canonical form of a stored value of `kind`, as the strings inside a
/// [`Matcher`] built by [`parse_matcher`] are written, so an index can store
/// it and compare it with [`Matcher::exact_values`], [`Matcher::literal_prefix`]
/// and [`Matcher::range`]: dates `YYYYMMDD`, times `HHMMSS.FFFFFF`, date-times
/// `YYYYMMDDHHMMSS.FFFFFF[+HHMM]` (partial values at their earliest instant),
/// numbers in shortest decimal form, person names NFC and case-folded, text
/// and UIDs with padding trimmed. `None` for an empty value or one that does
/// not parse as its kind.
pub fn normalize_value(kind: ValueKind, value: &str) -> Option<String> {
    let v = trim_padding(value);
    if v.is_empty() {
        return None;
    }
    match kind {
        ValueKind::Text | ValueKind::CaseSensitiveText | ValueKind::Uid => Some(v.to_owned()),
        ValueKind::PersonName => Some(normalize_pn(v)).filter(|n| !n.is_empty()),
        ValueKind::Date => parse_date(v).ok().map(|d| d.to_string()),
        ValueKind::Time => parse_time(v).ok().map(|t| t.lower().to_string()),
        ValueKind::DateTime => parse_datetime(v).ok().map(|t| t.lower().to_string()),
        ValueKind::Number => parse_number(v).map(canonical_number),
    }
}

impl Matcher {
    /// Whether a stored value matches (PS3.4 §C.2.2.2). `None` is an absent
    /// attribute; it, and an empty value, match only a universal key
    /// (§C.2.2.2.3).
    pub fn matches(&self, kind: ValueKind, value: Option<&str>) -> bool {
        if self.is_universal() {
            return true;
        }
        match value.map(trim_padding) {
            Some(v) if !v.is_empty() => self.matches_present(kind, v),
            _ => false,
        }
    }

    /// Whether any value of a multi-valued attribute matches (§C.2.2.3), e.g.
    /// Modalities in Study. A universal key matches even an empty list.
    pub fn matches_any(&self, kind: ValueKind, values: &[String]) -> bool {
        self.is_universal() || values.iter().any(|v| self.matches(kind, Some(v)))
    }

    /// True when every entity matches (§C.2.2.3, and `*` by §C.2.2.2.4
    /// note 1).
    pub fn is_universal(&self) -> bool {
        match self {
            Matcher::Universal => true,
            Matcher::Wildcard(p) => p.is_universal(),
            Matcher::Range { from, to } => from.is_none() && to.is_none(),
            Matcher::ValueList(members) => members.iter().any(Matcher::is_universal),
            Matcher::Single(_) | Matcher::UidList(_) => false,
        }
    }

    /// For index planning: the exact values this key pins (§C.2.2.2.1,
    /// §C.2.2.2.2), in [`normalize_value`] form; for a value list, all of its
    /// members' values when each member pins some.
    pub fn exact_values(&self) -> Option<Vec<String>> {
        match self {
            Matcher::Single(v) => Some(vec![v.clone()]),
            Matcher::UidList(vs) => Some(vs.clone()),
            Matcher::ValueList(members) => {
                let mut all = Vec::new();
                for m in members {
                    all.extend(m.exact_values()?);
                }
                Some(all)
            }
            _ => None,
        }
    }

    /// For index planning: the literal characters a wild card key starts
    /// with (§C.2.2.2.4), when there are any. For person names this prefix
    /// is case-folded and may be met by any component group, not only the
    /// start of the whole value.
    pub fn literal_prefix(&self) -> Option<String> {
        match self {
            Matcher::Wildcard(p) => Some(p.literal_prefix())
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            _ => None,
        }
    }

    /// For index planning of a person-name key: `P` when the key is the
    /// pattern `P*` (literal characters, then one trailing `*`, no `=`),
    /// in the folded form names are compared in. Such a key matches a
    /// stored name exactly when one of its [`pn_lead_prefixes`] is `P`
    /// (for `P` no longer than the prefixes kept).
    pub fn pn_prefix_pattern(&self) -> Option<String> {
        let Matcher::Wildcard(p) = self else {
            return None;
        };
        let (last, literals) = p.tokens.split_last()?;
        if *last != Token::AnyRun || literals.is_empty() {
            return None;
        }
        let prefix = literals
            .iter()
            .map(|t| match t {
                Token::Literal(c) => Some(fold_case_char(*c)),
                _ => None,
            })
            .collect::<Option<String>>()?;
        (!prefix.contains('=')).then_some(prefix)
    }

    /// For index planning: the inclusive bounds of a range key
    /// (§C.2.2.2.5), already widened to their precision, in
    /// [`normalize_value`] form. Date-time bounds may carry a UTC offset.
    pub fn range(&self) -> Option<(Option<String>, Option<String>)> {
        match self {
            Matcher::Range { from, to } => Some((from.clone(), to.clone())),
            _ => None,
        }
    }

    /// Matching of a present, non-empty, trimmed value.
    fn matches_present(&self, kind: ValueKind, value: &str) -> bool {
        match self {
            Matcher::Universal => true,
            Matcher::Single(key) => single_match(kind, key, value),
            Matcher::Wildcard(pattern) => match kind {
                ValueKind::PersonName => pn_wildcard_match(pattern, &normalize_pn(value)),
                _ => pattern.is_match(value),
            },
            Matcher::UidList(keys) => keys.iter().any(|k| single_match(kind, k, value)),
            Matcher::Range { from, to } => range_match(kind, from.as_deref(), to.as_deref(), value),
            Matcher::ValueList(members) => members
                .iter()
                .any(|m| m.is_universal() || m.matches_present(kind, value)),
        }
    }
}

/// §C.2.2.2.1 for one key value against one stored value.
fn single_match(kind: ValueKind, key: &str, value: &str) -> bool {
    let key = trim_padding(key);
    match kind {
        ValueKind::Text | ValueKind::CaseSensitiveText | ValueKind::Uid => key == value,
        ValueKind::PersonName => pn_single_match(&normalize_pn(key), &normalize_pn(value)),
        ValueKind::Date => match (parse_date(key), parse_date(value)) {
            (Ok(k), Ok(v)) => k == v,
            _ => false,
        },
        ValueKind::Time => match (parse_time(key), parse_time(value)) {
            (Ok(k), Ok(v)) => k.lower() == v.lower(),
            _ => false,
        },
        ValueKind::DateTime => match (parse_datetime(key), parse_datetime(value)) {
            (Ok(k), Ok(v)) => compare_datetimes(&k.lower(), &v.lower()) == Ordering::Equal,
            _ => false,
        },
        ValueKind::Number => match (parse_number(key), parse_number(value)) {
            (Some(k), Some(v)) => k == v,
            (None, _) => key == value,
            (Some(_), None) => false,
        },
    }
}

/// §C.2.2.2.5: `from` stands for its earliest instant, `to` for its latest,
/// the stored value for its earliest.
fn range_match(kind: ValueKind, from: Option<&str>, to: Option<&str>, value: &str) -> bool {
    fn within<T>(
        from: Option<&str>,
        to: Option<&str>,
        value: T,
        lower: impl Fn(&str) -> Option<T>,
        upper: impl Fn(&str) -> Option<T>,
        cmp: impl Fn(&T, &T) -> Ordering,
    ) -> bool {
        let after_start = match from {
            None => true,
            Some(f) => lower(f).is_some_and(|f| cmp(&f, &value) != Ordering::Greater),
        };
        let before_end = match to {
            None => true,
            Some(t) => upper(t).is_some_and(|t| cmp(&value, &t) != Ordering::Greater),
        };
        after_start && before_end
    }
    match kind {
        ValueKind::Date => parse_date(value).is_ok_and(|v| {
            within(
                from,
                to,
                v,
                |s| parse_date(s).ok(),
                |s| parse_date(s).ok(),
                Ord::cmp,
            )
        }),
        ValueKind::Time => parse_time(value).is_ok_and(|v| {
            within(
                from,
                to,
                v.lower(),
                |s| parse_time(s).ok().map(|t| t.lower()),
                |s| parse_time(s).ok().map(|t| t.upper()),
                Ord::cmp,
            )
        }),
        ValueKind::DateTime => parse_datetime(value).is_ok_and(|v| {
            within(
                from,
                to,
                v.lower(),
                |s| parse_datetime(s).ok().map(|t| t.lower()),
                |s| parse_datetime(s).ok().map(|t| t.upper()),
                compare_datetimes,
            )
        }),
        ValueKind::Number => parse_number(value).is_some_and(|v| {
            within(from, to, v, parse_number, parse_number, |a, b| {
                a.partial_cmp(b).unwrap_or(Ordering::Less)
            })
        }),
        ValueKind::Text | ValueKind::CaseSensitiveText | ValueKind::PersonName | ValueKind::Uid => {
            from.is_none_or(|f| trim_padding(f) <= value)
                && to.is_none_or(|t| value <= trim_padding(t))
        }
    }
}

// ---------------------------------------------------------------------------
// Folding and fuzzy name search
// ---------------------------------------------------------------------------

/// Folds text for case- and diacritic-insensitive search: NFD-decomposes,
/// drops combining diacritical marks (non-spacing marks with a non-zero
/// canonical combining class: the accents of Latin, Vietnamese, Greek,
/// Cyrillic, Hebrew and Arabic script; vowel signs of Brahmic scripts are
/// kept), maps `đ`/`Đ` (and the look-alike `ð`/`Ð`), which do not decompose,
/// to `D`, and upper-cases (`ß` and `ẞ` become `SS`). Everything else — `^`, `=`, spaces, other
/// scripts — is kept.
///
/// `fold_text("Nguyễn Văn Đức") == "NGUYEN VAN DUC"`.
pub fn fold_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.nfd() {
        if is_combining_mark(c) && canonical_combining_class(c) != 0 {
            continue;
        }
        match c {
            'đ' | 'Đ' | 'ð' | 'Ð' => out.push('D'),
            // Capital sharp s upper-cases to itself; fold it as `ß` does.
            'ẞ' => out.push_str("SS"),
            c if c.is_ascii() => out.push(c.to_ascii_uppercase()),
            c => out.extend(c.to_uppercase()),
        }
    }
    out
}

fn is_word_separator(c: char) -> bool {
    matches!(c, '^' | '=' | ',') || c.is_whitespace()
}

/// Beyond this many query words, words need not match distinct name words
/// (bounds the assignment search).
const MAX_ASSIGNED_WORDS: usize = 64;

/// Fuzzy person-name search for QIDO-RS `fuzzymatching=true` and the viewer:
/// case- and accent-insensitive ([`fold_text`] on both sides), word-order
/// free. The name is split into words at `^`, `=`, `,` and white space; every
/// word of the query must be a prefix of a different word of the name
/// (`nguyen`, `van an` and `an nguyen` all find `Nguyễn^Văn An`;
/// `nguyen b` does not). A query containing `*` or `?` is instead a wild card
/// pattern over the folded whole name, or over any one of its component
/// groups. An empty query matches every name.
pub fn fuzzy_name_match(query: &str, name: &str) -> bool {
    let query = fold_text(trim_padding(query));
    let name = fold_text(&canonical_pn(name));
    if has_wildcard(&query) {
        let pattern = WildcardPattern::new(&query);
        return pattern.is_universal()
            || pattern.is_match(&name)
            || (name.contains('=') && name.split('=').any(|g| pattern.is_match(g)));
    }
    let query_words: Vec<&str> = query
        .split(is_word_separator)
        .filter(|w| !w.is_empty())
        .collect();
    if query_words.is_empty() {
        return true;
    }
    let name_words: Vec<&str> = name
        .split(is_word_separator)
        .filter(|w| !w.is_empty())
        .collect();
    let candidates: Vec<Vec<usize>> = query_words
        .iter()
        .map(|q| {
            name_words
                .iter()
                .enumerate()
                .filter(|(_, n)| n.starts_with(q))
                .map(|(i, _)| i)
                .collect()
        })
        .collect();
    if candidates.iter().any(Vec::is_empty) {
        return false;
    }
    if query_words.len() > MAX_ASSIGNED_WORDS {
        return true;
    }
    if query_words.len() > name_words.len() {
        return false;
    }
    // Each query word needs its own name word: bipartite matching by
    // augmenting paths (Kuhn), at most 64 × words × words steps.
    let mut owner: Vec<Option<usize>> = vec![None; name_words.len()];
    for q in 0..candidates.len() {
        let mut seen = vec![false; name_words.len()];
        if !augment(q, &candidates, &mut owner, &mut seen) {
            return false;
        }
    }
    true
}

/// Tries to give query word `q` a name word, moving earlier assignments
/// along. Recursion depth is bounded by the number of query words (≤ 64).
fn augment(
    q: usize,
    candidates: &[Vec<usize>],
    owner: &mut [Option<usize>],
    seen: &mut [bool],
) -> bool {
    for &n in &candidates[q] {
        if seen[n] {
            continue;
        }
        seen[n] = true;
        let free = match owner[n] {
            None => true,
            Some(other) => augment(other, candidates, owner, seen),
        };
        if free {
            owner[n] = Some(q);
            return true;
        }
    }
    false
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::ValueKind::*;
    use super::*;

    const YAMADA: &str = "Yamada^Tarou=山田^太郎=やまだ^たろう";

    /// A `P*` key matches a name exactly when `P` is one of the name's lead
    /// prefixes (the index's name-prefix plan relies on it).
    #[test]
    fn prefix_patterns_match_exactly_the_names_with_that_lead() {
        let names = [
            "Nguyễn^Văn An",
            "NGUYEN^THI",
            "Ngụy^Bá",
            "Lê^Văn",
            "Lê",
            "le^van",
            "Trần^Thị Bích=陳^氏碧",
            "=山田^太郎",
            YAMADA,
            "O'Brien^Seán ",
            "Müller^Straße^^",
        ];
        let mut patterns: Vec<String> = Vec::new();
        for n in names {
            let chars: Vec<char> = n.chars().collect();
            for end in 1..=chars.len().min(9) {
                patterns.push(format!("{}*", chars[..end].iter().collect::<String>()));
            }
        }
        patterns.extend(["nguy*".into(), "NGUYỄN*".into(), "山*".into(), "x*".into()]);
        const MAX: usize = 6;
        for pattern in &patterns {
            let m = parse_matcher(PersonName, pattern).expect("pattern parses");
            let Some(p) = m.pn_prefix_pattern() else {
                assert!(
                    pattern.contains('=') || pattern.trim_end_matches('*').trim().is_empty(),
                    "{pattern} should be a prefix pattern"
                );
                continue;
            };
            if p.chars().count() > MAX {
                continue;
            }
            for n in names {
                let by_lead = pn_lead_prefixes(n, MAX).contains(&p);
                let by_matcher = m.matches_any(PersonName, &[n.to_owned()]);
                assert_eq!(by_lead, by_matcher, "{pattern} against {n} (prefix {p})");
            }
        }
        assert_eq!(
            parse_matcher(PersonName, "Ng?y*")
                .unwrap()
                .pn_prefix_pattern(),
            None
        );
        assert_eq!(
            parse_matcher(PersonName, "Nguy*n")
                .unwrap()
                .pn_prefix_pattern(),
            None
        );
        assert_eq!(
            parse_matcher(PersonName, "*uy*")
                .unwrap()
                .pn_prefix_pattern(),
            None
        );
        assert_eq!(
            parse_matcher(PersonName, "Nguyễn")
                .unwrap()
                .pn_prefix_pattern(),
            None
        );
        assert_eq!(
            parse_matcher(PersonName, "Nguy**")
                .unwrap()
                .pn_prefix_pattern(),
            Some("NGUY".into())
        );
    }

    /// (kind, key, stored value, expected match)
    const CASES: &[(ValueKind, &str, Option<&str>, bool)] = &[
        // §C.2.2.2.3 universal: empty key, '*', padding only; absent values too.
        (Text, "", Some("ABC"), true),
        (Text, "", None, true),
        (Text, "", Some(""), true),
        (Text, "*", None, true),
        (Text, "*", Some(""), true),
        (Text, "   ", None, true),
        (CaseSensitiveText, "*", Some("CT"), true),
        (PersonName, "**", Some("X^Y"), true),
        (PersonName, "*", None, true),
        (Uid, "*", Some("1.2.3"), true),
        (Uid, "", None, true),
        (Date, "*", None, true),
        (Date, "-", Some("20200101"), true),
        (Time, "", Some("1200"), true),
        (DateTime, "*", Some("2020"), true),
        (Number, "*", Some("5"), true),
        (Number, "", None, true),
        // §C.2.2.2.1 single value, text: exact and case-sensitive.
        (Text, "ABC", Some("ABC"), true),
        (Text, "ABC", Some("abc"), false),
        (Text, "ABC", Some("ABCD"), false),
        (Text, "ABC", Some("AB"), false),
        (Text, "ABC", None, false),
        (Text, "ABC", Some(""), false),
        (Text, "ABC", Some("   "), false),
        (Text, " ABC ", Some("ABC "), true),
        (Text, "Đức", Some("Duc"), false),
        (Text, "Nguyễn", Some("Nguyễn"), true),
        (CaseSensitiveText, "CT", Some("CT"), true),
        (CaseSensitiveText, "ct", Some("CT"), false),
        (CaseSensitiveText, "CT", Some("CT "), true),
        // §C.2.2.2.4 wild cards on text.
        (Text, "AB*", Some("ABCDEF"), true),
        (Text, "AB*", Some("AB"), true),
        (Text, "AB*", Some("XAB"), false),
        (Text, "*EF", Some("ABCDEF"), true),
        (Text, "A*F", Some("ABCDEF"), true),
        (Text, "A*C*F", Some("ABCDEF"), true),
        (Text, "A*X*F", Some("ABCDEF"), false),
        (Text, "A**F", Some("AF"), true),
        (Text, "A?C", Some("ABC"), true),
        (Text, "A?C", Some("AC"), false),
        (Text, "A?C", Some("ABBC"), false),
        (Text, "Nguy?n", Some("Nguyễn"), true),
        (Text, "Nguy??n", Some("Nguyễn"), false),
        (Text, "*ễn", Some("Nguyễn"), true),
        (Text, "?", Some("é"), true),
        (Text, "ab*", Some("ABC"), false),
        (Text, "A*", None, false),
        (Text, "A*", Some(""), false),
        (Text, "*?", Some("X"), true),
        (Text, "?*", Some("XYZ"), true),
        (Text, "*B*", Some("ABC"), true),
        (CaseSensitiveText, "C?", Some("CT"), true),
        (CaseSensitiveText, "c?", Some("CT"), false),
        // Value lists (backslash, no escaping): OR of members.
        (CaseSensitiveText, "CT\\MR", Some("MR"), true),
        (CaseSensitiveText, "CT\\MR", Some("US"), false),
        (CaseSensitiveText, "CT\\", Some("CT"), true),
        (Text, "AB*\\XY", Some("ABC"), true),
        (Text, "AB*\\XY", Some("XY"), true),
        (Text, "AB*\\XY", Some("XYZ"), false),
        (Text, "CT\\*", Some("ZZ"), true),
        (Text, "A\\B", Some("A\\B"), false),
        (PersonName, "Nguyễn*\\Trần*", Some("Trần^Thị Bích"), true),
        // PN: case-insensitive, NFC, component groups, trailing components.
        (PersonName, "Nguyễn^Văn An", Some("Nguyễn^Văn An"), true),
        (PersonName, "nguyễn^văn an", Some("NGUYỄN^VĂN AN"), true),
        (PersonName, "Nguyễn*", Some("Nguyễn^Văn An"), true),
        (PersonName, "nguyễn*", Some("NGUYỄN^VĂN AN"), true),
        (PersonName, "Nguyễn", Some("Nguyễn^Văn An"), false),
        (PersonName, "Nguyen*", Some("Nguyễn^Văn An"), false),
        (
            PersonName,
            "Nguy?n*",
            Some("Nguye\u{302}\u{303}n^Van"),
            true,
        ),
        (
            PersonName,
            "Nguyễn^Văn An",
            Some("Nguye\u{302}\u{303}n^Va\u{306}n An"),
            true,
        ),
        (PersonName, "*văn*", Some("Nguyễn^Văn An"), true),
        (PersonName, "Müller", Some("MÜLLER"), true),
        (PersonName, "STRAẞE", Some("straße"), true),
        (PersonName, "山田*", Some(YAMADA), true),
        (PersonName, "山田^太郎", Some(YAMADA), true),
        (PersonName, "やまだ^たろう", Some(YAMADA), true),
        (PersonName, "Yamada^Tarou", Some(YAMADA), true),
        (PersonName, "yamada*", Some(YAMADA), true),
        (PersonName, "*Tarou*", Some(YAMADA), true),
        (PersonName, YAMADA, Some(YAMADA), true),
        (PersonName, "=山田^太郎", Some(YAMADA), true),
        (PersonName, "Yamada^Tarou=山田^太郎", Some(YAMADA), true),
        (PersonName, "Yamada^Tarou=山本^太郎", Some(YAMADA), false),
        (PersonName, "Yamada*=山*", Some(YAMADA), true),
        (PersonName, "Yamada*=*", Some("Yamada^Tarou"), true),
        (PersonName, "田中*", Some(YAMADA), false),
        (PersonName, "山田", Some(YAMADA), false),
        (PersonName, "Smith^John", Some("Smith^John^^^"), true),
        (PersonName, "Smith^John^^", Some("Smith^John"), true),
        (PersonName, "Smith^John", Some("Smith^John=="), true),
        (PersonName, "SMITH", Some("Smith^John"), false),
        (PersonName, "Smith^J*", Some("SMITH^JOHN"), true),
        (PersonName, "Smith*", None, false),
        (PersonName, "Smith*", Some(""), false),
        // §C.2.2.2.2 UIDs and lists of UIDs.
        (Uid, "1.2.840.10008.1", Some("1.2.840.10008.1"), true),
        (Uid, "1.2.840.10008.1", Some("1.2.840.10008.1\0"), true),
        (Uid, "1.2.840.10008.1\0", Some("1.2.840.10008.1"), true),
        (Uid, "1.2.840.10008.1", Some("1.2.840.10008.10"), false),
        (Uid, "1.2.840.10008.1", None, false),
        (Uid, "1.2.3\\1.2.4", Some("1.2.4"), true),
        (Uid, "1.2.3\\1.2.4", Some("1.2.5"), false),
        (Uid, " 1.2.3 \\ 1.2.4\0", Some("1.2.4"), true),
        (Uid, "1.2.3\\\\1.2.4\\", Some("1.2.3"), true),
        (Uid, "1.2.3,1.2.4", Some("1.2.4"), true),
        (Uid, "1.2.3\\*", Some("9.9"), true),
        // §C.2.2.2.5.1 dates.
        (Date, "20200115", Some("20200115"), true),
        (Date, "20200115", Some("20200116"), false),
        (Date, "20200115", Some("2020.01.15"), true),
        (Date, "2020.01.15", Some("20200115"), true),
        (Date, "20240229", Some("20240229"), true),
        (Date, "20000229", Some("2000.02.29"), true),
        (Date, "20200101-20201231", Some("20200615"), true),
        (Date, "20200101-20201231", Some("20200101"), true),
        (Date, "20200101-20201231", Some("20201231"), true),
        (Date, "20200101-20201231", Some("20210101"), false),
        (Date, "20200101-20201231", Some("20191231"), false),
        (Date, "20200101-20201231", Some("2020.06.15"), true),
        (Date, "20200101 - 20201231", Some("20200301"), true),
        (Date, "-20201231", Some("19000101"), true),
        (Date, "-20201231", Some("20201231"), true),
        (Date, "-20201231", Some("20210101"), false),
        (Date, "20200101-", Some("29991231"), true),
        (Date, "20200101-", Some("20200101"), true),
        (Date, "20200101-", Some("20191231"), false),
        (Date, "20200615-20200615", Some("20200615"), true),
        (Date, "20200615-20200615", Some("20200616"), false),
        (Date, "20200101-20201231", None, false),
        (Date, "20200101-20201231", Some(""), false),
        (Date, "20200101-20201231", Some("garbage"), false),
        (Date, "20200101\\20200105", Some("20200105"), true),
        (Date, "20200101\\20200105", Some("20200103"), false),
        (Date, "-20200101\\20201201-", Some("20201215"), true),
        // §C.2.2.2.5.2 times: single values by meaning, ranges widened.
        (Time, "1030", Some("103000"), true),
        (Time, "2230", Some("223000.000"), true),
        (Time, "1030", Some("103015"), false),
        (Time, "103000.000", Some("1030"), true),
        (Time, "10-12", Some("125959.999999"), true),
        (Time, "10-12", Some("12"), true),
        (Time, "10-12", Some("10"), true),
        (Time, "10-12", Some("130000"), false),
        (Time, "10-12", Some("095959.999999"), false),
        (Time, "1030-1030", Some("103059.5"), true),
        (Time, "1030-1030", Some("1031"), false),
        (Time, "103015.5-103015.5", Some("103015.59"), true),
        (Time, "103015.5-103015.5", Some("103015.6"), false),
        (Time, "-0800", Some("080059"), true),
        (Time, "-0800", Some("000000"), true),
        (Time, "-0800", Some("0801"), false),
        (Time, "1700-", Some("235959.999999"), true),
        (Time, "1700-", Some("1700"), true),
        (Time, "1700-", Some("165959"), false),
        (Time, "10:30:00", Some("103000"), true),
        (Time, "1030", Some("10:30:00"), true),
        (Time, "0800-1200", Some("10:15"), true),
        (Time, "0800-1200", None, false),
        (Time, "0800-1200", Some("99"), false),
        // §C.2.2.2.5.3 date-times, partial precision and UTC offsets.
        (DateTime, "20200101103000", Some("20200101103000.000"), true),
        (DateTime, "20200101", Some("20200101000000"), true),
        (DateTime, "20200101", Some("20200101000001"), false),
        (DateTime, "2020-2020", Some("20201231235959.999999"), true),
        (DateTime, "2020-2020", Some("20200101"), true),
        (DateTime, "2020-2020", Some("20210101"), false),
        (DateTime, "202002-202002", Some("20200229235959"), true),
        (DateTime, "202002-202002", Some("20200301"), false),
        (DateTime, "20200101-", Some("20200101000000"), true),
        (DateTime, "-20191231", Some("20191231235959"), true),
        (DateTime, "-20191231", Some("20200101"), false),
        (
            DateTime,
            "20200101120000+0000-20200101130000+0000",
            Some("20200101190000+0700"),
            true,
        ),
        (
            DateTime,
            "20200101120000+0000-20200101130000+0000",
            Some("20200101120000+0700"),
            false,
        ),
        (
            DateTime,
            "20200101120000-20200101130000",
            Some("20200101123000+0700"),
            true,
        ),
        (
            DateTime,
            "20200101120000-0500-20200101130000-0500",
            Some("20200101173000+0000"),
            true,
        ),
        (
            DateTime,
            "20200101120000+0700",
            Some("20200101050000+0000"),
            true,
        ),
        (
            DateTime,
            "20200101120000-0500",
            Some("20200101170000+0000"),
            true,
        ),
        (
            DateTime,
            "20200101120000-0500",
            Some("20200101120000+0000"),
            false,
        ),
        (DateTime, "2020-2020", None, false),
        // Numbers: exact numeric comparison.
        (Number, "5", Some("5.0"), true),
        (Number, "5", Some("5.1"), false),
        (Number, "-5", Some("-5"), true),
        (Number, "-5", Some("5"), false),
        (Number, "1e2", Some("100"), true),
        (Number, "0.1", Some(".10"), true),
        (Number, "+7", Some("7"), true),
        (Number, " 7 ", Some("7 "), true),
        (Number, "5", Some("abc"), false),
        (Number, "5", None, false),
        (Number, "1\\2\\3", Some("2"), true),
        (Number, "1\\2\\3", Some("4"), false),
    ];

    #[test]
    fn matching_table() {
        let mut failures = Vec::new();
        for &(kind, key, stored, expected) in CASES {
            let matcher = match parse_matcher(kind, key) {
                Ok(m) => m,
                Err(e) => {
                    failures.push(format!("{kind:?} {key:?}: parse error {e}"));
                    continue;
                }
            };
            if matcher.matches(kind, stored) != expected {
                failures.push(format!(
                    "{kind:?} key {key:?} vs {stored:?}: expected {expected}, matcher {matcher:?}"
                ));
            }
        }
        assert!(CASES.len() >= 80);
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    /// Keys that must be refused (kind, key).
    const BAD_KEYS: &[(ValueKind, &str)] = &[
        (Date, "2020-13-45"),
        (Date, "2020-01-15"),
        (Date, "20201345"),
        (Date, "20201300"),
        (Date, "20200001"),
        (Date, "20200230"),
        (Date, "20210229"),
        (Date, "19000229"),
        (Date, "20200100"),
        (Date, "2020010"),
        (Date, "202001011"),
        (Date, "2020*"),
        (Date, "2020?101"),
        (Date, "20201231-20200101"),
        (Date, "20200101-20200201-20200301"),
        (Date, "2020０101"),
        (Date, "20200101-2020"),
        (Date, "2020/01/01"),
        (Time, "2500"),
        (Time, "1060"),
        (Time, "106061"),
        (Time, "103"),
        (Time, "1030.5"),
        (Time, "103015.1234567"),
        (Time, "1200-1000"),
        (Time, "2300-0100"),
        (Time, "10*"),
        (Time, "10:3"),
        (Time, "１０"),
        (DateTime, "2020130"),
        (DateTime, "20201301"),
        (DateTime, "20200230"),
        (DateTime, "20200101-20191231"),
        (DateTime, "20200101.5"),
        (DateTime, "20200101+2500"),
        (DateTime, "2020*"),
        (DateTime, "abc-def"),
        (Uid, "1.2.3*"),
        (Uid, "1.2.?"),
        (Uid, "1.2.x"),
        (Uid, "1..2"),
        (Uid, "1.2.3\\1.2.x"),
        (
            Uid,
            "1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.16.17.18.19.20.21.22.23.24.25.26",
        ),
        (Number, "abc"),
        (Number, "1-5"),
        (Number, "5*"),
        (Number, "NaN"),
        (Number, "inf"),
        (Number, "1\\x"),
    ];

    #[test]
    fn bad_keys_are_rejected() {
        for &(kind, key) in BAD_KEYS {
            assert!(
                parse_matcher(kind, key).is_err(),
                "{kind:?} {key:?} should be rejected, got {:?}",
                parse_matcher(kind, key)
            );
        }
    }

    #[test]
    fn error_messages_say_what_to_do() {
        let e = parse_matcher(Date, "2020-13-45")
            .unwrap_err()
            .with_attribute("StudyDate");
        let msg = e.to_string();
        assert!(
            msg.starts_with("StudyDate: '2020-13-45' is not a date"),
            "{msg}"
        );
        assert!(msg.contains("YYYYMMDD-YYYYMMDD"), "{msg}");
        assert_eq!(e.attribute(), "StudyDate");
        assert_eq!(e.value(), "2020-13-45");

        let msg = parse_matcher(Date, "20201345").unwrap_err().to_string();
        assert!(
            msg.starts_with("'20201345' is not a date: month 13"),
            "{msg}"
        );
        let msg = parse_matcher(Date, "20210229").unwrap_err().to_string();
        assert!(msg.contains("day 29 does not exist in 2021-02"), "{msg}");
        let msg = parse_matcher(Time, "2300-0100").unwrap_err().to_string();
        assert!(msg.contains("cannot cross midnight"), "{msg}");
        let msg = parse_matcher(Uid, "1.2.*").unwrap_err().to_string();
        assert!(msg.contains("cannot be matched with '*'"), "{msg}");
        let msg = parse_matcher(Date, "2020*").unwrap_err().to_string();
        assert!(msg.contains("use a range such as"), "{msg}");
        let msg = parse_matcher(Number, "x")
            .unwrap_err()
            .with_attribute("SeriesNumber")
            .to_string();
        assert!(
            msg.starts_with("SeriesNumber: 'x' is not a number"),
            "{msg}"
        );
    }

    #[test]
    fn parsed_shapes_and_index_hints() {
        assert_eq!(parse_matcher(Text, "").unwrap(), Matcher::Universal);
        assert!(parse_matcher(Text, "*").unwrap().is_universal());
        assert!(!parse_matcher(Text, "A").unwrap().is_universal());

        let m = parse_matcher(Text, "AB*").unwrap();
        assert!(matches!(m, Matcher::Wildcard(_)));
        assert_eq!(m.literal_prefix().as_deref(), Some("AB"));
        assert_eq!(m.exact_values(), None);
        assert_eq!(parse_matcher(Text, "*AB").unwrap().literal_prefix(), None);
        assert_eq!(
            parse_matcher(Text, "A?C")
                .unwrap()
                .literal_prefix()
                .as_deref(),
            Some("A")
        );
        assert_eq!(
            parse_matcher(PersonName, "Nguyễn*")
                .unwrap()
                .literal_prefix()
                .as_deref(),
            Some("NGUYỄN")
        );

        let m = parse_matcher(Uid, "1.2.3\\1.2.4").unwrap();
        assert_eq!(m, Matcher::UidList(vec!["1.2.3".into(), "1.2.4".into()]));
        assert_eq!(
            m.exact_values(),
            Some(vec!["1.2.3".to_owned(), "1.2.4".to_owned()])
        );
        assert_eq!(
            parse_matcher(Uid, "1.2.3\0").unwrap(),
            Matcher::Single("1.2.3".into())
        );

        let m = parse_matcher(CaseSensitiveText, "CT\\MR").unwrap();
        assert_eq!(
            m.exact_values(),
            Some(vec!["CT".to_owned(), "MR".to_owned()])
        );
        assert_eq!(parse_matcher(Text, "CT\\M*").unwrap().exact_values(), None);

        assert_eq!(
            parse_matcher(Date, "2020.01.15").unwrap(),
            Matcher::Single("20200115".into())
        );
        assert_eq!(
            parse_matcher(Date, "20200101-").unwrap().range(),
            Some((Some("20200101".into()), None))
        );
        assert_eq!(
            parse_matcher(Date, "-20201231").unwrap().range(),
            Some((None, Some("20201231".into())))
        );
        assert_eq!(
            parse_matcher(Time, "10-12").unwrap().range(),
            Some((Some("100000.000000".into()), Some("125959.999999".into())))
        );
        assert_eq!(
            parse_matcher(Time, "103015.5-").unwrap().range(),
            Some((Some("103015.500000".into()), None))
        );
        assert_eq!(
            parse_matcher(DateTime, "2020-202002").unwrap().range(),
            Some((
                Some("20200101000000.000000".into()),
                Some("20200229235959.999999".into())
            ))
        );
        assert_eq!(
            parse_matcher(DateTime, "20200101120000-0500-")
                .unwrap()
                .range(),
            Some((Some("20200101120000.000000-0500".into()), None))
        );
        assert_eq!(
            parse_matcher(Time, "1030").unwrap(),
            Matcher::Single("103000.000000".into())
        );
        assert_eq!(
            parse_matcher(Number, "5.0").unwrap(),
            Matcher::Single("5".into())
        );
        assert_eq!(
            parse_matcher(Number, "-0").unwrap(),
            Matcher::Single("0".into())
        );
        assert_eq!(parse_matcher(Date, "20200101").unwrap().range(), None);
        assert_eq!(
            parse_matcher(DateTime, "20200101120000-0500").unwrap(),
            Matcher::Single("20200101120000.000000-0500".into())
        );
    }

    #[test]
    fn normalized_stored_values() {
        assert_eq!(
            normalize_value(Date, "2020.01.15").as_deref(),
            Some("20200115")
        );
        assert_eq!(
            normalize_value(Time, "10:30").as_deref(),
            Some("103000.000000")
        );
        assert_eq!(
            normalize_value(DateTime, "202001+0700").as_deref(),
            Some("20200101000000.000000+0700")
        );
        assert_eq!(normalize_value(Number, "05.50").as_deref(), Some("5.5"));
        assert_eq!(
            normalize_value(PersonName, "Nguyễn^Văn An^^").as_deref(),
            Some("NGUYỄN^VĂN AN")
        );
        assert_eq!(normalize_value(Uid, "1.2.3\0").as_deref(), Some("1.2.3"));
        assert_eq!(normalize_value(Text, "  "), None);
        assert_eq!(normalize_value(Date, "garbage"), None);
    }

    #[test]
    fn multi_valued_attributes_match_any_value() {
        let modalities = vec!["CT".to_owned(), "SR".to_owned()];
        let key = parse_matcher(CaseSensitiveText, "MR\\CT").unwrap();
        assert!(key.matches_any(CaseSensitiveText, &modalities));
        assert!(!key.matches_any(CaseSensitiveText, &["US".to_owned()]));
        assert!(!key.matches_any(CaseSensitiveText, &[]));
        assert!(Matcher::Universal.matches_any(CaseSensitiveText, &[]));
        let key = parse_matcher(CaseSensitiveText, "S?").unwrap();
        assert!(key.matches_any(CaseSensitiveText, &modalities));
    }

    #[test]
    fn hand_built_matchers_are_interpreted_by_kind() {
        // Bounds not in canonical form are still read by meaning.
        let m = Matcher::Range {
            from: Some("10".into()),
            to: Some("11".into()),
        };
        assert!(m.matches(Time, Some("115959")));
        assert!(!m.matches(Time, Some("12")));
        let m = Matcher::Range {
            from: Some("2".into()),
            to: Some("10".into()),
        };
        assert!(m.matches(Number, Some("5")));
        assert!(Matcher::Range {
            from: None,
            to: None
        }
        .matches(Date, None));
        assert!(Matcher::Wildcard(WildcardPattern::new("**")).matches(Text, None));
        assert!(!Matcher::ValueList(vec![]).matches(Text, Some("x")));
    }

    #[test]
    fn wildcard_is_not_exponential() {
        let long = "a".repeat(10_000);
        let pattern = WildcardPattern::new("*a*a*a*a*a*b");
        assert!(!pattern.is_match(&long));
        assert!(pattern.is_match(&format!("{long}b")));
        let m = parse_matcher(Text, "*a*a*a*a*a*a*a*a*a*a*a*b").unwrap();
        assert!(!m.matches(Text, Some(&long)));
        let m = parse_matcher(PersonName, "*A*A*A*A*A*A*A*A*A*A*B").unwrap();
        assert!(!m.matches(PersonName, Some(&long)));
        assert!(m.matches(PersonName, Some(&format!("{long}B"))));
    }

    #[test]
    fn wildcard_pattern_basics() {
        let p = WildcardPattern::new("Ng?y*n");
        assert_eq!(p.as_str(), "Ng?y*n");
        assert_eq!(p.literal_prefix(), "Ng");
        assert!(p.is_match("Nguyễn"));
        assert!(!p.is_match("nguyễn"));
        assert!(p.is_match_ignore_case("NGUYỄN"));
        assert!(WildcardPattern::new("***").is_universal());
        assert!(!WildcardPattern::new("*?").is_universal());
    }

    #[test]
    fn fold_text_removes_case_and_diacritics() {
        assert_eq!(fold_text("Nguyễn Văn Đức"), "NGUYEN VAN DUC");
        assert_eq!(fold_text("Trần Thị Bích"), "TRAN THI BICH");
        assert_eq!(fold_text("Jérôme"), "JEROME");
        assert_eq!(fold_text("Müller"), "MULLER");
        assert_eq!(fold_text("Phạm Hồng Thái"), "PHAM HONG THAI");
        assert_eq!(fold_text("Lương Ưng Đạt"), "LUONG UNG DAT");
        assert_eq!(fold_text("đ"), "D");
        assert_eq!(fold_text("Straße"), "STRASSE");
        assert_eq!(fold_text("STRAẞE"), "STRASSE");
        assert_eq!(fold_text("Nguyễn^Văn An=阮^文安"), "NGUYEN^VAN AN=阮^文安");
        // Decomposed input folds the same.
        assert_eq!(fold_text("Nguye\u{302}\u{303}n"), "NGUYEN");
        assert_eq!(fold_text(""), "");
    }

    #[test]
    fn fuzzy_name_search() {
        let name = "Nguyễn^Văn An";
        let cases: &[(&str, &str, bool)] = &[
            ("nguyen", name, true),
            ("NGUYEN", name, true),
            ("van an", name, true),
            ("an nguyen", name, true),
            ("ng v a", name, true),
            ("Nguyễn Văn An", name, true),
            ("nguyen b", name, false),
            ("nguyen nguyen", name, false),
            ("guyen", name, false),
            ("", name, true),
            ("   ", name, true),
            ("duc", "Nguyễn^Văn Đức", true),
            ("tran thi bich", "Trần^Thị Bích", true),
            ("bich tran", "Trần^Thị Bích", true),
            ("jerome", "Dupont^Jérôme", true),
            ("muller", "Müller^Hans", true),
            ("smith, john", "Smith^John", true),
            ("yamada", YAMADA, true),
            ("山田", YAMADA, true),
            ("nguy*an", name, true),
            ("ng?yen*", name, true),
            ("*duc", "Nguyễn^Văn Đức", true),
            ("*", name, true),
            ("nguy*b", name, false),
            ("山田*", YAMADA, true),
            ("x", "", false),
        ];
        for &(query, candidate, expected) in cases {
            assert_eq!(
                fuzzy_name_match(query, candidate),
                expected,
                "query {query:?} against {candidate:?}"
            );
        }
    }

    /// Arbitrary input never panics (no byte slicing inside a character, no
    /// overflow) whatever the kind.
    #[test]
    fn arbitrary_input_never_panics() {
        const ALPHABET: &[char] = &[
            '0', '1', '2', '5', '9', '-', '+', '.', ':', '*', '?', '\\', '=', '^', ' ', '\0', 'a',
            'E', 'ễ', '０', '山', ',',
        ];
        let kinds = [
            Text,
            CaseSensitiveText,
            PersonName,
            Uid,
            Date,
            Time,
            DateTime,
            Number,
        ];
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let len = (next() % 24) as usize;
            let text: String = (0..len)
                .map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize])
                .collect();
            let other: String = text.chars().rev().collect();
            for kind in kinds {
                if let Ok(m) = parse_matcher(kind, &text) {
                    m.matches(kind, Some(&other));
                    m.matches(kind, Some(&text));
                    let _ = (m.exact_values(), m.literal_prefix(), m.range());
                }
                let _ = normalize_value(kind, &text);
            }
            fuzzy_name_match(&text, &other);
            let _ = fold_text(&text);
        }
    }

    #[test]
    fn value_kind_from_vr() {
        assert_eq!(ValueKind::from_vr("PN"), Some(PersonName));
        assert_eq!(ValueKind::from_vr("CS"), Some(CaseSensitiveText));
        assert_eq!(ValueKind::from_vr("LO"), Some(Text));
        assert_eq!(ValueKind::from_vr("UI"), Some(Uid));
        assert_eq!(ValueKind::from_vr("DS"), Some(Number));
        assert_eq!(ValueKind::from_vr("SQ"), None);
    }
}
