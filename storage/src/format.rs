//! Format versions of what this crate persists, and the one value encoding
//! every sled tree uses.
//!
//! Each store carries a store-level version (the index's `meta` key
//! [`FORMAT_KEY`], the index log's file header, each landing segment's
//! header) and every record a one-byte version prefix. Opening a store of a
//! newer version refuses with [`NewerFormat`]; an older one is migrated on
//! open (see `index.rs`). ARCHITECTURE.md, "On-disk formats", lists every
//! layout with its version.
//!
//! A new sled tree stores its values with [`encode_versioned`] /
//! [`decode_versioned`] (or [`prefix_version`] / [`strip_version`] for raw
//! bytes) under its own record version constant, starting at 1.
//!
//! Non-goals: no schema evolution inside bincode; a layout change bumps a
//! version and comes with a migration.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The index's layout version (trees, keys, value prefixes), stored under
/// [`FORMAT_KEY`] in its `meta` tree. Version 0 is the unversioned layout
/// of releases before versioning (values were bare bincode); version 2
/// added the per-series metadata blobs (trees `series_metadata`,
/// `metadata_dirty`, `metadata_garbage`); version 3 the name prefix
/// entries (`study_by_name_lead` and its `meta` counters), which an older
/// build would not keep up to date; version 4 keys each instance's record
/// and JSON by series then SOP Instance UID (`instance_by_series`,
/// `metadata`), `instances` holding the series only; version 5 the MPPS
/// accession entries (`mpps_by_accession`), which an older build would
/// not write.
pub const INDEX_FORMAT: u32 = 5;

/// Key in the index's `meta` tree holding [`INDEX_FORMAT`] (u32 LE). The
/// one value there without a record version prefix: it is the version.
pub const FORMAT_KEY: &[u8] = b"format/version";

/// Version byte in front of every value the index writes.
pub const INDEX_RECORD: u8 = 1;

/// A store written by a newer build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} has format version {found}, but this build of pacs reads format version {supported} at most; \
     upgrade the pacs binary (the data was left unchanged)"
)]
pub struct NewerFormat {
    pub what: String,
    pub found: u32,
    pub supported: u32,
}

/// Why a versioned value cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record has format version {found}, but this build reads version {supported}; upgrade the pacs binary")]
    Newer { found: u8, supported: u8 },
    #[error("record has format version {found}, older than {supported}; it should have been migrated when the store was opened")]
    Older { found: u8, supported: u8 },
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

/// `[version] ++ bincode(value)`, in one allocation.
pub fn encode_versioned<T: Serialize + ?Sized>(
    version: u8,
    value: &T,
) -> Result<Vec<u8>, RecordError> {
    let size = bincode::serialized_size(value)
        .map_err(|e| RecordError::Corrupt(format!("serialize: {e}")))?;
    let mut out = Vec::with_capacity(1 + size as usize);
    out.push(version);
    bincode::serialize_into(&mut out, value)
        .map_err(|e| RecordError::Corrupt(format!("serialize: {e}")))?;
    Ok(out)
}

/// Reads a value written by [`encode_versioned`] with `version`.
pub fn decode_versioned<T: DeserializeOwned>(version: u8, bytes: &[u8]) -> Result<T, RecordError> {
    bincode::deserialize(strip_version(version, bytes)?)
        .map_err(|e| RecordError::Corrupt(e.to_string()))
}

/// [`encode_versioned`] for the records of the side trees (credentials,
/// grants, orders, jobs, MPPS), naming the record in the error.
pub(crate) fn encode_record<T: Serialize + ?Sized>(
    version: u8,
    what: &str,
    value: &T,
) -> Result<Vec<u8>, pacs_core::ports::PortError> {
    encode_versioned(version, value)
        .map_err(|e| pacs_core::ports::PortError::Index(format!("encoding a {what} record: {e}")))
}

/// [`decode_versioned`] for the records of the side trees: a record of an
/// unknown version is refused with a message naming it.
pub(crate) fn decode_record<T: DeserializeOwned>(
    version: u8,
    what: &str,
    raw: &[u8],
) -> Result<T, pacs_core::ports::PortError> {
    decode_versioned(version, raw)
        .map_err(|e| pacs_core::ports::PortError::Index(format!("{what} {e}")))
}

/// A sled error as the ports report it.
pub(crate) fn db_err(e: sled::Error) -> pacs_core::ports::PortError {
    pacs_core::ports::PortError::Index(e.to_string())
}

/// `[version] ++ raw`.
pub fn prefix_version(version: u8, raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + raw.len());
    out.push(version);
    out.extend_from_slice(raw);
    out
}

/// The payload of a value written with `version`, after checking it.
pub fn strip_version(version: u8, bytes: &[u8]) -> Result<&[u8], RecordError> {
    match bytes.split_first() {
        Some((&v, rest)) if v == version => Ok(rest),
        Some((&v, _)) if v > version => Err(RecordError::Newer {
            found: v,
            supported: version,
        }),
        Some((&v, _)) => Err(RecordError::Older {
            found: v,
            supported: version,
        }),
        None => Err(RecordError::Corrupt("empty value".into())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn versioned_values_round_trip_and_refuse_other_versions() {
        let v = encode_versioned(1, &("a".to_owned(), 7u64)).unwrap();
        assert_eq!(v[0], 1);
        assert_eq!(&v[1..], bincode::serialize(&("a", 7u64)).unwrap());
        let back: (String, u64) = decode_versioned(1, &v).unwrap();
        assert_eq!(back, ("a".to_owned(), 7));
        assert_eq!(
            decode_versioned::<(String, u64)>(0, &v).unwrap_err(),
            RecordError::Newer {
                found: 1,
                supported: 0
            }
        );
        assert!(matches!(
            decode_versioned::<(String, u64)>(2, &v),
            Err(RecordError::Older { .. })
        ));
        assert!(strip_version(1, &[]).is_err());
        assert_eq!(strip_version(1, &prefix_version(1, b"{}")).unwrap(), b"{}");
    }
}
