//! Browser sessions: a random id in an HttpOnly cookie, kept in memory
//! (keyed by its SHA-256) with an idle and an absolute time-out. A restart
//! signs everyone out, which is acceptable for a login page.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pacs_core::Role;

use crate::secrets;
use crate::AccessError;

#[derive(Debug, Clone, Copy)]
pub struct SessionConfig {
    pub idle: Duration,
    pub absolute: Duration,
    pub max_sessions: usize,
}

#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    /// Sent back in admin forms and accepted in `X-CSRF-Token`.
    pub csrf: String,
    /// A user signed in through the identity provider (not a local user):
    /// the role mapped at sign-in, kept for the session's life.
    pub federated: Option<Role>,
    created: Instant,
    last: Instant,
}

pub struct Sessions {
    config: SessionConfig,
    map: Mutex<HashMap<[u8; 32], Session>>,
}

impl Sessions {
    pub fn new(config: SessionConfig) -> Sessions {
        Sessions {
            config,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn live(&self, s: &Session, now: Instant) -> bool {
        now.duration_since(s.last) < self.config.idle
            && now.duration_since(s.created) < self.config.absolute
    }

    /// Starts a session of a local user; returns the cookie value. `None`
    /// when the table is full of live sessions.
    pub fn start(&self, user: &str) -> Result<Option<String>, AccessError> {
        self.start_as(user, None)
    }

    /// Starts a session of a user of the identity provider, with the role
    /// mapped from their claims.
    pub fn start_federated(&self, user: &str, role: Role) -> Result<Option<String>, AccessError> {
        self.start_as(user, Some(role))
    }

    fn start_as(&self, user: &str, federated: Option<Role>) -> Result<Option<String>, AccessError> {
        let id = secrets::random_secret()?;
        let csrf = secrets::random_secret()?;
        let now = Instant::now();
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= self.config.max_sessions {
            map.retain(|_, s| self.live(s, now));
            if map.len() >= self.config.max_sessions {
                return Ok(None);
            }
        }
        map.insert(
            secrets::sha256(id.as_bytes()),
            Session {
                user: user.to_owned(),
                csrf,
                federated,
                created: now,
                last: now,
            },
        );
        Ok(Some(id))
    }

    /// The live session of a cookie value (and marks it used).
    pub fn get(&self, id: &str) -> Option<Session> {
        let key = secrets::sha256(id.as_bytes());
        let now = Instant::now();
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let s = map.get_mut(&key)?;
        if !self.live(s, now) {
            map.remove(&key);
            return None;
        }
        s.last = now;
        Some(s.clone())
    }

    pub fn end(&self, id: &str) -> Option<Session> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&secrets::sha256(id.as_bytes()))
    }

    /// Ends every session of a local user (disabled, removed, password
    /// changed); a provider's user of the same name keeps theirs.
    pub fn end_user(&self, user: &str) {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|_, s| s.federated.is_some() || s.user != user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_when_idle_and_end() -> Result<(), AccessError> {
        let s = Sessions::new(SessionConfig {
            idle: Duration::from_millis(50),
            absolute: Duration::from_secs(60),
            max_sessions: 2,
        });
        let a = s.start("an")?.unwrap_or_default();
        assert_eq!(s.get(&a).map(|x| x.user), Some("an".to_owned()));
        assert!(s.get("forged").is_none());
        std::thread::sleep(Duration::from_millis(80));
        assert!(s.get(&a).is_none(), "idle past the time-out");
        let b = s.start("an")?.unwrap_or_default();
        let _c = s.start("binh")?;
        assert!(s.start("chi")?.is_none(), "full");
        s.end_user("an");
        assert!(s.get(&b).is_none());
        Ok(())
    }
}
