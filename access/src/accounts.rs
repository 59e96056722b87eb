//! Local users and machine tokens: creating, changing and checking them,
//! over the [`Credentials`] port. The CLI (`pacs user`, `pacs token`), the
//! admin page and the JSON API all go through [`Accounts`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pacs_core::credentials::{Credentials, TokenRecord, UserRecord};
use pacs_core::Role;

use crate::secrets::{self, PasswordHashing};
use crate::AccessError;

/// The longest password accepted (argon2 takes any length; this only keeps
/// a request from making us hash megabytes).
pub const MAX_PASSWORD_LEN: usize = 1024;

/// The longest user or token name.
pub const MAX_NAME_LEN: usize = 64;

/// The longest a token may be made to live.
pub const MAX_TOKEN_DAYS: u32 = 3650;

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A user or token name: 1 to 64 of `A-Z a-z 0-9 . _ @ -`, starting with a
/// letter or digit (it appears in audit records, URLs and listings).
pub fn check_name(name: &str) -> Result<(), AccessError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'));
    if ok {
        Ok(())
    } else {
        Err(AccessError::BadName(name.chars().take(80).collect()))
    }
}

/// What presenting a machine token amounts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenCheck {
    Valid(TokenRecord),
    Unknown,
    Expired(TokenRecord),
    Revoked(TokenRecord),
}

#[derive(Clone)]
pub struct Accounts {
    store: Arc<dyn Credentials>,
    hashing: PasswordHashing,
    min_password_len: usize,
    known: Arc<Mutex<Known>>,
}

/// Most users and tokens the per-request cache holds before it starts over.
const KNOWN_MAX: usize = 4096;

/// How long a cached user or token is trusted before the store is read
/// again. The store may be shared by several nodes (the PostgreSQL
/// index): a user removed, disabled or given a new password, or a token
/// revoked, on another node is refused here at most this long after.
pub const CACHE_TTL: Duration = Duration::from_secs(5);

/// The users and tokens met by recent requests, so that resolving the
/// principal of a request costs a map lookup instead of a store read. Every
/// change made through [`Accounts`] empties it; a change made by another
/// node (or by the CLI on a shared store) is seen once the entry is
/// [`CACHE_TTL`] old.
#[derive(Default)]
struct Known {
    /// Bumped by every change: a read of the store that began before a
    /// change must not put its (older) answer in the cache after it.
    generation: u64,
    users: HashMap<String, (UserRecord, Instant)>,
    tokens: HashMap<[u8; 32], (TokenRecord, Instant)>,
}

fn fresh<T: Clone>(entry: Option<&(T, Instant)>) -> Option<T> {
    entry
        .filter(|(_, at)| at.elapsed() < CACHE_TTL)
        .map(|(v, _)| v.clone())
}

impl Accounts {
    pub fn new(
        store: Arc<dyn Credentials>,
        hashing: PasswordHashing,
        min_password_len: usize,
    ) -> Accounts {
        Accounts {
            store,
            hashing,
            min_password_len,
            known: Arc::default(),
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets every cached user and token: call after each change.
    fn changed(&self) {
        let mut k = self.known();
        k.generation += 1;
        k.users.clear();
        k.tokens.clear();
    }

    /// A user, from the cache or the store.
    async fn cached_user(&self, name: &str) -> Result<Option<UserRecord>, AccessError> {
        let generation = {
            let k = self.known();
            if let Some(u) = fresh(k.users.get(name)) {
                return Ok(Some(u));
            }
            k.generation
        };
        let user = self.store.user(name).await?;
        if let Some(u) = &user {
            let mut k = self.known();
            if k.generation == generation {
                if k.users.len() >= KNOWN_MAX {
                    k.users.clear();
                }
                k.users.insert(name.to_owned(), (u.clone(), Instant::now()));
            }
        }
        Ok(user)
    }

    pub fn hashing(&self) -> &PasswordHashing {
        &self.hashing
    }

    fn check_password(&self, password: &str) -> Result<(), AccessError> {
        let n = password.chars().count();
        if n < self.min_password_len {
            return Err(AccessError::WeakPassword(format!(
                "a password needs at least {} characters",
                self.min_password_len
            )));
        }
        if password.len() > MAX_PASSWORD_LEN {
            return Err(AccessError::WeakPassword(format!(
                "a password may have at most {MAX_PASSWORD_LEN} bytes"
            )));
        }
        Ok(())
    }

    pub async fn add_user(
        &self,
        name: &str,
        role: Role,
        password: &str,
    ) -> Result<UserRecord, AccessError> {
        check_name(name)?;
        self.check_password(password)?;
        let now = now_secs();
        let user = UserRecord {
            name: name.to_owned(),
            role,
            password_hash: self.hashing.hash(password).await?,
            disabled: false,
            created: now,
            updated: now,
        };
        let inserted = self.store.insert_user(user.clone()).await?;
        self.changed();
        if inserted {
            Ok(user)
        } else {
            Err(AccessError::Exists(format!("user {name}")))
        }
    }

    async fn change_user(
        &self,
        name: &str,
        change: impl FnOnce(&mut UserRecord),
    ) -> Result<UserRecord, AccessError> {
        let mut user = self
            .store
            .user(name)
            .await?
            .ok_or_else(|| AccessError::NotFound(format!("user {name}")))?;
        change(&mut user);
        user.updated = now_secs();
        let updated = self.store.update_user(user.clone()).await?;
        self.changed();
        if updated {
            Ok(user)
        } else {
            Err(AccessError::NotFound(format!("user {name}")))
        }
    }

    pub async fn set_password(&self, name: &str, password: &str) -> Result<(), AccessError> {
        self.check_password(password)?;
        let hash = self.hashing.hash(password).await?;
        self.change_user(name, |u| u.password_hash = hash)
            .await
            .map(|_| ())
    }

    pub async fn set_disabled(&self, name: &str, disabled: bool) -> Result<(), AccessError> {
        self.change_user(name, |u| u.disabled = disabled)
            .await
            .map(|_| ())
    }

    pub async fn remove_user(&self, name: &str) -> Result<(), AccessError> {
        let removed = self.store.remove_user(name).await?;
        self.changed();
        if removed {
            Ok(())
        } else {
            Err(AccessError::NotFound(format!("user {name}")))
        }
    }

    pub async fn user(&self, name: &str) -> Result<Option<UserRecord>, AccessError> {
        self.cached_user(name).await
    }

    pub async fn users(&self) -> Result<Vec<UserRecord>, AccessError> {
        Ok(self.store.users().await?)
    }

    /// The user if `password` is theirs and they are enabled. Unknown
    /// names take as long as known ones.
    pub async fn verify_password(
        &self,
        name: &str,
        password: &str,
    ) -> Result<Option<UserRecord>, AccessError> {
        let user = if check_name(name).is_ok() {
            self.cached_user(name).await?
        } else {
            None
        };
        let phc = user.as_ref().map(|u| u.password_hash.as_str());
        let ok = password.len() <= MAX_PASSWORD_LEN && self.hashing.verify(password, phc).await;
        Ok(user.filter(|u| ok && !u.disabled))
    }

    /// Creates a token; returns its record and the secret, which is shown
    /// once and kept only as its SHA-256.
    pub async fn create_token(
        &self,
        name: &str,
        role: Role,
        expires_days: Option<u32>,
    ) -> Result<(TokenRecord, String), AccessError> {
        check_name(name)?;
        if let Some(d) = expires_days {
            if d == 0 || d > MAX_TOKEN_DAYS {
                return Err(AccessError::BadRequest(format!(
                    "expires must be 1 to {MAX_TOKEN_DAYS} days"
                )));
            }
        }
        let secret = secrets::new_token()?;
        let now = now_secs();
        let token = TokenRecord {
            id: hex::encode(secrets::random_bytes(6)?),
            name: name.to_owned(),
            role,
            secret_sha256: secrets::sha256(secret.as_bytes()),
            created: now,
            expires: expires_days.map(|d| now + u64::from(d) * 86_400),
            revoked: None,
        };
        let inserted = self.store.insert_token(token.clone()).await?;
        self.changed();
        if inserted {
            Ok((token, secret))
        } else {
            Err(AccessError::Exists("token id (try again)".into()))
        }
    }

    pub async fn tokens(&self) -> Result<Vec<TokenRecord>, AccessError> {
        Ok(self.store.tokens().await?)
    }

    pub async fn revoke_token(&self, id: &str) -> Result<(), AccessError> {
        let revoked = self.store.revoke_token(id, now_secs()).await?;
        self.changed();
        if revoked {
            Ok(())
        } else {
            Err(AccessError::NotFound(format!("token {id}")))
        }
    }

    pub async fn check_token(&self, secret: &str) -> Result<TokenCheck, AccessError> {
        let digest = secrets::sha256(secret.as_bytes());
        let (cached, generation) = {
            let k = self.known();
            (fresh(k.tokens.get(&digest)), k.generation)
        };
        let t = match cached {
            Some(t) => t,
            // Unknown secrets are not cached: guessing cannot fill the map.
            None => {
                let Some(t) = self.store.token_by_secret(&digest).await? else {
                    return Ok(TokenCheck::Unknown);
                };
                let mut k = self.known();
                if k.generation == generation {
                    if k.tokens.len() >= KNOWN_MAX {
                        k.tokens.clear();
                    }
                    k.tokens.insert(digest, (t.clone(), Instant::now()));
                }
                t
            }
        };
        Ok(if t.revoked.is_some() {
            TokenCheck::Revoked(t)
        } else if t.expires.is_some_and(|e| e <= now_secs()) {
            TokenCheck::Expired(t)
        } else {
            TokenCheck::Valid(t)
        })
    }

    /// Whether anyone must sign in: some user exists, or some token is
    /// still usable.
    pub async fn any_credentials(&self) -> Result<bool, AccessError> {
        if !self.store.users().await?.is_empty() {
            return Ok(true);
        }
        let now = now_secs();
        Ok(self
            .store
            .tokens()
            .await?
            .iter()
            .any(|t| t.revoked.is_none() && t.expires.is_none_or(|e| e > now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for ok in ["an", "dr.binh", "emr-01", "a_b@bv", "X"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", "a b", "../x", "x/y", "ü", &"a".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
