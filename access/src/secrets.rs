//! Password hashing (argon2id) and random secrets (machine tokens, session
//! ids).
//!
//! Hashing costs about 19 MiB and tens of milliseconds per call (argon2's
//! defaults, the OWASP minimum: m = 19 MiB, t = 2, p = 1), so the number of
//! hashes computed at once is capped by a semaphore and each runs on the
//! blocking pool.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::AccessError;

/// Bytes of randomness in a machine token or a session id (256 bits; the
/// issue asks for at least 128).
const SECRET_BYTES: usize = 32;

/// Prefix of machine tokens, so that they are recognisable in a leaked log
/// or a secret scanner.
pub const TOKEN_PREFIX: &str = "senpacs_";

/// `n` random bytes from the operating system.
pub fn random_bytes(n: usize) -> Result<Vec<u8>, AccessError> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).map_err(|e| AccessError::Random(e.to_string()))?;
    Ok(b)
}

/// A fresh random secret, URL-safe base64 without padding.
pub fn random_secret() -> Result<String, AccessError> {
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes(SECRET_BYTES)?))
}

/// A fresh machine token: the prefix and a random secret.
pub fn new_token() -> Result<String, AccessError> {
    Ok(format!("{TOKEN_PREFIX}{}", random_secret()?))
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Hashes and checks passwords, at most `concurrency` at a time.
#[derive(Clone)]
pub struct PasswordHashing {
    permits: Arc<Semaphore>,
    /// A hash of nothing anyone knows, verified for unknown user names so
    /// that they take as long as known ones.
    decoy: Arc<tokio::sync::OnceCell<String>>,
}

impl PasswordHashing {
    pub fn new(concurrency: usize) -> PasswordHashing {
        PasswordHashing {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            decoy: Arc::new(tokio::sync::OnceCell::new()),
        }
    }

    /// The argon2id PHC string of `password`, with a fresh random salt.
    pub async fn hash(&self, password: &str) -> Result<String, AccessError> {
        let salt = random_bytes(16)?;
        let password = password.to_owned();
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| AccessError::Hash("hashing is shut down".into()))?;
        tokio::task::spawn_blocking(move || {
            let salt =
                SaltString::encode_b64(&salt).map_err(|e| AccessError::Hash(e.to_string()))?;
            Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| AccessError::Hash(e.to_string()))
        })
        .await
        .map_err(|e| AccessError::Hash(e.to_string()))?
    }

    /// Whether `password` matches the PHC string `phc` (`None`: an unknown
    /// user, checked against a decoy so the answer takes as long).
    pub async fn verify(&self, password: &str, phc: Option<&str>) -> bool {
        let (phc, real) = match phc {
            Some(p) => (p.to_owned(), true),
            None => match self.decoy.get_or_try_init(|| self.hash("decoy")).await {
                Ok(d) => (d.clone(), false),
                Err(_) => return false,
            },
        };
        let password = password.to_owned();
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&phc).is_ok_and(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
        })
        .await
        .unwrap_or(false);
        ok && real
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_and_verify() -> Result<(), AccessError> {
        let h = PasswordHashing::new(2);
        let phc = h.hash("correct horse").await?;
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(h.verify("correct horse", Some(&phc)).await);
        assert!(!h.verify("wrong horse", Some(&phc)).await);
        assert!(!h.verify("decoy", None).await, "unknown users never verify");
        assert_ne!(phc, h.hash("correct horse").await?, "salted");
        Ok(())
    }

    #[test]
    fn tokens_carry_256_random_bits() -> Result<(), AccessError> {
        let t = new_token()?;
        let body = t.strip_prefix(TOKEN_PREFIX).unwrap_or_default();
        assert_eq!(body.len(), 43);
        assert_ne!(t, new_token()?);
        Ok(())
    }
}
