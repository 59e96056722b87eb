//! Test support shared by the workspace's test suites: building small Part 10
//! objects byte by byte (including deliberately broken ones), without going
//! through a DICOM library, so tests control every byte.
//!
//! The sample-study generator itself is the `gen-sample-data` binary.

pub mod synthetic;
