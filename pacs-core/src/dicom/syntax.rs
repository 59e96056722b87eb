//! Transfer syntaxes: how the data set after the file meta information is
//! encoded (PS3.5 §10 and Annex A).

/// Implicit VR Little Endian, the default transfer syntax (PS3.5 §A.1).
pub const IMPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2";
/// Explicit VR Little Endian (PS3.5 §A.2).
pub const EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1";
/// Encapsulated Uncompressed Explicit VR Little Endian (PS3.5 §A.4.11).
pub const ENCAPSULATED_UNCOMPRESSED_EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1.98";
/// Deflated Explicit VR Little Endian (PS3.5 §A.5).
pub const DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1.99";
/// Explicit VR Big Endian, retired (PS3.5 §A.3).
pub const EXPLICIT_VR_BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";

/// Syntaxes whose data set is Explicit VR Little Endian and whose Pixel Data,
/// if any, is native (or referenced rather than carried).
const NATIVE_EXPLICIT_LE: &[&str] = &[
    EXPLICIT_VR_LITTLE_ENDIAN,
    "1.2.840.10008.1.2.4.94",  // JPIP Referenced
    "1.2.840.10008.1.2.4.204", // JPIP HTJ2K Referenced
    "1.2.840.10008.1.2.7.1",   // SMPTE ST 2110-20 Uncompressed Progressive Active Video
    "1.2.840.10008.1.2.7.2",   // SMPTE ST 2110-20 Uncompressed Interlaced Active Video
    "1.2.840.10008.1.2.7.3",   // SMPTE ST 2110-30 PCM Digital Audio
];

/// Syntaxes whose data set is deflated Explicit VR Little Endian (PS3.5 §A.5).
const DEFLATED: &[&str] = &[
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    "1.2.840.10008.1.2.4.95",  // JPIP Referenced Deflate
    "1.2.840.10008.1.2.4.205", // JPIP HTJ2K Referenced Deflate
];

/// Encapsulated syntaxes (PS3.5 §A.4): Explicit VR Little Endian data set,
/// Pixel Data as a sequence of fragments.
const ENCAPSULATED: &[&str] = &[
    ENCAPSULATED_UNCOMPRESSED_EXPLICIT_VR_LITTLE_ENDIAN,
    "1.2.840.10008.1.2.4.50", // JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51", // JPEG Extended (Process 2 & 4)
    "1.2.840.10008.1.2.4.52", // retired JPEG processes 3 & 5 ...
    "1.2.840.10008.1.2.4.53",
    "1.2.840.10008.1.2.4.54",
    "1.2.840.10008.1.2.4.55",
    "1.2.840.10008.1.2.4.56",
    "1.2.840.10008.1.2.4.57", // JPEG Lossless (Process 14)
    "1.2.840.10008.1.2.4.58",
    "1.2.840.10008.1.2.4.59",
    "1.2.840.10008.1.2.4.60",
    "1.2.840.10008.1.2.4.61",
    "1.2.840.10008.1.2.4.62",
    "1.2.840.10008.1.2.4.63",
    "1.2.840.10008.1.2.4.64",
    "1.2.840.10008.1.2.4.65",
    "1.2.840.10008.1.2.4.66",
    "1.2.840.10008.1.2.4.70",    // JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",    // JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",    // JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90",    // JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",    // JPEG 2000
    "1.2.840.10008.1.2.4.92",    // JPEG 2000 Part 2 Multi-component Lossless
    "1.2.840.10008.1.2.4.93",    // JPEG 2000 Part 2 Multi-component
    "1.2.840.10008.1.2.4.100",   // MPEG2 MP@ML
    "1.2.840.10008.1.2.4.100.1", // fragmentable
    "1.2.840.10008.1.2.4.101",   // MPEG2 MP@HL
    "1.2.840.10008.1.2.4.101.1",
    "1.2.840.10008.1.2.4.102", // MPEG-4 AVC/H.264
    "1.2.840.10008.1.2.4.102.1",
    "1.2.840.10008.1.2.4.103",
    "1.2.840.10008.1.2.4.103.1",
    "1.2.840.10008.1.2.4.104",
    "1.2.840.10008.1.2.4.104.1",
    "1.2.840.10008.1.2.4.105",
    "1.2.840.10008.1.2.4.105.1",
    "1.2.840.10008.1.2.4.106",
    "1.2.840.10008.1.2.4.106.1",
    "1.2.840.10008.1.2.4.107", // HEVC/H.265 Main
    "1.2.840.10008.1.2.4.108", // HEVC/H.265 Main 10
    "1.2.840.10008.1.2.4.110", // JPEG XL Lossless
    "1.2.840.10008.1.2.4.111", // JPEG XL JPEG Recompression
    "1.2.840.10008.1.2.4.112", // JPEG XL
    "1.2.840.10008.1.2.4.201", // HTJ2K Lossless
    "1.2.840.10008.1.2.4.202", // HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203", // HTJ2K
    "1.2.840.10008.1.2.5",     // RLE Lossless
    "1.2.840.10008.1.2.8.1",   // Deflated Image Frame Compression
];

/// Prefixes under which the standard allocates encapsulated syntaxes; a UID
/// we do not know under one of these is read as Explicit VR Little Endian
/// with encapsulated Pixel Data (PS3.5 §A.4), which every one of them is.
const ENCAPSULATED_FAMILIES: &[&str] = &[
    "1.2.840.10008.1.2.4.",
    "1.2.840.10008.1.2.5.",
    "1.2.840.10008.1.2.8.",
];

/// How a data set is encoded: VR explicit or implicit, byte order, whether
/// it is deflated, whether Pixel Data is encapsulated (PS3.5 §10).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TransferSyntax {
    uid: String,
    explicit_vr: bool,
    big_endian: bool,
    deflated: bool,
    encapsulated: bool,
}

impl TransferSyntax {
    /// The syntax a Transfer Syntax UID names, or `None` for a syntax this
    /// reader cannot decode (private syntaxes, the retired MIME and XML
    /// encodings). Trailing NUL and space padding is ignored.
    ///
    /// Besides the syntaxes of PS3.5 Annex A (including retired ones), any
    /// unknown UID in the families the standard uses for compressed pixel
    /// data (`1.2.840.10008.1.2.4.*`, `.1.2.5.*`, `.1.2.8.*`) is taken as
    /// Explicit VR Little Endian with encapsulated Pixel Data.
    pub fn from_uid(uid: &str) -> Option<TransferSyntax> {
        let uid = uid.trim_matches(|c: char| c == '\0' || c == ' ');
        let make = |explicit_vr, big_endian, deflated, encapsulated| {
            Some(TransferSyntax {
                uid: uid.to_owned(),
                explicit_vr,
                big_endian,
                deflated,
                encapsulated,
            })
        };
        if uid == IMPLICIT_VR_LITTLE_ENDIAN {
            make(false, false, false, false)
        } else if uid == EXPLICIT_VR_BIG_ENDIAN {
            make(true, true, false, false)
        } else if NATIVE_EXPLICIT_LE.contains(&uid) {
            make(true, false, false, false)
        } else if DEFLATED.contains(&uid) {
            make(true, false, true, false)
        } else if ENCAPSULATED.contains(&uid)
            || ENCAPSULATED_FAMILIES.iter().any(|p| {
                uid.strip_prefix(p).is_some_and(|rest| {
                    !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                })
            })
        {
            make(true, false, false, true)
        } else {
            None
        }
    }

    /// Implicit VR Little Endian (PS3.5 §A.1).
    pub fn implicit_vr_little_endian() -> TransferSyntax {
        TransferSyntax {
            uid: IMPLICIT_VR_LITTLE_ENDIAN.to_owned(),
            explicit_vr: false,
            big_endian: false,
            deflated: false,
            encapsulated: false,
        }
    }

    /// Explicit VR Little Endian (PS3.5 §A.2).
    pub fn explicit_vr_little_endian() -> TransferSyntax {
        TransferSyntax {
            uid: EXPLICIT_VR_LITTLE_ENDIAN.to_owned(),
            explicit_vr: true,
            big_endian: false,
            deflated: false,
            encapsulated: false,
        }
    }

    /// Explicit VR Big Endian (PS3.5 §A.3, retired).
    pub fn explicit_vr_big_endian() -> TransferSyntax {
        TransferSyntax {
            uid: EXPLICIT_VR_BIG_ENDIAN.to_owned(),
            explicit_vr: true,
            big_endian: true,
            deflated: false,
            encapsulated: false,
        }
    }

    /// Deflated Explicit VR Little Endian (PS3.5 §A.5).
    pub fn deflated_explicit_vr_little_endian() -> TransferSyntax {
        TransferSyntax {
            uid: DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN.to_owned(),
            explicit_vr: true,
            big_endian: false,
            deflated: true,
            encapsulated: false,
        }
    }

    /// The Transfer Syntax UID, without padding.
    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// Whether each element carries its VR (PS3.5 §7.1.2).
    pub fn explicit_vr(&self) -> bool {
        self.explicit_vr
    }

    /// Whether multi-byte numbers are big endian (PS3.5 §7.3).
    pub fn big_endian(&self) -> bool {
        self.big_endian
    }

    /// Whether the data set is a raw DEFLATE stream (RFC 1951, PS3.5 §A.5).
    pub fn deflated(&self) -> bool {
        self.deflated
    }

    /// Whether Pixel Data is encapsulated in fragments (PS3.5 §A.4).
    pub fn encapsulated(&self) -> bool {
        self.encapsulated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_syntaxes() {
        let t =
            TransferSyntax::from_uid("1.2.840.10008.1.2").map(|t| (t.explicit_vr, t.big_endian));
        assert_eq!(t, Some((false, false)));
        let t = TransferSyntax::from_uid("1.2.840.10008.1.2.1\0");
        assert_eq!(t, Some(TransferSyntax::explicit_vr_little_endian()));
        assert_eq!(
            TransferSyntax::from_uid("1.2.840.10008.1.2.2"),
            Some(TransferSyntax::explicit_vr_big_endian())
        );
        assert_eq!(
            TransferSyntax::from_uid("1.2.840.10008.1.2.1.99"),
            Some(TransferSyntax::deflated_explicit_vr_little_endian())
        );
        for uid in [
            "1.2.840.10008.1.2.4.50",
            "1.2.840.10008.1.2.4.70",
            "1.2.840.10008.1.2.4.80",
            "1.2.840.10008.1.2.4.91",
            "1.2.840.10008.1.2.4.201",
            "1.2.840.10008.1.2.4.203",
            "1.2.840.10008.1.2.4.100",
            "1.2.840.10008.1.2.4.108",
            "1.2.840.10008.1.2.5",
            "1.2.840.10008.1.2.1.98",
            // Not (yet) in our table, but in an encapsulated family.
            "1.2.840.10008.1.2.4.999",
        ] {
            let t = TransferSyntax::from_uid(uid);
            assert!(
                t.as_ref()
                    .is_some_and(|t| t.encapsulated() && t.explicit_vr() && !t.big_endian()),
                "{uid}"
            );
        }
        assert!(TransferSyntax::from_uid("1.2.840.10008.1.2.4.95").is_some_and(|t| t.deflated()));
        assert!(
            TransferSyntax::from_uid("1.2.840.10008.1.2.4.94").is_some_and(|t| !t.encapsulated())
        );
    }

    #[test]
    fn unknown_syntaxes() {
        assert_eq!(TransferSyntax::from_uid("1.2.840.10008.1.2.6.1"), None);
        assert_eq!(TransferSyntax::from_uid("1.2.3.4"), None);
        assert_eq!(TransferSyntax::from_uid(""), None);
        assert_eq!(TransferSyntax::from_uid("1.2.840.10008.1.2.4."), None);
        assert_eq!(TransferSyntax::from_uid("1.2.840.10008.1.2.4.x"), None);
    }
}
