//! `manifest.json`: every generated file with its identifying UIDs and hash.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// One generated DICOM file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Path relative to the output directory, `/`-separated.
    pub path: String,
    /// Study folder name (`ct-phantom`, `mr-head`, ...).
    pub study: String,
    /// Patient ID.
    pub patient_id: String,
    /// Patient's Name as stored (DICOM PN, UTF-8).
    pub patient_name: String,
    /// Modality.
    pub modality: String,
    /// SOP Class UID.
    pub sop_class_uid: String,
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// Study Instance UID.
    pub study_instance_uid: String,
    /// Series Instance UID.
    pub series_instance_uid: String,
    /// Series Number.
    pub series_number: u32,
    /// Instance Number.
    pub instance_number: u32,
    /// Transfer Syntax UID of the file.
    pub transfer_syntax_uid: String,
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub columns: u16,
    /// Number of frames (1 for single-frame images).
    pub number_of_frames: u32,
    /// File size in bytes.
    pub size: u64,
    /// Lower-case hexadecimal SHA-256 of the whole file.
    pub sha256: String,
}

/// The whole manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Namespace hashed into every UID (see `uid.rs`).
    pub uid_namespace: String,
    /// Number of files.
    pub file_count: usize,
    /// Sum of all file sizes in bytes.
    pub total_size: u64,
    /// Every file, in generation order.
    pub files: Vec<ManifestEntry>,
}

impl Manifest {
    /// Build a manifest from its entries.
    pub fn new(files: Vec<ManifestEntry>) -> Self {
        Self {
            uid_namespace: crate::uid::NAMESPACE.to_owned(),
            file_count: files.len(),
            total_size: files.iter().map(|f| f.size).sum(),
            files,
        }
    }

    /// Pretty JSON with a trailing newline (the committed form).
    pub fn to_json(&self) -> Result<String> {
        let mut s = serde_json::to_string_pretty(self).context("serialising manifest")?;
        s.push('\n');
        Ok(s)
    }

    /// Write the manifest to `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::dataset::write_bytes(path, self.to_json()?.as_bytes())
    }

    /// Read a manifest from `path`.
    #[cfg(test)]
    pub fn read(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}
