//! DIMSE status codes (PS3.7 Annex C) and the service-specific ones this
//! crate answers with (PS3.4 B.2.3 for storage).
//!
//! Only codes are defined here; which error becomes which status is decided
//! by the service handlers (the storage mapping lives in `store.rs`).

use std::fmt;

/// The value of Status (0000,0900) in a response.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status(pub u16);

/// The class of a status (PS3.7 C.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusKind {
    Success,
    Warning,
    Failure,
    Cancel,
    Pending,
}

impl Status {
    /// Success (PS3.7 C.1.1).
    pub const SUCCESS: Status = Status(0x0000);
    /// Refused: out of resources (PS3.4 B.2.3: A7xx).
    pub const OUT_OF_RESOURCES: Status = Status(0xA700);
    /// Error: data set does not match SOP class (PS3.4 B.2.3: A9xx).
    pub const DATA_SET_DOES_NOT_MATCH_SOP_CLASS: Status = Status(0xA900);
    /// Error: cannot understand (PS3.4 B.2.3: Cxxx).
    pub const CANNOT_UNDERSTAND: Status = Status(0xC000);
    /// Failure: processing failure (PS3.7 C.4.1).
    pub const PROCESSING_FAILURE: Status = Status(0x0110);
    /// Refused: SOP class not supported (PS3.7 C.5.4).
    pub const SOP_CLASS_NOT_SUPPORTED: Status = Status(0x0122);
    /// Failure: unrecognized operation (PS3.7 C.5.12).
    pub const UNRECOGNIZED_OPERATION: Status = Status(0x0211);
    /// Warning: coercion of data elements (PS3.4 B.2.3).
    pub const COERCION_OF_DATA_ELEMENTS: Status = Status(0xB000);
    /// Warning: elements discarded (PS3.4 B.2.3).
    pub const ELEMENTS_DISCARDED: Status = Status(0xB006);
    /// Warning: data set does not match SOP class (PS3.4 B.2.3).
    pub const DATA_SET_DOES_NOT_MATCH_SOP_CLASS_WARNING: Status = Status(0xB007);
    /// Q/R: Identifier does not match SOP Class (PS3.4 C.4.1.1.4; same
    /// code as the storage A900).
    pub const IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS: Status = Status(0xA900);
    /// Refused: not authorized (PS3.7 C.5.x, 0124H): a calling AE that is
    /// not configured asks for query/retrieve.
    pub const NOT_AUTHORIZED: Status = Status(0x0124);
    /// C-MOVE / C-GET: Refused: out of resources, unable to calculate the
    /// number of matches (PS3.4 C.4.2.1.5, C.4.3.1.4).
    pub const UNABLE_TO_CALCULATE_MATCHES: Status = Status(0xA701);
    /// C-MOVE / C-GET: Refused: out of resources, unable to perform
    /// sub-operations; also the final status when every sub-operation
    /// failed.
    pub const UNABLE_TO_PERFORM_SUBOPERATIONS: Status = Status(0xA702);
    /// C-MOVE: Refused: Move Destination unknown (PS3.4 C.4.2.1.5).
    pub const MOVE_DESTINATION_UNKNOWN: Status = Status(0xA801);
    /// C-MOVE / C-GET: sub-operations complete, one or more failures or
    /// warnings (PS3.4 C.4.2.1.5, C.4.3.1.4).
    pub const SUBOPERATIONS_COMPLETE_WITH_FAILURES: Status = Status(0xB000);
    /// Cancel (PS3.7 C.3).
    pub const CANCEL: Status = Status(0xFE00);
    /// Pending (PS3.7 C.2).
    pub const PENDING: Status = Status(0xFF00);
    /// Pending, with optional keys not supported (PS3.4 C.4.1.1.4).
    pub const PENDING_WARNING: Status = Status(0xFF01);
    /// Invalid attribute value (PS3.7 C.4.2; MPPS N-CREATE not IN
    /// PROGRESS, PS3.4 F.7.2.1.3).
    pub const INVALID_ATTRIBUTE_VALUE: Status = Status(0x0106);
    /// Duplicate SOP Instance (PS3.7 C.4.6).
    pub const DUPLICATE_SOP_INSTANCE: Status = Status(0x0111);
    /// No such SOP Instance (PS3.7 C.4.17).
    pub const NO_SUCH_SOP_INSTANCE: Status = Status(0x0112);
    /// Invalid object instance (PS3.7 C.4.7).
    pub const INVALID_OBJECT_INSTANCE: Status = Status(0x0117);
    /// Missing attribute (PS3.7 C.4.10).
    pub const MISSING_ATTRIBUTE: Status = Status(0x0120);
    /// No such action type (PS3.7 C.4.16).
    pub const NO_SUCH_ACTION_TYPE: Status = Status(0x0123);

    /// The class of this status, by the ranges of PS3.7 Annex C.
    pub fn kind(self) -> StatusKind {
        match self.0 {
            0x0000 => StatusKind::Success,
            0xFF00 | 0xFF01 => StatusKind::Pending,
            0xFE00 => StatusKind::Cancel,
            0x0001 | 0x0107 | 0x0116 | 0xB000..=0xBFFF => StatusKind::Warning,
            _ => StatusKind::Failure,
        }
    }

    /// Whether Error Comment (0000,0902) may accompany this status (PS3.7
    /// Annex C lists it for failures; PS3.4 B.2.3 for the storage ones).
    pub fn allows_error_comment(self) -> bool {
        matches!(self.kind(), StatusKind::Failure | StatusKind::Warning)
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Status({:#06X})", self.0)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#06X}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_annex_c_ranges() {
        let cases = [
            (Status::SUCCESS, StatusKind::Success),
            (Status::OUT_OF_RESOURCES, StatusKind::Failure),
            (
                Status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
                StatusKind::Failure,
            ),
            (Status::CANNOT_UNDERSTAND, StatusKind::Failure),
            (Status(0xC123), StatusKind::Failure),
            (Status::PROCESSING_FAILURE, StatusKind::Failure),
            (Status::SOP_CLASS_NOT_SUPPORTED, StatusKind::Failure),
            (Status::UNRECOGNIZED_OPERATION, StatusKind::Failure),
            (Status::COERCION_OF_DATA_ELEMENTS, StatusKind::Warning),
            (Status::ELEMENTS_DISCARDED, StatusKind::Warning),
            (
                Status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS_WARNING,
                StatusKind::Warning,
            ),
            (Status(0x0001), StatusKind::Warning),
            (Status::CANCEL, StatusKind::Cancel),
            (Status::PENDING, StatusKind::Pending),
            (Status::PENDING_WARNING, StatusKind::Pending),
        ];
        for (status, kind) in cases {
            assert_eq!(status.kind(), kind, "{status}");
        }
        assert!(!Status::SUCCESS.allows_error_comment());
        assert!(Status::CANNOT_UNDERSTAND.allows_error_comment());
        assert_eq!(Status::OUT_OF_RESOURCES.to_string(), "0xA700");
    }
}
