//! The records of who may sign in (local users, machine tokens) and the
//! [`Credentials`] port that keeps them.
//!
//! Only verifiers are stored: a user's password as an argon2id PHC string,
//! a token as the SHA-256 of its secret. Checking a password, issuing a
//! token and deciding what a role may do are the business of the `access`
//! crate and of [`crate::access`]; this module only says what is kept.
//!
//! Non-goals: sessions and share cookies (the [`crate::sessions`] port),
//! OpenID Connect identities (they live at the identity provider).

use async_trait::async_trait;

use crate::access::Role;
use crate::ports::PortError;

/// A local user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// The sign-in name (validated by the `access` crate).
    pub name: String,
    pub role: Role,
    /// The argon2id hash of the password, as a PHC string.
    pub password_hash: String,
    /// A disabled user cannot sign in; their sessions end.
    pub disabled: bool,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// When the password, role or state last changed (seconds since the
    /// epoch).
    pub updated: u64,
}

/// A machine token (for an EMR, a script, a partner's PACS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// A short public identifier, shown in listings and used to revoke.
    pub id: String,
    /// What the token is for (e.g. `emr`).
    pub name: String,
    pub role: Role,
    /// SHA-256 of the secret the client presents.
    pub secret_sha256: [u8; 32],
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// After this instant the token is refused.
    pub expires: Option<u64>,
    /// When it was revoked; a revoked token is refused.
    pub revoked: Option<u64>,
}

/// A share link: read access to some studies for whoever holds its token
/// (a patient, a partner hospital).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareRecord {
    /// A short public identifier, shown in listings and used to revoke.
    pub id: String,
    /// SHA-256 of the token in the link.
    pub secret_sha256: [u8; 32],
    /// The study UIDs the link opens (one study, or every study of one
    /// patient at creation time).
    pub studies: Vec<String>,
    /// The patient ID when the link was made for all of a patient's studies.
    pub patient: Option<String>,
    /// Who made it (user or token name).
    pub creator: String,
    /// Seconds since the Unix epoch.
    pub created: u64,
    pub expires: u64,
    pub revoked: Option<u64>,
    /// How many times it was used (opened or a request answered).
    pub uses: u64,
    /// SHA-256 of (salt, PIN), when the link asks for a PIN.
    pub pin_sha256: Option<[u8; 32]>,
    pub pin_salt: Option<[u8; 16]>,
    /// PIN attempts in a row not followed by the right PIN.
    pub failed_pins: u32,
    /// PIN entry is refused until this instant.
    pub locked_until: Option<u64>,
}

/// A change made to a share in place, atomically with every other change
/// of it (two nodes at once each see the other's): a use counted, a PIN
/// attempt taken, a revocation. Replacing the whole record instead would
/// lose a change made meanwhile (a revocation undone by a use counted on
/// another node, PIN attempts not counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareChange {
    /// One more use.
    Used,
    /// A PIN is about to be checked at `now`: the attempt is counted first,
    /// so attempts at once cannot outnumber `attempts`. The `attempts`-th
    /// in a row locks PIN entry until `lock_until` (it is still checked:
    /// a right PIN unlocks). Refused (nothing changes) while locked.
    PinAttempt {
        now: u64,
        attempts: u32,
        lock_until: u64,
    },
    /// The PIN was right: the count starts again and a lock ends.
    PinRight,
    /// Revoked at `at` (an earlier revocation stays).
    Revoke { at: u64 },
}

impl ShareChange {
    /// Applies the change to `share`; `false` when it changes nothing.
    pub fn apply(self, share: &mut ShareRecord) -> bool {
        match self {
            ShareChange::Used => share.uses = share.uses.saturating_add(1),
            ShareChange::PinAttempt {
                now,
                attempts,
                lock_until,
            } => {
                if share.locked_until.is_some_and(|u| u > now) {
                    return false;
                }
                share.failed_pins = share.failed_pins.saturating_add(1);
                share.locked_until = None;
                if share.failed_pins >= attempts {
                    share.failed_pins = 0;
                    share.locked_until = Some(lock_until);
                }
            }
            ShareChange::PinRight => {
                if share.failed_pins == 0 && share.locked_until.is_none() {
                    return false;
                }
                share.failed_pins = 0;
                share.locked_until = None;
            }
            ShareChange::Revoke { at } => {
                if share.revoked.is_some() {
                    return false;
                }
                share.revoked = Some(at);
            }
        }
        true
    }
}

/// A partner-hospital grant: read access to some studies for every
/// principal of role `partner` with this name (a local user, a machine
/// token, an OpenID Connect client), over DICOMweb.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    /// A short public identifier, shown in listings and used to revoke.
    pub id: String,
    /// The partner principal's name (user, token or OIDC subject name).
    pub partner: String,
    /// The study UIDs it opens (one study, or every study of one patient
    /// at creation time).
    pub studies: Vec<String>,
    /// The patient ID when the grant was made for all of a patient's studies.
    pub patient: Option<String>,
    /// Who made it (user or token name).
    pub creator: String,
    /// Seconds since the Unix epoch.
    pub created: u64,
    pub expires: u64,
    pub revoked: Option<u64>,
    /// Requests of the partner answered for one of its studies.
    pub uses: u64,
}

/// Where users and machine tokens are kept. Every write is durable when
/// the call returns.
#[async_trait]
pub trait Credentials: Send + Sync + 'static {
    async fn user(&self, name: &str) -> Result<Option<UserRecord>, PortError>;
    /// Every user, by name.
    async fn users(&self) -> Result<Vec<UserRecord>, PortError>;
    /// Adds a user; `false` (and nothing written) if the name is taken.
    async fn insert_user(&self, user: UserRecord) -> Result<bool, PortError>;
    /// Replaces an existing user; `false` if there is none by that name.
    async fn update_user(&self, user: UserRecord) -> Result<bool, PortError>;
    /// Removes a user; `false` if there was none.
    async fn remove_user(&self, name: &str) -> Result<bool, PortError>;
    /// Adds a token; `false` if its id or secret is taken.
    async fn insert_token(&self, token: TokenRecord) -> Result<bool, PortError>;
    /// The token whose secret has this SHA-256.
    async fn token_by_secret(&self, sha256: &[u8; 32]) -> Result<Option<TokenRecord>, PortError>;
    /// Every token, revoked and expired ones included, by id.
    async fn tokens(&self) -> Result<Vec<TokenRecord>, PortError>;
    /// Marks a token revoked at `at`; `false` if there is no such id.
    async fn revoke_token(&self, id: &str, at: u64) -> Result<bool, PortError>;
    /// Adds a share; `false` if its id or secret is taken.
    async fn insert_share(&self, share: ShareRecord) -> Result<bool, PortError>;
    /// The share whose token has this SHA-256.
    async fn share_by_secret(&self, sha256: &[u8; 32]) -> Result<Option<ShareRecord>, PortError>;
    /// Every share, revoked and expired ones included, by id.
    async fn shares(&self) -> Result<Vec<ShareRecord>, PortError>;
    /// The share of `id`. This default reads every share; a store looks
    /// the id up.
    async fn share(&self, id: &str) -> Result<Option<ShareRecord>, PortError> {
        Ok(self.shares().await?.into_iter().find(|s| s.id == id))
    }
    /// At most `limit` shares with an id after `after` (from the first
    /// when `None`), by id: a page of [`Credentials::shares`]. This
    /// default reads every share; a store reads the page alone.
    async fn shares_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ShareRecord>, PortError> {
        let mut all = self.shares().await?;
        all.retain(|s| after.is_none_or(|a| s.id.as_str() > a));
        all.truncate(limit);
        Ok(all)
    }
    /// Replaces an existing share (uses, PIN failures, revocation); `false`
    /// if there is none with its id.
    async fn update_share(&self, share: ShareRecord) -> Result<bool, PortError>;
    /// Applies `change` to the share of `id` atomically (see
    /// [`ShareChange`]): the record as it is afterwards and whether the
    /// change applied; `None` if there is no such share.
    async fn change_share(
        &self,
        id: &str,
        change: ShareChange,
    ) -> Result<Option<(ShareRecord, bool)>, PortError>;
    /// Adds a partner grant; `false` if its id is taken.
    async fn insert_grant(&self, _grant: GrantRecord) -> Result<bool, PortError> {
        Err(PortError::Index(
            "this credential store keeps no partner grants".into(),
        ))
    }
    /// Every partner grant, revoked and expired ones included, by id.
    async fn grants(&self) -> Result<Vec<GrantRecord>, PortError> {
        Ok(Vec::new())
    }
    /// Replaces an existing grant (uses, revocation); `false` if there is
    /// none with its id.
    async fn update_grant(&self, _grant: GrantRecord) -> Result<bool, PortError> {
        Ok(false)
    }
}
