//! The memory bound of STOW-RS across requests: a budget of bytes
//! (`Limits::stow_bytes_in_flight`) that every part held in memory
//! (buffered parts, an inflated deflated header, the metadata form) takes
//! from before it is read, and gives back once it is stored.
//!
//! A reservation is taken whole before reading, never grown while others
//! wait, so requests cannot each hold part of the budget and wait for the
//! rest. Non-goals: memory of the archive's own store path (bounded by
//! `Limits` there).

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// How long a request waits for room before it is answered 503.
const WAIT: Duration = Duration::from_secs(30);

/// Bytes of STOW-RS data in memory, across requests.
#[derive(Debug, Clone)]
pub(crate) struct StowBudget {
    room: Arc<Semaphore>,
    total: usize,
}

/// Bytes taken from the budget; given back on drop.
#[derive(Debug, Default)]
pub(crate) struct Reservation {
    permit: Option<OwnedSemaphorePermit>,
}

impl StowBudget {
    pub fn new(bytes: u64) -> StowBudget {
        let total = usize::try_from(bytes)
            .unwrap_or(usize::MAX)
            .clamp(1, Semaphore::MAX_PERMITS);
        StowBudget {
            room: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// The whole budget: no single reservation is larger.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Takes `bytes` (at most the whole budget), waiting for room up to
    /// [`WAIT`]; then 503.
    pub async fn reserve(&self, bytes: usize) -> Result<Reservation, ApiError> {
        let n = u32::try_from(bytes.min(self.total)).unwrap_or(u32::MAX);
        if n == 0 {
            return Ok(Reservation { permit: None });
        }
        match tokio::time::timeout(WAIT, self.room.clone().acquire_many_owned(n)).await {
            Ok(Ok(permit)) => Ok(Reservation {
                permit: Some(permit),
            }),
            _ => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is busy storing other uploads; retry shortly",
            )),
        }
    }
}

impl Reservation {
    /// Keeps `bytes` of the reservation and gives the rest back.
    pub fn shrink_to(&mut self, bytes: usize) {
        if let Some(p) = self.permit.as_mut() {
            if bytes < p.num_permits() {
                let _ = p.split(p.num_permits() - bytes);
            }
        }
    }

    /// Adds another reservation to this one.
    pub fn merge(&mut self, other: Reservation) {
        match (self.permit.as_mut(), other.permit) {
            (Some(p), Some(o)) => p.merge(o),
            (None, o) => self.permit = o,
            (Some(_), None) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn reservations_share_one_budget() {
        let budget = StowBudget::new(100);
        let mut a = budget.reserve(80).await.unwrap();
        // No room for 30 more while `a` holds 80...
        assert!(budget.room.clone().try_acquire_many_owned(30).is_err());
        a.shrink_to(50);
        // ...until it gives back what it did not use.
        let b = budget.reserve(30).await.unwrap();
        assert_eq!(budget.room.available_permits(), 20);
        // More than the whole budget is capped to it.
        drop((a, b));
        let c = budget.reserve(1_000).await.unwrap();
        assert_eq!(budget.room.available_permits(), 0);
        drop(c);
        assert_eq!(budget.room.available_permits(), 100);
    }
}
