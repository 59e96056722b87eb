//! Free space of local file systems (the [`SpaceProbe`] port), measured
//! with `statvfs(3)`.
//!
//! Non-goals: remote stores (S3) have no free-space measure; a probe lists
//! only the local directories it was given.

use std::path::PathBuf;

use pacs_core::ports::{PortError, SpaceProbe, VolumeSpace};

/// Measures the file systems holding a set of directories. Directories on
/// the same file system are measured once.
pub struct LocalSpace {
    dirs: Vec<PathBuf>,
}

impl LocalSpace {
    /// `dirs`: the data directory (index, landing log) and, for a local
    /// blob store, its root.
    pub fn new(dirs: Vec<PathBuf>) -> LocalSpace {
        LocalSpace { dirs }
    }
}

impl SpaceProbe for LocalSpace {
    fn volumes(&self) -> Result<Vec<VolumeSpace>, PortError> {
        let mut seen = Vec::new();
        let mut out = Vec::new();
        for dir in &self.dirs {
            let st = statvfs(dir)?;
            if seen.contains(&st.0) {
                continue;
            }
            seen.push(st.0);
            out.push(VolumeSpace {
                name: dir.display().to_string(),
                available: st.1,
                total: st.2,
            });
        }
        Ok(out)
    }
}

/// (file system id, bytes available to unprivileged users, size in bytes).
#[cfg(unix)]
fn statvfs(dir: &std::path::Path) -> Result<(u64, u64, u64), PortError> {
    let st = nix::sys::statvfs::statvfs(dir)
        .map_err(|e| PortError::Storage(format!("statvfs {}: {e}", dir.display())))?;
    // f_frsize is the unit of the block counts (POSIX statvfs).
    let unit = wide(st.fragment_size());
    Ok((
        wide(st.filesystem_id()),
        wide(st.blocks_available()).saturating_mul(unit),
        wide(st.blocks()).saturating_mul(unit),
    ))
}

/// The `statvfs` fields are `c_ulong` / `fsblkcnt_t`, whose width differs
/// between platforms.
#[cfg(unix)]
fn wide<T: TryInto<u64>>(v: T) -> u64 {
    v.try_into().unwrap_or(u64::MAX)
}

#[cfg(not(unix))]
fn statvfs(_dir: &std::path::Path) -> Result<(u64, u64, u64), PortError> {
    Err(PortError::Storage(
        "free space cannot be measured on this platform".into(),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn measures_a_directory_once_per_file_system() {
        let dir = std::env::temp_dir();
        let probe = LocalSpace::new(vec![dir.clone(), dir]);
        let v = probe.volumes().unwrap();
        assert_eq!(v.len(), 1);
        assert!(v[0].total > 0 && v[0].available <= v[0].total, "{v:?}");
        let missing = LocalSpace::new(vec![PathBuf::from("/nonexistent/pacs-space")]);
        assert!(missing.volumes().is_err());
    }
}
