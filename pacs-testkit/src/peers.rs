//! One policy for tests that need a tool from outside the repository.
//!
//! A missing peer makes the test print `SKIPPED: …` and return, so that
//! `cargo test` on a bare machine still runs everything else. Under
//! `PACS_REQUIRE_PEERS` (set by `tests/run.sh`, which installs the peers)
//! the same test fails instead: CI can never pass by skipping.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Whether missing peers are failures (`PACS_REQUIRE_PEERS` is set).
pub fn required() -> bool {
    std::env::var_os("PACS_REQUIRE_PEERS").is_some()
}

/// A peer is missing: panics under `PACS_REQUIRE_PEERS`, else prints
/// `SKIPPED: why` and returns `None`.
pub fn missing<T>(why: &str) -> Option<T> {
    assert!(
        !required(),
        "PACS_REQUIRE_PEERS is set but {why}: run tests/run.sh, which installs the peers"
    );
    println!("SKIPPED: {why}");
    None
}

/// [`missing`] for tests that just return.
pub fn skip_or_fail(why: &str) {
    missing::<()>(why);
}

/// Whether the tool at `path` exists ([`missing`] otherwise).
pub fn tool_available(path: &str, test: &str) -> bool {
    Path::new(path).exists() || missing::<()>(&format!("{test}: {path} not found")).is_some()
}

/// A DCMTK tool by absolute path (a Python venv's `storescu` shim may
/// shadow the real one on PATH), or `None` after [`missing`].
pub fn dcmtk(tool: &str) -> Option<PathBuf> {
    let p = PathBuf::from("/usr/bin").join(tool);
    if p.exists() {
        return Some(p);
    }
    missing(&format!("{tool} (DCMTK) is not installed"))
}

/// The Python with the pinned test packages: `PACS_PYTHON` (tests/run.sh
/// points it at the repository's .venv), else `python3` on PATH.
pub fn python() -> String {
    std::env::var("PACS_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// Whether [`python`] can import `module`.
pub fn python_has(module: &str) -> bool {
    Command::new(python())
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// [`python`] when it has pynetdicom, else `None` after [`missing`].
pub fn pynetdicom_python() -> Option<String> {
    if python_has("pynetdicom") {
        return Some(python());
    }
    missing(&format!("pynetdicom is not importable by {}", python()))
}

/// Whether [`python`] has pynetdicom ([`missing`] otherwise).
pub fn pynetdicom_available(test: &str) -> bool {
    python_has("pynetdicom")
        || missing::<()>(&format!(
            "{test}: pynetdicom is not importable by {}",
            python()
        ))
        .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test (the variable is process-wide): skipped without
    /// `PACS_REQUIRE_PEERS`, a failure with it.
    #[test]
    fn a_missing_peer_skips_unless_peers_are_required() {
        let before = std::env::var_os("PACS_REQUIRE_PEERS");
        std::env::remove_var("PACS_REQUIRE_PEERS");
        assert_eq!(missing::<u8>("no such tool"), None);
        assert!(!tool_available("/nonexistent/tool", "t"));
        std::env::set_var("PACS_REQUIRE_PEERS", "1");
        let failed = std::panic::catch_unwind(|| missing::<u8>("no such tool")).is_err();
        match before {
            Some(v) => std::env::set_var("PACS_REQUIRE_PEERS", v),
            None => std::env::remove_var("PACS_REQUIRE_PEERS"),
        }
        assert!(failed, "a missing peer must fail under PACS_REQUIRE_PEERS");
    }
}
