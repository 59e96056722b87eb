//! The listener: binds, admits connections under the association limits,
//! runs one task per association, and drains them on shutdown.
//!
//! Admission: a semaphore caps associations globally
//! (`Limits::max_associations`) and a per-IP count caps them per peer
//! (`Limits::max_associations_per_peer`). A connection past either cap still
//! gets an answer: its A-ASSOCIATE-RQ is read and refused with
//! A-ASSOCIATE-RJ transient, "local-limit-exceeded" (PS3.8 §9.3.4), by a
//! small bounded pool of reject tasks; past that pool the connection is
//! closed unread.
//!
//! Shutdown: the accept loop stops, every association
//! finishes the message it is in (a C-STORE in flight is stored and
//! answered) and is then aborted; after `drain_timeout` the stragglers are
//! aborted at once, and the archive discards any incomplete instance.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pacs_core::{Archive, Limits};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, field, info, info_span, warn, Instrument};

use crate::association::{reject_over_limit, serve_connection, Shared};
use crate::negotiation::Policy;

/// Connections being refused at once (past the association caps); more
/// are closed without an answer.
const MAX_REJECTING: usize = 32;
/// Bound on reading the A-ASSOCIATE-RQ of a connection we refuse.
const REJECT_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time given to aborted associations to wind down after the drain
/// time-out.
const ABORT_GRACE: Duration = Duration::from_secs(10);
/// Largest AE title (PS3.5 §6.2, AE).
const MAX_AE_TITLE_LEN: usize = 16;

/// Default of [`DimseConfig::max_find_results`].
pub const DEFAULT_MAX_FIND_RESULTS: usize = 10_000;

/// A peer application entity we know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteAe {
    pub ae_title: String,
    pub host: String,
    pub port: u16,
}

/// The DIMSE listener's configuration.
#[derive(Debug, Clone)]
pub struct DimseConfig {
    pub listen: SocketAddr,
    /// Our AE title: the Called AE Title associations must use.
    pub ae_title: String,
    /// Accept associations only from the AE titles in `remote_aes`.
    pub strict_ae: bool,
    pub remote_aes: Vec<RemoteAe>,
    /// Uses `max_pdu_len`, `max_associations`, `max_associations_per_peer`,
    /// `idle_timeout` (and the archive enforces its own limits).
    pub limits: Limits,
    /// On shutdown, how long associations may take to finish the message
    /// they are in before they are aborted.
    pub drain_timeout: Duration,
    /// Most matches one C-FIND returns; past it the response ends with
    /// Success after that many pending responses (the cap is logged).
    pub max_find_results: usize,
    /// The server's one pixel-work service, shared with DICOMweb: C-GET
    /// and C-MOVE conversions run there. `None`: one of its own, built
    /// from `limits`.
    pub pixel: Option<Arc<imaging::service::PixelService>>,
}

impl Default for DimseConfig {
    fn default() -> Self {
        DimseConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 11112)),
            ae_title: "PACS".to_owned(),
            strict_ae: false,
            remote_aes: Vec::new(),
            limits: Limits::default(),
            drain_timeout: Duration::from_secs(30),
            max_find_results: DEFAULT_MAX_FIND_RESULTS,
            pixel: None,
        }
    }
}

/// Errors of the listener itself (an association's errors end only that
/// association and are logged).
#[derive(Debug, thiserror::Error)]
pub enum DimseError {
    #[error("invalid DIMSE configuration: {0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("listener error: {0}")]
    Io(#[from] std::io::Error),
}

/// A bound, not yet running, DIMSE listener.
pub struct DimseServer {
    listener: TcpListener,
    config: DimseConfig,
}

fn validate_ae_title(ae: &str) -> Result<(), DimseError> {
    let t = ae.trim_matches(' ');
    if t.is_empty()
        || t.len() > MAX_AE_TITLE_LEN
        || !t.chars().all(|c| (' '..='~').contains(&c) && c != '\\')
    {
        return Err(DimseError::Config(format!(
            "AE title {ae:?} must be 1 to 16 printable ASCII characters without backslash"
        )));
    }
    Ok(())
}

impl DimseServer {
    /// Checks the configuration and binds the listening socket.
    pub async fn bind(config: DimseConfig) -> Result<DimseServer, DimseError> {
        validate_ae_title(&config.ae_title)?;
        for r in &config.remote_aes {
            validate_ae_title(&r.ae_title)?;
        }
        let pdu = config.limits.max_pdu_len;
        if !(dicom_ul::pdu::MINIMUM_PDU_SIZE..=dicom_ul::pdu::MAXIMUM_PDU_SIZE).contains(&pdu) {
            return Err(DimseError::Config(format!(
                "max_pdu_len {pdu} is outside {}..={}",
                dicom_ul::pdu::MINIMUM_PDU_SIZE,
                dicom_ul::pdu::MAXIMUM_PDU_SIZE
            )));
        }
        if config.limits.idle_timeout.is_zero() {
            return Err(DimseError::Config("idle_timeout must not be zero".into()));
        }
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| DimseError::Bind {
                    addr: config.listen,
                    source,
                })?;
        Ok(DimseServer { listener, config })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts associations until `shutdown` completes, then drains them
    /// (see the module documentation) and returns.
    pub async fn run(
        self,
        archive: Archive,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), DimseError> {
        let DimseServer { listener, config } = self;
        let limits = &config.limits;
        let shared = Arc::new(Shared {
            archive,
            policy: Policy {
                ae_title: config.ae_title.trim_matches(' ').to_owned(),
                strict_ae: config.strict_ae,
                known_calling_aes: config
                    .remote_aes
                    .iter()
                    .map(|r| r.ae_title.trim_matches(' ').to_owned())
                    .collect(),
                max_pdu_len: limits.max_pdu_len,
            },
            idle_timeout: limits.idle_timeout,
            remote_aes: config.remote_aes.clone(),
            max_find_results: config.max_find_results.max(1),
            shutdown: CancellationToken::new(),
            abort: CancellationToken::new(),
            pixel: config
                .pixel
                .clone()
                .unwrap_or_else(|| Arc::new(imaging::service::PixelService::new(limits, 0))),
        });
        let slots = Arc::new(Semaphore::new(limits.max_associations));
        let rejecting = Arc::new(Semaphore::new(MAX_REJECTING));
        let per_peer = Arc::new(PeerCounts::new(limits.max_associations_per_peer));
        let tracker = TaskTracker::new();
        let local = listener.local_addr()?;
        info!(addr = %local, ae_title = %shared.policy.ae_title, "DIMSE listener accepting");

        tokio::pin!(shutdown);
        let mut backoff = Duration::from_millis(10);
        loop {
            let (socket, peer) = tokio::select! {
                biased;
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => {
                        backoff = Duration::from_millis(10);
                        a
                    }
                    Err(e) => {
                        // EMFILE and the like: wait rather than spin.
                        error!(error = %e, "accept failed; backing off {backoff:?}");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                        continue;
                    }
                },
            };
            if let Err(e) = socket.set_nodelay(true) {
                warn!(peer = %peer, error = %e, "cannot set TCP_NODELAY");
            }
            let slot = slots.clone().try_acquire_owned().ok();
            let peer_slot = per_peer.clone().try_take(peer.ip());
            match (slot, peer_slot) {
                (Some(slot), Some(peer_slot)) => {
                    let span = info_span!("association", peer = %peer,
                        calling_ae = field::Empty, called_ae = field::Empty);
                    let shared = shared.clone();
                    tracker.spawn(
                        async move {
                            serve_connection(socket, shared).await;
                            drop(peer_slot);
                            drop(slot);
                        }
                        .instrument(span),
                    );
                }
                _ => refuse(socket, peer, &rejecting, &tracker, limits),
            }
        }
        drop(listener);
        info!("DIMSE listener closed; draining associations");
        shared.shutdown.cancel();
        tracker.close();
        if tokio::time::timeout(config.drain_timeout, tracker.wait())
            .await
            .is_err()
        {
            warn!(
                remaining = tracker.len(),
                "associations still busy after the drain time-out; aborting them"
            );
            shared.abort.cancel();
            if tokio::time::timeout(ABORT_GRACE, tracker.wait())
                .await
                .is_err()
            {
                warn!(
                    remaining = tracker.len(),
                    "associations did not end after abort"
                );
            }
        }
        info!("DIMSE listener stopped");
        Ok(())
    }
}

fn refuse(
    socket: TcpStream,
    peer: SocketAddr,
    rejecting: &Arc<Semaphore>,
    tracker: &TaskTracker,
    limits: &Limits,
) {
    let Ok(permit) = rejecting.clone().try_acquire_owned() else {
        warn!(peer = %peer, "association limit reached and too many refusals pending; connection closed");
        return;
    };
    info!(peer = %peer, "association limit reached; rejecting (transient, local limit exceeded)");
    let max_pdu = limits
        .max_pdu_len
        .max(crate::association::MAX_ASSOCIATE_RQ_LEN);
    let timeout = limits.idle_timeout.min(REJECT_READ_TIMEOUT);
    tracker.spawn(async move {
        reject_over_limit(socket, max_pdu, timeout).await;
        drop(permit);
    });
}

/// Binds and runs a DIMSE listener until `shutdown` completes.
pub async fn serve(
    config: DimseConfig,
    archive: Archive,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DimseError> {
    DimseServer::bind(config)
        .await?
        .run(archive, shutdown)
        .await
}

/// Open associations per peer IP.
struct PeerCounts {
    max: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One association's share of its peer's count; released on drop.
struct PeerSlot {
    counts: Arc<PeerCounts>,
    ip: IpAddr,
}

impl PeerCounts {
    fn new(max: usize) -> PeerCounts {
        PeerCounts {
            max,
            counts: Mutex::new(HashMap::new()),
        }
    }

    fn try_take(self: Arc<Self>, ip: IpAddr) -> Option<PeerSlot> {
        {
            let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
            let n = counts.entry(ip).or_insert(0);
            if *n >= self.max {
                return None;
            }
            *n += 1;
        }
        Some(PeerSlot { counts: self, ip })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_peer_counts() {
        let counts = Arc::new(PeerCounts::new(2));
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let s1 = counts.clone().try_take(a);
        let s2 = counts.clone().try_take(a);
        assert!(s1.is_some() && s2.is_some());
        assert!(counts.clone().try_take(a).is_none());
        assert!(counts.clone().try_take(b).is_some());
        drop(s1);
        assert!(counts.clone().try_take(a).is_some());
        drop(s2);
        assert!(counts.counts.lock().map(|c| c.is_empty()).unwrap_or(false));
    }

    #[test]
    fn ae_titles() {
        assert!(validate_ae_title("PACS").is_ok());
        assert!(validate_ae_title(" PACS ").is_ok());
        assert!(validate_ae_title("SIXTEEN_CHARS_OK").is_ok());
        assert!(validate_ae_title("SEVENTEEN_CHARS_X").is_err());
        assert!(validate_ae_title("").is_err());
        assert!(validate_ae_title("   ").is_err());
        assert!(validate_ae_title("A\\B").is_err());
        assert!(validate_ae_title("Ä").is_err());
    }

    #[tokio::test]
    async fn bind_checks_limits() {
        let mut config = DimseConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..DimseConfig::default()
        };
        config.limits.max_pdu_len = 100;
        assert!(matches!(
            DimseServer::bind(config.clone()).await,
            Err(DimseError::Config(_))
        ));
        config.limits.max_pdu_len = 16384;
        config.limits.idle_timeout = Duration::ZERO;
        assert!(matches!(
            DimseServer::bind(config.clone()).await,
            Err(DimseError::Config(_))
        ));
        config.limits.idle_timeout = Duration::from_secs(1);
        config.ae_title = "WAY_TOO_LONG_AE_TITLE".into();
        assert!(matches!(
            DimseServer::bind(config).await,
            Err(DimseError::Config(_))
        ));
    }
}
