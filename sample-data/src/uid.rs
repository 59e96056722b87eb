//! Deterministic, conforming DICOM UIDs.
//!
//! Every UID the generator emits is `2.25.` followed by the decimal value of
//! a 128-bit number (PS3.5 §B.2, "UUID derived UID"). The number is the first
//! 16 bytes of `SHA-256("sen-pacs-sample/" + name)`, read big-endian, with the
//! RFC 9562 version (8, "custom") and variant (`10`) bits set so that the
//! value is a well-formed UUID. The same name therefore always yields the
//! same UID, and distinct names yield distinct UIDs with overwhelming
//! probability.

use sha2::{Digest, Sha256};

/// Namespace prefix hashed in front of every UID name.
pub const NAMESPACE: &str = "sen-pacs-sample";

/// Root of UUID-derived UIDs (PS3.5 §B.2).
const UUID_ROOT: &str = "2.25.";

/// Maximum length of a UID value (PS3.5 §9.1).
pub const MAX_UID_LEN: usize = 64;

/// The 128-bit UUID value behind the UID for `name`.
pub fn uuid_value(name: &str) -> u128 {
    let mut hasher = Sha256::new();
    hasher.update(NAMESPACE.as_bytes());
    hasher.update(b"/");
    hasher.update(name.as_bytes());
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    // RFC 9562: version 8 in the high nibble of octet 6 ...
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    // ... and variant 0b10 in the two high bits of octet 8.
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    u128::from_be_bytes(bytes)
}

/// The deterministic UID for `name`, e.g. `uid("ct-phantom/series1/instance7")`.
pub fn uid(name: &str) -> String {
    format!("{UUID_ROOT}{}", uuid_value(name))
}

/// Implementation Class UID written in every file's meta group.
pub fn implementation_class_uid() -> String {
    uid("implementation")
}

/// Implementation Version Name written in every file's meta group.
pub const IMPLEMENTATION_VERSION_NAME: &str = "SENPACS_SAMPLE";

/// Whether `value` is a syntactically valid UID (PS3.5 §9.1): at most 64
/// characters, dot-separated numeric components, no empty component and no
/// leading zero in a multi-digit component.
pub fn is_valid_uid(value: &str) -> bool {
    if value.is_empty() || value.len() > MAX_UID_LEN {
        return false;
    }
    value.split('.').all(|component| {
        !component.is_empty()
            && component.bytes().all(|b| b.is_ascii_digit())
            && !(component.len() > 1 && component.starts_with('0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_deterministic_valid_and_distinct() {
        let a = uid("ct-phantom/study");
        let b = uid("ct-phantom/study");
        let c = uid("ct-phantom/series1");
        assert_eq!(a, b);
        assert_ne!(a, c);
        for u in [&a, &c, &implementation_class_uid()] {
            assert!(u.starts_with("2.25."), "{u}");
            assert!(is_valid_uid(u), "{u}");
            assert!(u.len() <= MAX_UID_LEN);
        }
    }

    #[test]
    fn uuid_bits_are_rfc9562_v8() {
        let v = uuid_value("anything");
        assert_eq!((v >> 76) & 0xf, 8, "version nibble");
        assert_eq!((v >> 62) & 0b11, 0b10, "variant bits");
    }

    #[test]
    fn uid_validation() {
        assert!(is_valid_uid("1.2.840.10008.1.2.1"));
        assert!(is_valid_uid("2.25.0"));
        assert!(!is_valid_uid(""));
        assert!(!is_valid_uid("1..2"));
        assert!(!is_valid_uid("1.02"));
        assert!(!is_valid_uid("1.2."));
        assert!(!is_valid_uid("1.2a"));
        assert!(!is_valid_uid(&format!("1.{}", "2".repeat(70))));
    }
}
