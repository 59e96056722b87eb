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
//!
//! The records of browser flows (a share link's cookie, a sign-in begun at
//! the identity provider) are in `browser_flows` (schema version 7): kind
//! and the SHA-256 of their key as the primary key, `expires` from the
//! database's clock, `rec` the caller's bytes (versioned by the caller;
//! the PKCE verifier and nonce of a sign-in live only there). Keeping one
//! takes the same kind of advisory lock, removes up to [`CLEANUP_BATCH`]
//! expired rows of its kind and counts the live ones against the bound;
//! taking one is `DELETE … RETURNING`, so of two nodes one gets it.
//!
//! Failed sign-ins are counted in `sign_in_failures` (schema version 8):
//! the caller's key (a SHA-256) as the primary key, the count, the end of
//! its lock and its last failure in milliseconds of the database's clock.
//! A failure locks the row (`SELECT … FOR UPDATE` after inserting it if
//! missing), applies [`FailureRule::fail`] and writes it back, so failures
//! on several nodes at once count one by one; it then removes up to
//! [`CLEANUP_BATCH`] rows the rule forgets.

use async_trait::async_trait;
use deadpool_postgres::Pool;
use pacs_core::ports::PortError;
use pacs_core::sessions::{
    FailureCount, FailureRule, FlowKind, SessionConfig, SessionRecord, SessionStore,
};
use pacs_core::Role;
use serde::{Deserialize, Serialize};
use tokio_postgres::types::ToSql;

use crate::pg_index::{execute, pg_err, pool_err, query_opt, PgIndex};

/// Version byte of a `browser_sessions.rec`.
pub const SESSION_RECORD: u8 = 1;
/// Expired rows removed at most when a session starts.
pub const CLEANUP_BATCH: i64 = 1_000;
/// The advisory lock held while a session is counted and added.
const START_LOCK: i64 = 0x5345_4e53_4553_5331;
/// The advisory lock held while a flow record is counted and added.
const FLOW_LOCK: i64 = 0x5345_4e46_4c4f_5731;

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

/// The parameters of one statement.
type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

impl PgSessions {
    /// Adds a row (`insert`) under the advisory transaction lock `lock`,
    /// after removing expired rows (`clean`), when `live` counts fewer
    /// than `max`; `false` when full (the clean-up is kept).
    async fn add_bounded(
        &self,
        lock: i64,
        clean: (&str, Params<'_>),
        live: (&str, Params<'_>),
        max: i64,
        insert: (&str, Params<'_>),
    ) -> Result<bool, PortError> {
        let mut c = self.pool.get().await.map_err(pool_err)?;
        let tx = c.transaction().await.map_err(pg_err)?;
        execute(&tx, "SELECT pg_advisory_xact_lock($1)", &[&lock])
            .await
            .map_err(pg_err)?;
        execute(&tx, clean.0, clean.1).await.map_err(pg_err)?;
        let live: i64 = query_opt(&tx, live.0, live.1)
            .await
            .map_err(pg_err)?
            .map(|r| r.get(0))
            .unwrap_or(0);
        if live < max {
            execute(&tx, insert.0, insert.1).await.map_err(pg_err)?;
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(live < max)
    }
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
        let clean_params: Params<'_> = &[&idle, &absolute, &CLEANUP_BATCH];
        let clean = (
            "DELETE FROM browser_sessions WHERE key IN (SELECT key FROM browser_sessions \
             WHERE last <= now() - $1::bigint * interval '1 microsecond' \
             OR created <= now() - $2::bigint * interval '1 microsecond' LIMIT $3)",
            clean_params,
        );
        let live_params: Params<'_> = &[&idle, &absolute];
        let live = (
            "SELECT count(*) FROM browser_sessions \
             WHERE last > now() - $1::bigint * interval '1 microsecond' \
             AND created > now() - $2::bigint * interval '1 microsecond'",
            live_params,
        );
        let insert_params: Params<'_> = &[
            &key.as_slice(),
            &session.user.as_bytes(),
            &session.federated.is_some(),
            &rec,
        ];
        let insert = (
            "INSERT INTO browser_sessions (key, user_name, federated, created, last, rec) \
             VALUES ($1, $2, $3, now(), now(), $4)",
            insert_params,
        );
        self.add_bounded(START_LOCK, clean, live, max, insert).await
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
    async fn put_flow(
        &self,
        kind: FlowKind,
        key: [u8; 32],
        record: &[u8],
        lasts: std::time::Duration,
        max: usize,
    ) -> Result<bool, PortError> {
        let (code, lasts) = (kind.code(), micros(lasts));
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        let clean_params: Params<'_> = &[&code, &CLEANUP_BATCH];
        let clean = (
            "DELETE FROM browser_flows WHERE kind = $1 AND key IN (SELECT key FROM browser_flows \
             WHERE kind = $1 AND expires <= now() LIMIT $2)",
            clean_params,
        );
        let live_params: Params<'_> = &[&code];
        let live = (
            "SELECT count(*) FROM browser_flows WHERE kind = $1 AND expires > now()",
            live_params,
        );
        let insert_params: Params<'_> = &[&code, &key.as_slice(), &lasts, &record];
        let insert = (
            "INSERT INTO browser_flows (kind, key, expires, rec) \
             VALUES ($1, $2, now() + $3::bigint * interval '1 microsecond', $4)",
            insert_params,
        );
        self.add_bounded(FLOW_LOCK, clean, live, max, insert).await
    }

    async fn flow(&self, kind: FlowKind, key: &[u8; 32]) -> Result<Option<Vec<u8>>, PortError> {
        let c = self.pool.get().await.map_err(pool_err)?;
        Ok(query_opt(
            &c,
            "SELECT rec FROM browser_flows WHERE kind = $1 AND key = $2 AND expires > now()",
            &[&kind.code(), &key.as_slice()],
        )
        .await
        .map_err(pg_err)?
        .map(|r| r.get(0)))
    }

    async fn take_flow(
        &self,
        kind: FlowKind,
        key: &[u8; 32],
    ) -> Result<Option<Vec<u8>>, PortError> {
        let c = self.pool.get().await.map_err(pool_err)?;
        Ok(query_opt(
            &c,
            "DELETE FROM browser_flows WHERE kind = $1 AND key = $2 \
             RETURNING rec, expires > now()",
            &[&kind.code(), &key.as_slice()],
        )
        .await
        .map_err(pg_err)?
        .filter(|r| r.get::<_, bool>(1))
        .map(|r| r.get(0)))
    }

    async fn fail_sign_in(
        &self,
        key: [u8; 32],
        rule: &FailureRule,
    ) -> Result<Option<std::time::Duration>, PortError> {
        let mut c = self.pool.get().await.map_err(pool_err)?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let now: i64 = query_opt(&tx, NOW_MS, &[])
            .await
            .map_err(pg_err)?
            .map(|r| r.get(0))
            .unwrap_or(0);
        execute(
            &tx,
            "INSERT INTO sign_in_failures (key, failures, locked_until_ms, last_ms) \
             VALUES ($1, 0, 0, $2) ON CONFLICT (key) DO NOTHING",
            &[&key.as_slice(), &now],
        )
        .await
        .map_err(pg_err)?;
        let row = query_opt(
            &tx,
            "SELECT failures, locked_until_ms, last_ms FROM sign_in_failures \
             WHERE key = $1 FOR UPDATE",
            &[&key.as_slice()],
        )
        .await
        .map_err(pg_err)?;
        let count = row
            .map(|r| FailureCount {
                failures: u32::try_from(r.get::<_, i32>(0)).unwrap_or(0),
                locked_until_ms: u64::try_from(r.get::<_, i64>(1)).unwrap_or(0),
                last_ms: u64::try_from(r.get::<_, i64>(2)).unwrap_or(0),
            })
            .unwrap_or_default();
        let now_ms = u64::try_from(now).unwrap_or(0);
        let (next, lock) = rule.fail(count, now_ms);
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let failures = i32::try_from(next.failures).unwrap_or(i32::MAX);
        execute(
            &tx,
            "UPDATE sign_in_failures SET failures = $2, locked_until_ms = $3, last_ms = $4 \
             WHERE key = $1",
            &[
                &key.as_slice(),
                &failures,
                &as_i64(next.locked_until_ms),
                &as_i64(next.last_ms),
            ],
        )
        .await
        .map_err(pg_err)?;
        let horizon = now.saturating_sub(as_i64(rule.max.as_millis() as u64));
        execute(
            &tx,
            "DELETE FROM sign_in_failures WHERE key IN (SELECT key FROM sign_in_failures \
             WHERE last_ms < $1 AND locked_until_ms <= $2 LIMIT $3)",
            &[&horizon, &now, &CLEANUP_BATCH],
        )
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(lock)
    }

    async fn sign_in_lock(&self, key: &[u8; 32]) -> Result<Option<std::time::Duration>, PortError> {
        let c = self.pool.get().await.map_err(pool_err)?;
        let row = query_opt(
            &c,
            "SELECT locked_until_ms, (extract(epoch from clock_timestamp()) * 1000)::bigint \
             FROM sign_in_failures WHERE key = $1",
            &[&key.as_slice()],
        )
        .await
        .map_err(pg_err)?;
        Ok(row.and_then(|r| {
            let count = FailureCount {
                locked_until_ms: u64::try_from(r.get::<_, i64>(0)).unwrap_or(0),
                ..FailureCount::default()
            };
            count.remaining(u64::try_from(r.get::<_, i64>(1)).unwrap_or(0))
        }))
    }

    async fn clear_sign_in(&self, key: &[u8; 32]) -> Result<(), PortError> {
        let c = self.pool.get().await.map_err(pool_err)?;
        execute(
            &c,
            "DELETE FROM sign_in_failures WHERE key = $1",
            &[&key.as_slice()],
        )
        .await
        .map_err(pg_err)?;
        Ok(())
    }
}

/// The database's clock in milliseconds since the epoch.
const NOW_MS: &str = "SELECT (extract(epoch from clock_timestamp()) * 1000)::bigint";
