//! What the test suites of every crate share, in one place (a
//! dev-dependency only; nothing here ships in the binary):
//!
//! - [`peers`]: one policy for a missing peer tool (DCMTK, pynetdicom,
//!   Chromium…): the test prints `SKIPPED` and returns, or fails when
//!   `PACS_REQUIRE_PEERS` is set (as `tests/run.sh` and CI set it);
//! - [`samples`]: the committed sample studies and small generated objects;
//! - [`fixtures`]: archives on a temporary directory or in memory (or, for
//!   the engines pass, on PostgreSQL and S3: [`engines`]);
//! - [`net`]: free loopback ports and a minimal blocking HTTP client;
//! - [`dimse`]: a byte-level DIMSE client that can send what a real SCU
//!   would not (for the protocol and hardening tests);
//! - [`postgres`]: a throwaway PostgreSQL cluster (initdb + pg_ctl on
//!   127.0.0.1), stopped when dropped;
//! - [`s3`]: a moto S3 server (in memory) or an s3s-fs one (on disk) on a
//!   free port, stopped on drop;
//! - [`old_index`]: a current sled index put back in an older layout, for
//!   the migration tests;
//! - [`Rng`]: a small deterministic PRNG.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

pub mod dimse;
pub mod engines;
pub mod fixtures;
pub mod net;
pub mod old_index;
pub mod peers;
pub mod postgres;
pub mod s3;
pub mod samples;

/// A tiny deterministic PRNG (xorshift64*), for reproducible timings and
/// inputs.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}
