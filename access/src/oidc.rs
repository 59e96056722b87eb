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
//! authenticates a principal without permissions (403).
//!
//! The provider is reached over HTTPS (rustls; the system's certificate
//! store plus `oidc_ca_file`), or over plain HTTP on a loopback address
//! only ([`crate::fetch`]). The same validation checks the ID tokens of
//! the viewer's sign-in ([`crate::oidc_login`]), against the client id
//! and the nonce of the sign-in instead of the audience.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hyper::header::ACCEPT;
use hyper::Method;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use pacs_core::access::{PrincipalKind, Role, StudyScope};
use pacs_core::Principal;
use serde_json::Value;

use crate::fetch::{HttpClient, Target};
use crate::{AccessError, Presented, Refusal, Resolution, Resolver};

/// How long keys are kept when the JWKS answer has no `max-age`.
const DEFAULT_KEYS_TTL: Duration = Duration::from_secs(600);
/// At most one refetch per this long for an unknown `kid`.
const REFETCH_MIN_INTERVAL: Duration = Duration::from_secs(30);
/// Leeway on `exp` and `nbf` (clock skew).
const LEEWAY_SECONDS: u64 = 60;
/// `max-age` is capped at a day.
const MAX_KEYS_TTL: Duration = Duration::from_secs(86_400);
/// How long a verified access token is taken at its word without checking
/// its signature again (never past its own `exp`): short, so that a key
/// the provider withdraws stops being trusted soon.
const VERIFIED_TTL: Duration = Duration::from_secs(60);
/// Most verified access tokens remembered at once.
const VERIFIED_MAX: usize = 4096;

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
    /// Extra trusted certificate authorities (PEM) for an HTTPS provider.
    pub ca_file: Option<PathBuf>,
    /// The viewer's sign-in (authorization code + PKCE); `None`: bearer
    /// tokens only.
    pub client: Option<OidcClient>,
}

/// The archive as an OAuth 2.0 client of the provider (the viewer's
/// sign-in, RFC 6749 §4.1 with PKCE, RFC 7636).
#[derive(Debug, Clone)]
pub struct OidcClient {
    pub client_id: String,
    /// A confidential client authenticates with `client_secret_basic`
    /// (RFC 6749 §2.3.1); without a secret it is a public client.
    pub client_secret: Option<String>,
    /// The redirect URI registered at the provider; `None`: derived from
    /// the request's (allowed) Host, `…/login/oidc/callback`.
    pub redirect_url: Option<String>,
    /// Scopes asked for (`openid` is always among them).
    pub scopes: Vec<String>,
    /// The provider's name on the sign-in button.
    pub display_name: String,
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

/// The endpoints of the discovery document (OpenID Connect Discovery 1.0
/// §3) that the archive uses.
#[derive(Debug, Clone)]
pub(crate) struct Endpoints {
    pub(crate) jwks_uri: String,
    pub(crate) authorization_endpoint: Option<String>,
    pub(crate) token_endpoint: Option<String>,
}

#[derive(Default)]
struct State {
    endpoints: Option<Endpoints>,
    keys: Option<Keys>,
    last_fetch: Option<Instant>,
}

/// Which kind of token is checked.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TokenKind {
    /// A bearer access token (RFC 9068).
    Access,
    /// The ID token of a sign-in (OpenID Connect Core §2, §3.1.3.7).
    Id,
}

/// The OpenID Connect bearer-token resolver, and the provider's side of
/// the viewer's sign-in.
pub struct Oidc {
    config: OidcConfig,
    http: HttpClient,
    state: tokio::sync::Mutex<State>,
    /// Access tokens already verified (by SHA-256), with their claims and
    /// until when they are trusted: a client sends the same token with
    /// every request, and checking its signature each time is most of
    /// what authentication costs.
    verified: std::sync::Mutex<HashMap<[u8; 32], (Value, Instant)>>,
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
        if let Some(c) = &config.client {
            if c.client_id.trim().is_empty() {
                return Err(AccessError::Setup("oidc_client_id is empty".into()));
            }
            if let Some(r) = &c.redirect_url {
                if !r.ends_with(crate::oidc_login::CALLBACK_PATH) {
                    return Err(AccessError::Setup(format!(
                        "oidc_redirect_url must end with {}",
                        crate::oidc_login::CALLBACK_PATH
                    )));
                }
                Target::parse(r).map_err(|e| {
                    AccessError::Setup(format!(
                        "oidc_redirect_url: {e} (a browser sends the sign-in's code there: \
                         https, or http on loopback)"
                    ))
                })?;
            }
        }
        let http = HttpClient::new(config.ca_file.as_deref())?;
        Ok(Oidc {
            config,
            http,
            state: tokio::sync::Mutex::new(State::default()),
            verified: std::sync::Mutex::new(HashMap::new()),
        })
    }

    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    pub(crate) fn http(&self) -> &HttpClient {
        &self.http
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

    /// GETs a JSON document; returns it with the answer's `max-age`.
    async fn fetch_json(&self, url: &str) -> Result<(Value, Option<Duration>), String> {
        let answer = self
            .http
            .request(
                Method::GET,
                url,
                &[(ACCEPT, "application/json".to_owned())],
                None,
            )
            .await?;
        if !answer.status.is_success() {
            return Err(format!("{url}: HTTP {}", answer.status));
        }
        let doc: Value =
            serde_json::from_slice(&answer.body).map_err(|e| format!("{url}: not JSON: {e}"))?;
        Ok((doc, answer.max_age))
    }

    /// The discovery document's endpoints, fetched once.
    async fn endpoints_locked(&self, st: &mut State) -> Result<Endpoints, String> {
        if let Some(e) = &st.endpoints {
            return Ok(e.clone());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let (doc, _) = self.fetch_json(&url).await?;
        let issuer = doc.get("issuer").and_then(Value::as_str).unwrap_or("");
        if issuer != self.config.issuer {
            return Err(format!(
                "the discovery document names issuer {issuer:?}, not the configured {:?}",
                self.config.issuer
            ));
        }
        let endpoint = |key: &str| -> Result<Option<String>, String> {
            match doc.get(key).and_then(Value::as_str) {
                None => Ok(None),
                Some(u) => {
                    Target::parse(u).map_err(|e| format!("{key}: {e}"))?;
                    Ok(Some(u.to_owned()))
                }
            }
        };
        let endpoints = Endpoints {
            jwks_uri: endpoint("jwks_uri")?.ok_or("the discovery document has no jwks_uri")?,
            authorization_endpoint: endpoint("authorization_endpoint")?,
            token_endpoint: endpoint("token_endpoint")?,
        };
        st.endpoints = Some(endpoints.clone());
        Ok(endpoints)
    }

    /// The provider's endpoints (discovery fetched on first use).
    pub(crate) async fn endpoints(&self) -> Result<Endpoints, String> {
        let mut st = self.state.lock().await;
        self.endpoints_locked(&mut st).await
    }

    async fn fetch_keys(&self, st: &mut State) -> Result<Keys, String> {
        let jwks_uri = self.endpoints_locked(st).await?.jwks_uri;
        let (doc, max_age) = self.fetch_json(&jwks_uri).await?;
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

    /// The claims of a token whose algorithm, signature, `iss`, `aud`,
    /// `exp` and `nbf` hold.
    async fn verified_claims(
        &self,
        token: &str,
        audience: &str,
        kind: TokenKind,
    ) -> Result<Value, String> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| format!("not a valid signed JWT: {e}"))?;
        if !self.config.allowed_algs.contains(&header.alg) {
            return Err(format!("algorithm {:?} is not allowed", header.alg));
        }
        if let Some(typ) = &header.typ {
            let t = typ.to_ascii_lowercase();
            // RFC 9068 §2.1: at+jwt (or application/at+jwt); plain JWT
            // from providers that do not set it. An access token is not
            // an ID token (RFC 9068 §4: typ keeps them apart).
            let ok = match kind {
                TokenKind::Access => matches!(t.as_str(), "at+jwt" | "application/at+jwt" | "jwt"),
                TokenKind::Id => t == "jwt",
            };
            if !ok {
                return Err(format!("token type {typ:?} is not expected here"));
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
        v.set_audience(&[audience]);
        v.set_issuer(&[self.config.issuer.as_str()]);
        let required: &[&str] = match kind {
            TokenKind::Access => &["exp", "iss", "aud"],
            // OpenID Connect Core §2: iss, sub, aud, exp, iat.
            TokenKind::Id => &["exp", "iss", "aud", "sub", "iat"],
        };
        v.required_spec_claims = required.iter().map(|s| s.to_string()).collect();
        let data = jsonwebtoken::decode::<Value>(token, &key, &v)
            .map_err(|e| format!("token refused: {e}"))?;
        Ok(data.claims)
    }

    async fn verify(&self, token: &str, address: Option<IpAddr>) -> Result<Principal, String> {
        let digest = crate::secrets::sha256(token.as_bytes());
        let now = Instant::now();
        let known = self
            .verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&digest)
            .filter(|(_, until)| *until > now)
            .map(|(claims, _)| claims.clone());
        if let Some(claims) = known {
            return self.principal_of(&claims, None, address);
        }
        let claims = self
            .verified_claims(token, &self.config.audience, TokenKind::Access)
            .await?;
        let principal = self.principal_of(&claims, None, address)?;
        // Trusted again until VERIFIED_TTL from now or its `exp`, whichever
        // comes first (without the leeway: the cache never extends a token).
        let left = claims
            .get("exp")
            .and_then(Value::as_u64)
            .map(|exp| Duration::from_secs(exp.saturating_sub(crate::accounts::now_secs())))
            .unwrap_or(Duration::ZERO);
        let ttl = left.min(VERIFIED_TTL);
        if !ttl.is_zero() {
            let mut v = self
                .verified
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if v.len() >= VERIFIED_MAX {
                v.retain(|_, (_, until)| *until > now);
                if v.len() >= VERIFIED_MAX {
                    v.clear();
                }
            }
            v.insert(digest, (claims, now + ttl));
        }
        Ok(principal)
    }

    /// The claims of the ID token of a sign-in (OpenID Connect Core
    /// §3.1.3.7): signed by the provider, `aud` is our client id (and
    /// `azp` too when there are several audiences), and `nonce` is the
    /// one this sign-in sent.
    pub(crate) async fn verify_id_token(
        &self,
        id_token: &str,
        client_id: &str,
        nonce: &str,
    ) -> Result<Value, String> {
        let claims = self
            .verified_claims(id_token, client_id, TokenKind::Id)
            .await?;
        if let Some(auds) = claims.get("aud").and_then(Value::as_array) {
            if auds.len() > 1 && claims.get("azp").and_then(Value::as_str) != Some(client_id) {
                return Err("the ID token has several audiences and azp is not ours".into());
            }
        }
        match claims.get("nonce").and_then(Value::as_str) {
            Some(n) if n == nonce => Ok(claims),
            Some(_) => Err("the ID token's nonce is not this sign-in's".into()),
            None => Err("the ID token has no nonce".into()),
        }
    }

    /// The role of an access token obtained with a sign-in, when the ID
    /// token carries none (Keycloak puts roles in access tokens only).
    pub(crate) async fn access_token_role(&self, token: &str) -> Option<Role> {
        let claims = self
            .verified_claims(token, &self.config.audience, TokenKind::Access)
            .await
            .ok()?;
        self.role_of(&claims)
    }

    /// The principal of verified claims; `role` overrides the claim.
    pub(crate) fn principal_of(
        &self,
        claims: &Value,
        role: Option<Role>,
        address: Option<IpAddr>,
    ) -> Result<Principal, String> {
        let name = claims
            .get("preferred_username")
            .or_else(|| claims.get("sub"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or("the token has no sub")?;
        let role = role.or_else(|| self.role_of(claims));
        Ok(Principal {
            kind: PrincipalKind::Oidc,
            name: name.chars().filter(|c| !c.is_control()).take(256).collect(),
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
    pub(crate) fn role_of(&self, claims: &Value) -> Option<Role> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_secret_algorithms_are_refused() {
        assert!(OidcConfig::parse_alg("HS256").is_err());
        assert!(OidcConfig::parse_alg("none").is_err());
        assert_eq!(OidcConfig::parse_alg("RS256").ok(), Some(Algorithm::RS256));
    }
}
