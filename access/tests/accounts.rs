//! The per-request cache of users and tokens in `Accounts`: a request that
//! names a known user or token is resolved without reading the store, and
//! every change (revocation, disabling, a new password, removal) holds from
//! the next check.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use access::accounts::{Accounts, TokenCheck};
use access::secrets::PasswordHashing;
use async_trait::async_trait;
use pacs_core::credentials::{
    Credentials, GrantRecord, ShareChange, ShareRecord, TokenRecord, UserRecord,
};
use pacs_core::ports::PortError;
use pacs_core::Role;

/// The sled store, counting the reads a request would make.
struct Counting {
    inner: storage::SledCredentials,
    reads: AtomicUsize,
}

#[async_trait]
impl Credentials for Counting {
    async fn user(&self, name: &str) -> Result<Option<UserRecord>, PortError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.user(name).await
    }
    async fn users(&self) -> Result<Vec<UserRecord>, PortError> {
        self.inner.users().await
    }
    async fn insert_user(&self, user: UserRecord) -> Result<bool, PortError> {
        self.inner.insert_user(user).await
    }
    async fn update_user(&self, user: UserRecord) -> Result<bool, PortError> {
        self.inner.update_user(user).await
    }
    async fn remove_user(&self, name: &str) -> Result<bool, PortError> {
        self.inner.remove_user(name).await
    }
    async fn insert_token(&self, token: TokenRecord) -> Result<bool, PortError> {
        self.inner.insert_token(token).await
    }
    async fn token_by_secret(&self, sha256: &[u8; 32]) -> Result<Option<TokenRecord>, PortError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.token_by_secret(sha256).await
    }
    async fn tokens(&self) -> Result<Vec<TokenRecord>, PortError> {
        self.inner.tokens().await
    }
    async fn revoke_token(&self, id: &str, at: u64) -> Result<bool, PortError> {
        self.inner.revoke_token(id, at).await
    }
    async fn insert_share(&self, share: ShareRecord) -> Result<bool, PortError> {
        self.inner.insert_share(share).await
    }
    async fn share_by_secret(&self, sha256: &[u8; 32]) -> Result<Option<ShareRecord>, PortError> {
        self.inner.share_by_secret(sha256).await
    }
    async fn shares(&self) -> Result<Vec<ShareRecord>, PortError> {
        self.inner.shares().await
    }
    async fn update_share(&self, share: ShareRecord) -> Result<bool, PortError> {
        self.inner.update_share(share).await
    }
    async fn change_share(
        &self,
        id: &str,
        change: ShareChange,
    ) -> Result<Option<(ShareRecord, bool)>, PortError> {
        self.inner.change_share(id, change).await
    }
    async fn insert_grant(&self, grant: GrantRecord) -> Result<bool, PortError> {
        self.inner.insert_grant(grant).await
    }
    async fn grants(&self) -> Result<Vec<GrantRecord>, PortError> {
        self.inner.grants().await
    }
    async fn update_grant(&self, grant: GrantRecord) -> Result<bool, PortError> {
        self.inner.update_grant(grant).await
    }
}

fn accounts() -> (Accounts, Arc<Counting>) {
    let index = storage::SledIndex::temporary().unwrap();
    let store = Arc::new(Counting {
        inner: index.credentials().unwrap(),
        reads: AtomicUsize::new(0),
    });
    (
        Accounts::new(store.clone(), PasswordHashing::new(1), 8),
        store,
    )
}

#[tokio::test]
async fn a_known_token_is_checked_without_a_store_read_and_revocation_holds_at_once() {
    let (accounts, store) = accounts();
    let (token, secret) = accounts
        .create_token("emr", Role::Referrer, None)
        .await
        .unwrap();
    assert!(matches!(
        accounts.check_token(&secret).await.unwrap(),
        TokenCheck::Valid(_)
    ));
    let after_first = store.reads.load(Ordering::SeqCst);
    for _ in 0..10 {
        assert!(matches!(
            accounts.check_token(&secret).await.unwrap(),
            TokenCheck::Valid(_)
        ));
    }
    assert_eq!(
        store.reads.load(Ordering::SeqCst),
        after_first,
        "each check read the store"
    );

    accounts.revoke_token(&token.id).await.unwrap();
    assert!(matches!(
        accounts.check_token(&secret).await.unwrap(),
        TokenCheck::Revoked(_)
    ));
    // Unknown secrets are refused, and refused again (never cached as valid).
    for _ in 0..2 {
        assert!(matches!(
            accounts.check_token("sen_not-a-token").await.unwrap(),
            TokenCheck::Unknown
        ));
    }
}

#[tokio::test]
async fn a_known_user_is_read_once_and_changes_hold_at_once() {
    let (accounts, store) = accounts();
    accounts
        .add_user("binh", Role::Radiologist, "first-password")
        .await
        .unwrap();
    assert!(accounts
        .verify_password("binh", "first-password")
        .await
        .unwrap()
        .is_some());
    let after_first = store.reads.load(Ordering::SeqCst);
    for _ in 0..10 {
        assert_eq!(
            accounts.user("binh").await.unwrap().unwrap().role,
            Role::Radiologist
        );
    }
    assert_eq!(
        store.reads.load(Ordering::SeqCst),
        after_first,
        "each lookup read the store"
    );

    accounts
        .set_password("binh", "second-password")
        .await
        .unwrap();
    assert!(accounts
        .verify_password("binh", "first-password")
        .await
        .unwrap()
        .is_none());
    assert!(accounts
        .verify_password("binh", "second-password")
        .await
        .unwrap()
        .is_some());
    accounts.set_disabled("binh", true).await.unwrap();
    assert!(accounts.user("binh").await.unwrap().unwrap().disabled);
    assert!(accounts
        .verify_password("binh", "second-password")
        .await
        .unwrap()
        .is_none());
    accounts.remove_user("binh").await.unwrap();
    assert!(accounts.user("binh").await.unwrap().is_none());
}

/// Another node's change (here a second `Accounts` on the same store, as
/// two nodes share the PostgreSQL one) does not empty this node's cache:
/// the cached token and user still pass right after, and are refused once
/// their entries are `CACHE_TTL` old.
#[tokio::test]
async fn another_nodes_revocation_and_removal_hold_once_the_cache_entry_expires() {
    use access::accounts::CACHE_TTL;
    use std::time::{Duration, Instant};
    let (here, store) = accounts();
    let there = Accounts::new(store.clone(), PasswordHashing::new(1), 8);
    let (token, secret) = there
        .create_token("emr", Role::Referrer, None)
        .await
        .unwrap();
    there
        .add_user("binh", Role::Radiologist, "first-password")
        .await
        .unwrap();
    assert!(matches!(
        here.check_token(&secret).await.unwrap(),
        TokenCheck::Valid(_)
    ));
    assert!(here.user("binh").await.unwrap().is_some());
    let cached_at = Instant::now();
    there.revoke_token(&token.id).await.unwrap();
    there.remove_user("binh").await.unwrap();
    let reads = store.reads.load(Ordering::SeqCst);
    let (revoked, removed) = loop {
        let revoked = matches!(
            here.check_token(&secret).await.unwrap(),
            TokenCheck::Revoked(_)
        );
        let removed = here.user("binh").await.unwrap().is_none();
        if (revoked && removed) || cached_at.elapsed() > CACHE_TTL * 3 {
            break (revoked, removed);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(revoked, "the token revoked elsewhere is still accepted");
    assert!(removed, "the user removed elsewhere is still known");
    assert!(
        cached_at.elapsed() >= CACHE_TTL,
        "the cache did not serve the entries until they expired"
    );
    assert!(store.reads.load(Ordering::SeqCst) > reads);
}
