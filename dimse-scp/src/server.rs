//! The listener: binds, admits connections under the association limits,
//! runs one task per association, and drains them on shutdown.
//!
//! Admission, in two stages. A new connection first takes one of
//! `Limits::max_pending_connections` places and has `Limits::artim_timeout`
//! (the ARTIM timer, PS3.8 §9.1.5) to deliver its A-ASSOCIATE-RQ; a slow or
//! silent peer holds only that place, never an association slot. Once its
//! request is read it needs an association slot: a semaphore caps them
//! globally (`Limits::max_associations`) and a per-IP count per peer
//! (`Limits::max_associations_per_peer`). A request past either cap is
//! answered with A-ASSOCIATE-RJ transient, service-provider (presentation),
//! "local-limit-exceeded" (PS3.8 §9.3.4), which costs nothing more than the
//! request already read. Only past `max_pending_connections` is a new
//! connection closed unanswered.
//!
//! Shutdown (drain): the listener keeps accepting, and every new request is
//! answered with A-ASSOCIATE-RJ transient, "temporary congestion". Open
//! associations go on (several C-STOREs if the peer wants) until they
//! release; after `drain_timeout` the remaining ones are aborted, and the
//! archive discards any incomplete instance. Then the listener closes; a
//! connection it accepted before still gets its A-ASSOCIATE-RJ once its
//! request arrives (within ARTIM).
//!
//! DICOM TLS: with [`DimseConfig::tls`], a second listener accepts TLS
//! connections (PS3.15 Annex B). Its connections take the same places and
//! slots, and the TLS handshake counts against the ARTIM timer: a peer
//! must complete the handshake and deliver its A-ASSOCIATE-RQ within
//! `artim_timeout` of its connection. A failed handshake (plain DIMSE sent
//! to the TLS port, a TLS version below 1.2, a missing or untrusted client
//! certificate) closes that connection only.
//!
//! Accept errors (EMFILE, ENFILE, ENOBUFS...) back off, up to one second
//! between tries, and accepting resumes when they stop.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dicom_ul::pdu::{
    AssociationRJ, AssociationRJResult, AssociationRJServiceProviderPresentationReason,
    AssociationRJSource,
};
use pacs_core::{Archive, Limits};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::rustls::ServerConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, field, info, info_span, warn, Instrument};

use crate::association::{read_associate_rq, reject, serve_association, Shared, Transport};
use crate::binding::AeBindings;
use crate::negotiation::{self, Policy};
use crate::tls::{handshake, DimseTls, PeerIdentity};

/// Time given to aborted associations to wind down after the drain
/// time-out, and to connections still being refused when the listener
/// closes.
const ABORT_GRACE: Duration = Duration::from_secs(10);
/// Time a refusal may take after its request was read: the A-ASSOCIATE-RJ
/// written, then the wait for the peer's close (bounded in `association`).
const LINGER_AFTER_REFUSAL: Duration = Duration::from_secs(3);
/// First and longest wait between two accepts that failed.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
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
    /// A DNS name or IP address the peer's TLS client certificate must
    /// carry in its subjectAltName when it associates with this calling AE
    /// title (then only over TLS). `None`: not checked.
    pub tls_subject: Option<String>,
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
    /// `idle_timeout`, `artim_timeout`, `max_pending_connections` (and the
    /// archive enforces its own limits).
    pub limits: Limits,
    /// On shutdown, how long open associations may go on (until they
    /// release) before they are aborted.
    pub drain_timeout: Duration,
    /// Most matches one C-FIND returns; past it the response ends with
    /// Success after that many pending responses (the cap is logged).
    pub max_find_results: usize,
    /// The server's one pixel-work service, shared with DICOMweb: C-GET
    /// and C-MOVE conversions run there. `None`: one of its own, built
    /// from `limits`.
    pub pixel: Option<Arc<imaging::service::PixelService>>,
    /// DICOM TLS on a second port, if any.
    pub tls: Option<DimseTls>,
    /// Told when an MPPS starts, completes or is discontinued (the order
    /// model's hook; a no-op by default).
    pub step_status: pacs_core::mpps::StepStatusHook,
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
            tls: None,
            step_status: Default::default(),
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
    /// The DICOM TLS listener and its configuration.
    tls: Option<(TcpListener, Arc<ServerConfig>)>,
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
        AeBindings::new(&config.remote_aes).map_err(DimseError::Config)?;
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
        if config.limits.artim_timeout.is_zero() {
            return Err(DimseError::Config("artim_timeout must not be zero".into()));
        }
        if config.limits.max_pending_connections == 0 || config.limits.max_associations == 0 {
            return Err(DimseError::Config(
                "max_pending_connections and max_associations must not be zero".into(),
            ));
        }
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| DimseError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let tls = match &config.tls {
            None => None,
            Some(t) => {
                let l = TcpListener::bind(t.listen)
                    .await
                    .map_err(|source| DimseError::Bind {
                        addr: t.listen,
                        source,
                    })?;
                Some((l, t.server_config.clone()))
            }
        };
        Ok(DimseServer {
            listener,
            tls,
            config,
        })
    }

    /// The address the TLS listener actually bound, if there is one.
    pub fn tls_local_addr(&self) -> Option<std::io::Result<SocketAddr>> {
        self.tls.as_ref().map(|(l, _)| l.local_addr())
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
        let DimseServer {
            listener,
            tls,
            config,
        } = self;
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
            bindings: AeBindings::new(&config.remote_aes).map_err(DimseError::Config)?,
            max_find_results: config.max_find_results.max(1),
            step_status: config.step_status.clone(),
            shutdown: CancellationToken::new(),
            abort: CancellationToken::new(),
            pixel: config
                .pixel
                .clone()
                .unwrap_or_else(|| Arc::new(imaging::service::PixelService::new(limits, 0))),
        });
        let admission = Arc::new(Admission {
            pending: Arc::new(Semaphore::new(limits.max_pending_connections)),
            slots: Arc::new(Semaphore::new(limits.max_associations)),
            per_peer: Arc::new(PeerCounts::new(limits.max_associations_per_peer)),
            artim: limits.artim_timeout,
            associations: TaskTracker::new(),
        });
        // Every connection task, associated or not.
        let tasks = TaskTracker::new();
        let local = listener.local_addr()?;
        info!(addr = %local, ae_title = %shared.policy.ae_title, "DIMSE listener accepting");
        if let Some((l, _)) = &tls {
            info!(addr = %l.local_addr()?, "DICOM TLS listener accepting");
        }
        let tls_listener = tls.as_ref().map(|(l, _)| l);

        // The drain: starts when `shutdown` completes, ends when the open
        // associations have released, or are aborted after `drain_timeout`.
        let drain = {
            let shared = shared.clone();
            let associations = admission.associations.clone();
            let drain_timeout = config.drain_timeout;
            async move {
                shutdown.await;
                // Set before the tracker is closed: a connection that takes
                // an association token afterwards sees it and is refused.
                shared.shutdown.cancel();
                associations.close();
                info!(
                    open = associations.len(),
                    drain_timeout = ?drain_timeout,
                    "DIMSE draining: new associations refused, open ones may finish"
                );
                if tokio::time::timeout(drain_timeout, associations.wait())
                    .await
                    .is_err()
                {
                    warn!(
                        remaining = associations.len(),
                        "associations still open after the drain time-out; aborting them"
                    );
                    shared.abort.cancel();
                    if tokio::time::timeout(ABORT_GRACE, associations.wait())
                        .await
                        .is_err()
                    {
                        warn!(
                            remaining = associations.len(),
                            "associations did not end after abort"
                        );
                    }
                }
            }
        };
        tokio::pin!(drain);
        let mut backoff = ACCEPT_BACKOFF_MIN;
        loop {
            let (socket, peer, over_tls) = tokio::select! {
                biased;
                _ = &mut drain => break,
                accepted = accept_on(&listener, tls_listener) => match accepted {
                    Ok(a) => {
                        backoff = ACCEPT_BACKOFF_MIN;
                        a
                    }
                    Err(e) => {
                        // EMFILE and the like: wait rather than spin, and
                        // go on accepting once descriptors are free again.
                        error!(error = %e, "accept failed; backing off {backoff:?}");
                        tokio::select! {
                            biased;
                            _ = &mut drain => break,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = next_backoff(backoff);
                        continue;
                    }
                },
            };
            let Ok(pending) = admission.pending.clone().try_acquire_owned() else {
                warn!(peer = %peer, "too many connections awaiting association; closed unanswered");
                continue;
            };
            if let Err(e) = socket.set_nodelay(true) {
                warn!(peer = %peer, error = %e, "cannot set TCP_NODELAY");
            }
            let span = info_span!("association", peer = %peer,
                calling_ae = field::Empty, called_ae = field::Empty);
            let tls_config = if over_tls {
                tls.as_ref().map(|(_, c)| c.clone())
            } else {
                None
            };
            tasks.spawn(
                admit(
                    socket,
                    peer,
                    tls_config,
                    pending,
                    admission.clone(),
                    shared.clone(),
                )
                .instrument(span),
            );
        }
        drop(listener);
        drop(tls);
        // Connections accepted before the listener closed still get their
        // answer: each reads its A-ASSOCIATE-RQ (within ARTIM) and, the
        // shutdown flag being set, is rejected (transient), never cut off.
        // No association can start any more (see `admit`), so only
        // requests being read and refusals being sent remain; what is left
        // after ARTIM (bounded by the grace) is aborted.
        tasks.close();
        let grace = admission.artim.min(ABORT_GRACE) + LINGER_AFTER_REFUSAL;
        if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
            shared.abort.cancel();
            if tokio::time::timeout(ABORT_GRACE, tasks.wait())
                .await
                .is_err()
            {
                warn!(
                    remaining = tasks.len(),
                    "connections did not end after the listener closed"
                );
            }
        }
        info!("DIMSE listener stopped");
        Ok(())
    }
}

/// The next connection on the plain listener or the TLS one (`true`).
async fn accept_on(
    plain: &TcpListener,
    tls: Option<&TcpListener>,
) -> std::io::Result<(TcpStream, SocketAddr, bool)> {
    let tls_accept = async {
        match tls {
            Some(l) => l.accept().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        a = plain.accept() => a.map(|(s, p)| (s, p, false)),
        a = tls_accept => a.map(|(s, p)| (s, p, true)),
    }
}

/// A-ASSOCIATE-RJ transient, service-provider (presentation), "temporary
/// congestion" (PS3.8 §9.3.4): the server is shutting down, a later
/// attempt (to it or its successor) may succeed.
fn reject_shutting_down() -> AssociationRJ {
    AssociationRJ {
        result: AssociationRJResult::Transient,
        source: AssociationRJSource::ServiceProviderPresentation(
            AssociationRJServiceProviderPresentationReason::TemporaryCongestion,
        ),
    }
}

/// The next wait after an accept failed again.
fn next_backoff(backoff: Duration) -> Duration {
    (backoff * 2).min(ACCEPT_BACKOFF_MAX)
}

/// What admission of new connections needs.
struct Admission {
    /// Places for connections not associated yet.
    pending: Arc<Semaphore>,
    /// Association slots, global and per peer.
    slots: Arc<Semaphore>,
    per_peer: Arc<PeerCounts>,
    artim: Duration,
    /// The associations the drain waits for.
    associations: TaskTracker,
}

/// One connection: its A-ASSOCIATE-RQ within ARTIM, then an association
/// slot or a refusal (see the module documentation).
async fn admit(
    socket: TcpStream,
    peer: SocketAddr,
    tls: Option<Arc<ServerConfig>>,
    pending: OwnedSemaphorePermit,
    admission: Arc<Admission>,
    shared: Arc<Shared>,
) {
    let artim = admission.artim;
    let read = async move {
        let started = tokio::time::Instant::now();
        let (stream, identity): (Box<dyn Transport>, PeerIdentity) = match tls {
            None => (Box::new(socket), PeerIdentity::Plain),
            // The handshake is part of the ARTIM time (PS3.15 B.1: the TLS
            // connection is established before the association request).
            Some(config) => match tokio::time::timeout(artim, handshake(config, socket)).await {
                Ok(Ok((s, identity))) => (Box::new(s), identity),
                Ok(Err(e)) => {
                    info!(error = %e, "TLS handshake failed; closed");
                    return None;
                }
                Err(_) => {
                    info!("no TLS handshake within the ARTIM time-out; closed");
                    return None;
                }
            },
        };
        let left = artim.saturating_sub(started.elapsed());
        if left.is_zero() {
            info!("no association request within the ARTIM time-out; closed");
            return None;
        }
        read_associate_rq(stream, identity, peer, left).await
    };
    let (conn, rq) = tokio::select! {
        biased;
        _ = shared.abort.cancelled() => return,
        r = read => match r {
            Some(r) => r,
            None => return,
        },
    };
    // Taken before looking at the shutdown flag, so that the drain cannot
    // miss an association admitted at the last moment.
    let token = admission.associations.token();
    if shared.shutdown.is_cancelled() {
        drop(token);
        info!("shutting down; association rejected (transient, temporary congestion)");
        return reject(conn, reject_shutting_down()).await;
    }
    let slot = admission.slots.clone().try_acquire_owned().ok();
    let peer_slot = admission.per_peer.clone().try_take(peer.ip());
    let (Some(slot), Some(peer_slot)) = (slot, peer_slot) else {
        drop(token);
        info!("association limit reached; rejected (transient, local limit exceeded)");
        // The refusal keeps its pending place: refusals stay bounded.
        return reject(conn, negotiation::reject_local_limit()).await;
    };
    drop(pending);
    serve_association(conn, rq, shared, (slot, peer_slot, token)).await;
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
    fn accept_backoff_doubles_up_to_its_cap() {
        let mut b = ACCEPT_BACKOFF_MIN;
        let mut waits = Vec::new();
        for _ in 0..12 {
            waits.push(b);
            b = next_backoff(b);
        }
        assert_eq!(waits[1], ACCEPT_BACKOFF_MIN * 2);
        assert!(waits.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(waits[11], ACCEPT_BACKOFF_MAX);
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
        config.limits.artim_timeout = Duration::ZERO;
        assert!(matches!(
            DimseServer::bind(config.clone()).await,
            Err(DimseError::Config(_))
        ));
        config.limits.artim_timeout = Duration::from_secs(1);
        config.limits.max_pending_connections = 0;
        assert!(matches!(
            DimseServer::bind(config.clone()).await,
            Err(DimseError::Config(_))
        ));
        config.limits.max_pending_connections = 1;
        config.ae_title = "WAY_TOO_LONG_AE_TITLE".into();
        assert!(matches!(
            DimseServer::bind(config).await,
            Err(DimseError::Config(_))
        ));
    }
}
