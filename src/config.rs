//! Configuration: defaults, then the TOML file, then `PACS_<KEY>` environment
//! variables, then command-line flags (each overriding the one before).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use pacs_core::Limits;
use serde::Deserialize;

/// A peer AE allowed to query/retrieve, and a C-MOVE destination.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RemoteAe {
    pub ae_title: String,
    pub host: String,
    pub port: u16,
}

/// The TOML file; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    ae_title: Option<String>,
    dimse_listen: Option<String>,
    http_listen: Option<String>,
    data_dir: Option<PathBuf>,
    storage_url: Option<String>,
    strict_ae: Option<bool>,
    allow_unauthenticated_http: Option<bool>,
    cors_allowed_origins: Option<Vec<String>>,
    landing_log: Option<bool>,
    #[serde(default)]
    remote_ae: Vec<RemoteAe>,
    drain_timeout: Option<u64>,
    artim_timeout: Option<u64>,
    max_pending_connections: Option<usize>,
    max_metadata_bytes: Option<u64>,
}

/// The effective configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub ae_title: String,
    pub dimse_listen: SocketAddr,
    pub http_listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Empty means `file://<data_dir>/objects`.
    pub storage_url: String,
    pub strict_ae: bool,
    pub allow_unauthenticated_http: bool,
    /// Origins allowed to call the HTTP API from a page of another origin
    /// (a viewer such as OHIF deployed elsewhere); `["*"]` allows any,
    /// empty (the default) sends no CORS headers.
    pub cors_allowed_origins: Vec<String>,
    /// Land received objects in a local log first (one sync per object;
    /// moved to the blob store in the background). On by default.
    pub landing_log: bool,
    pub remote_ae: Vec<RemoteAe>,
    /// On shutdown, how long open DIMSE associations may go on until they
    /// release before they are aborted (seconds in the file).
    pub drain_timeout: Duration,
    /// ARTIM: how long a new DIMSE connection has to send its
    /// A-ASSOCIATE-RQ (seconds in the file).
    pub artim_timeout: Duration,
    /// DIMSE connections not associated yet, at most.
    pub max_pending_connections: usize,
    /// Largest DICOM JSON metadata of one object; larger ones are refused.
    pub max_metadata_bytes: u64,
}

/// Overrides from command-line flags.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub http_listen: Option<String>,
    pub dimse_listen: Option<String>,
    pub storage_url: Option<String>,
}

fn parse_addr(key: &str, s: &str) -> Result<SocketAddr> {
    s.parse()
        .with_context(|| format!("{key} = {s:?} is not a socket address like 127.0.0.1:8080"))
}

fn env(key: &str) -> Option<String> {
    std::env::var(format!("PACS_{}", key.to_ascii_uppercase())).ok()
}

/// A positive whole number from `PACS_<KEY>`, else the file, else `default`.
fn positive<T>(key: &str, file: Option<T>, default: T) -> Result<T>
where
    T: std::str::FromStr + PartialOrd + From<u8> + Copy + std::fmt::Display,
{
    let value = match env(key) {
        Some(v) => v.trim().parse().ok().with_context(|| {
            format!(
                "PACS_{} = {v:?} is not a whole number",
                key.to_ascii_uppercase()
            )
        })?,
        None => file.unwrap_or(default),
    };
    if value < T::from(1) {
        bail!("{key} must be at least 1, not {value}");
    }
    Ok(value)
}

fn parse_bool(key: &str, s: &str) -> Result<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => bail!(
            "PACS_{} = {s:?} is not a boolean (true/false)",
            key.to_ascii_uppercase()
        ),
    }
}

/// An entry of `cors_allowed_origins`: `*`, or `scheme://host[:port]` with
/// no path (what browsers send in `Origin`).
fn check_origin(o: &str) -> Result<()> {
    if o == "*" {
        return Ok(());
    }
    let rest = o
        .strip_prefix("http://")
        .or_else(|| o.strip_prefix("https://"));
    let ok = match rest {
        Some(host) => {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        }
        None => false,
    };
    if !ok {
        bail!(
            "cors_allowed_origins entry {o:?} is not an origin: write it as a browser sends it, \
             e.g. \"https://viewer.hospital.vn\" or \"http://127.0.0.1:3000\" (no path, no trailing /), or \"*\""
        );
    }
    Ok(())
}

impl Config {
    /// Loads the configuration from `file` (if given), the environment and
    /// the flags.
    pub fn load(file: Option<&Path>, flags: &Overrides) -> Result<Config> {
        let fc: FileConfig = match file {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read config file {}", p.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("config file {} is not valid", p.display()))?
            }
            None => FileConfig::default(),
        };
        let pick = |key: &str, file: Option<String>, flag: &Option<String>, default: &str| {
            flag.clone()
                .or_else(|| env(key))
                .or(file)
                .unwrap_or_else(|| default.to_owned())
        };
        let ae_title = pick("ae_title", fc.ae_title, &None, "PACS");
        if ae_title.is_empty() || ae_title.len() > 16 {
            bail!("ae_title {ae_title:?} must be 1 to 16 characters (PS3.5 AE VR)");
        }
        let dimse_listen = parse_addr(
            "dimse_listen",
            &pick(
                "dimse_listen",
                fc.dimse_listen,
                &flags.dimse_listen,
                "0.0.0.0:11112",
            ),
        )?;
        let http_listen = parse_addr(
            "http_listen",
            &pick(
                "http_listen",
                fc.http_listen,
                &flags.http_listen,
                "127.0.0.1:8080",
            ),
        )?;
        let data_dir = flags
            .data_dir
            .clone()
            .or_else(|| env("data_dir").map(PathBuf::from))
            .or(fc.data_dir)
            .unwrap_or_else(|| PathBuf::from("./pacs-data"));
        let storage_url = pick("storage_url", fc.storage_url, &flags.storage_url, "");
        let strict_ae = match env("strict_ae") {
            Some(v) => parse_bool("strict_ae", &v)?,
            None => fc.strict_ae.unwrap_or(false),
        };
        let allow_unauthenticated_http = match env("allow_unauthenticated_http") {
            Some(v) => parse_bool("allow_unauthenticated_http", &v)?,
            None => fc.allow_unauthenticated_http.unwrap_or(false),
        };
        let cors_allowed_origins = match env("cors_allowed_origins") {
            Some(v) => v
                .split(',')
                .map(|o| o.trim().to_owned())
                .filter(|o| !o.is_empty())
                .collect(),
            None => fc.cors_allowed_origins.unwrap_or_default(),
        };
        for o in &cors_allowed_origins {
            check_origin(o)?;
        }
        let landing_log = match env("landing_log") {
            Some(v) => parse_bool("landing_log", &v)?,
            None => fc.landing_log.unwrap_or(true),
        };
        for r in &fc.remote_ae {
            if r.ae_title.is_empty() || r.ae_title.len() > 16 {
                bail!(
                    "remote_ae ae_title {:?} must be 1 to 16 characters",
                    r.ae_title
                );
            }
        }
        let drain_timeout = Duration::from_secs(positive("drain_timeout", fc.drain_timeout, 30)?);
        let artim_timeout = Duration::from_secs(positive(
            "artim_timeout",
            fc.artim_timeout,
            Limits::default().artim_timeout.as_secs(),
        )?);
        let max_pending_connections = positive(
            "max_pending_connections",
            fc.max_pending_connections,
            Limits::default().max_pending_connections,
        )?;
        let max_metadata_bytes = positive(
            "max_metadata_bytes",
            fc.max_metadata_bytes,
            Limits::default().max_metadata_bytes,
        )?;
        Ok(Config {
            ae_title,
            dimse_listen,
            http_listen,
            data_dir,
            storage_url,
            strict_ae,
            allow_unauthenticated_http,
            cors_allowed_origins,
            landing_log,
            remote_ae: fc.remote_ae,
            drain_timeout,
            artim_timeout,
            max_pending_connections,
            max_metadata_bytes,
        })
    }

    /// The blob store URL, defaulting to `file://<data_dir>/objects`.
    pub fn effective_storage_url(&self) -> Result<String> {
        if !self.storage_url.is_empty() {
            return Ok(self.storage_url.clone());
        }
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("cannot create data dir {}", self.data_dir.display()))?;
        let abs = self
            .data_dir
            .canonicalize()
            .with_context(|| format!("cannot resolve data dir {}", self.data_dir.display()))?;
        Ok(format!("file://{}", abs.join("objects").display()))
    }

    pub fn index_dir(&self) -> PathBuf {
        self.data_dir.join("index")
    }

    /// Where the landing log lives (always local: it is what makes an
    /// object durable before it reaches the blob store).
    pub fn landing_dir(&self) -> PathBuf {
        self.data_dir.join("landing")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_file_and_flags_layer() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "ae_title = \"ARCHIVE\"\nhttp_listen = \"127.0.0.1:9000\"\n[[remote_ae]]\nae_title = \"WS\"\nhost = \"127.0.0.1\"\nport = 11113\n",
        )?;
        let c = Config::load(Some(&f), &Overrides::default())?;
        assert_eq!(c.ae_title, "ARCHIVE");
        assert_eq!(c.http_listen.port(), 9000);
        assert_eq!(c.dimse_listen.port(), 11112);
        assert_eq!(c.remote_ae.len(), 1);
        let flags = Overrides {
            http_listen: Some("127.0.0.1:9100".into()),
            ..Overrides::default()
        };
        assert_eq!(Config::load(Some(&f), &flags)?.http_listen.port(), 9100);
        Ok(())
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "ae_titel = \"X\"\n")?;
        let e = Config::load(Some(&f), &Overrides::default()).err();
        assert!(format!(
            "{:#}",
            e.as_ref().map(|e| e.to_string()).unwrap_or_default()
        )
        .contains("not valid"));
        std::fs::write(&f, "http_listen = \"nonsense\"\n")?;
        assert!(Config::load(Some(&f), &Overrides::default()).is_err());
        Ok(())
    }

    #[test]
    fn dimse_drain_and_admission_keys() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let f = dir.path().join("c.toml");
        let c = Config::load(None, &Overrides::default())?;
        assert_eq!(c.drain_timeout, Duration::from_secs(30));
        assert_eq!(c.artim_timeout, Limits::default().artim_timeout);
        assert_eq!(
            c.max_pending_connections,
            Limits::default().max_pending_connections
        );
        std::fs::write(
            &f,
            "drain_timeout = 120\nartim_timeout = 5\nmax_pending_connections = 1000\n",
        )?;
        let c = Config::load(Some(&f), &Overrides::default())?;
        assert_eq!(c.drain_timeout, Duration::from_secs(120));
        assert_eq!(c.artim_timeout, Duration::from_secs(5));
        assert_eq!(c.max_pending_connections, 1000);
        std::fs::write(&f, "drain_timeout = 0\n")?;
        assert!(Config::load(Some(&f), &Overrides::default()).is_err());
        Ok(())
    }
}
