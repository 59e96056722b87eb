//! Helpers to assemble data sets and write them as DICOM files.

use std::path::Path;

use anyhow::{Context, Result};
use dicom_core::value::{PixelFragmentSequence, Value};
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::InMemDicomObject;
use sha2::{Digest, Sha256};

use crate::uid;

/// A data set under construction.
#[derive(Debug, Clone)]
pub struct Ds {
    obj: InMemDicomObject,
}

impl Default for Ds {
    fn default() -> Self {
        Self::new()
    }
}

impl Ds {
    /// An empty data set.
    pub fn new() -> Self {
        Self {
            obj: InMemDicomObject::new_empty(),
        }
    }

    /// Put a single-valued textual element. An empty string gives an empty
    /// (zero-length) element, as used for Type 2 attributes.
    pub fn str(&mut self, tag: Tag, vr: VR, value: &str) -> &mut Self {
        let value = if value.is_empty() {
            PrimitiveValue::Empty
        } else {
            PrimitiveValue::from(value)
        };
        self.obj.put(DataElement::new(tag, vr, value));
        self
    }

    /// Put a multi-valued textual element (values joined by `\`).
    pub fn strs(&mut self, tag: Tag, vr: VR, values: &[&str]) -> &mut Self {
        let values: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        self.obj.put(DataElement::new(
            tag,
            vr,
            PrimitiveValue::Strs(values.into()),
        ));
        self
    }

    /// Put an unsigned short (US) element.
    pub fn us(&mut self, tag: Tag, value: u16) -> &mut Self {
        self.obj
            .put(DataElement::new(tag, VR::US, PrimitiveValue::from(value)));
        self
    }

    /// Put an attribute tag (AT) element.
    pub fn at(&mut self, tag: Tag, value: Tag) -> &mut Self {
        self.obj.put(DataElement::new(
            tag,
            VR::AT,
            PrimitiveValue::Tags(vec![value].into()),
        ));
        self
    }

    /// Put native Pixel Data (OW) from little-endian bytes.
    pub fn native_pixels(&mut self, bytes: Vec<u8>) -> &mut Self {
        self.obj.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::U8(bytes.into()),
        ));
        self
    }

    /// Put encapsulated Pixel Data (OB, undefined length), one fragment per
    /// frame. With `fill_offset_table` the Basic Offset Table holds the
    /// offset of every frame's item relative to the first fragment's item.
    pub fn encapsulated_pixels(
        &mut self,
        fragments: Vec<Vec<u8>>,
        fill_offset_table: bool,
    ) -> Result<&mut Self> {
        let mut offsets = Vec::new();
        if fill_offset_table {
            let mut at: u32 = 0;
            for fragment in &fragments {
                offsets.push(at);
                let len = u32::try_from(fragment.len()).context("fragment too large")?;
                at = at
                    .checked_add(8)
                    .and_then(|a| a.checked_add(len))
                    .context("pixel data too large for a 32-bit offset table")?;
            }
        }
        let seq = PixelFragmentSequence::new(offsets, fragments);
        self.obj.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            Value::PixelSequence(seq),
        ));
        Ok(self)
    }

    /// Serialise as a DICOM file (preamble, meta group, data set) in memory.
    pub fn into_file_bytes(self, transfer_syntax: &str) -> Result<Vec<u8>> {
        let meta = FileMetaTableBuilder::new()
            .transfer_syntax(transfer_syntax)
            .implementation_class_uid(uid::implementation_class_uid())
            .implementation_version_name(uid::IMPLEMENTATION_VERSION_NAME);
        let file = self
            .obj
            .with_meta(meta)
            .context("building the file meta group")?;
        let mut bytes = Vec::new();
        file.write_all(&mut bytes)
            .context("serialising DICOM file")?;
        Ok(bytes)
    }
}

/// Lower-case hexadecimal SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Write `bytes` to `path`, creating parent directories.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Little-endian bytes of signed 16-bit samples.
pub fn i16_le_bytes(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Little-endian bytes of unsigned 16-bit samples.
pub fn u16_le_bytes(samples: &[u16]) -> Vec<u8> {
    samples.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Format a number for a DS element: at most 6 decimals, no trailing zeros,
/// so that values such as `-96.0 * 1.2` print as `-115.2`.
pub fn ds(value: f64) -> String {
    let fixed = format!("{value:.6}");
    let trimmed = fixed.trim_end_matches('0').trim_end_matches('.');
    if trimmed == "-0" {
        "0".to_owned()
    } else {
        trimmed.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::ds;

    #[test]
    fn ds_formatting() {
        assert_eq!(ds(-96.0 * 1.2), "-115.2");
        assert_eq!(ds(-128.0), "-128");
        assert_eq!(ds(0.5), "0.5");
        assert_eq!(ds(-0.0), "0");
        assert_eq!(ds(60.0), "60");
        assert_eq!(ds(1e-9), "0");
    }
}
