//! Users and machine tokens in the index's sled database.
//!
//! Trees: `users` (name → user), `tokens` (id → token) and `token_secrets`
//! (SHA-256 of the secret → id), `shares` (id → share link) and
//! `share_secrets` (SHA-256 of the link's token → id), `grants` (id →
//! partner-hospital grant). They are not part of the index proper:
//! `pacs reindex` clears the index trees and leaves these alone, because
//! credentials cannot be rebuilt from the blobs.
//!
//! Every value starts with a format version byte ([`FORMAT`]); a record of
//! another version is refused with a clear message rather than misread.
//! Writes are rare, so each one is made durable with a sled flush before
//! the call returns (no write-ahead log needed).

use std::sync::Arc;

use async_trait::async_trait;
use pacs_core::access::Role;
use pacs_core::credentials::{
    Credentials, GrantRecord, ShareChange, ShareRecord, TokenRecord, UserRecord,
};
use pacs_core::ports::PortError;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

/// The format version of every credential record this code writes.
const FORMAT: u8 = 1;

const USERS: &str = "users";
const TOKENS: &str = "tokens";
const TOKEN_SECRETS: &str = "token_secrets";
const SHARES: &str = "shares";
const SHARE_SECRETS: &str = "share_secrets";
const GRANTS: &str = "grants";

#[derive(Serialize, Deserialize)]
struct StoredUser {
    name: String,
    role: String,
    password_hash: String,
    disabled: bool,
    created: u64,
    updated: u64,
}

#[derive(Serialize, Deserialize)]
struct StoredToken {
    id: String,
    name: String,
    role: String,
    secret_sha256: [u8; 32],
    created: u64,
    expires: Option<u64>,
    revoked: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct StoredShare {
    id: String,
    secret_sha256: [u8; 32],
    studies: Vec<String>,
    patient: Option<String>,
    creator: String,
    created: u64,
    expires: u64,
    revoked: Option<u64>,
    uses: u64,
    pin_sha256: Option<[u8; 32]>,
    pin_salt: Option<[u8; 16]>,
    failed_pins: u32,
    locked_until: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct StoredGrant {
    id: String,
    partner: String,
    studies: Vec<String>,
    patient: Option<String>,
    creator: String,
    created: u64,
    expires: u64,
    revoked: Option<u64>,
    uses: u64,
}

fn to_grant(g: StoredGrant) -> GrantRecord {
    GrantRecord {
        id: g.id,
        partner: g.partner,
        studies: g.studies,
        patient: g.patient,
        creator: g.creator,
        created: g.created,
        expires: g.expires,
        revoked: g.revoked,
        uses: g.uses,
    }
}

fn from_grant(g: &GrantRecord) -> StoredGrant {
    StoredGrant {
        id: g.id.clone(),
        partner: g.partner.clone(),
        studies: g.studies.clone(),
        patient: g.patient.clone(),
        creator: g.creator.clone(),
        created: g.created,
        expires: g.expires,
        revoked: g.revoked,
        uses: g.uses,
    }
}

fn to_share(s: StoredShare) -> ShareRecord {
    ShareRecord {
        id: s.id,
        secret_sha256: s.secret_sha256,
        studies: s.studies,
        patient: s.patient,
        creator: s.creator,
        created: s.created,
        expires: s.expires,
        revoked: s.revoked,
        uses: s.uses,
        pin_sha256: s.pin_sha256,
        pin_salt: s.pin_salt,
        failed_pins: s.failed_pins,
        locked_until: s.locked_until,
    }
}

fn from_share(s: &ShareRecord) -> StoredShare {
    StoredShare {
        id: s.id.clone(),
        secret_sha256: s.secret_sha256,
        studies: s.studies.clone(),
        patient: s.patient.clone(),
        creator: s.creator.clone(),
        created: s.created,
        expires: s.expires,
        revoked: s.revoked,
        uses: s.uses,
        pin_sha256: s.pin_sha256,
        pin_salt: s.pin_salt,
        failed_pins: s.failed_pins,
        locked_until: s.locked_until,
    }
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, PortError> {
    crate::format::encode_record(FORMAT, "credential", v)
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(what: &str, raw: &[u8]) -> Result<T, PortError> {
    crate::format::decode_record(FORMAT, what, raw)
}

fn role(what: &str, s: &str) -> Result<Role, PortError> {
    Role::parse(s).ok_or_else(|| PortError::Index(format!("{what} record has unknown role {s:?}")))
}

fn to_user(s: StoredUser) -> Result<UserRecord, PortError> {
    Ok(UserRecord {
        role: role("user", &s.role)?,
        name: s.name,
        password_hash: s.password_hash,
        disabled: s.disabled,
        created: s.created,
        updated: s.updated,
    })
}

fn from_user(u: &UserRecord) -> StoredUser {
    StoredUser {
        name: u.name.clone(),
        role: u.role.as_str().to_owned(),
        password_hash: u.password_hash.clone(),
        disabled: u.disabled,
        created: u.created,
        updated: u.updated,
    }
}

fn to_token(s: StoredToken) -> Result<TokenRecord, PortError> {
    Ok(TokenRecord {
        role: role("token", &s.role)?,
        id: s.id,
        name: s.name,
        secret_sha256: s.secret_sha256,
        created: s.created,
        expires: s.expires,
        revoked: s.revoked,
    })
}

fn from_token(t: &TokenRecord) -> StoredToken {
    StoredToken {
        id: t.id.clone(),
        name: t.name.clone(),
        role: t.role.as_str().to_owned(),
        secret_sha256: t.secret_sha256,
        created: t.created,
        expires: t.expires,
        revoked: t.revoked,
    }
}

pub(crate) use crate::format::db_err;

/// The stored forms of the records, shared with the PostgreSQL store
/// (`pg_side`), which keeps the same bytes in its `rec` columns.
#[cfg(feature = "postgres")]
pub(crate) fn encode_user(u: &UserRecord) -> Result<Vec<u8>, PortError> {
    encode(&from_user(u))
}

#[cfg(feature = "postgres")]
pub(crate) fn decode_user(raw: &[u8]) -> Result<UserRecord, PortError> {
    to_user(decode("user", raw)?)
}

#[cfg(feature = "postgres")]
pub(crate) fn encode_token(t: &TokenRecord) -> Result<Vec<u8>, PortError> {
    encode(&from_token(t))
}

#[cfg(feature = "postgres")]
pub(crate) fn decode_token(raw: &[u8]) -> Result<TokenRecord, PortError> {
    to_token(decode("token", raw)?)
}

#[cfg(feature = "postgres")]
pub(crate) fn encode_share(s: &ShareRecord) -> Result<Vec<u8>, PortError> {
    encode(&from_share(s))
}

#[cfg(feature = "postgres")]
pub(crate) fn decode_share(raw: &[u8]) -> Result<ShareRecord, PortError> {
    Ok(to_share(decode("share", raw)?))
}

#[cfg(feature = "postgres")]
pub(crate) fn encode_grant(g: &GrantRecord) -> Result<Vec<u8>, PortError> {
    encode(&from_grant(g))
}

#[cfg(feature = "postgres")]
pub(crate) fn decode_grant(raw: &[u8]) -> Result<GrantRecord, PortError> {
    Ok(to_grant(decode("grant", raw)?))
}

/// The credential trees of an open index (see `SledIndex::credentials`).
///
/// It holds the index's database cell, not a database handle: the index
/// may reopen its database after an I/O error (a full disk), and a handle
/// kept here would hold sled's file lock and stop that. Each operation
/// takes the current database for its duration only.
#[derive(Clone)]
pub struct SledCredentials {
    cell: Arc<crate::index::Cell>,
}

/// The trees of one operation.
pub(crate) struct Trees {
    db: sled::Db,
    users: sled::Tree,
    tokens: sled::Tree,
    secrets: sled::Tree,
    shares: sled::Tree,
    share_secrets: sled::Tree,
    grants: sled::Tree,
}

impl SledCredentials {
    pub(crate) fn open(cell: Arc<crate::index::Cell>) -> Result<SledCredentials, PortError> {
        let me = SledCredentials { cell };
        // Creates the trees now, so a broken database is found at start.
        me.trees()?;
        Ok(me)
    }

    fn trees(&self) -> Result<Trees, PortError> {
        let db = self.cell.current_db()?;
        Ok(Trees {
            users: db.open_tree(USERS).map_err(db_err)?,
            tokens: db.open_tree(TOKENS).map_err(db_err)?,
            secrets: db.open_tree(TOKEN_SECRETS).map_err(db_err)?,
            shares: db.open_tree(SHARES).map_err(db_err)?,
            share_secrets: db.open_tree(SHARE_SECRETS).map_err(db_err)?,
            grants: db.open_tree(GRANTS).map_err(db_err)?,
            db,
        })
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, PortError>
    where
        T: Send + 'static,
        F: FnOnce(&Trees) -> Result<T, PortError> + Send + 'static,
    {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&me.trees()?))
            .await
            .map_err(|e| PortError::Index(format!("credential task failed: {e}")))?
    }
}

impl Trees {
    fn durable(&self) -> Result<(), PortError> {
        self.db.flush().map(|_| ()).map_err(db_err)
    }
}

#[async_trait]
impl Credentials for SledCredentials {
    async fn user(&self, name: &str) -> Result<Option<UserRecord>, PortError> {
        let key = name.as_bytes().to_vec();
        self.blocking(move |c| match c.users.get(key).map_err(db_err)? {
            Some(raw) => Ok(Some(to_user(decode("user", &raw)?)?)),
            None => Ok(None),
        })
        .await
    }

    async fn users(&self) -> Result<Vec<UserRecord>, PortError> {
        self.blocking(|c| {
            c.users
                .iter()
                .map(|kv| to_user(decode("user", &kv.map_err(db_err)?.1)?))
                .collect()
        })
        .await
    }

    async fn insert_user(&self, user: UserRecord) -> Result<bool, PortError> {
        self.blocking(move |c| {
            let value = encode(&from_user(&user))?;
            let done = c
                .users
                .compare_and_swap(user.name.as_bytes(), None::<&[u8]>, Some(value))
                .map_err(db_err)?
                .is_ok();
            if done {
                c.durable()?;
            }
            Ok(done)
        })
        .await
    }

    async fn update_user(&self, user: UserRecord) -> Result<bool, PortError> {
        self.blocking(move |c| {
            let value = encode(&from_user(&user))?;
            let key = user.name.as_bytes();
            let done = c
                .users
                .fetch_and_update(key, |old| old.map(|_| value.clone()))
                .map_err(db_err)?
                .is_some();
            if done {
                c.durable()?;
            }
            Ok(done)
        })
        .await
    }

    async fn remove_user(&self, name: &str) -> Result<bool, PortError> {
        let key = name.as_bytes().to_vec();
        self.blocking(move |c| {
            let done = c.users.remove(key).map_err(db_err)?.is_some();
            if done {
                c.durable()?;
            }
            Ok(done)
        })
        .await
    }

    async fn insert_token(&self, token: TokenRecord) -> Result<bool, PortError> {
        self.blocking(move |c| {
            let value = encode(&from_token(&token))?;
            let id = token.id.as_bytes();
            let secret = token.secret_sha256;
            let done = (&c.tokens, &c.secrets)
                .transaction(|(tokens, secrets)| {
                    if tokens.get(id)?.is_some() || secrets.get(secret)?.is_some() {
                        return Ok(false);
                    }
                    tokens.insert(id, value.as_slice())?;
                    secrets.insert(&secret, id)?;
                    Ok::<_, ConflictableTransactionError<()>>(true)
                })
                .map_err(|e| match e {
                    TransactionError::Abort(()) => PortError::Index("token insert aborted".into()),
                    TransactionError::Storage(e) => db_err(e),
                })?;
            if done {
                c.durable()?;
            }
            Ok(done)
        })
        .await
    }

    async fn token_by_secret(&self, sha256: &[u8; 32]) -> Result<Option<TokenRecord>, PortError> {
        let secret = *sha256;
        self.blocking(move |c| {
            let Some(id) = c.secrets.get(secret).map_err(db_err)? else {
                return Ok(None);
            };
            match c.tokens.get(id).map_err(db_err)? {
                Some(raw) => Ok(Some(to_token(decode("token", &raw)?)?)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>, PortError> {
        self.blocking(|c| {
            c.tokens
                .iter()
                .map(|kv| to_token(decode("token", &kv.map_err(db_err)?.1)?))
                .collect()
        })
        .await
    }

    async fn revoke_token(&self, id: &str, at: u64) -> Result<bool, PortError> {
        let key = id.as_bytes().to_vec();
        self.blocking(move |c| {
            let Some(raw) = c.tokens.get(&key).map_err(db_err)? else {
                return Ok(false);
            };
            let mut t: StoredToken = decode("token", &raw)?;
            if t.revoked.is_none() {
                t.revoked = Some(at);
                c.tokens.insert(&key, encode(&t)?).map_err(db_err)?;
                c.durable()?;
            }
            Ok(true)
        })
        .await
    }

    async fn insert_share(&self, share: ShareRecord) -> Result<bool, PortError> {
        self.blocking(move |c| {
            let value = encode(&from_share(&share))?;
            let id = share.id.as_bytes();
            let secret = share.secret_sha256;
            let done = (&c.shares, &c.share_secrets)
                .transaction(|(shares, secrets)| {
                    if shares.get(id)?.is_some() || secrets.get(secret)?.is_some() {
                        return Ok(false);
                    }
                    shares.insert(id, value.as_slice())?;
                    secrets.insert(&secret, id)?;
                    Ok::<_, ConflictableTransactionError<()>>(true)
                })
                .map_err(|e| match e {
                    TransactionError::Abort(()) => PortError::Index("share insert aborted".into()),
                    TransactionError::Storage(e) => db_err(e),
                })?;
            if done {
                c.durable()?;
            }
            Ok(done)
        })
        .await
    }

    async fn share_by_secret(&self, sha256: &[u8; 32]) -> Result<Option<ShareRecord>, PortError> {
        let secret = *sha256;
        self.blocking(move |c| {
            let Some(id) = c.share_secrets.get(secret).map_err(db_err)? else {
                return Ok(None);
            };
            match c.shares.get(id).map_err(db_err)? {
                Some(raw) => Ok(Some(to_share(decode("share", &raw)?))),
                None => Ok(None),
            }
        })
        .await
    }

    async fn shares(&self) -> Result<Vec<ShareRecord>, PortError> {
        self.blocking(|c| {
            c.shares
                .iter()
                .map(|kv| Ok(to_share(decode("share", &kv.map_err(db_err)?.1)?)))
                .collect()
        })
        .await
    }

    async fn share(&self, id: &str) -> Result<Option<ShareRecord>, PortError> {
        let id = id.to_owned();
        self.blocking(
            move |c| match c.shares.get(id.as_bytes()).map_err(db_err)? {
                Some(raw) => Ok(Some(to_share(decode("share", &raw)?))),
                None => Ok(None),
            },
        )
        .await
    }

    async fn shares_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ShareRecord>, PortError> {
        let after = after.map(|a| a.as_bytes().to_vec());
        self.blocking(move |c| {
            let range = match &after {
                Some(a) => c.shares.range::<&[u8], _>((
                    std::ops::Bound::Excluded(a.as_slice()),
                    std::ops::Bound::Unbounded,
                )),
                None => c.shares.iter(),
            };
            range
                .take(limit)
                .map(|kv| Ok(to_share(decode("share", &kv.map_err(db_err)?.1)?)))
                .collect()
        })
        .await
    }

    async fn update_share(&self, share: ShareRecord) -> Result<bool, PortError> {
        self.blocking(move |c| {
            let value = encode(&from_share(&share))?;
            let done = c
                .shares
                .fetch_and_update(share.id.as_bytes(), |old| old.map(|_| value.clone()))
                .map_err(db_err)?
                .is_some();
            if done {
                c.durable()?;
            }
            Ok(done)
        })
        .await
    }

    async fn change_share(
        &self,
        id: &str,
        change: ShareChange,
    ) -> Result<Option<(ShareRecord, bool)>, PortError> {
        let key = id.as_bytes().to_vec();
        self.blocking(move |c| {
            // Compare-and-swap, again when another change came first.
            for _ in 0..100 {
                let Some(old) = c.shares.get(&key).map_err(db_err)? else {
                    return Ok(None);
                };
                let mut share = to_share(decode("share", &old)?);
                if !change.apply(&mut share) {
                    return Ok(Some((share, false)));
                }
                let new = encode(&from_share(&share))?;
                if c.shares
                    .compare_and_swap(&key, Some(&old), Some(new))
                    .map_err(db_err)?
                    .is_ok()
                {
                    c.durable()?;
                    return Ok(Some((share, true)));
                }
            }
            Err(PortError::Index("share: too many changes at once".into()))
        })
        .await
    }

    async fn insert_grant(&self, grant: GrantRecord) -> Result<bool, PortError> {
        self.blocking(move |c| {
            let value = encode(&from_grant(&grant))?;
            let done = c
                .grants
                .compare_and_swap(grant.id.as_bytes(), None as Option<&[u8]>, Some(value))
                .map_err(db_err)?
                .is_ok();
            if done {
                c.durable()?;
            }
            Ok(done)
        })
        .await
    }

    async fn grants(&self) -> Result<Vec<GrantRecord>, PortError> {
        self.blocking(|c| {
            c.grants
                .iter()
                .map(|kv| Ok(to_grant(decode("grant", &kv.map_err(db_err)?.1)?)))
                .collect()
        })
        .await
    }

    async fn update_grant(&self, grant: GrantRecord) -> Result<bool, PortError> {
        self.blocking(move |c| {
            let value = encode(&from_grant(&grant))?;
            let done = c
                .grants
                .fetch_and_update(grant.id.as_bytes(), |old| old.map(|_| value.clone()))
                .map_err(db_err)?
                .is_some();
            if done {
                c.durable()?;
            }
            Ok(done)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SledIndex;

    fn user(name: &str) -> UserRecord {
        UserRecord {
            name: name.into(),
            role: Role::Radiologist,
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            disabled: false,
            created: 1,
            updated: 1,
        }
    }

    #[tokio::test]
    async fn shares_round_trip() -> Result<(), Box<dyn std::error::Error>> {
        use pacs_core::Index;
        let index = SledIndex::temporary()?;
        let c = index.credentials()?;
        let mut s = ShareRecord {
            id: "s1".into(),
            secret_sha256: [3; 32],
            studies: vec!["1.2.3".into()],
            patient: None,
            creator: "an".into(),
            created: 1,
            expires: 100,
            revoked: None,
            uses: 0,
            pin_sha256: Some([4; 32]),
            pin_salt: Some([5; 16]),
            failed_pins: 0,
            locked_until: None,
        };
        assert!(c.insert_share(s.clone()).await?);
        assert!(!c.insert_share(s.clone()).await?, "a taken id is refused");
        assert_eq!(c.share_by_secret(&[3; 32]).await?, Some(s.clone()));
        assert_eq!(c.share_by_secret(&[9; 32]).await?, None);
        s.uses = 2;
        s.revoked = Some(50);
        assert!(c.update_share(s.clone()).await?);
        assert_eq!(c.shares().await?, vec![s.clone()]);
        s.id = "nope".into();
        assert!(!c.update_share(s).await?);
        index.clear().await?;
        assert_eq!(c.shares().await?.len(), 1, "reindex keeps shares");
        Ok(())
    }

    #[tokio::test]
    async fn grants_round_trip() -> Result<(), Box<dyn std::error::Error>> {
        use pacs_core::Index;
        let index = SledIndex::temporary()?;
        let c = index.credentials()?;
        let mut g = GrantRecord {
            id: "g1".into(),
            partner: "bv-cho-ray".into(),
            studies: vec!["1.2.3".into()],
            patient: None,
            creator: "an".into(),
            created: 1,
            expires: 100,
            revoked: None,
            uses: 0,
        };
        assert!(c.insert_grant(g.clone()).await?);
        assert!(!c.insert_grant(g.clone()).await?, "a taken id is refused");
        g.uses = 3;
        g.revoked = Some(50);
        assert!(c.update_grant(g.clone()).await?);
        assert_eq!(c.grants().await?, vec![g.clone()]);
        g.id = "nope".into();
        assert!(!c.update_grant(g).await?);
        index.clear().await?;
        assert_eq!(c.grants().await?.len(), 1, "reindex keeps grants");
        Ok(())
    }

    #[tokio::test]
    async fn unknown_format_version_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let index = SledIndex::temporary()?;
        let c = index.credentials()?;
        c.trees()?.users.insert("x", &[9u8, 0, 0][..])?;
        let e = c.user("x").await.err().map(|e| e.to_string());
        assert!(
            e.as_deref().is_some_and(|e| e.contains("format version 9")),
            "{e:?}"
        );
        Ok(())
    }

    #[tokio::test]
    async fn reindex_keeps_credentials() -> Result<(), Box<dyn std::error::Error>> {
        use pacs_core::Index;
        let index = SledIndex::temporary()?;
        let c = index.credentials()?;
        assert!(c.insert_user(user("an")).await?);
        index.clear().await?;
        assert!(c.user("an").await?.is_some());
        Ok(())
    }
}
