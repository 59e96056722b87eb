//! Configuration: defaults, then the TOML file, then `PACS_<KEY>` environment
//! variables, then command-line flags (each overriding the one before).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use pacs_core::archive::{DuplicatePolicy, MinFreeSpace};
use pacs_core::Limits;
use serde::Deserialize;

/// A peer AE allowed to query/retrieve, and a C-MOVE destination.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RemoteAe {
    pub ae_title: String,
    pub host: String,
    pub port: u16,
    /// A DNS name or IP address that the peer's TLS client certificate
    /// must carry in its subjectAltName when it associates with this AE
    /// title; the AE is then accepted only over DICOM TLS.
    pub tls_subject: Option<String>,
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
    on_duplicate: Option<String>,
    /// A number of bytes, or a string with a unit or a percentage.
    min_free_space: Option<toml::Value>,
    index_cache_bytes: Option<u64>,
    index_reopen_after_bytes: Option<u64>,
    metadata_compact_after_secs: Option<u64>,
    allowed_hosts: Option<Vec<String>>,
    #[serde(default)]
    auth: AuthFile,
    drain_timeout: Option<u64>,
    artim_timeout: Option<u64>,
    max_pending_connections: Option<usize>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    tls_client_ca_file: Option<PathBuf>,
    http_tls: Option<bool>,
    dimse_tls_listen: Option<String>,
    trusted_proxies: Option<Vec<String>>,
    render_concurrency: Option<usize>,
    pixel_memory_budget: Option<u64>,
    pixel_queue_wait: Option<u64>,
    max_decoded_pixel_bytes: Option<u64>,
    max_inflated_object_bytes: Option<u64>,
    #[serde(default)]
    limits: LimitsFile,
    job_retry_base: Option<u64>,
    job_retry_max: Option<u64>,
    job_max_attempts: Option<u32>,
    job_concurrency_per_destination: Option<usize>,
    job_lease_secs: Option<u64>,
    hl7_listen: Option<String>,
    hl7_issuer: Option<String>,
    hl7_max_message_bytes: Option<usize>,
    hl7_idle_timeout: Option<u64>,
    hl7_max_connections: Option<usize>,
    #[serde(default)]
    hl7_station_aes: std::collections::BTreeMap<String, String>,
    worklist_dir: Option<PathBuf>,
    worklist_poll_seconds: Option<u64>,
    worklist_max_file_bytes: Option<u64>,
    #[serde(default)]
    audit: AuditFile,
    index_url: Option<String>,
    index_pool_size: Option<usize>,
    #[serde(default)]
    s3: S3File,
    hanging_protocols: Option<PathBuf>,
    ian_destinations: Option<Vec<String>>,
    ian_stable_after_secs: Option<u64>,
    hl7_out: Option<Hl7OutFile>,
}

/// The `[hl7_out]` table: "images available" messages to the HIS.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Hl7OutFile {
    address: Option<String>,
    sending_application: Option<String>,
    sending_facility: Option<String>,
    receiving_application: Option<String>,
    receiving_facility: Option<String>,
    viewer_url: Option<String>,
    ack_timeout_secs: Option<u64>,
    max_ack_bytes: Option<usize>,
}

/// Availability notifications: `ian_destinations`, `ian_stable_after_secs`
/// and `[hl7_out]` (`PACS_IAN_DESTINATIONS` comma-separated,
/// `PACS_IAN_STABLE_AFTER_SECS`, `PACS_HL7_OUT_<KEY>`).
fn availability(
    fc: &mut FileConfig,
    remote_ae: &[RemoteAe],
) -> Result<(
    pacs_core::availability::AvailabilityConfig,
    Option<hl7::notify::Hl7OutConfig>,
)> {
    let ian_destinations: Vec<String> = match env("ian_destinations") {
        Some(v) => v
            .split(',')
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect(),
        None => fc.ian_destinations.take().unwrap_or_default(),
    };
    for ae in &ian_destinations {
        if !remote_ae.iter().any(|r| r.ae_title == *ae) {
            bail!("ian_destinations names {ae:?}, which is no [[remote_ae]] ae_title (the IAN is sent to its host and port)");
        }
    }
    let stable = match env("ian_stable_after_secs") {
        Some(v) => Some(v.trim().parse::<u64>().with_context(|| {
            format!("PACS_IAN_STABLE_AFTER_SECS = {v:?} is not a whole number")
        })?),
        None => fc.ian_stable_after_secs,
    };
    let f = fc.hl7_out.take().unwrap_or_default();
    let text = |key: &str, file: Option<String>| {
        env(&format!("hl7_out_{key}"))
            .or(file)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let hl7_out = match text("address", f.address) {
        None => None,
        Some(address) => {
            let ok = address
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0));
            if !ok {
                bail!("[hl7_out] address = {address:?} is not host:port (e.g. \"his.hospital.vn:2575\")");
            }
            let viewer_url = text("viewer_url", f.viewer_url).ok_or_else(|| {
                anyhow!("[hl7_out] needs viewer_url: the viewer's base URL as the HIS's users reach it (e.g. \"https://pacs.hospital.vn\")")
            })?;
            if !(viewer_url.starts_with("http://") || viewer_url.starts_with("https://"))
                || viewer_url.contains(char::is_whitespace)
            {
                bail!("[hl7_out] viewer_url = {viewer_url:?} is not an http(s) URL");
            }
            let timeout = positive("hl7_out_ack_timeout_secs", f.ack_timeout_secs, 30)?;
            Some(hl7::notify::Hl7OutConfig {
                address,
                sending_application: text("sending_application", f.sending_application)
                    .unwrap_or_else(|| "SENPACS".into()),
                sending_facility: text("sending_facility", f.sending_facility).unwrap_or_default(),
                receiving_application: text("receiving_application", f.receiving_application)
                    .unwrap_or_default(),
                receiving_facility: text("receiving_facility", f.receiving_facility)
                    .unwrap_or_default(),
                viewer_url,
                timeout: Duration::from_secs(timeout),
                max_ack_bytes: positive("hl7_out_max_ack_bytes", f.max_ack_bytes, 64 * 1024)?,
            })
        }
    };
    Ok((
        pacs_core::availability::AvailabilityConfig {
            ian_destinations,
            hl7_destination: hl7_out.as_ref().map(|h| h.address.clone()),
            stable_after: stable.filter(|s| *s > 0).map(Duration::from_secs),
        },
        hl7_out,
    ))
}

/// The `[limits]` table: every field of [`Limits`], each optional
/// (sizes in bytes, time-outs in seconds); `PACS_<KEY>` overrides each.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    max_element_len: Option<u64>,
    max_header_bytes: Option<u64>,
    max_sequence_depth: Option<u64>,
    max_object_bytes: Option<u64>,
    max_elements: Option<u64>,
    max_pdu_len: Option<u64>,
    max_associations: Option<u64>,
    max_associations_per_peer: Option<u64>,
    max_http_body: Option<u64>,
    idle_timeout_secs: Option<u64>,
    max_frames_per_request: Option<u64>,
    max_frames_response_bytes: Option<u64>,
    max_bulk_value_bytes: Option<u64>,
    max_stow_metadata_bytes: Option<u64>,
    max_stow_metadata_form_bytes: Option<u64>,
    max_inflated_header_bytes: Option<u64>,
    stow_bytes_in_flight: Option<u64>,
    max_http_connections: Option<u64>,
    http_header_timeout_secs: Option<u64>,
    http_body_idle_timeout_secs: Option<u64>,
    max_http2_streams: Option<u64>,
    http_send_idle_timeout_secs: Option<u64>,
    max_metadata_bytes: Option<u64>,
    http_handler_timeout_secs: Option<u64>,
}

impl LimitsFile {
    /// The limits: defaults, then this table, then `PACS_<KEY>`.
    fn resolve(&self) -> Result<Limits> {
        let mut l = Limits::default();
        let num = |key: &str, file: Option<u64>| -> Result<Option<u64>> {
            match env(key) {
                Some(v) => v.trim().parse::<u64>().map(Some).with_context(|| {
                    format!(
                        "PACS_{} = {v:?} is not a non-negative integer",
                        key.to_ascii_uppercase()
                    )
                }),
                None => Ok(file),
            }
        };
        let size = |key: &str, file: Option<u64>| -> Result<Option<usize>> {
            num(key, file)?
                .map(|n| usize::try_from(n).with_context(|| format!("{key} = {n} is too large")))
                .transpose()
        };
        let secs = |key: &str, file: Option<u64>| -> Result<Option<Duration>> {
            Ok(num(key, file)?.map(Duration::from_secs))
        };
        macro_rules! set {
            ($field:ident, $how:ident) => {
                if let Some(v) = $how(stringify!($field), self.$field)? {
                    l.$field = v;
                }
            };
            ($field:ident, $key:ident, $how:ident) => {
                if let Some(v) = $how(stringify!($key), self.$key)? {
                    l.$field = v;
                }
            };
        }
        set!(max_element_len, num);
        set!(max_header_bytes, num);
        set!(max_sequence_depth, size);
        set!(max_object_bytes, num);
        set!(max_elements, size);
        if let Some(v) = num("max_pdu_len", self.max_pdu_len)? {
            l.max_pdu_len = u32::try_from(v).context("max_pdu_len does not fit 32 bits")?;
        }
        set!(max_associations, size);
        set!(max_associations_per_peer, size);
        set!(max_http_body, num);
        set!(idle_timeout, idle_timeout_secs, secs);
        set!(max_frames_per_request, size);
        set!(max_frames_response_bytes, num);
        set!(max_bulk_value_bytes, num);
        set!(max_stow_metadata_bytes, num);
        set!(max_stow_metadata_form_bytes, num);
        set!(max_inflated_header_bytes, num);
        set!(stow_bytes_in_flight, num);
        set!(max_http_connections, size);
        set!(http_header_timeout, http_header_timeout_secs, secs);
        set!(http_body_idle_timeout, http_body_idle_timeout_secs, secs);
        set!(http_send_idle_timeout, http_send_idle_timeout_secs, secs);
        set!(max_metadata_bytes, num);
        set!(http_handler_timeout, http_handler_timeout_secs, secs);
        if let Some(v) = num("max_http2_streams", self.max_http2_streams)? {
            l.max_http2_streams =
                u32::try_from(v).context("max_http2_streams does not fit 32 bits")?;
        }
        if l.max_http_connections == 0 || l.http_header_timeout.is_zero() {
            bail!("max_http_connections and http_header_timeout_secs must be above 0");
        }
        if l.http_handler_timeout.is_zero() {
            bail!("http_handler_timeout_secs must be above 0");
        }
        Ok(l)
    }
}

/// The `[auth]` table; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFile {
    required: Option<bool>,
    session_idle_seconds: Option<u64>,
    session_absolute_seconds: Option<u64>,
    max_sessions: Option<u64>,
    lockout_threshold: Option<u64>,
    lockout_address_threshold: Option<u64>,
    lockout_seconds: Option<u64>,
    lockout_max_seconds: Option<u64>,
    password_hash_concurrency: Option<u64>,
    min_password_length: Option<u64>,
    share_max_days: Option<u64>,
    share_pin_attempts: Option<u64>,
    share_pin_lock_seconds: Option<u64>,
    share_session_seconds: Option<u64>,
    share_max_sessions: Option<u64>,
    oidc_issuer: Option<String>,
    oidc_audience: Option<String>,
    oidc_role_claim: Option<String>,
    oidc_role_map: Option<std::collections::BTreeMap<String, String>>,
    oidc_allowed_algs: Option<Vec<String>>,
    oidc_ca_file: Option<PathBuf>,
    oidc_client_id: Option<String>,
    oidc_client_secret: Option<String>,
    oidc_redirect_url: Option<String>,
    oidc_scopes: Option<Vec<String>>,
    oidc_display_name: Option<String>,
}

/// Sign-in settings (`[auth]`; `PACS_AUTH_<KEY>` overrides).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// Require sign-in even before any user or token exists.
    pub required: bool,
    pub session_idle_seconds: u64,
    pub session_absolute_seconds: u64,
    pub max_sessions: u64,
    pub lockout_threshold: u64,
    pub lockout_address_threshold: u64,
    pub lockout_seconds: u64,
    pub lockout_max_seconds: u64,
    pub password_hash_concurrency: u64,
    pub min_password_length: u64,
    /// The longest validity of a share link, in days.
    pub share_max_days: u64,
    /// Wrong PINs in a row before a share link's PIN entry is locked.
    pub share_pin_attempts: u64,
    pub share_pin_lock_seconds: u64,
    /// How long the cookie of an opened share link lasts.
    pub share_session_seconds: u64,
    /// Share cookies held at once.
    pub share_max_sessions: u64,
    /// OpenID Connect bearer tokens (`oidc_*` keys); `None` without
    /// `oidc_issuer`.
    pub oidc: Option<OidcSettings>,
}

/// The `[auth] oidc_*` keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcSettings {
    pub issuer: String,
    pub audience: String,
    /// Dotted path of the roles claim (default `roles`).
    pub role_claim: String,
    /// Claim value → role name (empty: values are our role names).
    pub role_map: std::collections::BTreeMap<String, String>,
    /// Default RS256, ES256, PS256.
    pub allowed_algs: Vec<String>,
    /// Extra certificate authorities (PEM) trusted for an HTTPS provider,
    /// besides the system's store.
    pub ca_file: Option<PathBuf>,
    /// The viewer's sign-in through the provider (`oidc_client_id` set).
    pub client: Option<OidcClientSettings>,
}

/// The `[auth] oidc_client_*` keys: the archive as the provider's client.
#[derive(Clone, PartialEq, Eq)]
pub struct OidcClientSettings {
    pub client_id: String,
    pub client_secret: Option<String>,
    pub redirect_url: Option<String>,
    /// Default `openid profile`.
    pub scopes: Vec<String>,
    /// The name on the sign-in button (default: the issuer's host).
    pub display_name: String,
}

impl std::fmt::Debug for OidcClientSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcClientSettings")
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "***"))
            .field("redirect_url", &self.redirect_url)
            .field("scopes", &self.scopes)
            .field("display_name", &self.display_name)
            .finish()
    }
}

impl OidcSettings {
    fn load(f: &mut AuthFile) -> Result<Option<OidcSettings>> {
        let text = |key: &str, file: Option<String>| env(&format!("auth_{key}")).or(file);
        let Some(issuer) = text("oidc_issuer", f.oidc_issuer.take()).filter(|s| !s.is_empty())
        else {
            return Ok(None);
        };
        let audience = text("oidc_audience", f.oidc_audience.take())
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| {
                anyhow!("[auth] oidc_issuer needs oidc_audience (the `aud` of our tokens)")
            })?;
        let role_claim =
            text("oidc_role_claim", f.oidc_role_claim.take()).unwrap_or_else(|| "roles".into());
        let role_map = f.oidc_role_map.take().unwrap_or_default();
        for (claim, role) in &role_map {
            if pacs_core::access::Role::parse(role).is_none() {
                bail!("[auth] oidc_role_map: {claim:?} maps to {role:?}, which is not a role (admin, radiologist, technologist, referrer, auditor, partner)");
            }
        }
        let allowed_algs = match env("auth_oidc_allowed_algs") {
            Some(v) => v
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            None => f
                .oidc_allowed_algs
                .take()
                .unwrap_or_else(|| vec!["RS256".into(), "ES256".into(), "PS256".into()]),
        };
        let ca_file = env("auth_oidc_ca_file")
            .map(PathBuf::from)
            .or(f.oidc_ca_file.take());
        let client = match text("oidc_client_id", f.oidc_client_id.take())
            .filter(|s| !s.trim().is_empty())
        {
            None => None,
            Some(client_id) => {
                let display_name = text("oidc_display_name", f.oidc_display_name.take())
                    .filter(|s| !s.trim().is_empty())
                    .unwrap_or_else(|| {
                        let rest = issuer.split_once("://").map_or(issuer.as_str(), |x| x.1);
                        rest.split(['/', ':']).next().unwrap_or(rest).to_owned()
                    });
                let scopes = match env("auth_oidc_scopes") {
                    Some(v) => v.split([',', ' ']).map(str::to_owned).collect(),
                    None => f
                        .oidc_scopes
                        .take()
                        .unwrap_or_else(|| vec!["openid".into(), "profile".into()]),
                };
                let scopes: Vec<String> = scopes
                    .into_iter()
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect();
                if let Some(bad) = scopes.iter().find(|s| {
                    !s.chars()
                        .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\')
                }) {
                    bail!("[auth] oidc_scopes: {bad:?} is not a scope token (RFC 6749 3.3)");
                }
                Some(OidcClientSettings {
                    client_id,
                    client_secret: text("oidc_client_secret", f.oidc_client_secret.take())
                        .filter(|s| !s.is_empty()),
                    redirect_url: text("oidc_redirect_url", f.oidc_redirect_url.take())
                        .filter(|s| !s.trim().is_empty()),
                    scopes,
                    display_name,
                })
            }
        };
        Ok(Some(OidcSettings {
            issuer,
            audience,
            role_claim,
            role_map,
            allowed_algs,
            ca_file,
            client,
        }))
    }
}

impl AuthConfig {
    fn load(mut f: AuthFile) -> Result<AuthConfig> {
        let oidc = OidcSettings::load(&mut f)?;
        let num = |key: &str, file: Option<u64>, default: u64, min: u64, max: u64| -> Result<u64> {
            let env_key = format!("auth_{key}");
            let v = match env(&env_key) {
                Some(v) => v.trim().parse::<u64>().with_context(|| {
                    format!(
                        "PACS_AUTH_{} = {v:?} is not a number",
                        key.to_ascii_uppercase()
                    )
                })?,
                None => file.unwrap_or(default),
            };
            if v < min || v > max {
                bail!("[auth] {key} = {v} must be between {min} and {max}");
            }
            Ok(v)
        };
        let required = match env("auth_required") {
            Some(v) => parse_bool("auth_required", &v)?,
            None => f.required.unwrap_or(false),
        };
        Ok(AuthConfig {
            required,
            session_idle_seconds: num(
                "session_idle_seconds",
                f.session_idle_seconds,
                1800,
                1,
                86_400 * 7,
            )?,
            session_absolute_seconds: num(
                "session_absolute_seconds",
                f.session_absolute_seconds,
                12 * 3600,
                1,
                86_400 * 30,
            )?,
            max_sessions: num("max_sessions", f.max_sessions, 10_000, 1, 10_000_000)?,
            lockout_threshold: num("lockout_threshold", f.lockout_threshold, 5, 1, 1000)?,
            lockout_address_threshold: num(
                "lockout_address_threshold",
                f.lockout_address_threshold,
                20,
                1,
                100_000,
            )?,
            lockout_seconds: num("lockout_seconds", f.lockout_seconds, 60, 1, 86_400)?,
            lockout_max_seconds: num(
                "lockout_max_seconds",
                f.lockout_max_seconds,
                3600,
                1,
                86_400 * 7,
            )?,
            password_hash_concurrency: num(
                "password_hash_concurrency",
                f.password_hash_concurrency,
                2,
                1,
                64,
            )?,
            min_password_length: num("min_password_length", f.min_password_length, 10, 1, 1024)?,
            share_max_days: num("share_max_days", f.share_max_days, 90, 1, 3650)?,
            share_pin_attempts: num("share_pin_attempts", f.share_pin_attempts, 5, 1, 100)?,
            share_pin_lock_seconds: num(
                "share_pin_lock_seconds",
                f.share_pin_lock_seconds,
                900,
                1,
                86_400 * 7,
            )?,
            share_session_seconds: num(
                "share_session_seconds",
                f.share_session_seconds,
                4 * 3600,
                1,
                86_400,
            )?,
            share_max_sessions: num(
                "share_max_sessions",
                f.share_max_sessions,
                10_000,
                1,
                10_000_000,
            )?,
            oidc,
        })
    }
}

/// The `[s3]` table; every key optional, `PACS_S3_<KEY>` overrides each,
/// and unset connection keys fall back to the standard `AWS_*` variables.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct S3File {
    endpoint: Option<String>,
    region: Option<String>,
    path_style: Option<bool>,
    allow_http: Option<bool>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    multipart_threshold: Option<u64>,
    max_retries: Option<u64>,
    retry_timeout: Option<u64>,
    conditional_put: Option<bool>,
    server_side_encryption: Option<String>,
    sse_kms_key_id: Option<String>,
    sse_bucket_key: Option<bool>,
    ca_file: Option<PathBuf>,
}

impl S3File {
    fn resolve(self) -> Result<storage::S3Options> {
        let d = storage::S3Options::default();
        let text = |key: &str, file: Option<String>| env(&format!("s3_{key}")).or(file);
        let flag = |key: &str, file: Option<bool>| -> Result<Option<bool>> {
            let key = format!("s3_{key}");
            match env(&key) {
                Some(v) => parse_bool(&key, &v).map(Some),
                None => Ok(file),
            }
        };
        let num = |key: &str, file: Option<u64>, default: u64| -> Result<u64> {
            let key = format!("s3_{key}");
            match env(&key) {
                Some(v) => v.trim().parse::<u64>().with_context(|| {
                    format!(
                        "PACS_{} = {v:?} is not a non-negative integer",
                        key.to_ascii_uppercase()
                    )
                }),
                None => Ok(file.unwrap_or(default)),
            }
        };
        // Parts of a multipart upload are 8 MiB; one PUT carries at most 5 GiB.
        let threshold = num(
            "multipart_threshold",
            self.multipart_threshold,
            d.multipart_threshold as u64,
        )?;
        if !(1 << 20..=5 << 30).contains(&threshold) {
            bail!(
                "[s3] multipart_threshold = {threshold} must be between 1 MiB (1048576) and 5 GiB"
            );
        }
        let max_retries = num("max_retries", self.max_retries, d.max_retries as u64)?;
        if max_retries > 20 {
            bail!("[s3] max_retries = {max_retries} must be at most 20");
        }
        let retry_timeout = num(
            "retry_timeout",
            self.retry_timeout,
            d.retry_timeout.as_secs(),
        )?;
        if !(1..=300).contains(&retry_timeout) {
            bail!("[s3] retry_timeout = {retry_timeout} must be between 1 and 300 seconds");
        }
        let server_side_encryption = text("server_side_encryption", self.server_side_encryption);
        let sse_kms_key_id = text("sse_kms_key_id", self.sse_kms_key_id);
        let sse_bucket_key = flag("sse_bucket_key", self.sse_bucket_key)?;
        check_sse(
            server_side_encryption.as_deref(),
            std::env::var("AWS_SERVER_SIDE_ENCRYPTION").ok().as_deref(),
            sse_kms_key_id.is_some(),
            sse_bucket_key.is_some(),
        )?;
        Ok(storage::S3Options {
            endpoint: text("endpoint", self.endpoint),
            region: text("region", self.region),
            path_style: flag("path_style", self.path_style)?,
            allow_http: flag("allow_http", self.allow_http)?,
            access_key_id: text("access_key_id", self.access_key_id),
            secret_access_key: text("secret_access_key", self.secret_access_key),
            multipart_threshold: usize::try_from(threshold)
                .context("[s3] multipart_threshold is too large")?,
            max_retries: max_retries as usize,
            retry_timeout: Duration::from_secs(retry_timeout),
            conditional_put: flag("conditional_put", self.conditional_put)?
                .unwrap_or(d.conditional_put),
            server_side_encryption,
            sse_kms_key_id,
            sse_bucket_key,
            ca_file: text("ca_file", None).map(PathBuf::from).or(self.ca_file),
        })
    }
}

/// Checks the `[s3]` encryption keys: `sse` (the table's or
/// `PACS_S3_SERVER_SIDE_ENCRYPTION`) is one of the kinds this archive asks
/// for; a KMS key or bucket key needs KMS, from `sse` or else from
/// `AWS_SERVER_SIDE_ENCRYPTION` (`env_sse`, which object_store reads and
/// checks itself).
fn check_sse(
    sse: Option<&str>,
    env_sse: Option<&str>,
    kms_key: bool,
    bucket_key: bool,
) -> Result<()> {
    match sse {
        None | Some("AES256" | "aws:kms" | "aws:kms:dsse") => {}
        Some(other) => bail!(
            "[s3] server_side_encryption = {other:?} is not one this archive asks for: \
             use \"AES256\" (SSE-S3), \"aws:kms\" (SSE-KMS) or \"aws:kms:dsse\", \
             or leave it unset for the bucket's default encryption"
        ),
    }
    let kms = matches!(sse.or(env_sse), Some("aws:kms" | "aws:kms:dsse"));
    if kms_key && !kms {
        bail!("[s3] sse_kms_key_id needs server_side_encryption = \"aws:kms\" or \"aws:kms:dsse\"");
    }
    if bucket_key && !kms {
        bail!("[s3] sse_bucket_key needs server_side_encryption = \"aws:kms\" or \"aws:kms:dsse\"");
    }
    Ok(())
}

/// The `[audit]` table; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditFile {
    syslog_tls: Option<String>,
    syslog_ca_file: Option<PathBuf>,
    syslog_cert_file: Option<PathBuf>,
    syslog_key_file: Option<PathBuf>,
    syslog_app_name: Option<String>,
    syslog_facility: Option<u64>,
    syslog_max_backlog: Option<u64>,
    syslog_retry_max_secs: Option<u64>,
}

/// The audit trail's settings (`[audit]`; `PACS_AUDIT_<KEY>` overrides).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditConfig {
    /// Forwarding to a syslog collector over TLS; `None` without
    /// `syslog_tls`.
    pub syslog: Option<SyslogConfig>,
}

/// The `[audit] syslog_*` keys: the collector (RFC 5425, PS3.15 A.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogConfig {
    /// `host:port` of the collector; the host is also the name its
    /// certificate must carry.
    pub host: String,
    pub port: u16,
    /// CAs the collector's certificate must chain to (PEM).
    pub ca_file: PathBuf,
    /// Our client certificate and key (PEM), sent when the collector asks
    /// for one; default `tls_cert_file` / `tls_key_file`.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// APP-NAME (default `sen-pacs`).
    pub app_name: String,
    /// Syslog facility, 0–23 (default 10, security/authorization).
    pub facility: u8,
    /// Records waiting for the collector, at most (default 100 000).
    pub max_backlog: u64,
    /// Longest wait between reconnection attempts (default 60 s).
    pub retry_max: Duration,
}

impl AuditConfig {
    fn load(f: AuditFile, tls_cert: Option<&PathBuf>, tls_key: Option<&PathBuf>) -> Result<Self> {
        let text = |key: &str, file: Option<String>| env(&format!("audit_{key}")).or(file);
        let path = |key: &str, file: Option<PathBuf>| {
            env(&format!("audit_{key}")).map(PathBuf::from).or(file)
        };
        let num = |key: &str, file: Option<u64>, default: u64, min: u64, max: u64| -> Result<u64> {
            let v = match env(&format!("audit_{key}")) {
                Some(v) => v.trim().parse::<u64>().with_context(|| {
                    format!(
                        "PACS_AUDIT_{} = {v:?} is not a number",
                        key.to_ascii_uppercase()
                    )
                })?,
                None => file.unwrap_or(default),
            };
            if v < min || v > max {
                bail!("[audit] {key} = {v} must be between {min} and {max}");
            }
            Ok(v)
        };
        let Some(addr) = text("syslog_tls", f.syslog_tls).filter(|s| !s.trim().is_empty()) else {
            return Ok(AuditConfig { syslog: None });
        };
        let addr = addr.trim();
        let (host, port) = addr
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_start_matches('[').trim_end_matches(']'), p.parse::<u16>().ok()?)))
            .filter(|(h, p)| !h.is_empty() && *p != 0)
            .ok_or_else(|| anyhow!("[audit] syslog_tls = {addr:?} is not host:port (e.g. \"audit.hospital.vn:6514\")"))?;
        let ca_file = path("syslog_ca_file", f.syslog_ca_file).ok_or_else(|| {
            anyhow!("[audit] syslog_tls needs syslog_ca_file (the CA the collector's certificate chains to)")
        })?;
        let cert_file = path("syslog_cert_file", f.syslog_cert_file).or_else(|| tls_cert.cloned());
        let key_file = path("syslog_key_file", f.syslog_key_file).or_else(|| tls_key.cloned());
        if cert_file.is_some() != key_file.is_some() {
            bail!("[audit] syslog_cert_file and syslog_key_file go together");
        }
        let app_name =
            text("syslog_app_name", f.syslog_app_name).unwrap_or_else(|| "sen-pacs".into());
        if app_name.is_empty()
            || app_name.len() > 48
            || !app_name.chars().all(|c| c.is_ascii_graphic())
        {
            bail!("[audit] syslog_app_name must be 1 to 48 printable ASCII characters without spaces (RFC 5424 APP-NAME)");
        }
        Ok(AuditConfig {
            syslog: Some(SyslogConfig {
                host: host.to_owned(),
                port,
                ca_file,
                cert_file,
                key_file,
                app_name,
                facility: num("syslog_facility", f.syslog_facility, 10, 0, 23)? as u8,
                max_backlog: num(
                    "syslog_max_backlog",
                    f.syslog_max_backlog,
                    100_000,
                    1,
                    1 << 40,
                )?,
                retry_max: Duration::from_secs(num(
                    "syslog_retry_max_secs",
                    f.syslog_retry_max_secs,
                    60,
                    1,
                    86_400,
                )?),
            }),
        })
    }
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
    /// Accept associations only from the AE titles of `remote_ae`. `None`
    /// (not configured): on, except under `serve --demo` where unknown
    /// modalities stay welcome.
    pub strict_ae: Option<bool>,
    pub allow_unauthenticated_http: bool,
    /// Origins allowed to call the HTTP API from a page of another origin
    /// (a viewer such as OHIF deployed elsewhere); `["*"]` allows any,
    /// empty (the default) sends no CORS headers.
    pub cors_allowed_origins: Vec<String>,
    /// Land received objects in a local log first (one sync per object;
    /// moved to the blob store in the background). On by default.
    pub landing_log: bool,
    pub remote_ae: Vec<RemoteAe>,
    /// Host names the HTTP server answers to (empty: the listen address
    /// and the loopback names); against DNS rebinding.
    pub allowed_hosts: Vec<String>,
    pub auth: AuthConfig,
    /// On shutdown, how long open DIMSE associations may go on until they
    /// release before they are aborted (seconds in the file).
    pub drain_timeout: Duration,
    /// ARTIM: how long a new DIMSE connection has to send its
    /// A-ASSOCIATE-RQ (seconds in the file).
    pub artim_timeout: Duration,
    /// DIMSE connections not associated yet, at most.
    pub max_pending_connections: usize,
    /// Server certificate chain and key (PEM), for HTTPS and DICOM TLS.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// CAs a DICOM TLS client certificate must chain to; when set, a client
    /// certificate is required on `dimse_tls_listen`.
    pub tls_client_ca_file: Option<PathBuf>,
    /// Serve HTTPS instead of HTTP on `http_listen`.
    pub http_tls: bool,
    /// DICOM TLS listener beside `dimse_listen`.
    pub dimse_tls_listen: Option<SocketAddr>,
    /// Reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are
    /// believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Every size and time limit (`[limits]` in the file).
    pub limits: Limits,
    /// The pixel-work limits (`render_concurrency`, `pixel_memory_budget`,
    /// `pixel_queue_wait` in seconds, `max_decoded_pixel_bytes`,
    /// `max_inflated_object_bytes`); the other fields are the defaults.
    pub pixel_limits: Limits,
    /// What a store of a stored SOP Instance UID with different content
    /// does: `keep-history` (default), `reject` or `overwrite`.
    pub on_duplicate: DuplicatePolicy,
    /// Stores are refused while less than this is free on the data dir's
    /// (or a local blob store's) file system: bytes with a unit or a
    /// percentage; default 1 GiB.
    pub min_free_space: MinFreeSpace,
    /// The index's page cache in bytes (default 256 MiB): the server's
    /// memory grows with the index up to about this much.
    pub index_cache_bytes: u64,
    /// The sled index is reopened (at a quiet moment) once this much index
    /// log has been written since its last open, which bounds what a
    /// restart or a crash recovery replays (default 128 MiB, at once past
    /// twice that; 0: never).
    pub index_reopen_after_bytes: u64,
    /// How long a series stays unchanged before the DICOM JSON of its
    /// instances moves out of the sled index into one compressed metadata
    /// blob (seconds in the file; default 30).
    pub metadata_compact_after: Duration,
    /// The audit trail's optional syslog destination (`[audit]`).
    pub audit: AuditConfig,
    /// The durable job queue's retries (`job_retry_base`, `job_retry_max`
    /// in seconds, `job_max_attempts`), how many jobs run against one
    /// destination at once on this node (`job_concurrency_per_destination`)
    /// and how long a node holds a job it runs without renewing its lease
    /// (`job_lease_secs`).
    pub jobs: JobSettings,
    /// Orders in: HL7 over MLLP and the worklist folder.
    pub workflow: WorkflowConfig,
    /// Where the index lives: empty for the embedded sled index in
    /// `<data_dir>/index`, or `postgres://user:password@host:port/dbname`.
    pub index_url: String,
    /// Connections to a PostgreSQL index per node (default 16).
    pub index_pool_size: usize,
    /// The `[s3]` table, for an `s3://` `storage_url`.
    pub s3: storage::S3Options,
    /// The viewer's hanging protocols: the file named by `hanging_protocols`,
    /// else `hanging_protocols.json` in the config file's folder if there;
    /// `None` (no config file): the built-in ones.
    pub hanging_protocols: Option<viewer_web::hanging::Source>,
    /// Who hears that images are available (IAN AEs, the HIS), and the
    /// study-stable trigger.
    pub availability: pacs_core::availability::AvailabilityConfig,
    /// The HIS's MLLP endpoint for "images available" (`[hl7_out]`).
    pub hl7_out: Option<hl7::notify::Hl7OutConfig>,
}

/// The job queue's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSettings {
    pub retry: pacs_core::jobs::RetryPolicy,
    pub per_destination: usize,
    /// A running job's lease: renewed every third of it; once it ran out
    /// (the node died) any node queues the job again.
    pub lease: Duration,
}

/// Overrides from command-line flags.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub http_listen: Option<String>,
    pub dimse_listen: Option<String>,
    pub storage_url: Option<String>,
    /// `serve --demo`: with no login, the DIMSE listener defaults to the
    /// loopback interface too (the HTTP one always does).
    pub demo: bool,
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

/// An entry of `trusted_proxies`: an IP address or a CIDR block.
fn parse_proxy(s: &str) -> Result<ipnet::IpNet> {
    let s = s.trim();
    if let Ok(net) = s.parse::<ipnet::IpNet>() {
        return Ok(net.trunc());
    }
    match s.parse::<IpAddr>() {
        Ok(ip) => Ok(ipnet::IpNet::from(ip)),
        Err(_) => bail!(
            "trusted_proxies entry {s:?} is not an IP address or a CIDR block like 10.0.0.0/8"
        ),
    }
}

impl Config {
    /// Loads the configuration from `file` (if given), the environment and
    /// the flags.
    pub fn load(file: Option<&Path>, flags: &Overrides) -> Result<Config> {
        let mut fc: FileConfig = match file {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read config file {}", p.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("config file {} is not valid", p.display()))?
            }
            None => FileConfig::default(),
        };
        let workflow = WorkflowConfig::load(&fc)?;
        // Named (the environment's path as it is, the file's relative to the
        // config file's folder): it must be there. Otherwise
        // `hanging_protocols.json` beside the config file, when present.
        let named = match env("hanging_protocols") {
            Some(p) => Some(PathBuf::from(p)),
            None => fc
                .hanging_protocols
                .clone()
                .map(|p| match file.and_then(Path::parent) {
                    Some(dir) if p.is_relative() => dir.join(p),
                    _ => p,
                }),
        }
        .filter(|p| !p.as_os_str().is_empty());
        let hanging_protocols = match named {
            Some(path) => Some(viewer_web::hanging::Source {
                path,
                required: true,
            }),
            None => file.map(|f| viewer_web::hanging::Source {
                path: f
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join(viewer_web::hanging::FILE_NAME),
                required: false,
            }),
        };
        let remote_ae = std::mem::take(&mut fc.remote_ae);
        let (availability, hl7_out) = availability(&mut fc, &remote_ae)?;
        fc.remote_ae = remote_ae;
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
                if flags.demo {
                    "127.0.0.1:11112"
                } else {
                    "0.0.0.0:11112"
                },
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
        let index_url = pick("index_url", fc.index_url, &None, "");
        if !index_url.is_empty()
            && !index_url.starts_with("postgres://")
            && !index_url.starts_with("postgresql://")
        {
            bail!("index_url must be empty (the embedded index) or a postgres:// URL");
        }
        let index_pool_size = positive("index_pool_size", fc.index_pool_size, 16usize)?;
        let strict_ae = match env("strict_ae") {
            Some(v) => Some(parse_bool("strict_ae", &v)?),
            None => fc.strict_ae,
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
        let on_duplicate = match env("on_duplicate").or(fc.on_duplicate) {
            Some(v) => v
                .parse::<DuplicatePolicy>()
                .map_err(|e| anyhow!("on_duplicate: {e}"))?,
            None => DuplicatePolicy::default(),
        };
        let index_cache_bytes = positive(
            "index_cache_bytes",
            fc.index_cache_bytes,
            storage::DEFAULT_INDEX_CACHE_BYTES,
        )?;
        let index_reopen_after_bytes = match env("index_reopen_after_bytes") {
            Some(v) => v.trim().parse().ok().with_context(|| {
                format!("PACS_INDEX_REOPEN_AFTER_BYTES = {v:?} is not a whole number")
            })?,
            None => fc
                .index_reopen_after_bytes
                .unwrap_or(storage::DEFAULT_INDEX_REOPEN_AFTER),
        };
        let metadata_compact_after = Duration::from_secs(positive(
            "metadata_compact_after_secs",
            fc.metadata_compact_after_secs,
            30,
        )?);
        let min_free_space = match env("min_free_space") {
            Some(v) => Some(v),
            None => match fc.min_free_space {
                Some(toml::Value::Integer(n)) if n >= 0 => Some(n.to_string()),
                Some(toml::Value::String(s)) => Some(s),
                Some(other) => {
                    bail!("min_free_space = {other} is not a size: write bytes, \"1GiB\" or \"2%\"")
                }
                None => None,
            },
        };
        let min_free_space = match min_free_space {
            Some(v) => v
                .parse::<MinFreeSpace>()
                .map_err(|e| anyhow!("min_free_space: {e}"))?,
            None => MinFreeSpace::default(),
        };
        for r in &fc.remote_ae {
            if r.ae_title.is_empty() || r.ae_title.len() > 16 {
                bail!(
                    "remote_ae ae_title {:?} must be 1 to 16 characters",
                    r.ae_title
                );
            }
        }
        let allowed_hosts = match env("allowed_hosts") {
            Some(v) => v
                .split(',')
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .collect(),
            None => fc.allowed_hosts.unwrap_or_default(),
        };
        for h in &allowed_hosts {
            if h.is_empty() || h.contains('/') || h.contains(char::is_whitespace) {
                bail!("allowed_hosts entry {h:?} is not a host name (write e.g. \"pacs.hospital.vn\" or \"10.0.0.5:8080\")");
            }
        }
        let auth = AuthConfig::load(fc.auth)?;
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
        let path_key = |key: &str, file: Option<PathBuf>| env(key).map(PathBuf::from).or(file);
        let tls_cert_file = path_key("tls_cert_file", fc.tls_cert_file);
        let tls_key_file = path_key("tls_key_file", fc.tls_key_file);
        let tls_client_ca_file = path_key("tls_client_ca_file", fc.tls_client_ca_file);
        let http_tls = match env("http_tls") {
            Some(v) => parse_bool("http_tls", &v)?,
            None => fc.http_tls.unwrap_or(false),
        };
        let dimse_tls_listen = match env("dimse_tls_listen").or(fc.dimse_tls_listen) {
            Some(a) if !a.trim().is_empty() => Some(parse_addr("dimse_tls_listen", a.trim())?),
            _ => None,
        };
        if (http_tls || dimse_tls_listen.is_some())
            && (tls_cert_file.is_none() || tls_key_file.is_none())
        {
            bail!("http_tls and dimse_tls_listen need tls_cert_file and tls_key_file (PEM)");
        }
        if fc.remote_ae.iter().any(|r| r.tls_subject.is_some())
            && (dimse_tls_listen.is_none() || tls_client_ca_file.is_none())
        {
            bail!(
                "a remote_ae with tls_subject needs dimse_tls_listen and tls_client_ca_file \
                 (a client certificate is trusted only when it chains to that CA)"
            );
        }
        let trusted_proxies = match env("trusted_proxies") {
            Some(v) => v
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(parse_proxy)
                .collect::<Result<Vec<_>>>()?,
            None => fc
                .trusted_proxies
                .unwrap_or_default()
                .iter()
                .map(|p| parse_proxy(p))
                .collect::<Result<Vec<_>>>()?,
        };
        let limits = fc.limits.resolve()?;
        let d = limits.clone();
        let limits = Limits {
            render_concurrency: positive(
                "render_concurrency",
                fc.render_concurrency,
                d.render_concurrency,
            )?,
            pixel_memory_budget: positive(
                "pixel_memory_budget",
                fc.pixel_memory_budget,
                d.pixel_memory_budget,
            )?,
            pixel_queue_wait: Duration::from_secs(positive(
                "pixel_queue_wait",
                fc.pixel_queue_wait,
                d.pixel_queue_wait.as_secs(),
            )?),
            max_decoded_pixel_bytes: positive(
                "max_decoded_pixel_bytes",
                fc.max_decoded_pixel_bytes,
                d.max_decoded_pixel_bytes,
            )?,
            max_inflated_object_bytes: positive(
                "max_inflated_object_bytes",
                fc.max_inflated_object_bytes,
                d.max_inflated_object_bytes,
            )?,
            ..d
        };
        let pixel_limits = limits.clone();
        let retry_default = pacs_core::jobs::RetryPolicy::default();
        let jobs = JobSettings {
            retry: pacs_core::jobs::RetryPolicy {
                base: Duration::from_secs(positive(
                    "job_retry_base",
                    fc.job_retry_base,
                    retry_default.base.as_secs(),
                )?),
                max: Duration::from_secs(positive(
                    "job_retry_max",
                    fc.job_retry_max,
                    retry_default.max.as_secs(),
                )?),
                max_attempts: positive(
                    "job_max_attempts",
                    fc.job_max_attempts,
                    retry_default.max_attempts,
                )?,
                ..retry_default
            },
            per_destination: positive(
                "job_concurrency_per_destination",
                fc.job_concurrency_per_destination,
                2,
            )?,
            lease: Duration::from_secs(positive(
                "job_lease_secs",
                fc.job_lease_secs,
                pacs_core::jobs::DEFAULT_LEASE.as_secs(),
            )?),
        };
        let audit = AuditConfig::load(fc.audit, tls_cert_file.as_ref(), tls_key_file.as_ref())?;
        let s3 = fc.s3.resolve()?;
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
            allowed_hosts,
            auth,
            drain_timeout,
            artim_timeout,
            max_pending_connections,
            tls_cert_file,
            tls_key_file,
            tls_client_ca_file,
            http_tls,
            dimse_tls_listen,
            trusted_proxies,
            limits,
            pixel_limits,
            on_duplicate,
            min_free_space,
            index_cache_bytes,
            index_reopen_after_bytes,
            metadata_compact_after,
            jobs,
            workflow,
            hanging_protocols,
            audit,
            index_url,
            index_pool_size,
            s3,
            availability,
            hl7_out,
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

    /// Where the audit trail lives (`DATA_DIR/audit/`, always local).
    pub fn audit_dir(&self) -> PathBuf {
        self.data_dir.join("audit")
    }

    /// Where the landing log lives (always local: it is what makes an
    /// object durable before it reaches the blob store).
    pub fn landing_dir(&self) -> PathBuf {
        self.data_dir.join("landing")
    }
}

/// Orders in (issue 11): the HL7 v2 MLLP listener and the folder of
/// worklist files. `PACS_<KEY>` overrides each scalar key.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowConfig {
    /// Where HL7 v2 (MLLP) orders are received; none: no listener.
    pub hl7_listen: Option<SocketAddr>,
    /// The issuer whose identifier (PID-3 repetition with this assigning
    /// authority) becomes Patient ID; the others are kept as Other Patient
    /// IDs. Empty: the first repetition.
    pub hl7_issuer: String,
    /// The largest HL7 message accepted (bytes); a larger one is refused
    /// and the connection closed.
    pub hl7_max_message_bytes: usize,
    /// An HL7 connection idle this long is closed.
    pub hl7_idle_timeout: Duration,
    /// HL7 connections open at once, at most.
    pub hl7_max_connections: usize,
    /// Scheduled Station AE Title by modality, for orders whose OBR-21
    /// names none (`[hl7_station_aes]` table, e.g. `CT = "CT1"`).
    pub hl7_station_aes: std::collections::BTreeMap<String, String>,
    /// A folder of DICOM worklist files (`*.wl`, Orthanc's format),
    /// merged into the worklist and re-read when it changes.
    pub worklist_dir: Option<PathBuf>,
    /// How often the folder is checked for changes.
    pub worklist_poll: Duration,
    /// Worklist files larger than this are skipped (bytes).
    pub worklist_max_file_bytes: u64,
}

impl WorkflowConfig {
    fn load(fc: &FileConfig) -> Result<WorkflowConfig> {
        let hl7_listen = match env("hl7_listen").or(fc.hl7_listen.clone()) {
            Some(a) if !a.trim().is_empty() => Some(parse_addr("hl7_listen", a.trim())?),
            _ => None,
        };
        let hl7_issuer = env("hl7_issuer")
            .or(fc.hl7_issuer.clone())
            .unwrap_or_default();
        for (modality, ae) in &fc.hl7_station_aes {
            if ae.is_empty() || ae.len() > 16 || modality.is_empty() {
                bail!("hl7_station_aes {modality:?} = {ae:?}: an AE title is 1 to 16 characters");
            }
        }
        Ok(WorkflowConfig {
            hl7_listen,
            hl7_issuer,
            hl7_max_message_bytes: positive(
                "hl7_max_message_bytes",
                fc.hl7_max_message_bytes,
                1024 * 1024,
            )?,
            hl7_idle_timeout: Duration::from_secs(positive(
                "hl7_idle_timeout",
                fc.hl7_idle_timeout,
                60,
            )?),
            hl7_max_connections: positive("hl7_max_connections", fc.hl7_max_connections, 16)?,
            hl7_station_aes: fc.hl7_station_aes.clone(),
            worklist_dir: env("worklist_dir")
                .map(PathBuf::from)
                .or(fc.worklist_dir.clone())
                .filter(|p| !p.as_os_str().is_empty()),
            worklist_poll: Duration::from_secs(positive(
                "worklist_poll_seconds",
                fc.worklist_poll_seconds,
                2,
            )?),
            worklist_max_file_bytes: positive(
                "worklist_max_file_bytes",
                fc.worklist_max_file_bytes,
                1024 * 1024,
            )?,
        })
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
        // Not demo: DIMSE on every interface by default.
        assert!(c.dimse_listen.ip().is_unspecified());
        Ok(())
    }

    /// `serve --demo` has no login: its DIMSE listener stays on the
    /// loopback interface unless the file (or a flag) names another.
    #[test]
    fn the_demo_listens_on_loopback_only() -> Result<()> {
        let demo = Overrides {
            demo: true,
            ..Overrides::default()
        };
        let c = Config::load(None, &demo)?;
        assert!(c.dimse_listen.ip().is_loopback(), "{}", c.dimse_listen);
        assert!(c.http_listen.ip().is_loopback(), "{}", c.http_listen);
        let dir = tempfile::tempdir()?;
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "dimse_listen = \"0.0.0.0:11112\"\n")?;
        assert!(Config::load(Some(&f), &demo)?
            .dimse_listen
            .ip()
            .is_unspecified());
        Ok(())
    }

    /// Server-side encryption: the three kinds the store is asked for
    /// pass, anything else (and a KMS key without KMS) stops the start
    /// with a message naming the key.
    #[test]
    fn s3_server_side_encryption_keys() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let f = dir.path().join("c.toml");
        let load = |s3: &str| -> Result<Config> {
            std::fs::write(&f, format!("[s3]\n{s3}"))?;
            Config::load(Some(&f), &Overrides::default())
        };
        let c = load("server_side_encryption = \"aws:kms\"\nsse_kms_key_id = \"k1\"\nsse_bucket_key = true\n")?;
        assert_eq!(c.s3.server_side_encryption.as_deref(), Some("aws:kms"));
        assert_eq!(c.s3.sse_kms_key_id.as_deref(), Some("k1"));
        assert_eq!(c.s3.sse_bucket_key, Some(true));
        assert_eq!(
            load("server_side_encryption = \"AES256\"\n")?
                .s3
                .server_side_encryption
                .as_deref(),
            Some("AES256")
        );
        for (bad, says) in [
            (
                "server_side_encryption = \"rot13\"\n",
                "server_side_encryption = \"rot13\"",
            ),
            (
                "server_side_encryption = \"sse-c\"\n",
                "server_side_encryption = \"sse-c\"",
            ),
            ("sse_kms_key_id = \"k1\"\n", "sse_kms_key_id needs"),
            (
                "server_side_encryption = \"AES256\"\nsse_bucket_key = true\n",
                "sse_bucket_key needs",
            ),
        ] {
            let Err(err) = load(bad) else {
                panic!("{bad} was taken");
            };
            let err = format!("{err:#}");
            assert!(err.contains(says), "{bad}: {err}");
        }
        // KMS named by AWS_SERVER_SIDE_ENCRYPTION, the key in the table.
        check_sse(None, Some("aws:kms"), true, true)?;
        assert!(check_sse(None, Some("AES256"), true, false).is_err());
        Ok(())
    }

    #[test]
    fn availability_keys() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let f = dir.path().join("c.toml");
        let c = Config::load(None, &Overrides::default())?;
        assert!(!c.availability.is_active());
        assert_eq!(c.hl7_out, None);
        let remote = "[[remote_ae]]\nae_title = \"RIS\"\nhost = \"127.0.0.1\"\nport = 104\n";
        std::fs::write(
            &f,
            format!(
                "ian_destinations = [\"RIS\"]\nian_stable_after_secs = 30\n{remote}\
                 [hl7_out]\naddress = \"his.bv.vn:2575\"\nviewer_url = \"https://pacs.bv.vn\"\n"
            ),
        )?;
        let c = Config::load(Some(&f), &Overrides::default())?;
        assert_eq!(c.availability.ian_destinations, vec!["RIS".to_owned()]);
        assert_eq!(c.availability.stable_after, Some(Duration::from_secs(30)));
        assert_eq!(
            c.availability.hl7_destination.as_deref(),
            Some("his.bv.vn:2575")
        );
        let h = c.hl7_out.context("no [hl7_out]")?;
        assert_eq!(h.sending_application, "SENPACS");
        assert_eq!(h.timeout, Duration::from_secs(30));
        // An IAN destination must be a [[remote_ae]]; [hl7_out] needs the viewer URL.
        std::fs::write(&f, "ian_destinations = [\"NOBODY\"]\n")?;
        assert!(Config::load(Some(&f), &Overrides::default()).is_err());
        std::fs::write(&f, "[hl7_out]\naddress = \"his.bv.vn:2575\"\n")?;
        assert!(Config::load(Some(&f), &Overrides::default()).is_err());
        std::fs::write(
            &f,
            "[hl7_out]\naddress = \"his.bv.vn\"\nviewer_url = \"https://x\"\n",
        )?;
        assert!(Config::load(Some(&f), &Overrides::default()).is_err());
        std::fs::write(&f, "[hl7_out]\nadress = \"his.bv.vn:1\"\n")?;
        assert!(Config::load(Some(&f), &Overrides::default()).is_err());
        Ok(())
    }

    #[test]
    fn limits_from_the_file() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "[limits]\nmax_frames_per_request = 7\nhttp_header_timeout_secs = 3\nmax_http_connections = 9\n",
        )?;
        let c = Config::load(Some(&f), &Overrides::default())?;
        assert_eq!(c.limits.max_frames_per_request, 7);
        assert_eq!(c.limits.http_header_timeout, Duration::from_secs(3));
        assert_eq!(c.limits.max_http_connections, 9);
        assert_eq!(c.limits.max_http_body, Limits::default().max_http_body);
        std::fs::write(&f, "[limits]\nmax_frames = 7\n")?;
        assert!(Config::load(Some(&f), &Overrides::default()).is_err());
        Ok(())
    }

    #[test]
    fn auth_table_and_allowed_hosts() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "allowed_hosts = [\"pacs.bv.vn\"]\n[auth]\nsession_idle_seconds = 5\nlockout_threshold = 3\n",
        )?;
        let c = Config::load(Some(&f), &Overrides::default())?;
        assert_eq!(c.allowed_hosts, vec!["pacs.bv.vn".to_owned()]);
        assert_eq!(c.auth.session_idle_seconds, 5);
        assert_eq!(c.auth.lockout_threshold, 3);
        assert_eq!(c.auth.min_password_length, 10);
        assert_eq!(c.auth.share_max_days, 90);
        assert!(!c.auth.required);
        std::fs::write(&f, "[auth]\nsesion_idle_seconds = 5\n")?;
        assert!(Config::load(Some(&f), &Overrides::default()).is_err());
        std::fs::write(&f, "[auth]\nlockout_threshold = 0\n")?;
        assert!(Config::load(Some(&f), &Overrides::default()).is_err());
        Ok(())
    }

    #[test]
    fn oidc_keys() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let f = dir.path().join("c.toml");
        assert_eq!(Config::load(None, &Overrides::default())?.auth.oidc, None);
        std::fs::write(
            &f,
            "[auth]\noidc_issuer = \"http://127.0.0.1:8080/realms/h\"\noidc_audience = \"sen-pacs\"\n\
             oidc_role_claim = \"realm_access.roles\"\n[auth.oidc_role_map]\n\"pacs-rad\" = \"radiologist\"\n",
        )?;
        let o = Config::load(Some(&f), &Overrides::default())?
            .auth
            .oidc
            .ok_or_else(|| anyhow!("no oidc"))?;
        assert_eq!(o.audience, "sen-pacs");
        assert_eq!(o.role_claim, "realm_access.roles");
        assert_eq!(
            o.role_map.get("pacs-rad").map(String::as_str),
            Some("radiologist")
        );
        assert_eq!(o.allowed_algs, vec!["RS256", "ES256", "PS256"]);
        // An issuer without an audience, or a map to no role, is refused.
        std::fs::write(&f, "[auth]\noidc_issuer = \"http://127.0.0.1:8080\"\n")?;
        assert!(Config::load(Some(&f), &Overrides::default()).is_err());
        std::fs::write(
            &f,
            "[auth]\noidc_issuer = \"http://127.0.0.1:8080\"\noidc_audience = \"a\"\n\
             [auth.oidc_role_map]\nx = \"root\"\n",
        )?;
        assert!(Config::load(Some(&f), &Overrides::default()).is_err());
        Ok(())
    }

    #[test]
    fn oidc_client_keys() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let f = dir.path().join("c.toml");
        let base =
            "[auth]\noidc_issuer = \"https://idp.example:8443/realms/h\"\noidc_audience = \"a\"\n";
        std::fs::write(&f, base)?;
        let o = Config::load(Some(&f), &Overrides::default())?
            .auth
            .oidc
            .ok_or_else(|| anyhow!("no oidc"))?;
        assert_eq!(o.client, None, "no client id: bearer tokens only");
        assert_eq!(o.ca_file, None);
        std::fs::write(
            &f,
            format!(
                "{base}oidc_ca_file = \"/etc/pacs/ca.pem\"\noidc_client_id = \"pacs-web\"\n\
                 oidc_client_secret = \"s3cret\"\noidc_scopes = [\"openid\", \"profile\", \"roles\"]\n"
            ),
        )?;
        let o = Config::load(Some(&f), &Overrides::default())?
            .auth
            .oidc
            .ok_or_else(|| anyhow!("no oidc"))?;
        assert_eq!(o.ca_file, Some(PathBuf::from("/etc/pacs/ca.pem")));
        let c = o.client.ok_or_else(|| anyhow!("no client"))?;
        assert_eq!(c.client_id, "pacs-web");
        assert_eq!(c.client_secret.as_deref(), Some("s3cret"));
        assert_eq!(c.redirect_url, None);
        assert_eq!(c.scopes, vec!["openid", "profile", "roles"]);
        assert_eq!(
            c.display_name, "idp.example",
            "the issuer's host by default"
        );
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "the secret is not logged"
        );
        std::fs::write(
            &f,
            format!("{base}oidc_client_id = \"x\"\noidc_scopes = [\"a\\\"b\"]\n"),
        )?;
        assert!(Config::load(Some(&f), &Overrides::default()).is_err());
        Ok(())
    }

    #[test]
    fn duplicate_policy_and_free_space_keys() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let f = dir.path().join("c.toml");
        let c = Config::load(None, &Overrides::default())?;
        assert_eq!(c.on_duplicate, DuplicatePolicy::KeepHistory);
        assert_eq!(c.min_free_space, MinFreeSpace::Bytes(1 << 30));
        assert_eq!(c.index_cache_bytes, 256 << 20);
        assert_eq!(c.index_reopen_after_bytes, 128 << 20);
        std::fs::write(&f, "on_duplicate = \"reject\"\nmin_free_space = \"2%\"\n")?;
        let c = Config::load(Some(&f), &Overrides::default())?;
        assert_eq!(c.on_duplicate, DuplicatePolicy::Reject);
        assert_eq!(c.min_free_space, MinFreeSpace::Percent(2.0));
        std::fs::write(&f, "min_free_space = 4096\n")?;
        let c = Config::load(Some(&f), &Overrides::default())?;
        assert_eq!(c.min_free_space, MinFreeSpace::Bytes(4096));
        std::fs::write(&f, "min_free_space = \"512MiB\"\n")?;
        let c = Config::load(Some(&f), &Overrides::default())?;
        assert_eq!(c.min_free_space, MinFreeSpace::Bytes(512 << 20));
        for bad in [
            "on_duplicate = \"keep\"\n",
            "min_free_space = \"lots\"\n",
            "min_free_space = \"120%\"\n",
            "min_free_space = -1\n",
        ] {
            std::fs::write(&f, bad)?;
            assert!(
                Config::load(Some(&f), &Overrides::default()).is_err(),
                "{bad}"
            );
        }
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
    fn tls_and_proxy_keys() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "http_tls = true\n")?;
        assert!(Config::load(Some(&f), &Overrides::default()).is_err());
        std::fs::write(
            &f,
            "dimse_tls_listen = \"127.0.0.1:2762\"\ntls_cert_file = \"c.pem\"\ntls_key_file = \"k.pem\"\n\
             trusted_proxies = [\"10.1.2.3\", \"192.168.0.0/16\"]\n",
        )?;
        let c = Config::load(Some(&f), &Overrides::default())?;
        assert_eq!(c.dimse_tls_listen.map(|a| a.port()), Some(2762));
        assert!(!c.http_tls);
        assert_eq!(c.trusted_proxies.len(), 2);
        assert!(c.trusted_proxies[1].contains(&"192.168.4.5".parse::<IpAddr>()?));
        std::fs::write(&f, "trusted_proxies = [\"proxy.local\"]\n")?;
        assert!(Config::load(Some(&f), &Overrides::default()).is_err());
        // A certificate-bound AE needs a client CA to trust certificates.
        std::fs::write(
            &f,
            "dimse_tls_listen = \"127.0.0.1:2762\"\ntls_cert_file = \"c.pem\"\ntls_key_file = \"k.pem\"\n\
             [[remote_ae]]\nae_title = \"CT\"\nhost = \"10.0.0.2\"\nport = 104\ntls_subject = \"ct.local\"\n",
        )?;
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
        std::fs::write(
            &f,
            "render_concurrency = 2\npixel_memory_budget = 1000000\npixel_queue_wait = 5\n\
             max_decoded_pixel_bytes = 4096\nmax_inflated_object_bytes = 8192\n",
        )?;
        let p = Config::load(Some(&f), &Overrides::default())?.pixel_limits;
        assert_eq!(
            (
                p.render_concurrency,
                p.pixel_memory_budget,
                p.pixel_queue_wait,
                p.max_decoded_pixel_bytes,
                p.max_inflated_object_bytes
            ),
            (2, 1_000_000, Duration::from_secs(5), 4096, 8192)
        );
        std::fs::write(&f, "render_concurrency = 0\n")?;
        assert!(Config::load(Some(&f), &Overrides::default()).is_err());
        std::fs::write(&f, "drain_timeout = 0\n")?;
        assert!(Config::load(Some(&f), &Overrides::default()).is_err());
        Ok(())
    }

    #[test]
    fn job_queue_keys() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let f = dir.path().join("c.toml");
        let c = Config::load(None, &Overrides::default())?;
        assert_eq!(c.jobs.retry, pacs_core::jobs::RetryPolicy::default());
        assert_eq!(c.jobs.per_destination, 2);
        assert_eq!(c.jobs.lease, Duration::from_secs(60));
        std::fs::write(
            &f,
            "job_retry_base = 2
job_retry_max = 60
job_max_attempts = 7
             job_concurrency_per_destination = 1
job_lease_secs = 5
",
        )?;
        let c = Config::load(Some(&f), &Overrides::default())?;
        assert_eq!(c.jobs.retry.base, Duration::from_secs(2));
        assert_eq!(c.jobs.retry.max, Duration::from_secs(60));
        assert_eq!(c.jobs.retry.max_attempts, 7);
        assert_eq!(c.jobs.per_destination, 1);
        assert_eq!(c.jobs.lease, Duration::from_secs(5));
        for zero in [
            "job_lease_secs = 0\n",
            "job_retry_base = 0\n",
            "job_max_attempts = 0\n",
            "job_concurrency_per_destination = 0\n",
        ] {
            std::fs::write(&f, zero)?;
            assert!(
                Config::load(Some(&f), &Overrides::default()).is_err(),
                "{zero}"
            );
        }
        Ok(())
    }

    #[test]
    fn workflow_keys() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "")?;
        let w = Config::load(Some(&f), &Overrides::default())?.workflow;
        assert_eq!(w.hl7_listen, None);
        assert_eq!(w.worklist_dir, None);
        assert_eq!(w.hl7_max_message_bytes, 1024 * 1024);
        assert_eq!(w.hl7_idle_timeout, Duration::from_secs(60));
        assert_eq!(w.hl7_max_connections, 16);
        assert_eq!(w.worklist_poll, Duration::from_secs(2));
        assert_eq!(w.worklist_max_file_bytes, 1024 * 1024);
        std::fs::write(
            &f,
            "hl7_listen = \"127.0.0.1:2575\"\nhl7_issuer = \"CCCD\"\nhl7_max_message_bytes = 4096\n\
             hl7_idle_timeout = 5\nhl7_max_connections = 2\nworklist_dir = \"/srv/wl\"\n\
             worklist_poll_seconds = 9\nworklist_max_file_bytes = 100\n[hl7_station_aes]\nCT = \"CT1\"\n",
        )?;
        let w = Config::load(Some(&f), &Overrides::default())?.workflow;
        assert_eq!(w.hl7_listen.map(|a| a.port()), Some(2575));
        assert_eq!(w.hl7_issuer, "CCCD");
        assert_eq!(
            (
                w.hl7_max_message_bytes,
                w.hl7_idle_timeout,
                w.hl7_max_connections
            ),
            (4096, Duration::from_secs(5), 2)
        );
        assert_eq!(w.worklist_dir, Some(PathBuf::from("/srv/wl")));
        assert_eq!(
            (w.worklist_poll, w.worklist_max_file_bytes),
            (Duration::from_secs(9), 100)
        );
        assert_eq!(w.hl7_station_aes.get("CT").map(String::as_str), Some("CT1"));
        for bad in [
            "hl7_listen = \"nowhere\"\n",
            "hl7_max_message_bytes = 0\n",
            "hl7_unknown = 1\n",
            "[hl7_station_aes]\nCT = \"AN-AE-TITLE-TOO-LONG\"\n",
        ] {
            std::fs::write(&f, bad)?;
            assert!(
                Config::load(Some(&f), &Overrides::default()).is_err(),
                "{bad}"
            );
        }
        Ok(())
    }

    #[test]
    fn audit_syslog_table() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let f = dir.path().join("c.toml");
        assert_eq!(
            Config::load(None, &Overrides::default())?.audit.syslog,
            None
        );
        std::fs::write(
            &f,
            "[audit]\nsyslog_tls = \"audit.bv.vn:6514\"\nsyslog_ca_file = \"/etc/ca.pem\"\nsyslog_facility = 13\n",
        )?;
        let s = Config::load(Some(&f), &Overrides::default())?
            .audit
            .syslog
            .ok_or_else(|| anyhow!("no syslog"))?;
        assert_eq!(
            (s.host.as_str(), s.port, s.facility),
            ("audit.bv.vn", 6514, 13)
        );
        assert_eq!((s.app_name.as_str(), s.max_backlog), ("sen-pacs", 100_000));
        assert_eq!((s.cert_file, s.retry_max), (None, Duration::from_secs(60)));
        for bad in [
            "[audit]\nsyslog_tls = \"audit.bv.vn\"\nsyslog_ca_file = \"/ca\"\n",
            "[audit]\nsyslog_tls = \"audit.bv.vn:6514\"\n",
            "[audit]\nsyslog_tls = \"a:1\"\nsyslog_ca_file = \"/ca\"\nsyslog_facility = 24\n",
            "[audit]\nsyslog_tls = \"a:1\"\nsyslog_ca_file = \"/ca\"\nsyslog_app_name = \"sen pacs\"\n",
            "[audit]\nsyslog = \"a:1\"\n",
        ] {
            std::fs::write(&f, bad)?;
            assert!(Config::load(Some(&f), &Overrides::default()).is_err(), "{bad}");
        }
        Ok(())
    }

    #[test]
    fn index_url_and_pool_size_keys() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let f = dir.path().join("c.toml");
        let c = Config::load(None, &Overrides::default())?;
        assert_eq!(c.index_url, "");
        assert_eq!(c.index_pool_size, 16);
        std::fs::write(
            &f,
            "index_url = \"postgres://pacs@127.0.0.1:5432/pacs\"\nindex_pool_size = 4\n",
        )?;
        let c = Config::load(Some(&f), &Overrides::default())?;
        assert_eq!(c.index_url, "postgres://pacs@127.0.0.1:5432/pacs");
        assert_eq!(c.index_pool_size, 4);
        for bad in ["index_url = \"mysql://x/y\"\n", "index_pool_size = 0\n"] {
            std::fs::write(&f, bad)?;
            assert!(
                Config::load(Some(&f), &Overrides::default()).is_err(),
                "{bad}"
            );
        }
        Ok(())
    }
}
