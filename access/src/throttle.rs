//! Throttling of failed sign-ins, per account and per client address.
//!
//! After `threshold` consecutive failures the account (or address) is
//! locked for `base`, and each further failure doubles the lock, up to
//! `max` ([`FailureRule`]). A success clears the account's count (not the
//! address's, so that one valid account cannot be used to reset guessing
//! at others). Unknown account names are counted like known ones, so the
//! answer does not tell which names exist.
//!
//! On one node the counts live in this process. With a shared session
//! store (the PostgreSQL index's database) every failure is counted there,
//! atomically, so that a guesser spreading attempts over every node behind
//! a load balancer meets the lock after the same number as on one node;
//! a lock the store reports is kept here too, so that this node refuses
//! at once without asking again. The store is asked whether a key is
//! locked only before a password is verified: a password this node
//! verified in the last minutes (the Basic cache) is not a guess, and
//! spares a round trip per request. If the store cannot be reached, the
//! failure is counted here (and logged), never lost.
//!
//! Keys are the SHA-256 of the lower-cased account name or of the address,
//! so no store holds the names people tried.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use pacs_core::sessions::{FailureRule, MemoryFailures, SessionStore};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy)]
pub struct ThrottleConfig {
    /// Failures per account before it is locked.
    pub account_threshold: u32,
    /// Failures per client address before it is locked.
    pub address_threshold: u32,
    pub base: Duration,
    pub max: Duration,
}

/// What a failure did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    /// The account was locked by this failure, for this long.
    Account(Duration),
    /// The address was locked by this failure, for this long.
    Address(Duration),
}

pub struct Throttle {
    config: ThrottleConfig,
    /// This node's counts (or its copy of the shared locks).
    local: MemoryFailures,
    /// The store every node counts in, when there is one.
    shared: Option<Arc<dyn SessionStore>>,
}

fn account_key(account: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"sign-in account\0");
    h.update(account.to_lowercase().as_bytes());
    h.finalize().into()
}

fn address_key(ip: IpAddr) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"sign-in address\0");
    h.update(ip.to_string().as_bytes());
    h.finalize().into()
}

impl Throttle {
    /// Counts in this process only.
    pub fn new(config: ThrottleConfig) -> Throttle {
        Throttle {
            config,
            local: MemoryFailures::default(),
            shared: None,
        }
    }

    /// Counts in `store`, shared by every node.
    pub fn shared(config: ThrottleConfig, store: Arc<dyn SessionStore>) -> Throttle {
        Throttle {
            shared: Some(store),
            ..Throttle::new(config)
        }
    }

    fn rule(&self, threshold: u32) -> FailureRule {
        FailureRule {
            threshold,
            base: self.config.base,
            max: self.config.max,
        }
    }

    fn keys(account: &str, address: Option<IpAddr>) -> impl Iterator<Item = [u8; 32]> {
        std::iter::once(account_key(account)).chain(address.map(address_key))
    }

    /// How long the caller must wait, if this node knows of a lock.
    pub fn locked_here(&self, account: &str, address: Option<IpAddr>) -> Option<Duration> {
        Self::keys(account, address)
            .filter_map(|k| self.local.locked(&k))
            .max()
    }

    /// How long the caller must wait, if locked here or in the shared
    /// store (a lock found there is kept here too).
    pub async fn locked(&self, account: &str, address: Option<IpAddr>) -> Option<Duration> {
        let here = self.locked_here(account, address);
        let Some(store) = &self.shared else {
            return here;
        };
        let mut wait = here;
        for key in Self::keys(account, address) {
            match store.sign_in_lock(&key).await {
                Ok(Some(d)) => {
                    self.local.lock_for(key, d);
                    wait = wait.max(Some(d));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "sign-in lock-outs: shared store unavailable; this node's counts apply")
                }
            }
        }
        wait
    }

    async fn fail_one(&self, key: [u8; 32], threshold: u32) -> Option<Duration> {
        let rule = self.rule(threshold);
        if let Some(store) = &self.shared {
            match store.fail_sign_in(key, &rule).await {
                Ok(lock) => {
                    if let Some(d) = lock {
                        self.local.lock_for(key, d);
                    }
                    return lock;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "sign-in lock-outs: shared store unavailable; failure counted on this node")
                }
            }
        }
        self.local.fail(key, &rule)
    }

    /// Counts a failure; says whether it locked the account or the address.
    pub async fn fail(&self, account: &str, address: Option<IpAddr>) -> Vec<Lock> {
        let mut locks = Vec::new();
        if let Some(d) = self
            .fail_one(account_key(account), self.config.account_threshold)
            .await
        {
            locks.push(Lock::Account(d));
        }
        if let Some(ip) = address {
            if let Some(d) = self
                .fail_one(address_key(ip), self.config.address_threshold)
                .await
            {
                locks.push(Lock::Address(d));
            }
        }
        locks
    }

    /// Clears the account's failures after a successful sign-in.
    pub async fn succeed(&self, account: &str) {
        let key = account_key(account);
        self.local.clear(&key);
        if let Some(store) = &self.shared {
            if let Err(e) = store.clear_sign_in(&key).await {
                tracing::warn!(error = %e, "sign-in lock-outs: shared store unavailable; failures not cleared there");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ThrottleConfig {
        ThrottleConfig {
            account_threshold: 3,
            address_threshold: 5,
            base: Duration::from_secs(60),
            max: Duration::from_secs(3600),
        }
    }

    async fn locks_after_threshold_and_doubles(t: Throttle) {
        let ip: Option<IpAddr> = "10.0.0.1".parse().ok();
        assert!(t.fail("an", ip).await.is_empty());
        assert!(t.fail("AN", ip).await.is_empty());
        assert!(t.locked("an", None).await.is_none());
        assert_eq!(
            t.fail("an", ip).await,
            vec![Lock::Account(Duration::from_secs(60))]
        );
        assert!(t.locked("an", None).await.is_some());
        assert!(t.locked_here("an", None).is_some());
        assert!(
            t.locked("binh", None).await.is_none(),
            "other accounts are free"
        );
        assert_eq!(
            t.fail("an", ip).await,
            vec![Lock::Account(Duration::from_secs(120))]
        );
        // The fifth failure from the address locks the address for everyone.
        assert_eq!(
            t.fail("binh", ip).await,
            vec![Lock::Address(Duration::from_secs(60))]
        );
        assert!(t.locked("chi", ip).await.is_some());
        assert!(t.locked("chi", "10.0.0.2".parse().ok()).await.is_none());
    }

    #[tokio::test]
    async fn locks_after_threshold_and_doubles_on_one_node() {
        locks_after_threshold_and_doubles(Throttle::new(config())).await;
    }

    #[tokio::test]
    async fn locks_after_threshold_and_doubles_in_a_shared_store() {
        let store = Arc::new(pacs_core::sessions::MemorySessions::new());
        locks_after_threshold_and_doubles(Throttle::shared(config(), store)).await;
    }

    /// Two nodes on one store: failures on either count toward one lock,
    /// and the node that did not set it refuses too.
    #[tokio::test]
    async fn nodes_sharing_a_store_count_together() {
        let store: Arc<dyn SessionStore> = Arc::new(pacs_core::sessions::MemorySessions::new());
        let a = Throttle::shared(config(), store.clone());
        let b = Throttle::shared(config(), store);
        assert!(a.fail("an", None).await.is_empty());
        assert!(b.fail("an", None).await.is_empty());
        assert_eq!(
            a.fail("an", None).await,
            vec![Lock::Account(Duration::from_secs(60))]
        );
        assert!(b.locked_here("an", None).is_none(), "not seen on B yet");
        assert!(b.locked("an", None).await.is_some(), "B asks the store");
        assert!(b.locked_here("an", None).is_some(), "and keeps the lock");
        b.succeed("an").await;
        assert!(a.locked("an", None).await.is_some(), "A's own copy holds");
    }

    /// A shared store that can be taken down: every call fails while it is.
    struct Flaky {
        inner: pacs_core::sessions::MemorySessions,
        down: std::sync::atomic::AtomicBool,
    }

    impl Flaky {
        fn check(&self) -> Result<(), pacs_core::ports::PortError> {
            if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(pacs_core::ports::PortError::Index(
                    "connection refused".into(),
                ));
            }
            Ok(())
        }
    }

    #[async_trait::async_trait]
    impl SessionStore for Flaky {
        async fn start(
            &self,
            key: [u8; 32],
            session: &pacs_core::sessions::SessionRecord,
            config: &pacs_core::sessions::SessionConfig,
        ) -> Result<bool, pacs_core::ports::PortError> {
            self.check()?;
            self.inner.start(key, session, config).await
        }
        async fn get(
            &self,
            key: &[u8; 32],
            config: &pacs_core::sessions::SessionConfig,
        ) -> Result<Option<pacs_core::sessions::SessionRecord>, pacs_core::ports::PortError>
        {
            self.check()?;
            self.inner.get(key, config).await
        }
        async fn end(
            &self,
            key: &[u8; 32],
        ) -> Result<Option<pacs_core::sessions::SessionRecord>, pacs_core::ports::PortError>
        {
            self.check()?;
            self.inner.end(key).await
        }
        async fn end_user(&self, user: &str) -> Result<(), pacs_core::ports::PortError> {
            self.check()?;
            self.inner.end_user(user).await
        }
        async fn put_flow(
            &self,
            kind: pacs_core::sessions::FlowKind,
            key: [u8; 32],
            record: &[u8],
            lasts: Duration,
            max: usize,
        ) -> Result<bool, pacs_core::ports::PortError> {
            self.check()?;
            self.inner.put_flow(kind, key, record, lasts, max).await
        }
        async fn flow(
            &self,
            kind: pacs_core::sessions::FlowKind,
            key: &[u8; 32],
        ) -> Result<Option<Vec<u8>>, pacs_core::ports::PortError> {
            self.check()?;
            self.inner.flow(kind, key).await
        }
        async fn take_flow(
            &self,
            kind: pacs_core::sessions::FlowKind,
            key: &[u8; 32],
        ) -> Result<Option<Vec<u8>>, pacs_core::ports::PortError> {
            self.check()?;
            self.inner.take_flow(kind, key).await
        }
        async fn fail_sign_in(
            &self,
            key: [u8; 32],
            rule: &FailureRule,
        ) -> Result<Option<Duration>, pacs_core::ports::PortError> {
            self.check()?;
            self.inner.fail_sign_in(key, rule).await
        }
        async fn sign_in_lock(
            &self,
            key: &[u8; 32],
        ) -> Result<Option<Duration>, pacs_core::ports::PortError> {
            self.check()?;
            self.inner.sign_in_lock(key).await
        }
        async fn clear_sign_in(&self, key: &[u8; 32]) -> Result<(), pacs_core::ports::PortError> {
            self.check()?;
            self.inner.clear_sign_in(key).await
        }
    }

    /// With the shared store down, failures are counted on the node and
    /// still lock there; the store does not count them, and once it is
    /// back, counting goes on there (a lock it sets reaches the other
    /// node).
    #[tokio::test]
    async fn failures_count_on_the_node_while_the_shared_store_is_down() {
        let store = Arc::new(Flaky {
            inner: pacs_core::sessions::MemorySessions::new(),
            down: std::sync::atomic::AtomicBool::new(true),
        });
        let a = Throttle::shared(config(), store.clone());
        let b = Throttle::shared(config(), store.clone());
        assert!(a.fail("an", None).await.is_empty());
        assert!(a.fail("an", None).await.is_empty());
        assert_eq!(
            a.fail("an", None).await,
            vec![Lock::Account(Duration::from_secs(60))],
            "the node's own count locks"
        );
        assert!(a.locked("an", None).await.is_some());
        assert!(b.locked("an", None).await.is_none(), "B knows nothing");
        store.down.store(false, std::sync::atomic::Ordering::SeqCst);
        assert!(
            b.locked("an", None).await.is_none(),
            "the store counted none of them"
        );
        // Back up: the store counts again, from zero, for both nodes.
        assert!(b.fail("binh", None).await.is_empty());
        assert!(a.fail("binh", None).await.is_empty());
        assert_eq!(
            b.fail("binh", None).await,
            vec![Lock::Account(Duration::from_secs(60))]
        );
        assert!(a.locked("binh", None).await.is_some());
        // A success while the store is down clears this node's count; the
        // store's lock still holds once it is back.
        store.down.store(true, std::sync::atomic::Ordering::SeqCst);
        b.succeed("binh").await;
        assert!(b.locked_here("binh", None).is_none());
        store.down.store(false, std::sync::atomic::Ordering::SeqCst);
        assert!(b.locked("binh", None).await.is_some());
    }

    #[tokio::test]
    async fn success_clears_the_account() {
        let t = Throttle::new(config());
        t.fail("an", None).await;
        t.fail("an", None).await;
        t.succeed("an").await;
        assert!(t.fail("an", None).await.is_empty());
    }
}
