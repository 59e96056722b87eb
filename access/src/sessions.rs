//! Browser sessions: a random id in an HttpOnly cookie, kept (by its
//! SHA-256, never the cookie itself) in a [`SessionStore`] with an idle and
//! an absolute time-out. On sled the store is this process's memory (a
//! restart signs everyone out, acceptable for a login page); on a
//! PostgreSQL index it is the shared database, so any node accepts the
//! cookie and a sign-out ends it on every node.
//!
//! The same store keeps the short-lived records of browser flows (share
//! cookies, sign-ins begun at the identity provider:
//! [`pacs_core::sessions::FlowKind`]), so the
//! request that continues a flow may land on any node.

use std::sync::Arc;

use pacs_core::sessions::{SessionRecord, SessionStore};
use pacs_core::Role;

pub use pacs_core::sessions::SessionConfig;

use crate::secrets;
use crate::AccessError;

/// A live session.
pub type Session = SessionRecord;

pub struct Sessions {
    config: SessionConfig,
    store: Arc<dyn SessionStore>,
}

impl Sessions {
    pub fn new(config: SessionConfig, store: Arc<dyn SessionStore>) -> Sessions {
        Sessions { config, store }
    }

    /// Starts a session of a local user; returns the cookie value. `None`
    /// when the table is full of live sessions.
    pub async fn start(&self, user: &str) -> Result<Option<String>, AccessError> {
        self.start_as(user, None).await
    }

    /// Starts a session of a user of the identity provider, with the role
    /// mapped from their claims.
    pub async fn start_federated(
        &self,
        user: &str,
        role: Role,
    ) -> Result<Option<String>, AccessError> {
        self.start_as(user, Some(role)).await
    }

    async fn start_as(
        &self,
        user: &str,
        federated: Option<Role>,
    ) -> Result<Option<String>, AccessError> {
        let id = secrets::random_secret()?;
        let record = SessionRecord {
            user: user.to_owned(),
            csrf: secrets::random_secret()?,
            federated,
        };
        let key = secrets::sha256(id.as_bytes());
        Ok(self
            .store
            .start(key, &record, &self.config)
            .await?
            .then_some(id))
    }

    /// The live session of a cookie value (and marks it used). A store
    /// that cannot answer signs nobody in.
    pub async fn get(&self, id: &str) -> Option<Session> {
        let key = secrets::sha256(id.as_bytes());
        match self.store.get(&key, &self.config).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "session store unavailable: session refused");
                None
            }
        }
    }

    pub async fn end(&self, id: &str) -> Result<Option<Session>, AccessError> {
        Ok(self.store.end(&secrets::sha256(id.as_bytes())).await?)
    }

    /// Ends every session of a local user (disabled, removed, password
    /// changed); a provider's user of the same name keeps theirs.
    pub async fn end_user(&self, user: &str) -> Result<(), AccessError> {
        Ok(self.store.end_user(user).await?)
    }

    /// The store, for the records of browser flows (share cookies,
    /// pending sign-ins).
    pub(crate) fn store(&self) -> &dyn SessionStore {
        self.store.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use pacs_core::sessions::MemorySessions;

    use super::*;

    #[tokio::test]
    async fn sessions_expire_when_idle_and_end() -> Result<(), AccessError> {
        let s = Sessions::new(
            SessionConfig {
                idle: Duration::from_millis(50),
                absolute: Duration::from_secs(60),
                max_sessions: 2,
            },
            Arc::new(MemorySessions::new()),
        );
        let a = s.start("an").await?.unwrap_or_default();
        assert_eq!(s.get(&a).await.map(|x| x.user), Some("an".to_owned()));
        assert!(s.get("forged").await.is_none());
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(s.get(&a).await.is_none(), "idle past the time-out");
        let b = s.start("an").await?.unwrap_or_default();
        let _c = s.start("binh").await?;
        assert!(s.start("chi").await?.is_none(), "full");
        s.end_user("an").await?;
        assert!(s.get(&b).await.is_none());
        Ok(())
    }
}
