//! Throttling of failed sign-ins, per account and per client address.
//!
//! After `threshold` consecutive failures the account (or address) is
//! locked for `base`, and each further failure doubles the lock, up to
//! `max`. A success clears the account's count (not the address's, so that
//! one valid account cannot be used to reset guessing at others). Unknown
//! account names are counted like known ones, so the answer does not tell
//! which names exist.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries kept per map before idle ones are dropped.
const MAX_ENTRIES: usize = 50_000;

#[derive(Debug, Clone, Copy)]
pub struct ThrottleConfig {
    /// Failures per account before it is locked.
    pub account_threshold: u32,
    /// Failures per client address before it is locked.
    pub address_threshold: u32,
    pub base: Duration,
    pub max: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    locked_until: Option<Instant>,
    last: Instant,
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
    accounts: Mutex<HashMap<String, Entry>>,
    addresses: Mutex<HashMap<IpAddr, Entry>>,
}

fn remaining<K: Hash + Eq>(
    map: &Mutex<HashMap<K, Entry>>,
    key: &K,
    now: Instant,
) -> Option<Duration> {
    let map = map
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    map.get(key)
        .and_then(|e| e.locked_until)
        .and_then(|u| u.checked_duration_since(now))
        .filter(|d| !d.is_zero())
}

impl Throttle {
    pub fn new(config: ThrottleConfig) -> Throttle {
        Throttle {
            config,
            accounts: Mutex::new(HashMap::new()),
            addresses: Mutex::new(HashMap::new()),
        }
    }

    /// How long the caller must wait before trying again, if locked.
    pub fn locked(&self, account: &str, address: Option<IpAddr>) -> Option<Duration> {
        let now = Instant::now();
        let a = remaining(&self.accounts, &account.to_ascii_lowercase(), now);
        let b = address.and_then(|ip| remaining(&self.addresses, &ip, now));
        a.max(b)
    }

    fn fail_one<K: Hash + Eq>(
        &self,
        map: &Mutex<HashMap<K, Entry>>,
        key: K,
        threshold: u32,
        now: Instant,
    ) -> Option<Duration> {
        let mut map = map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= MAX_ENTRIES {
            let horizon = self.config.max;
            map.retain(|_, e| {
                now.duration_since(e.last) < horizon || e.locked_until.is_some_and(|u| u > now)
            });
        }
        let e = map.entry(key).or_insert(Entry {
            failures: 0,
            locked_until: None,
            last: now,
        });
        // A long quiet spell forgives old failures.
        if now.duration_since(e.last) > self.config.max && e.locked_until.is_none_or(|u| u <= now) {
            e.failures = 0;
        }
        e.failures = e.failures.saturating_add(1);
        e.last = now;
        if e.failures < threshold.max(1) {
            return None;
        }
        let doublings = (e.failures - threshold.max(1)).min(20);
        let lock = self
            .config
            .base
            .saturating_mul(1u32 << doublings)
            .min(self.config.max);
        e.locked_until = Some(now + lock);
        Some(lock)
    }

    /// Counts a failure; says whether it locked the account or the address.
    pub fn fail(&self, account: &str, address: Option<IpAddr>) -> Vec<Lock> {
        let now = Instant::now();
        let mut locks = Vec::new();
        if let Some(d) = self.fail_one(
            &self.accounts,
            account.to_ascii_lowercase(),
            self.config.account_threshold,
            now,
        ) {
            locks.push(Lock::Account(d));
        }
        if let Some(ip) = address {
            if let Some(d) = self.fail_one(&self.addresses, ip, self.config.address_threshold, now)
            {
                locks.push(Lock::Address(d));
            }
        }
        locks
    }

    /// Clears the account's failures after a successful sign-in.
    pub fn succeed(&self, account: &str) {
        self.accounts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&account.to_ascii_lowercase());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> Throttle {
        Throttle::new(ThrottleConfig {
            account_threshold: 3,
            address_threshold: 5,
            base: Duration::from_secs(60),
            max: Duration::from_secs(3600),
        })
    }

    #[test]
    fn locks_after_threshold_and_doubles() {
        let t = throttle();
        let ip: Option<IpAddr> = "10.0.0.1".parse().ok();
        assert!(t.fail("an", ip).is_empty());
        assert!(t.fail("AN", ip).is_empty());
        assert!(t.locked("an", None).is_none());
        assert_eq!(
            t.fail("an", ip),
            vec![Lock::Account(Duration::from_secs(60))]
        );
        assert!(t.locked("an", None).is_some());
        assert!(t.locked("binh", None).is_none(), "other accounts are free");
        assert_eq!(
            t.fail("an", ip),
            vec![Lock::Account(Duration::from_secs(120))]
        );
        // The fifth failure from the address locks the address for everyone.
        assert_eq!(
            t.fail("binh", ip),
            vec![Lock::Address(Duration::from_secs(60))]
        );
        assert!(t.locked("chi", ip).is_some());
        assert!(t.locked("chi", "10.0.0.2".parse().ok()).is_none());
    }

    #[test]
    fn success_clears_the_account() {
        let t = throttle();
        t.fail("an", None);
        t.fail("an", None);
        t.succeed("an");
        assert!(t.fail("an", None).is_empty());
    }
}
