//! OpenID Connect bearer tokens: access tokens of an identity provider
//! (Keycloak, Entra ID, ...) presented as `Authorization: Bearer JWT`.
//!
//! The provider is found through its discovery document (OpenID Connect
//! Discovery 1.0 §4: `/.well-known/openid-configuration`, whose `issuer`
//! must equal the configured one) and its keys through `jwks_uri` (RFC
//! 7517). Keys are cached by `kid` for the `Cache-Control: max-age` of the
//! answer (10 minutes without one); a token naming an unknown `kid` makes
//! one refetch at most every 30 seconds, which follows the provider's key
//! rotation without letting forged `kid`s hammer it.
//!
//! A token is accepted when (RFC 7519 §7.2, RFC 9068 §4):
//! - its `alg` is one of the allowed asymmetric algorithms and is the
//!   algorithm of the key it names (never `none`, never HS*: a token MACed
//!   with the public key bytes fails);
//! - its signature verifies;
//! - `iss` is the issuer, `aud` contains the audience, `exp` and `nbf` hold
//!   with 60 seconds of leeway, and `typ`, if present, is `at+jwt` or `JWT`.
//!
//! The role comes from a claim (a dotted path such as
//! `realm_access.roles`), mapped to our roles; a token with no known role
//! authenticates a principal without permissions (403). Fetches go over
//! plain HTTP to a loopback address only (an identity provider on the same
//! host, or a test); HTTPS fetching is refused until the archive carries
//! a TLS client.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use pacs_core::access::{PrincipalKind, Role, StudyScope};
use pacs_core::Principal;
use serde_json::Value;

use crate::{AccessError, Presented, Refusal, Resolution, Resolver};

/// How long keys are kept when the JWKS answer has no `max-age`.
const DEFAULT_KEYS_TTL: Duration = Duration::from_secs(600);
/// At most one refetch per this long for an unknown `kid`.
const REFETCH_MIN_INTERVAL: Duration = Duration::from_secs(30);
/// Leeway on `exp` and `nbf` (clock skew).
const LEEWAY_SECONDS: u64 = 60;
/// The largest discovery or JWKS document read.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;
/// Time-out of one fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// `max-age` is capped at a day.
const MAX_KEYS_TTL: Duration = Duration::from_secs(86_400);

/// The `[auth] oidc_*` settings.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    pub issuer: String,
    pub audience: String,
    /// Dotted path of the claim holding the roles (`roles`,
    /// `realm_access.roles`).
    pub role_claim: String,
    /// Claim value → our role; empty means the values are our role names.
    pub role_map: HashMap<String, Role>,
    /// Allowed signature algorithms (asymmetric only).
    pub allowed_algs: Vec<Algorithm>,
}

impl OidcConfig {
    /// The default algorithms: RS256, ES256, PS256.
    pub fn default_algs() -> Vec<Algorithm> {
        vec![Algorithm::RS256, Algorithm::ES256, Algorithm::PS256]
    }

    /// Parses an algorithm name, refusing `none` and the HMAC ones (a
    /// provider's public key must never serve as a shared secret).
    pub fn parse_alg(name: &str) -> Result<Algorithm, AccessError> {
        let alg = Algorithm::from_str(name.trim()).map_err(|_| {
            AccessError::Setup(format!("oidc_allowed_algs: unknown algorithm {name:?}"))
        })?;
        if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
            return Err(AccessError::Setup(format!(
                "oidc_allowed_algs: {name} is a shared-secret algorithm and is refused for an \
                 identity provider; use RS256, ES256, PS256 or similar"
            )));
        }
        Ok(alg)
    }
}

struct Keys {
    by_kid: HashMap<String, Jwk>,
    /// Keys without a `kid` (usable when the set has one key).
    anonymous: Vec<Jwk>,
    expires: Instant,
}

#[derive(Default)]
struct State {
    jwks_uri: Option<String>,
    keys: Option<Keys>,
    last_fetch: Option<Instant>,
}

/// The OpenID Connect bearer-token resolver.
pub struct Oidc {
    config: OidcConfig,
    state: tokio::sync::Mutex<State>,
}

impl Oidc {
    /// Checks the configuration (the issuer must be fetchable) and builds
    /// the resolver. Nothing is fetched before the first token.
    pub fn new(config: OidcConfig) -> Result<Oidc, AccessError> {
        Target::parse(&config.issuer)?;
        if config.audience.trim().is_empty() {
            return Err(AccessError::Setup(
                "oidc_audience must be set with oidc_issuer (the `aud` our tokens carry)".into(),
            ));
        }
        if config.allowed_algs.is_empty() {
            return Err(AccessError::Setup("oidc_allowed_algs is empty".into()));
        }
        Ok(Oidc {
            config,
            state: tokio::sync::Mutex::new(State::default()),
        })
    }

    /// The key a token names, fetching the key set when it is stale or the
    /// `kid` is unknown (at most once per [`REFETCH_MIN_INTERVAL`]).
    async fn key_for(&self, kid: Option<&str>) -> Result<Jwk, String> {
        let mut st = self.state.lock().await;
        let now = Instant::now();
        let fresh = st.keys.as_ref().is_some_and(|k| k.expires > now);
        if fresh {
            if let Some(k) = st.keys.as_ref().and_then(|k| pick(k, kid)) {
                return Ok(k);
            }
        }
        let may_fetch = !fresh
            || st
                .last_fetch
                .is_none_or(|t| now.duration_since(t) >= REFETCH_MIN_INTERVAL);
        if may_fetch {
            st.last_fetch = Some(now);
            match self.fetch_keys(&mut st).await {
                Ok(keys) => st.keys = Some(keys),
                Err(e) => {
                    tracing::warn!(error = %e, "OpenID Connect key set not fetched");
                    if st.keys.is_none() {
                        return Err(format!("identity provider keys unavailable: {e}"));
                    }
                }
            }
        }
        st.keys
            .as_ref()
            .and_then(|k| pick(k, kid))
            .ok_or_else(|| "no key of the identity provider has this kid".to_owned())
    }

    async fn fetch_keys(&self, st: &mut State) -> Result<Keys, String> {
        let jwks_uri = match &st.jwks_uri {
            Some(u) => u.clone(),
            None => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    self.config.issuer.trim_end_matches('/')
                );
                let (doc, _) = fetch_json(&url).await?;
                let issuer = doc.get("issuer").and_then(Value::as_str).unwrap_or("");
                if issuer != self.config.issuer {
                    return Err(format!(
                        "the discovery document names issuer {issuer:?}, not the configured {:?}",
                        self.config.issuer
                    ));
                }
                let uri = doc
                    .get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or("the discovery document has no jwks_uri")?
                    .to_owned();
                Target::parse(&uri).map_err(|e| e.to_string())?;
                st.jwks_uri = Some(uri.clone());
                uri
            }
        };
        let (doc, max_age) = fetch_json(&jwks_uri).await?;
        let set: JwkSet =
            serde_json::from_value(doc).map_err(|e| format!("bad JWKS document: {e}"))?;
        let mut by_kid = HashMap::new();
        let mut anonymous = Vec::new();
        for k in set.keys {
            match k.common.key_id.clone() {
                Some(kid) => {
                    by_kid.insert(kid, k);
                }
                None => anonymous.push(k),
            }
        }
        let ttl = max_age.unwrap_or(DEFAULT_KEYS_TTL).min(MAX_KEYS_TTL);
        Ok(Keys {
            by_kid,
            anonymous,
            expires: Instant::now() + ttl,
        })
    }

    async fn verify(&self, token: &str, address: Option<IpAddr>) -> Result<Principal, String> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| format!("not a valid signed JWT: {e}"))?;
        if !self.config.allowed_algs.contains(&header.alg) {
            return Err(format!("algorithm {:?} is not allowed", header.alg));
        }
        if let Some(typ) = &header.typ {
            let t = typ.to_ascii_lowercase();
            // RFC 9068 §2.1: at+jwt (or application/at+jwt); plain JWT
            // from providers that do not set it.
            if !matches!(t.as_str(), "at+jwt" | "application/at+jwt" | "jwt") {
                return Err(format!("token type {typ:?} is not an access token"));
            }
        }
        let jwk = self.key_for(header.kid.as_deref()).await?;
        // The key's own algorithm, when it names one, is the only one.
        if let Some(ka) = jwk.common.key_algorithm {
            if ka.to_string() != format!("{:?}", header.alg) {
                return Err(format!(
                    "the token's algorithm {:?} is not its key's ({ka})",
                    header.alg
                ));
            }
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("unusable key: {e}"))?;
        let mut v = Validation::new(header.alg);
        v.algorithms = vec![header.alg];
        v.leeway = LEEWAY_SECONDS;
        v.validate_nbf = true;
        v.validate_exp = true;
        v.set_audience(&[self.config.audience.as_str()]);
        v.set_issuer(&[self.config.issuer.as_str()]);
        v.required_spec_claims = ["exp", "iss", "aud"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let data = jsonwebtoken::decode::<Value>(token, &key, &v)
            .map_err(|e| format!("token refused: {e}"))?;
        let claims = data.claims;
        let name = claims
            .get("preferred_username")
            .or_else(|| claims.get("sub"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or("the token has no sub")?;
        let role = self.role_of(&claims);
        Ok(Principal {
            kind: PrincipalKind::Oidc,
            name: name.chars().take(256).collect(),
            role,
            address,
            scope: match role {
                Some(Role::Partner) => StudyScope::Studies(Default::default()),
                _ => StudyScope::All,
            },
        })
    }

    /// The most privileged of our roles the claim maps to (in the order
    /// admin, radiologist, technologist, referrer, auditor, partner).
    fn role_of(&self, claims: &Value) -> Option<Role> {
        let mut v = claims;
        for part in self.config.role_claim.split('.') {
            v = v.get(part)?;
        }
        let values: Vec<&str> = match v {
            Value::String(s) => s.split_whitespace().collect(),
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => return None,
        };
        let mapped: Vec<Role> = values
            .iter()
            .filter_map(|s| {
                if self.config.role_map.is_empty() {
                    Role::parse(s)
                } else {
                    self.config.role_map.get(*s).copied()
                }
            })
            .collect();
        Role::ALL.into_iter().find(|r| mapped.contains(r))
    }
}

fn pick(keys: &Keys, kid: Option<&str>) -> Option<Jwk> {
    match kid {
        Some(kid) => keys.by_kid.get(kid).cloned(),
        None if keys.by_kid.len() + keys.anonymous.len() == 1 => keys
            .anonymous
            .first()
            .or_else(|| keys.by_kid.values().next())
            .cloned(),
        None => None,
    }
}

#[async_trait]
impl Resolver for Oidc {
    async fn resolve(&self, presented: &Presented<'_>, address: Option<IpAddr>) -> Resolution {
        let Presented::Bearer(token) = presented else {
            return Resolution::NotMine;
        };
        // A compact JWS has three dot-separated parts (RFC 7515 §7.1).
        if token.split('.').count() != 3 {
            return Resolution::NotMine;
        }
        match self.verify(token, address).await {
            Ok(p) => Resolution::Principal(p),
            Err(why) => Resolution::Refused(Refusal {
                claimed: "oidc".into(),
                why,
                retry_after: None,
                alert: true,
            }),
        }
    }
}

/// Where a fetch goes: plain HTTP to a loopback address.
struct Target {
    host: String,
    port: u16,
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, AccessError> {
        let bad = |why: &str| AccessError::Setup(format!("{url:?}: {why}"));
        let rest = if let Some(r) = url.strip_prefix("http://") {
            r
        } else if url.starts_with("https://") {
            return Err(bad(
                "https identity providers are not fetched yet (no TLS client in this build); \
                 run the provider on loopback",
            ));
        } else {
            return Err(bad("must be an http:// URL"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h, p.parse::<u16>().map_err(|_| bad("bad port"))?)
            }
            _ => (authority, 80),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            return Err(bad(
                "plain HTTP is only fetched from a loopback address (127.0.0.1, ::1, localhost)",
            ));
        }
        if path.chars().any(|c| c.is_control() || c == ' ') {
            return Err(bad("bad path"));
        }
        Ok(Target {
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }
}

/// GETs a JSON document; returns it with the answer's `max-age`.
async fn fetch_json(url: &str) -> Result<(Value, Option<Duration>), String> {
    let t = Target::parse(url).map_err(|e| e.to_string())?;
    let fut = async {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((t.host.as_str(), t.port))
            .await
            .map_err(|e| e.to_string())?
            .filter(|a| a.ip().is_loopback())
            .collect();
        let addr = addrs.first().ok_or("no loopback address")?;
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        let driver = tokio::spawn(conn);
        let host_header = if t.host.contains(':') {
            format!("[{}]:{}", t.host, t.port)
        } else {
            format!("{}:{}", t.host, t.port)
        };
        let req = hyper::Request::get(t.path.as_str())
            .header(hyper::header::HOST, host_header)
            .header(hyper::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            driver.abort();
            return Err(format!("HTTP {}", resp.status()));
        }
        let max_age = resp
            .headers()
            .get(hyper::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.split(',').find_map(|d| {
                    d.trim()
                        .strip_prefix("max-age=")
                        .and_then(|s| s.trim().parse::<u64>().ok())
                })
            })
            .map(Duration::from_secs);
        let body = Limited::new(resp.into_body(), MAX_DOCUMENT_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        driver.abort();
        let doc: Value = serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))?;
        Ok((doc, max_age))
    };
    tokio::time::timeout(FETCH_TIMEOUT, fut)
        .await
        .map_err(|_| format!("fetching {url} timed out"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_http_is_fetched() {
        assert!(Target::parse("http://127.0.0.1:9400").is_ok());
        assert!(Target::parse("http://[::1]:9400/x").is_ok());
        assert!(Target::parse("http://localhost/realms/a").is_ok());
        assert!(Target::parse("http://10.0.0.5:8080").is_err());
        assert!(Target::parse("https://idp.example").is_err());
        assert!(Target::parse("ftp://127.0.0.1").is_err());
    }

    #[test]
    fn shared_secret_algorithms_are_refused() {
        assert!(OidcConfig::parse_alg("HS256").is_err());
        assert!(OidcConfig::parse_alg("none").is_err());
        assert_eq!(OidcConfig::parse_alg("RS256").ok(), Some(Algorithm::RS256));
    }
}
