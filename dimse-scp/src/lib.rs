//! DIMSE services of Sen PACS over `dicom-ul`.
//!
//! This crate will own the DICOM upper-layer side of the archive: association
//! policy, PDV reassembly and fragmentation, the DIMSE command-set codec, the
//! service handlers (verification, storage, query/retrieve FIND/MOVE/GET, later
//! MWL, MPPS and storage commitment) and the SCU side of C-MOVE sub-operations.
//!
//! Non-goals: it never touches storage except through [`pacs_core::Archive`],
//! and it does not parse HTTP.
//!
//! Status: not built yet. The `pacs` binary does not open a DIMSE listener;
//! CONFORMANCE.md lists DIMSE as not supported.
