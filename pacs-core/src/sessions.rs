//! The browser sessions port: where the login page's sessions are kept.
//!
//! A session is found by the SHA-256 of its cookie value (the cookie itself
//! is never stored). [`MemorySessions`] keeps them in this process (a
//! single node on sled: a restart signs everyone out); the PostgreSQL store
//! of the `storage` crate keeps them in the shared index database, so that
//! every node behind a load balancer accepts a cookie issued by any of
//! them and a sign-out or a disabled user ends it on all at once.
//!
//! Each store measures the idle and absolute time-outs on its own clock:
//! the process's monotonic clock in memory, the database's wall clock on
//! PostgreSQL (the nodes' clocks never enter). To spare a write per
//! request, a store may move a session's last use forward only every
//! [`SessionConfig::touch`]; a session then ends between `idle - touch`
//! and `idle` after its last request.
//!
//! The same stores keep the short-lived records a browser flow leaves
//! between two requests ([`FlowKind`]: a share link's cookie, a sign-in
//! begun at the identity provider), so that the next request may land on
//! any node. Each lasts a fixed time from when it was kept (on the store's
//! clock, like sessions), each kind is bounded on its own, and a record
//! may be taken once ([`SessionStore::take_flow`]). The store holds the
//! caller's bytes as they are (the caller versions them).
//!
//! They also count failed sign-ins per key (an account, a client address:
//! the caller hashes them), so that a guesser spreading attempts over
//! every node meets the same lock-out as on one ([`FailureRule`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::ports::PortError;
use crate::Role;

/// The time-outs and size of the session table.
#[derive(Debug, Clone, Copy)]
pub struct SessionConfig {
    /// A session unused this long ends.
    pub idle: Duration,
    /// A session ends this long after it started, used or not.
    pub absolute: Duration,
    /// Live sessions at most (per archive: on PostgreSQL, of every node).
    pub max_sessions: usize,
}

/// How often at most a shared store records a session's use: every 30 s,
/// or a quarter of the idle time-out when that is shorter.
impl SessionConfig {
    pub fn touch(&self) -> Duration {
        (self.idle / 4).min(Duration::from_secs(30))
    }
}

/// What a session holds besides its times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub user: String,
    /// Sent back in admin forms and accepted in `X-CSRF-Token`.
    pub csrf: String,
    /// A user signed in through the identity provider (not a local user):
    /// the role mapped at sign-in, kept for the session's life.
    pub federated: Option<Role>,
}

/// A kind of short-lived record of a browser flow: its own key space and
/// its own bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowKind {
    /// A share link's cookie, after the link (and its PIN) was accepted:
    /// key the SHA-256 of the cookie, record the link.
    ShareCookie,
    /// A sign-in begun at the identity provider: key the SHA-256 of its
    /// `state`, record its nonce, PKCE verifier, redirect URI and next page.
    PendingSignIn,
}

impl FlowKind {
    /// The number a persisted record is stored under (never reused).
    pub fn code(self) -> i16 {
        match self {
            FlowKind::ShareCookie => 1,
            FlowKind::PendingSignIn => 2,
        }
    }
}

/// How failed sign-ins lock a key (an account or a client address): after
/// `threshold` consecutive failures it is locked for `base`, and each
/// further failure doubles the lock, up to `max`. A key left alone for
/// `max` and not locked starts again from zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureRule {
    pub threshold: u32,
    pub base: Duration,
    pub max: Duration,
}

/// A key's failed sign-ins, in milliseconds of a store's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FailureCount {
    pub failures: u32,
    /// Until when it is locked (0: never locked).
    pub locked_until_ms: u64,
    /// The last failure.
    pub last_ms: u64,
}

impl FailureCount {
    /// How long it stays locked after `now_ms`, if it is.
    pub fn remaining(&self, now_ms: u64) -> Option<Duration> {
        (self.locked_until_ms > now_ms)
            .then(|| Duration::from_millis(self.locked_until_ms - now_ms))
    }

    /// Whether a store may forget it at `now_ms`: not locked, and its last
    /// failure older than the rule's `max`.
    pub fn forgotten(&self, now_ms: u64, rule: &FailureRule) -> bool {
        self.locked_until_ms <= now_ms
            && now_ms.saturating_sub(self.last_ms) > rule.max.as_millis() as u64
    }
}

impl FailureRule {
    /// `count` after one more failure at `now_ms`, and the lock this
    /// failure set, if it set one.
    pub fn fail(&self, count: FailureCount, now_ms: u64) -> (FailureCount, Option<Duration>) {
        let mut c = if count.forgotten(now_ms, self) {
            FailureCount::default()
        } else {
            count
        };
        c.failures = c.failures.saturating_add(1);
        c.last_ms = now_ms;
        let threshold = self.threshold.max(1);
        if c.failures < threshold {
            return (c, None);
        }
        let doublings = (c.failures - threshold).min(20);
        let lock = self.base.saturating_mul(1u32 << doublings).min(self.max);
        c.locked_until_ms = now_ms.saturating_add(lock.as_millis() as u64);
        (c, Some(lock))
    }
}

/// Failed sign-ins kept in memory at most before forgotten ones are
/// dropped.
const MAX_FAILURE_KEYS: usize = 50_000;

/// Failed sign-ins counted in this process, on its monotonic clock.
#[derive(Default)]
pub struct MemoryFailures {
    map: Mutex<HashMap<[u8; 32], FailureCount>>,
}

/// Milliseconds of this process's monotonic clock.
fn mono_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl MemoryFailures {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], FailureCount>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a failure of `key`; the lock it set, if any.
    pub fn fail(&self, key: [u8; 32], rule: &FailureRule) -> Option<Duration> {
        let now = mono_ms();
        let mut map = self.lock();
        if map.len() >= MAX_FAILURE_KEYS {
            map.retain(|_, c| !c.forgotten(now, rule));
        }
        let count = map.entry(key).or_default();
        let (next, lock) = rule.fail(*count, now);
        *count = next;
        lock
    }

    /// How long `key` stays locked, if it is.
    pub fn locked(&self, key: &[u8; 32]) -> Option<Duration> {
        self.lock().get(key).and_then(|c| c.remaining(mono_ms()))
    }

    /// Locks `key` for `lasts` (a lock another store set).
    pub fn lock_for(&self, key: [u8; 32], lasts: Duration) {
        let now = mono_ms();
        let until = now.saturating_add(lasts.as_millis() as u64);
        let mut map = self.lock();
        let count = map.entry(key).or_default();
        count.locked_until_ms = count.locked_until_ms.max(until);
        count.last_ms = now;
    }

    /// Forgets `key`.
    pub fn clear(&self, key: &[u8; 32]) {
        self.lock().remove(key);
    }
}

/// Where browser sessions are kept. `key` is the SHA-256 of the cookie.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Adds a session; `false` when `config.max_sessions` live sessions
    /// exist already (expired ones are removed first).
    async fn start(
        &self,
        key: [u8; 32],
        session: &SessionRecord,
        config: &SessionConfig,
    ) -> Result<bool, PortError>;

    /// The live session of `key`, marking it used; an expired one is
    /// removed.
    async fn get(
        &self,
        key: &[u8; 32],
        config: &SessionConfig,
    ) -> Result<Option<SessionRecord>, PortError>;

    /// Ends the session of `key`; what it was, if it existed.
    async fn end(&self, key: &[u8; 32]) -> Result<Option<SessionRecord>, PortError>;

    /// Ends every session of the local user `user` (disabled, removed,
    /// password changed); a provider's user of the same name keeps theirs.
    async fn end_user(&self, user: &str) -> Result<(), PortError>;

    /// Keeps `record` under `key` in `kind` for `lasts`; `false` when `max`
    /// live records of `kind` exist (expired ones are removed first).
    async fn put_flow(
        &self,
        kind: FlowKind,
        key: [u8; 32],
        record: &[u8],
        lasts: Duration,
        max: usize,
    ) -> Result<bool, PortError>;

    /// The live record of `key` in `kind`, left in place.
    async fn flow(&self, kind: FlowKind, key: &[u8; 32]) -> Result<Option<Vec<u8>>, PortError>;

    /// The live record of `key` in `kind`, removed: of two callers at once
    /// (on any node), one gets it. An expired one is removed too.
    async fn take_flow(&self, kind: FlowKind, key: &[u8; 32])
        -> Result<Option<Vec<u8>>, PortError>;

    /// Counts a failed sign-in of `key` under `rule`, atomically against
    /// every other count of it (on any node); the lock this failure set,
    /// if it set one.
    async fn fail_sign_in(
        &self,
        key: [u8; 32],
        rule: &FailureRule,
    ) -> Result<Option<Duration>, PortError>;

    /// How long `key` stays locked, if it is.
    async fn sign_in_lock(&self, key: &[u8; 32]) -> Result<Option<Duration>, PortError>;

    /// Forgets `key`'s failures (its account signed in).
    async fn clear_sign_in(&self, key: &[u8; 32]) -> Result<(), PortError>;
}

struct Held {
    record: SessionRecord,
    created: Instant,
    last: Instant,
}

/// Sessions (and flow records) in this process's memory, timed on its
/// monotonic clock.
#[derive(Default)]
pub struct MemorySessions {
    map: Mutex<HashMap<[u8; 32], Held>>,
    /// (kind, key) → (record, when it ends).
    flows: Mutex<FlowMap>,
    failures: MemoryFailures,
}

type FlowMap = HashMap<(FlowKind, [u8; 32]), (Vec<u8>, Instant)>;

impl MemorySessions {
    pub fn new() -> MemorySessions {
        MemorySessions::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Held>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_flows(&self) -> std::sync::MutexGuard<'_, FlowMap> {
        self.flows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn live(s: &Held, now: Instant, config: &SessionConfig) -> bool {
    now.duration_since(s.last) < config.idle && now.duration_since(s.created) < config.absolute
}

#[async_trait]
impl SessionStore for MemorySessions {
    async fn start(
        &self,
        key: [u8; 32],
        session: &SessionRecord,
        config: &SessionConfig,
    ) -> Result<bool, PortError> {
        let now = Instant::now();
        let mut map = self.lock();
        if map.len() >= config.max_sessions {
            map.retain(|_, s| live(s, now, config));
            if map.len() >= config.max_sessions {
                return Ok(false);
            }
        }
        map.insert(
            key,
            Held {
                record: session.clone(),
                created: now,
                last: now,
            },
        );
        Ok(true)
    }

    async fn get(
        &self,
        key: &[u8; 32],
        config: &SessionConfig,
    ) -> Result<Option<SessionRecord>, PortError> {
        let now = Instant::now();
        let mut map = self.lock();
        let Some(s) = map.get_mut(key) else {
            return Ok(None);
        };
        if !live(s, now, config) {
            map.remove(key);
            return Ok(None);
        }
        s.last = now;
        Ok(Some(s.record.clone()))
    }

    async fn end(&self, key: &[u8; 32]) -> Result<Option<SessionRecord>, PortError> {
        Ok(self.lock().remove(key).map(|s| s.record))
    }

    async fn end_user(&self, user: &str) -> Result<(), PortError> {
        self.lock()
            .retain(|_, s| s.record.federated.is_some() || s.record.user != user);
        Ok(())
    }

    async fn put_flow(
        &self,
        kind: FlowKind,
        key: [u8; 32],
        record: &[u8],
        lasts: Duration,
        max: usize,
    ) -> Result<bool, PortError> {
        let now = Instant::now();
        let mut map = self.lock_flows();
        let of_kind = |m: &FlowMap| m.keys().filter(|(k, _)| *k == kind).count();
        if of_kind(&map) >= max {
            map.retain(|_, (_, until)| *until > now);
            if of_kind(&map) >= max {
                return Ok(false);
            }
        }
        map.insert((kind, key), (record.to_vec(), now + lasts));
        Ok(true)
    }

    async fn flow(&self, kind: FlowKind, key: &[u8; 32]) -> Result<Option<Vec<u8>>, PortError> {
        let now = Instant::now();
        let mut map = self.lock_flows();
        match map.get(&(kind, *key)) {
            Some((record, until)) if *until > now => Ok(Some(record.clone())),
            Some(_) => {
                map.remove(&(kind, *key));
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn take_flow(
        &self,
        kind: FlowKind,
        key: &[u8; 32],
    ) -> Result<Option<Vec<u8>>, PortError> {
        let now = Instant::now();
        Ok(self
            .lock_flows()
            .remove(&(kind, *key))
            .filter(|(_, until)| *until > now)
            .map(|(record, _)| record))
    }

    async fn fail_sign_in(
        &self,
        key: [u8; 32],
        rule: &FailureRule,
    ) -> Result<Option<Duration>, PortError> {
        Ok(self.failures.fail(key, rule))
    }

    async fn sign_in_lock(&self, key: &[u8; 32]) -> Result<Option<Duration>, PortError> {
        Ok(self.failures.locked(key))
    }

    async fn clear_sign_in(&self, key: &[u8; 32]) -> Result<(), PortError> {
        self.failures.clear(key);
        Ok(())
    }
}
