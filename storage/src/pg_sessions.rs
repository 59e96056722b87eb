//! Browser sessions on PostgreSQL, in the database of the PostgreSQL index
//! ([`PgIndex`]), so that every node sharing that index accepts a session
//! cookie issued by any of them, and a sign-out or a disabled user ends it
//! on every node at once (the row is deleted).
//!
//! Table (schema version 5, see [`crate::pg_index::MIGRATIONS`]):
//! `browser_sessions`, keyed by the SHA-256 of the cookie value (the
//! cookie itself is never stored), with the user name (`bytea` of its
//! UTF-8 text) and whether it came from the identity provider as columns
//! for ending a local user's sessions, `created` and `last` as
//! `timestamptz` and the record (user, CSRF token, federated role) in
//! `rec`: a format version byte, then bincode ([`crate::format`]).
//!
//! The time-outs are measured on the database's clock (`now()`), never
//! on a node's. `last` moves forward at most every
//! [`SessionConfig::touch`] (30 s, or a quarter of the idle time-out), so
//! a session in use costs one read per request and one write per 30 s; it
//! then ends between `idle - touch` and `idle` after its last request.
//! Starting a session takes an advisory transaction lock, removes up to
//! [`CLEANUP_BATCH`] expired rows, counts the live ones against
//! `max_sessions` (for the whole archive) and inserts.

use async_trait::async_trait;
use deadpool_postgres::Pool;
use pacs_core::ports::PortError;
use pacs_core::sessions::{SessionConfig, SessionRecord, SessionStore};
use pacs_core::Role;
use serde::{Deserialize, Serialize};

use crate::pg_index::{execute, pg_err, pool_err, query_opt, PgIndex};

/// Version byte of a `browser_sessions.rec`.
pub const SESSION_RECORD: u8 = 1;
/// Expired rows removed at most when a session starts.
pub const CLEANUP_BATCH: i64 = 1_000;
/// The advisory lock held while a session is counted and added.
const START_LOCK: i64 = 0x5345_4e53_4553_5331;

impl PgIndex {
    /// The browser sessions of this database.
    pub fn sessions(&self) -> PgSessions {
        PgSessions {
            pool: self.pool.clone(),
        }
    }
}

/// Browser sessions on PostgreSQL.
#[derive(Clone)]
pub struct PgSessions {
    pool: Pool,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    user: String,
    csrf: String,
    /// The role's name for a session of the identity provider.
    federated: Option<String>,
}

fn encode(s: &SessionRecord) -> Result<Vec<u8>, PortError> {
    crate::format::encode_record(
        SESSION_RECORD,
        "session",
        &Stored {
            user: s.user.clone(),
            csrf: s.csrf.clone(),
            federated: s.federated.map(|r| r.as_str().to_owned()),
        },
    )
}

fn decode(raw: &[u8]) -> Result<SessionRecord, PortError> {
    let s: Stored = crate::format::decode_record(SESSION_RECORD, "session", raw)?;
    let federated = match s.federated {
        Some(name) => Some(
            Role::parse(&name)
                .ok_or_else(|| PortError::Index(format!("session: unknown role {name:?}")))?,
        ),
        None => None,
    };
    Ok(SessionRecord {
        user: s.user,
        csrf: s.csrf,
        federated,
    })
}

/// Microseconds, as a `bigint` parameter.
fn micros(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX / 2)
}

#[async_trait]
impl SessionStore for PgSessions {
    async fn start(
        &self,
        key: [u8; 32],
        session: &SessionRecord,
        config: &SessionConfig,
    ) -> Result<bool, PortError> {
        let rec = encode(session)?;
        let (idle, absolute) = (micros(config.idle), micros(config.absolute));
        let max = i64::try_from(config.max_sessions).unwrap_or(i64::MAX);
        let mut c = self.pool.get().await.map_err(pool_err)?;
        let tx = c.transaction().await.map_err(pg_err)?;
        execute(&tx, "SELECT pg_advisory_xact_lock($1)", &[&START_LOCK])
            .await
            .map_err(pg_err)?;
        execute(
            &tx,
            "DELETE FROM browser_sessions WHERE key IN (SELECT key FROM browser_sessions \
             WHERE last <= now() - $1::bigint * interval '1 microsecond' \
             OR created <= now() - $2::bigint * interval '1 microsecond' LIMIT $3)",
            &[&idle, &absolute, &CLEANUP_BATCH],
        )
        .await
        .map_err(pg_err)?;
        let live: i64 = query_opt(
            &tx,
            "SELECT count(*) FROM browser_sessions \
             WHERE last > now() - $1::bigint * interval '1 microsecond' \
             AND created > now() - $2::bigint * interval '1 microsecond'",
            &[&idle, &absolute],
        )
        .await
        .map_err(pg_err)?
        .map(|r| r.get(0))
        .unwrap_or(0);
        if live >= max {
            // Full: keep the clean-up, add nothing.
            tx.commit().await.map_err(pg_err)?;
            return Ok(false);
        }
        execute(
            &tx,
            "INSERT INTO browser_sessions (key, user_name, federated, created, last, rec) \
             VALUES ($1, $2, $3, now(), now(), $4)",
            &[
                &key.as_slice(),
                &session.user.as_bytes(),
                &session.federated.is_some(),
                &rec,
            ],
        )
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(true)
    }

    async fn get(
        &self,
        key: &[u8; 32],
        config: &SessionConfig,
    ) -> Result<Option<SessionRecord>, PortError> {
        let (idle, absolute, touch) = (
            micros(config.idle),
            micros(config.absolute),
            micros(config.touch()),
        );
        let c = self.pool.get().await.map_err(pool_err)?;
        let row = query_opt(
            &c,
            "SELECT rec, last <= now() - $4::bigint * interval '1 microsecond' \
             FROM browser_sessions WHERE key = $1 \
             AND last > now() - $2::bigint * interval '1 microsecond' \
             AND created > now() - $3::bigint * interval '1 microsecond'",
            &[&key.as_slice(), &idle, &absolute, &touch],
        )
        .await
        .map_err(pg_err)?;
        let Some(row) = row else {
            // Expired (or never was): remove it if it is there.
            execute(
                &c,
                "DELETE FROM browser_sessions WHERE key = $1 \
                 AND (last <= now() - $2::bigint * interval '1 microsecond' \
                 OR created <= now() - $3::bigint * interval '1 microsecond')",
                &[&key.as_slice(), &idle, &absolute],
            )
            .await
            .map_err(pg_err)?;
            return Ok(None);
        };
        let session = decode(row.get(0))?;
        if row.get::<_, bool>(1) {
            execute(
                &c,
                "UPDATE browser_sessions SET last = now() WHERE key = $1",
                &[&key.as_slice()],
            )
            .await
            .map_err(pg_err)?;
        }
        Ok(Some(session))
    }

    async fn end(&self, key: &[u8; 32]) -> Result<Option<SessionRecord>, PortError> {
        let c = self.pool.get().await.map_err(pool_err)?;
        match query_opt(
            &c,
            "DELETE FROM browser_sessions WHERE key = $1 RETURNING rec",
            &[&key.as_slice()],
        )
        .await
        .map_err(pg_err)?
        {
            Some(r) => decode(r.get(0)).map(Some),
            None => Ok(None),
        }
    }

    async fn end_user(&self, user: &str) -> Result<(), PortError> {
        let c = self.pool.get().await.map_err(pool_err)?;
        execute(
            &c,
            "DELETE FROM browser_sessions WHERE user_name = $1 AND NOT federated",
            &[&user.as_bytes()],
        )
        .await
        .map_err(pg_err)?;
        Ok(())
    }
}
