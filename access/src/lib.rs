//! Who may reach the HTTP side of Sen PACS, and how they prove it.
//!
//! - [`accounts`]: local users (argon2id) and machine tokens (SHA-256 of a
//!   256-bit secret), over the `Credentials` port of `pacs-core`.
//! - [`layer`]: the middleware in front of every route. It checks the Host
//!   against an allow-list, resolves the caller to a
//!   [`pacs_core::Principal`] (session cookie, HTTP Basic, bearer token, or
//!   a plugged-in [`Resolver`] such as OpenID Connect), applies the route
//!   policy ([`policy`]) and the CSRF check, records the audit event of
//!   each patient-data request, and adds the security headers.
//! - [`pages`]: the login page and the admin page (server-rendered, vi/en),
//!   and the JSON API for users and tokens.
//!
//! What a role may do is decided in `pacs_core::access` (one table); this
//! crate only maps routes to permissions. [`oidc`] is the OpenID Connect
//! bearer-token [`Resolver`]; [`oidc_login`] the viewer's sign-in through
//! the provider (authorization code + PKCE, server-side). Non-goals: TLS,
//! share links and the audit log writer live elsewhere; they plug in here
//! through [`Resolver`] and the archive's audit sink.

pub mod accounts;
mod fetch;
pub mod grants;
pub mod layer;
pub mod oidc;
pub mod oidc_login;
pub mod pages;
pub mod policy;
pub mod secrets;
pub mod sessions;
pub mod shares;
pub mod throttle;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pacs_core::ports::PortError;
use pacs_core::{Archive, Principal};

pub use accounts::{Accounts, TokenCheck};
pub use layer::protect;
pub use oidc::{Oidc, OidcClient, OidcConfig};
pub use secrets::PasswordHashing;
pub use sessions::SessionConfig;
pub use shares::ShareConfig;
pub use throttle::ThrottleConfig;

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("credential store: {0}")]
    Store(#[from] PortError),
    #[error("{0} already exists")]
    Exists(String),
    #[error("no such {0}")]
    NotFound(String),
    #[error("{0:?} is not a valid name: use 1 to 64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit")]
    BadName(String),
    #[error("{0}")]
    WeakPassword(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("the system random source failed: {0}")]
    Random(String),
    #[error("{0}")]
    Setup(String),
}

/// The access settings (the `[auth]` table and `allowed_hosts` of the
/// configuration, resolved by the binary).
#[derive(Debug, Clone)]
pub struct AccessConfig {
    /// The HTTP listen address (its IP is allowed as a Host).
    pub listen: SocketAddr,
    /// Host names (or `host:port`) the server answers to; empty means the
    /// listen address and the loopback names. `*` allows any.
    pub allowed_hosts: Vec<String>,
    /// Served over HTTPS (Secure cookies, HSTS).
    pub https: bool,
    /// Require authentication even with no user or token yet.
    pub required: bool,
    pub sessions: SessionConfig,
    pub throttle: ThrottleConfig,
    /// Passwords hashed or checked at once.
    pub hash_concurrency: usize,
    pub min_password_len: usize,
    /// Public static files of the viewer (`/favicon.svg`, ...), besides
    /// everything under `/assets/`.
    pub static_files: Vec<String>,
    /// Origins allowed by CORS (with credentials on, `*` is refused).
    pub cors_allowed_origins: Vec<String>,
    /// Share links (`[auth] share_*`).
    pub shares: ShareConfig,
}

impl AccessConfig {
    pub fn new(listen: SocketAddr) -> AccessConfig {
        AccessConfig {
            listen,
            allowed_hosts: Vec::new(),
            https: false,
            required: false,
            sessions: SessionConfig {
                idle: Duration::from_secs(30 * 60),
                absolute: Duration::from_secs(12 * 3600),
                max_sessions: 10_000,
            },
            throttle: ThrottleConfig {
                account_threshold: 5,
                address_threshold: 20,
                base: Duration::from_secs(60),
                max: Duration::from_secs(3600),
            },
            hash_concurrency: 2,
            min_password_len: 10,
            static_files: Vec::new(),
            cors_allowed_origins: Vec::new(),
            shares: ShareConfig::default(),
        }
    }
}

/// Credentials presented in an `Authorization` header.
#[derive(Debug)]
pub enum Presented<'a> {
    Basic { user: &'a str, password: &'a str },
    Bearer(&'a str),
}

/// Why credentials were refused.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// Who it claimed to be (user or token name, or a placeholder).
    pub claimed: String,
    pub why: String,
    /// The caller must wait this long (throttled).
    pub retry_after: Option<Duration>,
    /// Record a Security Alert (bad token) rather than a failed login.
    pub alert: bool,
}

/// What a resolver made of presented credentials.
#[derive(Debug)]
pub enum Resolution {
    /// Not a kind this resolver knows: try the next one.
    NotMine,
    Principal(Principal),
    Refused(Refusal),
}

/// Turns presented credentials into a principal. The local users and
/// machine tokens are built in; OpenID Connect bearer JWTs and share
/// tokens plug in as further resolvers (see [`Access::add_resolver`]).
#[async_trait]
pub trait Resolver: Send + Sync + 'static {
    async fn resolve(&self, presented: &Presented<'_>, address: Option<IpAddr>) -> Resolution;
}

/// How long a verified Basic password is remembered, so that a DICOMweb
/// client sending Basic on every request does not pay argon2 each time.
const BASIC_CACHE_TTL: Duration = Duration::from_secs(300);
const BASIC_CACHE_MAX: usize = 10_000;

pub(crate) struct Inner {
    pub(crate) config: AccessConfig,
    pub(crate) archive: Archive,
    pub(crate) accounts: Option<Accounts>,
    pub(crate) sessions: sessions::Sessions,
    pub(crate) throttle: throttle::Throttle,
    pub(crate) resolvers: std::sync::RwLock<Vec<Arc<dyn Resolver>>>,
    pub(crate) enabled: AtomicBool,
    /// SHA-256 of (name, password, stored hash) → when verified.
    pub(crate) basic_cache: Mutex<HashMap<[u8; 32], Instant>>,
    pub(crate) allowed_hosts: Vec<String>,
    /// The identity provider of the viewer's sign-in, when configured.
    pub(crate) oidc_login: std::sync::OnceLock<Arc<Oidc>>,
}

/// The access layer's state, shared by the middleware and the pages.
#[derive(Clone)]
pub struct Access {
    pub(crate) inner: Arc<Inner>,
}

impl Access {
    /// Builds the access layer for `archive` (its credential store, if it
    /// has one, holds the users and tokens). Refuses configurations that
    /// would be unsafe with authentication on.
    pub async fn new(archive: Archive, config: AccessConfig) -> Result<Access, AccessError> {
        let accounts = archive.credentials().map(|store| {
            Accounts::new(
                store,
                PasswordHashing::new(config.hash_concurrency),
                config.min_password_len,
            )
        });
        let mut allowed_hosts: Vec<String> = config
            .allowed_hosts
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect();
        if allowed_hosts.is_empty() {
            allowed_hosts = vec!["localhost".into(), "127.0.0.1".into(), "[::1]".into()];
            let ip = config.listen.ip();
            if !ip.is_unspecified() {
                allowed_hosts.push(match ip {
                    IpAddr::V4(v4) => v4.to_string(),
                    IpAddr::V6(v6) => format!("[{v6}]"),
                });
            }
        }
        let access = Access {
            inner: Arc::new(Inner {
                sessions: sessions::Sessions::new(
                    config.sessions,
                    archive
                        .sessions()
                        .unwrap_or_else(|| Arc::new(pacs_core::sessions::MemorySessions::new())),
                ),
                throttle: match archive.sessions() {
                    Some(store) => throttle::Throttle::shared(config.throttle, store),
                    None => throttle::Throttle::new(config.throttle),
                },
                config,
                archive,
                accounts,
                resolvers: std::sync::RwLock::new(Vec::new()),
                enabled: AtomicBool::new(false),
                basic_cache: Mutex::new(HashMap::new()),
                allowed_hosts,
                oidc_login: std::sync::OnceLock::new(),
            }),
        };
        access.add_resolver(shares::registered(&access));
        access.refresh_enabled().await?;
        if !access.enabled() && access.inner.accounts.is_some() {
            // The store may be shared with other nodes (PostgreSQL): the
            // first user or token made on one of them turns sign-in on
            // here too, within one cache lifetime.
            let weak = Arc::downgrade(&access.inner);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(accounts::CACHE_TTL).await;
                    let Some(inner) = weak.upgrade() else {
                        return;
                    };
                    let access = Access { inner };
                    if access.refresh_enabled().await.is_ok() && access.enabled() {
                        tracing::info!("credentials exist now: sign-in is required");
                        return;
                    }
                }
            });
        }
        if access.enabled()
            && access
                .inner
                .config
                .cors_allowed_origins
                .iter()
                .any(|o| o == "*")
        {
            return Err(AccessError::Setup(
                "cors_allowed_origins = [\"*\"] is refused while authentication is on: any web \
                 page could then read patient data with a signed-in user's credentials. List \
                 the origins of the viewers you trust instead"
                    .into(),
            ));
        }
        Ok(access)
    }

    /// Adds a resolver (OpenID Connect, share tokens) tried for bearer
    /// tokens that are not local machine tokens.
    pub fn add_resolver(&self, resolver: Arc<dyn Resolver>) {
        self.inner
            .resolvers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(resolver);
    }

    /// Accepts the provider's bearer tokens and, when it has a client
    /// configuration, offers the viewer's sign-in through it.
    pub fn add_oidc(&self, oidc: Arc<Oidc>) {
        if oidc.config().client.is_some() {
            let _ = self.inner.oidc_login.set(oidc.clone());
        }
        self.add_resolver(oidc);
    }

    /// The identity provider of the viewer's sign-in, if any.
    pub(crate) fn oidc_login(&self) -> Option<&Arc<Oidc>> {
        self.inner.oidc_login.get()
    }

    /// Whether requests must authenticate.
    pub fn enabled(&self) -> bool {
        self.inner.enabled.load(Ordering::SeqCst)
    }

    /// Recomputes [`Access::enabled`] after users or tokens changed. Once
    /// on, it stays on until restart (removing the last user through the
    /// API must not open the archive).
    pub async fn refresh_enabled(&self) -> Result<(), AccessError> {
        let on = self.inner.config.required
            || match &self.inner.accounts {
                Some(a) => a.any_credentials().await?,
                None => false,
            };
        if on {
            self.inner.enabled.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    pub fn accounts(&self) -> Option<&Accounts> {
        self.inner.accounts.as_ref()
    }

    pub fn config(&self) -> &AccessConfig {
        &self.inner.config
    }
}
