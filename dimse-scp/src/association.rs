//! One association, from the A-ASSOCIATE-RQ to the release or abort: the
//! thin IO loop around the message layer.
//!
//! The loop reads PDUs (each read bounded by the idle time-out), feeds their
//! PDVs to the [`Reassembler`], and hands each complete command to
//! [`Association::dispatch`], which is the extension point for services:
//! it matches the command field and says what to do with the data set that
//! may follow (stream it to the archive, or read and discard it) and what
//! to answer. Requests are served one at a time (no asynchronous operations
//! window is negotiated, PS3.7 D.3.3.3). A Query/Retrieve request becomes
//! an [`Operation`] that the loop advances one response at a time, reading
//! the peer between two steps: a C-CANCEL for the operation ends it with
//! Cancel (FE00), a C-STORE-RSP completes a C-GET sub-operation. Any other
//! request while an operation runs is refused with 0110H (processing
//! failure) and its data set dropped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dicom_ul::association::Error as UlError;
use dicom_ul::pdu::{
    AbortRQServiceProviderReason, AbortRQSource, AssociationRJ, AssociationRQ, PDataValue,
    PDataValueType,
};
use dicom_ul::Pdu;
use pacs_core::{Archive, StoreStatus, Uid};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::audit::{self as peer_audit, Peer, StudyShare};
use crate::binding::{AeBindings, Binding};
use crate::identifier::{retrieve_keys, FindRequest, Refusal};
use crate::message::pdv::MAX_COMMAND_SET_LEN;
use crate::message::{
    can_carry_pdv, command_field, tags, CStoreRq, CStoreRsp, CommandSet, GroupLength, NRequest,
    NResponse, Pdv, Reassembled, Reassembler, Response,
};
use crate::negotiation::{
    self, AcceptedContext, Negotiated, Policy, QrModel, QrOperation, Service,
};
use crate::nservice::{self, NRoute};
use crate::qr::{
    self, message_pdus, FindOp, GetOp, MoveEvent, MoveJob, Operation, QrRequest, SendError, SubOps,
};
use crate::server::RemoteAe;
use crate::status::{Status, StatusKind};
use crate::store::{failure_status, StoreInFlight};
use crate::tls::{check_client_certificate, reject_certificate_mismatch, PeerIdentity};
use pacs_core::audit::AuditAction;
use pacs_core::jobs::JobDone;

/// Largest Q/R identifier we read (they hold a few keys; a bigger one is
/// refused with A700 after being read and dropped).
pub(crate) const MAX_IDENTIFIER_LEN: usize = 1024 * 1024;
/// How long we wait for the peer to close after sending an A-ABORT,
/// A-ASSOCIATE-RJ or A-RELEASE-RP (reading and discarding), so the peer
/// reads our PDU before the connection closes (Sta13, PS3.8 §9.2).
const LINGER: Duration = Duration::from_secs(2);
/// How much we discard while lingering.
const LINGER_MAX_BYTES: usize = 1024 * 1024;
/// Largest A-ASSOCIATE-RQ read, whatever `max_pdu_len` says: the maximum
/// length negotiated governs P-DATA-TF PDUs, and a request proposing 128
/// contexts with several transfer syntaxes each can exceed a small one.
pub(crate) const MAX_ASSOCIATE_RQ_LEN: u32 = 256 * 1024;

/// What every association of a server shares.
pub(crate) struct Shared {
    pub archive: Archive,
    pub policy: Policy,
    pub idle_timeout: Duration,
    /// C-MOVE destinations (and the callers allowed to query/retrieve).
    pub remote_aes: Vec<RemoteAe>,
    /// Most matches one C-FIND answers.
    pub max_find_results: usize,
    /// Which addresses each listed AE title may call from.
    pub bindings: AeBindings,
    /// Graceful shutdown (drain): open associations go on until they
    /// release; new ones are refused.
    pub shutdown: CancellationToken,
    /// Hard stop after the drain time-out: abort now.
    pub abort: CancellationToken,
    /// The server's pixel-work service (C-GET / C-MOVE conversions).
    pub pixel: Arc<imaging::service::PixelService>,
    /// Told of MPPS status changes (the order model's hook).
    pub step_status: pacs_core::mpps::StepStatusHook,
}

/// Why a connection ended abnormally.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    #[error("peer closed the connection")]
    Closed,
    #[error("idle for longer than the {0:?} time-out")]
    Timeout(Duration),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("unreadable PDU: {0}")]
    Protocol(String),
}

/// The byte stream an association runs over: a TCP socket, or a TLS
/// stream around one. Everything above it is the same for both.
pub(crate) trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

/// The stream with PDU framing (`dicom-ul`'s codec) and time-outs.
pub(crate) struct Conn {
    socket: Box<dyn Transport>,
    /// Plain or TLS, and the client certificate.
    peer: PeerIdentity,
    /// The peer's TCP address, when known.
    pub(crate) address: Option<std::net::SocketAddr>,
    read_buf: BytesMut,
    write_buf: Vec<u8>,
    /// Largest PDU we accept (what we announced).
    max_pdu: u32,
    timeout: Duration,
}

impl Conn {
    pub(crate) fn new(
        socket: Box<dyn Transport>,
        peer: PeerIdentity,
        max_pdu: u32,
        timeout: Duration,
    ) -> Conn {
        Conn {
            socket,
            peer,
            address: None,
            read_buf: BytesMut::new(),
            write_buf: Vec::with_capacity(16 * 1024),
            max_pdu,
            timeout,
        }
    }

    /// The next PDU, within the idle time-out.
    pub(crate) async fn read_pdu(&mut self) -> Result<Pdu, ConnError> {
        self.read_pdu_for(Some(self.timeout)).await
    }

    /// The next PDU, within `timeout` if any. Cancel-safe: bytes already
    /// read stay in the buffer for the next call.
    async fn read_pdu_for(&mut self, timeout: Option<Duration>) -> Result<Pdu, ConnError> {
        let read = dicom_ul::association::read_pdu_from_wire_async(
            &mut self.socket,
            &mut self.read_buf,
            self.max_pdu,
            true,
        );
        let result = match timeout {
            Some(t) => match tokio::time::timeout(t, read).await {
                Err(_) => return Err(ConnError::Timeout(t)),
                Ok(r) => r,
            },
            None => read.await,
        };
        match result {
            Ok(pdu) => Ok(pdu),
            Err(UlError::ConnectionClosed { .. }) => Err(ConnError::Closed),
            Err(e) => Err(ConnError::Protocol(error_chain(&e))),
        }
    }

    pub(crate) async fn write_pdu(&mut self, pdu: &Pdu) -> Result<(), ConnError> {
        self.write_pdus(std::slice::from_ref(pdu)).await
    }

    /// Writes several PDUs with one `write_all`.
    pub(crate) async fn write_pdus(&mut self, pdus: &[Pdu]) -> Result<(), ConnError> {
        self.write_buf.clear();
        for pdu in pdus {
            dicom_ul::write_pdu(&mut self.write_buf, pdu)
                .map_err(|e| ConnError::Protocol(e.to_string()))?;
        }
        match tokio::time::timeout(self.timeout, self.socket.write_all(&self.write_buf)).await {
            Err(_) => Err(ConnError::Timeout(self.timeout)),
            Ok(r) => Ok(r?),
        }
    }

    /// Sends a last PDU (A-ABORT, A-ASSOCIATE-RJ, A-RELEASE-RP) and closes.
    /// After a PDU, the peer closes first: we wait in Sta13 ("awaiting
    /// transport connection close", PS3.8 §9.2, actions AE-8, AR-4, AA-1),
    /// reading and discarding, until it does or [`LINGER`] (our ARTIM for
    /// this state) passes, and only then close. Closing at once would race
    /// the peer's reading of our PDU: a requestor that sees the connection
    /// close before it has handled the A-ASSOCIATE-RJ reports an abort,
    /// and unread data would turn our close into a reset that destroys the
    /// PDU. Without a PDU (ARTIM expiry, PS3.8 AA-2) the connection is
    /// half-closed at once, then drained the same way.
    pub(crate) async fn close_with(mut self, pdu: Option<&Pdu>) {
        match pdu {
            Some(pdu) => {
                if self.write_pdu(pdu).await.is_err() {
                    return;
                }
                self.drain_until_closed().await;
                let _ = self.socket.shutdown().await;
            }
            None => {
                let _ = self.socket.shutdown().await;
                self.drain_until_closed().await;
            }
        }
    }

    /// Reads and discards until the peer closes, [`LINGER`] passes or
    /// [`LINGER_MAX_BYTES`] were discarded.
    async fn drain_until_closed(&mut self) {
        let mut scratch = [0u8; 8192];
        let mut discarded = 0usize;
        let deadline = tokio::time::Instant::now() + LINGER;
        while discarded < LINGER_MAX_BYTES {
            match tokio::time::timeout_at(deadline, self.socket.read(&mut scratch)).await {
                Ok(Ok(n)) if n > 0 => discarded += n,
                _ => break,
            }
        }
    }
}

/// Sends a message: its command set, then its data set if any, each cut to
/// the peer's maximum PDU, in one write (a C-FIND pending response is one
/// segment, not two).
pub(crate) async fn write_message(
    conn: &mut Conn,
    peer_max_pdu: u32,
    context_id: u8,
    command: &CommandSet,
    data: Option<&[u8]>,
) -> Result<(), ConnError> {
    conn.write_pdus(&message_pdus(context_id, command, data, peer_max_pdu))
        .await
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

fn abort_pdu(reason: AbortRQServiceProviderReason) -> Pdu {
    Pdu::AbortRQ {
        source: AbortRQSource::ServiceProvider(reason),
    }
}

/// Our own abort (shutdown): the service user, not a protocol fault.
fn user_abort_pdu() -> Pdu {
    Pdu::AbortRQ {
        source: AbortRQSource::ServiceUser,
    }
}

/// Sta2 (PS3.8 §9.2): reads the A-ASSOCIATE-RQ of a new connection, the
/// whole request within the ARTIM time-out (PS3.8 §9.1.5), so that a peer
/// that trickles its request or never sends one is closed after `artim`,
/// not after the idle time-out. `None` when the connection has been dealt
/// with (closed, or aborted for a PDU other than a request).
pub(crate) async fn read_associate_rq(
    socket: Box<dyn Transport>,
    peer: PeerIdentity,
    address: std::net::SocketAddr,
    artim: Duration,
) -> Option<(Conn, AssociationRQ)> {
    let mut conn = Conn::new(socket, peer, MAX_ASSOCIATE_RQ_LEN, artim);
    conn.address = Some(address);
    match conn.read_pdu().await {
        Ok(Pdu::AssociationRQ(rq)) => Some((conn, rq)),
        Ok(other) => {
            debug!(pdu = %other.short_description(), "expected an A-ASSOCIATE-RQ");
            let reason = match other {
                Pdu::Unknown { .. } => AbortRQServiceProviderReason::UnrecognizedPdu,
                _ => AbortRQServiceProviderReason::UnexpectedPdu,
            };
            conn.close_with(Some(&abort_pdu(reason))).await;
            None
        }
        Err(ConnError::Closed) => None,
        // ARTIM expiry: close the transport, nothing to send (PS3.8 AA-2).
        Err(e @ ConnError::Timeout(_)) => {
            info!(error = %e, "no complete association request within the ARTIM time-out; closed");
            conn.close_with(None).await;
            None
        }
        Err(e) => {
            info!(error = %e, "no valid association request");
            let pdu = abort_pdu(AbortRQServiceProviderReason::InvalidPduParameter);
            conn.close_with(Some(&pdu)).await;
            None
        }
    }
}

/// Refuses an association whose request has been read: the A-ASSOCIATE-RJ,
/// then the close (bounded by [`LINGER`]).
pub(crate) async fn reject(conn: Conn, rj: AssociationRJ) {
    conn.close_with(Some(&Pdu::AssociationRJ(rj))).await;
}

/// Serves one association from its request to its end. Never panics on
/// input; returns when the association is released or aborted, or the
/// connection fails. `held` (the association's slots) is dropped when the
/// association is over and before its last PDU (A-RELEASE-RP, A-ABORT,
/// A-ASSOCIATE-RJ) goes out: a peer that has read that PDU finds the slot
/// free for its next association.
pub(crate) async fn serve_association<H>(
    conn: Conn,
    rq: AssociationRQ,
    shared: Arc<Shared>,
    held: H,
) {
    let (conn, last) = run_association(conn, rq, shared).await;
    drop(held);
    if let Some(conn) = conn {
        conn.close_with(last.as_ref()).await;
    }
}

/// The association until its end: the connection (`None` if it is gone)
/// and the last PDU to send.
async fn run_association(
    mut conn: Conn,
    rq: AssociationRQ,
    shared: Arc<Shared>,
) -> (Option<Conn>, Option<Pdu>) {
    conn.timeout = shared.idle_timeout;
    let span = tracing::Span::current();
    span.record("calling_ae", rq.calling_ae_title.as_str());
    span.record("called_ae", rq.called_ae_title.as_str());
    let peer = Peer {
        calling_ae: rq.calling_ae_title.trim_matches(' ').to_owned(),
        address: conn.address.map(|a| a.ip().to_canonical()),
        our_ae: shared.policy.ae_title.clone(),
    };
    // A calling AE bound to a TLS client certificate (tls_subject).
    let certificate =
        check_client_certificate(&rq.calling_ae_title, &shared.remote_aes, &conn.peer)
            .map_err(|e| (reject_certificate_mismatch(), e.to_string()));
    let negotiated = match peer.address {
        Some(ip) if shared.bindings.check(&peer.calling_ae, ip).await == Binding::WrongAddress => {
            Err((
                negotiation::reject_calling_ae(),
                "calling AE title is bound to other addresses".to_owned(),
            ))
        }
        _ => certificate.and_then(|()| {
            negotiation::negotiate(&rq, &shared.policy).map_err(|rj| {
                let why = rj.source.to_string();
                (rj, why)
            })
        }),
    };
    let negotiated = match negotiated {
        Ok(n) => n,
        Err((rj, why)) => {
            info!(reason = %why, result = ?rj.result, "association rejected");
            record_or_log(
                &shared.archive,
                peer_audit::association_refused(&peer, &why),
            )
            .await;
            return (Some(conn), Some(Pdu::AssociationRJ(rj)));
        }
    };
    if !can_carry_pdv(negotiated.peer_max_pdu) {
        // Every P-DATA-TF PDU we send must fit the peer's maximum (PS3.8
        // §9.3.1, D.1); one that cannot hold a PDV item with a single byte
        // of value leaves nothing we could send.
        info!(
            peer_max_pdu = negotiated.peer_max_pdu,
            "peer's maximum PDU length cannot carry a PDV; aborted"
        );
        let pdu = abort_pdu(AbortRQServiceProviderReason::InvalidPduParameter);
        return (Some(conn), Some(pdu));
    }
    if let Err(e) = conn
        .write_pdu(&Pdu::AssociationAC(negotiated.ac.clone()))
        .await
    {
        info!(error = %e, "could not send A-ASSOCIATE-AC");
        return (None, None);
    }
    // From now on, PDUs above what we announced are refused.
    conn.max_pdu = shared.policy.max_pdu_len;
    info!(
        contexts_proposed = rq.presentation_contexts.len(),
        contexts_accepted = negotiated.contexts.len(),
        peer_max_pdu = negotiated.peer_max_pdu,
        "association accepted"
    );
    let mut assoc = Association::new(conn, negotiated, shared, peer);
    let end = assoc.run().await;
    assoc.release_reports().await;
    let Association {
        conn,
        stats,
        pending,
        shared,
        peer,
        mut stored_studies,
        ..
    } = assoc;
    if let Some(Pending::Store { store, .. }) = pending {
        store.cancel().await;
    }
    // One Instances Transferred (Create) per study received (the stores
    // were acknowledged already: a failure here can only be logged).
    peer_audit::add_patients(&shared.archive, &mut stored_studies).await;
    for (study, share) in &stored_studies {
        record_or_log(&shared.archive, peer_audit::stored(&peer, study, share)).await;
    }
    info!(
        stored = stats.stored,
        failed = stats.failed,
        echoes = stats.echoes,
        queries = stats.queries,
        retrieves = stats.retrieves,
        ended = %end.describe(),
        "association ended"
    );
    (Some(conn), end.final_pdu())
}

/// How the association ended, and what we still owe the peer.
enum End {
    Released,
    PeerAborted,
    Shutdown,
    ConnectionLost(ConnError),
    ProtocolError(String, AbortRQServiceProviderReason),
}

impl End {
    fn final_pdu(&self) -> Option<Pdu> {
        match self {
            End::Released => Some(Pdu::ReleaseRP),
            End::PeerAborted => None,
            End::Shutdown => Some(user_abort_pdu()),
            End::ConnectionLost(ConnError::Timeout(_)) => {
                Some(abort_pdu(AbortRQServiceProviderReason::ReasonNotSpecified))
            }
            End::ConnectionLost(_) => None,
            End::ProtocolError(_, reason) => Some(abort_pdu(reason.clone())),
        }
    }

    fn describe(&self) -> String {
        match self {
            End::Released => "released".into(),
            End::PeerAborted => "aborted by peer".into(),
            End::Shutdown => "aborted: server shutting down".into(),
            End::ConnectionLost(e) => format!("connection lost: {e}"),
            End::ProtocolError(m, _) => format!("aborted: {m}"),
        }
    }
}

/// A request whose data set is still arriving.
enum Pending {
    /// C-STORE streaming into the archive.
    Store {
        context_id: u8,
        rq: CStoreRq,
        store: StoreInFlight,
    },
    /// A data set we read and drop, then answer with `response`, if any.
    Discard {
        context_id: u8,
        response: Option<CommandSet>,
    },
    /// The identifier of a C-FIND, C-GET or C-MOVE request, collected
    /// whole (it is small: at most [`MAX_IDENTIFIER_LEN`]).
    Identifier(Box<IdentifierInFlight>),
    /// The data set of a DIMSE-N request, collected whole (at most
    /// [`MAX_IDENTIFIER_LEN`]).
    NRequest(Box<NInFlight>),
}

/// A DIMSE-N request waiting for its data set.
struct NInFlight {
    context_id: u8,
    rq: NRequest,
    route: NRoute,
    transfer_syntax: String,
    bytes: Vec<u8>,
    too_large: bool,
}

/// How long a commitment report job is held back while the report is
/// tried on the requestor's own association (then the runner takes it).
const SAME_ASSOCIATION_WAIT: Duration = Duration::from_secs(60);

/// A commitment report being delivered on this association.
enum SameAssociationReport {
    /// Its instances are being checked.
    Checking,
    /// Sent as the N-EVENT-REPORT-RQ with this Message ID; the job keeps
    /// this once the requestor confirms it.
    Sent(u16, JobDone),
}

/// A Q/R request waiting for its identifier.
struct IdentifierInFlight {
    rq: QrRequest,
    model: QrModel,
    operation: QrOperation,
    move_destination: Option<String>,
    transfer_syntax: String,
    bytes: Vec<u8>,
    too_large: bool,
}

/// What a handler decided for a command.
enum Action {
    /// Answer now (no data set follows).
    Respond(CommandSet),
    /// Read the data set that follows, then continue as described.
    AwaitDataSet(Pending),
    /// Nothing to answer.
    Ignore,
    /// A C-STORE-RSP to a C-GET sub-operation.
    StoreRsp(CommandSet),
    /// An N-EVENT-REPORT-RSP to a commitment report we sent (and whether
    /// a data set follows it).
    EventReportRsp(CommandSet, bool),
    /// The command cannot be answered: end the association.
    Abort(String),
}

#[derive(Default)]
struct Stats {
    stored: u64,
    failed: u64,
    echoes: u64,
    queries: u64,
    retrieves: u64,
}

/// What woke the association loop.
enum Event {
    Pdu(Result<Pdu, ConnError>),
    /// The operation can send its next response.
    Step,
    /// A report of the C-MOVE task (`None`: the task is gone).
    Move(Option<MoveEvent>),
    /// A commitment report checked and ready to send on this association
    /// (job id, context, report or why it could not be built).
    Report(u64, u8, crate::commitment::Checked),
}

/// The next event of the operation in progress (`Step` for C-FIND and
/// C-GET: they are ready whenever the loop asks).
async fn operation_event(op: &mut Option<Operation>) -> Event {
    match op {
        Some(Operation::Move(m)) => Event::Move(m.events.recv().await),
        _ => Event::Step,
    }
}

struct Association {
    conn: Conn,
    shared: Arc<Shared>,
    contexts: BTreeMap<u8, AcceptedContext>,
    calling_ae: String,
    /// The peer as audit records name it.
    peer: Peer,
    /// Studies received by C-STORE on this association (audited at the end).
    stored_studies: BTreeMap<Uid, StudyShare>,
    /// The retrieve in progress: its destination and studies, audited
    /// when it ends.
    retrieving: Option<(Option<String>, BTreeMap<Uid, StudyShare>)>,
    peer_max_pdu: u32,
    reassembler: Reassembler,
    pending: Option<Pending>,
    op: Option<Operation>,
    stats: Stats,
    /// Commitment reports to deliver on this association, by job id.
    reports: BTreeMap<u64, SameAssociationReport>,
    report_tx: tokio::sync::mpsc::Sender<(u64, u8, crate::commitment::Checked)>,
    report_rx: tokio::sync::mpsc::Receiver<(u64, u8, crate::commitment::Checked)>,
    /// Message IDs of the requests we send (N-EVENT-REPORT), from a range
    /// apart from the C-GET sub-operations'.
    next_report_message_id: u16,
}

impl Association {
    fn new(conn: Conn, negotiated: Negotiated, shared: Arc<Shared>, peer: Peer) -> Association {
        let contexts: BTreeMap<u8, AcceptedContext> =
            negotiated.contexts.into_iter().map(|c| (c.id, c)).collect();
        let (report_tx, report_rx) = tokio::sync::mpsc::channel(8);
        Association {
            conn,
            reassembler: Reassembler::new(contexts.keys().copied(), MAX_COMMAND_SET_LEN),
            contexts,
            shared,
            calling_ae: negotiated.calling_ae,
            peer,
            stored_studies: BTreeMap::new(),
            retrieving: None,
            peer_max_pdu: negotiated.peer_max_pdu,
            pending: None,
            op: None,
            stats: Stats::default(),
            reports: BTreeMap::new(),
            report_tx,
            report_rx,
            next_report_message_id: 0x8000,
        }
    }

    async fn run(&mut self) -> End {
        loop {
            let shared = self.shared.clone();
            // A C-GET waiting for a C-STORE-RSP only reads; a C-MOVE waits
            // on its task, which has its own time-outs.
            let op_ready = match &self.op {
                None => false,
                Some(Operation::Get(g)) => g.awaiting.is_none(),
                Some(_) => true,
            };
            let read_timeout = match &self.op {
                Some(Operation::Move(_)) => None,
                _ => Some(self.conn.timeout),
            };
            let event = tokio::select! {
                biased;
                _ = shared.abort.cancelled() => return End::Shutdown,
                r = self.conn.read_pdu_for(read_timeout) => Event::Pdu(r),
                e = operation_event(&mut self.op), if op_ready => e,
                Some((job, context_id, report)) = self.report_rx.recv() => {
                    Event::Report(job, context_id, report)
                }
            };
            let pdu = match event {
                Event::Pdu(r) => r,
                Event::Step => {
                    if let Some(end) = self.operation_step().await {
                        return end;
                    }
                    continue;
                }
                Event::Move(report) => {
                    if let Some(end) = self.move_report(report).await {
                        return end;
                    }
                    continue;
                }
                Event::Report(job, context_id, report) => {
                    if let Some(end) = self.send_report(job, context_id, report).await {
                        return end;
                    }
                    continue;
                }
            };
            let pdu = match pdu {
                Ok(p) => p,
                Err(ConnError::Protocol(m)) => {
                    return End::ProtocolError(m, AbortRQServiceProviderReason::InvalidPduParameter)
                }
                Err(e) => return End::ConnectionLost(e),
            };
            match pdu {
                Pdu::PData { data } => {
                    for value in data {
                        if let Some(end) = self.on_pdv(value).await {
                            return end;
                        }
                    }
                }
                Pdu::ReleaseRQ => {
                    if !self.reassembler.is_idle() {
                        return End::ProtocolError(
                            "A-RELEASE-RQ in the middle of a message".into(),
                            AbortRQServiceProviderReason::UnexpectedPdu,
                        );
                    }
                    return End::Released;
                }
                Pdu::AbortRQ { .. } => return End::PeerAborted,
                Pdu::Unknown { pdu_type, .. } => {
                    return End::ProtocolError(
                        format!("unknown PDU type {pdu_type:#04x}"),
                        AbortRQServiceProviderReason::UnrecognizedPdu,
                    )
                }
                other => {
                    return End::ProtocolError(
                        format!("unexpected {}", other.short_description()),
                        AbortRQServiceProviderReason::UnexpectedPdu,
                    )
                }
            }
        }
    }

    /// Handles one PDV; `Some` ends the association.
    async fn on_pdv(&mut self, value: PDataValue) -> Option<End> {
        let pdv = Pdv {
            context_id: value.presentation_context_id,
            is_command: value.value_type == PDataValueType::Command,
            is_last: value.is_last,
            data: Bytes::from(value.data),
        };
        let event = match self.reassembler.push(pdv) {
            Ok(None) => return None,
            Ok(Some(event)) => event,
            Err(e) => {
                return Some(End::ProtocolError(
                    e.to_string(),
                    AbortRQServiceProviderReason::UnexpectedPduParameter,
                ))
            }
        };
        match event {
            Reassembled::Command {
                context_id,
                command,
                group_length,
                has_data_set,
            } => {
                if let GroupLength::Mismatch { declared, actual } = group_length {
                    debug!(declared, actual, "command group length is wrong; ignored");
                }
                match self.dispatch(context_id, &command, has_data_set) {
                    Action::Respond(rsp) => self.respond(context_id, &rsp).await,
                    Action::AwaitDataSet(p) => {
                        self.pending = Some(p);
                        None
                    }
                    Action::Ignore => None,
                    Action::StoreRsp(rsp) => self.on_store_rsp(&rsp).await,
                    Action::EventReportRsp(rsp, has_data_set) => {
                        self.on_event_report_rsp(&rsp).await;
                        if has_data_set {
                            self.pending = Some(Pending::Discard {
                                context_id,
                                response: None,
                            });
                        }
                        None
                    }
                    Action::Abort(m) => Some(End::ProtocolError(
                        m,
                        AbortRQServiceProviderReason::InvalidPduParameter,
                    )),
                }
            }
            Reassembled::Data {
                fragment, is_last, ..
            } => self.on_data(fragment, is_last).await,
        }
    }

    async fn on_data(&mut self, fragment: Bytes, is_last: bool) -> Option<End> {
        match &mut self.pending {
            Some(Pending::Store { store, .. }) => {
                let abort = self.shared.abort.clone();
                tokio::select! {
                    biased;
                    _ = abort.cancelled() => return Some(End::Shutdown),
                    _ = store.forward(fragment) => {}
                }
            }
            Some(Pending::Identifier(id)) => {
                if id.bytes.len() + fragment.len() > MAX_IDENTIFIER_LEN {
                    id.too_large = true;
                    id.bytes = Vec::new();
                } else if !id.too_large {
                    id.bytes.extend_from_slice(&fragment);
                }
            }
            Some(Pending::NRequest(n)) => {
                if n.bytes.len() + fragment.len() > MAX_IDENTIFIER_LEN {
                    n.too_large = true;
                    n.bytes = Vec::new();
                } else if !n.too_large {
                    n.bytes.extend_from_slice(&fragment);
                }
            }
            _ => {}
        }
        if !is_last {
            return None;
        }
        match self.pending.take() {
            Some(Pending::Store {
                context_id,
                rq,
                store,
            }) => {
                let abort = self.shared.abort.clone();
                let last_fragment_at = std::time::Instant::now();
                let finished = store.finish();
                tokio::pin!(finished);
                let outcome = tokio::select! {
                    biased;
                    r = &mut finished => r,
                    _ = abort.cancelled() => {
                        // Too late to cancel cleanly: let the archive finish
                        // (the object is complete) but answer nothing.
                        let _ = finished.await;
                        return Some(End::Shutdown);
                    }
                };
                let rsp = match outcome {
                    Ok(outcome) => {
                        self.stats.stored += 1;
                        self.stored_studies
                            .entry(outcome.record.study_instance_uid.clone())
                            .or_default()
                            .instances += 1;
                        match outcome.status {
                            StoreStatus::Stored => {
                                // From the last fragment to the durable verdict: the
                                // part of a store the peer waits for.
                                let tail_us = last_fragment_at.elapsed().as_micros() as u64;
                                debug!(sop = %rq.affected_sop_instance_uid, tail_us, "stored")
                            }
                            StoreStatus::AlreadyPresent => {
                                debug!(sop = %rq.affected_sop_instance_uid, "already present")
                            }
                            StoreStatus::Replaced => {
                                info!(sop = %rq.affected_sop_instance_uid, "replaced earlier content")
                            }
                        }
                        for w in &outcome.warnings {
                            debug!(sop = %rq.affected_sop_instance_uid, warning = %w, "stored with a warning");
                        }
                        store_rsp(&rq, Status::SUCCESS, None)
                    }
                    Err(failed) => {
                        self.stats.failed += 1;
                        let Some((status, comment)) = failure_status(&failed) else {
                            return Some(End::ConnectionLost(ConnError::Closed));
                        };
                        warn!(sop = %rq.affected_sop_instance_uid, status = %status,
                            reason = %comment, error = %failed, "C-STORE failed");
                        store_rsp(&rq, status, Some(&comment))
                    }
                };
                self.respond(context_id, &rsp).await
            }
            Some(Pending::Discard {
                context_id,
                response: Some(response),
            }) => self.respond(context_id, &response).await,
            Some(Pending::Identifier(id)) => self.start_operation(*id).await,
            Some(Pending::NRequest(n)) => self.serve_n_request(*n).await,
            Some(Pending::Discard { response: None, .. }) | None => None,
        }
    }

    /// Sends a response; `Some` if the association must end (the send
    /// failed).
    async fn respond(&mut self, context_id: u8, command: &CommandSet) -> Option<End> {
        self.send(context_id, command, None).await
    }

    /// Sends a message with an optional data set (see [`Self::respond`]).
    async fn send(
        &mut self,
        context_id: u8,
        command: &CommandSet,
        data: Option<&[u8]>,
    ) -> Option<End> {
        if let Err(e) =
            write_message(&mut self.conn, self.peer_max_pdu, context_id, command, data).await
        {
            return Some(End::ConnectionLost(e));
        }
        None
    }

    /// Starts a Q/R operation once its identifier is complete, or answers
    /// the refusal.
    async fn start_operation(&mut self, id: IdentifierInFlight) -> Option<End> {
        let context_id = id.rq.context_id;
        match self.prepare_operation(id).await {
            Ok(op) => {
                self.op = Some(op);
                None
            }
            Err((rq, refusal)) => {
                info!(status = %refusal.status, reason = %refusal.comment,
                    command_field = format_args!("{:#06x}", rq.field), "Q/R request refused");
                let rsp = rq.response(refusal.status, Some(&refusal.comment), None, false);
                self.respond(context_id, &rsp).await
            }
        }
    }

    async fn prepare_operation(
        &mut self,
        id: IdentifierInFlight,
    ) -> Result<Operation, (QrRequest, Refusal)> {
        let IdentifierInFlight {
            rq,
            model,
            operation,
            move_destination,
            transfer_syntax,
            bytes,
            too_large,
        } = id;
        let fail = |status: Status, comment: String| Refusal { status, comment };
        if too_large {
            return Err((
                rq,
                fail(
                    Status::OUT_OF_RESOURCES,
                    format!("identifier larger than {MAX_IDENTIFIER_LEN} bytes"),
                ),
            ));
        }
        let archive = self.shared.archive.clone();
        let dataset = match pacs_core::dicom::TransferSyntax::from_uid(&transfer_syntax)
            .ok_or_else(|| "unsupported transfer syntax".to_owned())
            .and_then(|ts| {
                pacs_core::dicom::parse_dataset(&bytes, &ts, true, archive.limits())
                    .map_err(|e| e.to_string())
            }) {
            Ok(h) => h.dataset,
            Err(e) => {
                return Err((
                    rq,
                    fail(Status::CANNOT_UNDERSTAND, format!("identifier: {e}")),
                ))
            }
        };
        match operation {
            QrOperation::Find if model == QrModel::Worklist => {
                self.stats.queries += 1;
                let max = self.shared.max_find_results;
                crate::worklist::prepare(&archive, &self.peer, rq, &dataset, max)
                    .await
                    .map(Operation::Worklist)
            }
            QrOperation::Find => {
                self.stats.queries += 1;
                let request = match FindRequest::from_identifier(
                    &dataset,
                    model,
                    self.shared.max_find_results,
                ) {
                    Ok(r) => r,
                    Err(refusal) => return Err((rq, refusal)),
                };
                let rows = match qr::find(&archive, &request.query).await {
                    Ok(rows) => rows,
                    Err(refusal) => return Err((rq, refusal)),
                };
                debug!(
                    matches = rows.len(),
                    level = request.query.level.as_dicom(),
                    "C-FIND"
                );
                // A query that cannot be audited is not answered (0xA700).
                let event = peer_audit::query(&self.peer, &rq.sop_class, &request.query, &rows);
                if let Err(e) = archive.audit().record(event).await {
                    warn!(error = %e, "C-FIND refused: its audit record could not be written");
                    return Err((rq, fail(Status::OUT_OF_RESOURCES, AUDIT_FAILED.into())));
                }
                Ok(Operation::Find(FindOp {
                    rq,
                    request,
                    rows: rows.into(),
                    cancelled: false,
                }))
            }
            QrOperation::Get | QrOperation::Move => {
                self.stats.retrieves += 1;
                let destination = match (operation, move_destination) {
                    (QrOperation::Move, None) => {
                        return Err((
                            rq,
                            fail(
                                Status::CANNOT_UNDERSTAND,
                                "Move Destination is missing".into(),
                            ),
                        ))
                    }
                    (QrOperation::Move, Some(dest)) => {
                        match self
                            .shared
                            .remote_aes
                            .iter()
                            .find(|r| r.ae_title.trim_matches(' ') == dest)
                        {
                            Some(r) => Some(r.clone()),
                            None => {
                                return Err((
                                    rq,
                                    fail(
                                        Status::MOVE_DESTINATION_UNKNOWN,
                                        "Move destination unknown".into(),
                                    ),
                                ))
                            }
                        }
                    }
                    _ => None,
                };
                let keys = match retrieve_keys(&dataset, model) {
                    Ok(k) => k,
                    Err(refusal) => return Err((rq, refusal)),
                };
                let instances = match qr::instances_to_retrieve(&archive, &keys).await {
                    Ok(i) => i,
                    Err(refusal) => return Err((rq, refusal)),
                };
                info!(
                    instances = instances.len(),
                    destination = destination
                        .as_ref()
                        .map(|d| d.ae_title.as_str())
                        .unwrap_or("(this association)"),
                    "retrieve started"
                );
                // A retrieve that cannot be audited is not started (0xC000).
                let mut studies: BTreeMap<Uid, StudyShare> = BTreeMap::new();
                for i in &instances {
                    studies
                        .entry(i.study_instance_uid.clone())
                        .or_default()
                        .instances += 1;
                }
                peer_audit::add_patients(&archive, &mut studies).await;
                let dest = destination.as_ref().map(|d| d.ae_title.clone());
                let event = peer_audit::begin_transfer(&self.peer, dest.as_deref(), &studies);
                if let Err(e) = archive.audit().record(event).await {
                    warn!(error = %e, "retrieve refused: its audit record could not be written");
                    return Err((rq, fail(Status::CANNOT_UNDERSTAND, AUDIT_FAILED.into())));
                }
                self.retrieving = Some((dest, studies));
                match destination {
                    Some(destination) => {
                        let job = MoveJob {
                            archive,
                            destination,
                            our_ae: self.shared.policy.ae_title.clone(),
                            originator_ae: self.calling_ae.clone(),
                            originator_message_id: rq.message_id,
                            instances,
                            max_pdu_len: self.shared.policy.max_pdu_len,
                            timeout: self.shared.idle_timeout,
                            pixel: self.shared.pixel.clone(),
                        };
                        Ok(Operation::Move(qr::start_move(job, rq)))
                    }
                    None => Ok(Operation::Get(GetOp {
                        rq,
                        subops: SubOps::new(instances.len()),
                        queue: instances.into(),
                        awaiting: None,
                        cancelled: false,
                        next_message_id: 1,
                    })),
                }
            }
        }
    }

    /// Advances the C-FIND or C-GET in progress by one response.
    async fn operation_step(&mut self) -> Option<End> {
        match self.op.take() {
            Some(Operation::Find(mut find)) => {
                let (command, identifier, last) = find.step(&self.shared.policy.ae_title);
                let context_id = find.rq.context_id;
                if !last {
                    self.op = Some(Operation::Find(find));
                }
                self.send(context_id, &command, identifier.as_deref()).await
            }
            Some(Operation::Get(get)) => self.get_step(get).await,
            Some(Operation::Worklist(mut w)) => {
                let (command, identifier, last) = w.step();
                let context_id = w.rq.context_id;
                if !last {
                    self.op = Some(Operation::Worklist(w));
                }
                self.send(context_id, &command, identifier.as_deref()).await
            }
            other => {
                self.op = other;
                None
            }
        }
    }

    /// One C-GET step: the final response, or the next sub-operation.
    async fn get_step(&mut self, mut get: GetOp) -> Option<End> {
        let context_id = get.rq.context_id;
        let Some(record) = (!get.cancelled).then(|| get.queue.pop_front()).flatten() else {
            info!(
                completed = get.subops.completed,
                failed = get.subops.failed,
                warning = get.subops.warning,
                cancelled = get.cancelled,
                "C-GET finished"
            );
            self.audit_retrieved(&get.subops).await;
            let (command, identifier) = get.rq.retrieve_final(&get.subops, get.cancelled);
            return self.send(context_id, &command, identifier.as_deref()).await;
        };
        let accepted = self
            .contexts
            .values()
            .filter(|c| c.requestor_is_scp)
            .map(|c| (c.id, c.abstract_syntax.as_str(), c.transfer_syntax.as_str()));
        let store_context = qr::store_context(
            accepted,
            record.sop_class_uid.as_str(),
            &record.transfer_syntax_uid,
        );
        let sop = record.sop_instance_uid.to_string();
        let Some((store_context, store_syntax)) = store_context else {
            info!(sop = %sop, sop_class = %record.sop_class_uid, transfer_syntax = %record.transfer_syntax_uid,
                "C-GET sub-operation failed: no accepted storage context (SCP role) for the stored syntax or one it can be transcoded to");
            get.subops.fail(&sop);
            return self.get_pending(get).await;
        };
        let message_id = get.next_message_id;
        get.next_message_id = get.next_message_id.wrapping_add(1).max(1);
        let rq = CStoreRq {
            message_id,
            affected_sop_class_uid: record.sop_class_uid.to_string(),
            affected_sop_instance_uid: sop.clone(),
            priority: crate::message::priority::MEDIUM,
            move_originator_ae_title: None,
            move_originator_message_id: None,
        };
        let archive = self.shared.archive.clone();
        match qr::send_instance(
            &mut self.conn,
            store_context,
            &store_syntax,
            &rq,
            &archive,
            &record,
            self.peer_max_pdu,
            &self.shared.pixel,
        )
        .await
        {
            Ok(()) => {
                get.awaiting = Some((message_id, sop));
                self.op = Some(Operation::Get(get));
                None
            }
            Err(SendError::Unavailable(m)) => {
                warn!(sop = %sop, reason = %m, "C-GET sub-operation failed");
                get.subops.fail(&sop);
                self.get_pending(get).await
            }
            Err(SendError::Broken(ConnError::Protocol(m))) => Some(End::ProtocolError(
                m,
                AbortRQServiceProviderReason::ReasonNotSpecified,
            )),
            Err(SendError::Broken(e)) => Some(End::ConnectionLost(e)),
        }
    }

    /// After a sub-operation: a pending C-GET-RSP when more remain, and
    /// the operation goes on (the final response comes at the next step).
    async fn get_pending(&mut self, get: GetOp) -> Option<End> {
        let context_id = get.rq.context_id;
        let pending = (get.subops.remaining > 0 && !get.cancelled).then(|| {
            get.rq
                .response(Status::PENDING, None, Some((&get.subops, true)), false)
        });
        self.op = Some(Operation::Get(get));
        match pending {
            Some(command) => self.respond(context_id, &command).await,
            None => None,
        }
    }

    /// A C-STORE-RSP from the C-GET SCU.
    async fn on_store_rsp(&mut self, command: &CommandSet) -> Option<End> {
        let rsp = match CStoreRsp::from_command(command) {
            Ok(r) => r,
            Err(e) => {
                return Some(End::ProtocolError(
                    format!("unreadable C-STORE-RSP: {e}"),
                    AbortRQServiceProviderReason::InvalidPduParameter,
                ))
            }
        };
        match self.op.take() {
            Some(Operation::Get(mut get))
                if get
                    .awaiting
                    .as_ref()
                    .is_some_and(|(id, _)| *id == rsp.message_id_being_responded_to) =>
            {
                let (_, sop) = get.awaiting.take()?;
                if rsp.status.kind() != StatusKind::Success {
                    debug!(sop = %sop, status = %rsp.status, "C-GET sub-operation not successful");
                }
                get.subops.record(&sop, rsp.status);
                self.get_pending(get).await
            }
            other => {
                self.op = other;
                warn!(
                    message_id = rsp.message_id_being_responded_to,
                    "unexpected C-STORE-RSP ignored"
                );
                None
            }
        }
    }

    /// A report of the C-MOVE task becomes a pending or final response.
    async fn move_report(&mut self, report: Option<MoveEvent>) -> Option<End> {
        let Some(Operation::Move(mv)) = self.op.take() else {
            return None;
        };
        let context_id = mv.rq.context_id;
        match report {
            Some(MoveEvent::Progress(subops)) => {
                let cancelled = mv.cancel.is_cancelled();
                let command = mv
                    .rq
                    .response(Status::PENDING, None, Some((&subops, true)), false);
                self.op = Some(Operation::Move(mv));
                if cancelled {
                    return None;
                }
                self.respond(context_id, &command).await
            }
            Some(MoveEvent::Done { subops, cancelled }) => {
                info!(
                    completed = subops.completed,
                    failed = subops.failed,
                    warning = subops.warning,
                    cancelled,
                    "C-MOVE finished"
                );
                self.audit_retrieved(&subops).await;
                let (command, identifier) = mv.rq.retrieve_final(&subops, cancelled);
                self.send(context_id, &command, identifier.as_deref()).await
            }
            None => {
                // The task ended without a final report (it panicked).
                let subops = SubOps::default();
                let command = mv.rq.response(
                    Status::PROCESSING_FAILURE,
                    Some("internal error during C-MOVE"),
                    Some((&subops, false)),
                    false,
                );
                self.respond(context_id, &command).await
            }
        }
    }

    /// The services: what to do with each command (PS3.7 §9.3).
    fn dispatch(&mut self, context_id: u8, command: &CommandSet, has_data_set: bool) -> Action {
        let Ok(field) = command.command_field() else {
            return Action::Abort("command set without a readable Command Field".into());
        };
        if command_field::is_response(field) && command_field::is_defined(field) {
            if field == command_field::C_STORE_RSP && !has_data_set {
                return Action::StoreRsp(command.clone());
            }
            if field == command_field::N_EVENT_REPORT_RSP {
                // An Event Reply data set, if any, is read and dropped.
                return Action::EventReportRsp(command.clone(), has_data_set);
            }
            warn!(
                command_field = format_args!("{field:#06x}"),
                "unexpected response ignored"
            );
            return self.discarding(context_id, has_data_set, None);
        }
        if field == command_field::C_CANCEL_RQ {
            // PS3.7 §9.3.2.3: cancels the operation it names, if it is
            // still running; otherwise there is nothing to do or answer.
            let target = command.us(tags::MESSAGE_ID_BEING_RESPONDED_TO).ok();
            if let (Some(op), Some(target)) = (self.op.as_mut(), target) {
                if op.message_id() == target {
                    info!(message_id = target, "C-CANCEL");
                    op.cancel();
                }
            }
            return self.discarding(context_id, has_data_set, None);
        }
        let Ok(message_id) = command.us(tags::MESSAGE_ID) else {
            return Action::Abort(format!(
                "request {field:#06x} without a readable Message ID"
            ));
        };
        let Some(context) = self.contexts.get(&context_id) else {
            return Action::Abort(format!("no accepted presentation context {context_id}"));
        };
        let service = context.service;
        let affected = command
            .text_opt(tags::AFFECTED_SOP_CLASS_UID)
            .ok()
            .flatten();
        let refuse = |status: Status, comment: &str| {
            Response {
                command_field: command_field::response_to(field),
                message_id_being_responded_to: message_id,
                affected_sop_class_uid: affected.as_deref().filter(|u| Uid::parse(u).is_ok()),
                affected_sop_instance_uid: None,
                status,
                error_comment: Some(comment),
            }
            .to_command()
        };
        if !command_field::is_defined(field) {
            // PS3.7 C.4 (Unrecognized Operation, 0211H): answered, with
            // the request's field plus the response bit, and the message
            // ID it responds to; any data set is read and dropped.
            info!(
                command_field = format_args!("{field:#06x}"),
                "unknown command field; unrecognized operation"
            );
            let rsp = refuse(Status::UNRECOGNIZED_OPERATION, "unknown command field");
            return self.discarding(context_id, has_data_set, Some(rsp));
        }
        if self.op.is_some() {
            let rsp = refuse(
                Status::PROCESSING_FAILURE,
                "another operation is in progress on this association",
            );
            return self.discarding(context_id, has_data_set, Some(rsp));
        }
        if nservice::is_n_request(field) {
            return self.begin_n_request(context_id, command, has_data_set);
        }
        let response = match (field, service) {
            (command_field::C_ECHO_RQ, Service::Verification) => {
                self.stats.echoes += 1;
                match crate::verification::echo(command, &context.abstract_syntax) {
                    Ok(rsp) => rsp,
                    Err(e) => refuse(Status::CANNOT_UNDERSTAND, &e.to_string()),
                }
            }
            (command_field::C_STORE_RQ, Service::Storage) => {
                return self.begin_store(context_id, command, has_data_set);
            }
            (
                command_field::C_FIND_RQ | command_field::C_MOVE_RQ | command_field::C_GET_RQ,
                Service::QueryRetrieve { model, operation },
            ) if field == qr_field(operation) => {
                if !self.authorized() {
                    warn!(calling_ae = %self.calling_ae,
                        "query/retrieve refused: calling AE is not a configured remote AE");
                    let event = peer_audit::restricted_function(&self.peer, "query/retrieve");
                    let archive = self.shared.archive.clone();
                    tokio::spawn(async move { record_or_log(&archive, event).await });
                    refuse(
                        Status::NOT_AUTHORIZED,
                        "calling AE title not authorized for query/retrieve",
                    )
                } else if !has_data_set {
                    refuse(
                        Status::IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
                        "request without an identifier",
                    )
                } else {
                    let move_destination = command
                        .text_opt(tags::MOVE_DESTINATION)
                        .ok()
                        .flatten()
                        .filter(|d| !d.is_empty());
                    let transfer_syntax = context.transfer_syntax.clone();
                    let explicit_vr =
                        transfer_syntax != pacs_core::dicom::IMPLICIT_VR_LITTLE_ENDIAN;
                    return Action::AwaitDataSet(Pending::Identifier(Box::new(
                        IdentifierInFlight {
                            rq: QrRequest {
                                context_id,
                                field,
                                message_id,
                                sop_class: context.abstract_syntax.clone(),
                                explicit_vr,
                            },
                            model,
                            operation,
                            move_destination,
                            transfer_syntax,
                            bytes: Vec::new(),
                            too_large: false,
                        },
                    )));
                }
            }
            _ => refuse(
                Status::UNRECOGNIZED_OPERATION,
                "operation not supported on this presentation context",
            ),
        };
        self.discarding(context_id, has_data_set, Some(response))
    }

    /// A DIMSE-N request: routed at once (a refusal is answered after its
    /// data set, if any, is dropped), or its data set collected.
    fn begin_n_request(&self, context_id: u8, command: &CommandSet, has_data_set: bool) -> Action {
        let Some(context) = self.contexts.get(&context_id) else {
            return Action::Abort(format!("no accepted presentation context {context_id}"));
        };
        let rq = match NRequest::from_command(command) {
            Ok(rq) => rq,
            Err(e) => {
                let Ok(message_id) = command.us(tags::MESSAGE_ID) else {
                    return Action::Abort(format!("N-request: {e}"));
                };
                let field = command.command_field().unwrap_or_default();
                let rsp = NResponse {
                    field: command_field::response_to(field),
                    message_id_being_responded_to: message_id,
                    sop_class_uid: None,
                    sop_instance_uid: None,
                    type_id: None,
                    status: Status::CANNOT_UNDERSTAND,
                    error_comment: Some(e.to_string()),
                };
                return self.discarding(context_id, has_data_set, Some(rsp.to_command()));
            }
        };
        match nservice::route(&context.abstract_syntax, context.service, &rq) {
            NRoute::Refuse(status, comment) => {
                info!(status = %status, reason = comment,
                    command_field = format_args!("{:#06x}", rq.field), "N-request refused");
                let rsp = rq.response(status, Some(comment)).to_command();
                self.discarding(context_id, has_data_set, Some(rsp))
            }
            route => Action::AwaitDataSet(Pending::NRequest(Box::new(NInFlight {
                context_id,
                rq,
                route,
                transfer_syntax: context.transfer_syntax.clone(),
                bytes: Vec::new(),
                too_large: false,
            }))),
        }
    }

    /// Runs an N-request once its data set is complete.
    async fn serve_n_request(&mut self, n: NInFlight) -> Option<End> {
        let NInFlight {
            context_id,
            rq,
            route,
            transfer_syntax,
            bytes,
            too_large,
        } = n;
        let archive = self.shared.archive.clone();
        let parsed = if too_large {
            Err((
                Status::OUT_OF_RESOURCES,
                format!("data set larger than {MAX_IDENTIFIER_LEN} bytes"),
            ))
        } else {
            pacs_core::dicom::TransferSyntax::from_uid(&transfer_syntax)
                .ok_or_else(|| "unsupported transfer syntax".to_owned())
                .and_then(|ts| {
                    pacs_core::dicom::parse_dataset(&bytes, &ts, true, archive.limits())
                        .map_err(|e| e.to_string())
                })
                .map(|h| h.dataset)
                .map_err(|e| (Status::CANNOT_UNDERSTAND, format!("data set: {e}")))
        };
        let ds = match parsed {
            Ok(ds) => ds,
            Err((status, comment)) => {
                let rsp = rq.response(status, Some(&comment)).to_command();
                return self.respond(context_id, &rsp).await;
            }
        };
        let workflow = archive.workflow();
        let ctx = crate::mpps::MppsContext {
            store: workflow.mpps.as_ref(),
            sink: self.shared.step_status.0.as_ref(),
            calling_ae: &self.calling_ae,
        };
        let rsp = match route {
            NRoute::MppsCreate => crate::mpps::n_create(&ctx, &rq, &ds).await,
            NRoute::MppsSet => crate::mpps::n_set(&ctx, &rq, &ds, archive.limits()).await,
            NRoute::CommitmentAction => {
                return self.commitment_action(context_id, rq, &ds, &workflow).await
            }
            NRoute::Refuse(status, comment) => rq.response(status, Some(comment)),
        };
        if rsp.status != Status::SUCCESS {
            info!(status = %rsp.status, reason = rsp.error_comment.as_deref().unwrap_or(""),
                command_field = format_args!("{:#06x}", rq.field), "N-request refused");
        } else if let Some(action) = match route {
            NRoute::MppsCreate => Some(AuditAction::Create),
            NRoute::MppsSet => Some(AuditAction::Update),
            _ => None,
        } {
            audit_mpps(
                &archive,
                &self.peer,
                &workflow,
                action,
                rq.sop_instance_uid.as_deref(),
            )
            .await;
        }
        self.respond(context_id, &rsp.to_command()).await
    }

    /// Storage Commitment N-ACTION (PS3.4 J.3.2): the request is made
    /// durable as a report job, then acknowledged; when the requestor took
    /// the SCP role, the report is tried on this association first.
    async fn commitment_action(
        &mut self,
        context_id: u8,
        rq: NRequest,
        ds: &pacs_core::dicom::DataSet,
        workflow: &pacs_core::Workflow,
    ) -> Option<End> {
        let payload = match crate::commitment::parse_action(&rq, ds, &self.calling_ae) {
            Ok(p) => p,
            Err((status, comment)) => {
                info!(status = %status, reason = %comment, "storage commitment request refused");
                let rsp = rq.response(status, Some(&comment)).to_command();
                return self.respond(context_id, &rsp).await;
            }
        };
        let same = self
            .contexts
            .get(&context_id)
            .is_some_and(|c| c.requestor_is_scp);
        let delay = if same {
            SAME_ASSOCIATION_WAIT
        } else {
            Duration::ZERO
        };
        let enqueued = match payload.to_job(delay) {
            Ok(job) => workflow.jobs.enqueue(job).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let job = match enqueued {
            Ok(job) => job,
            Err(e) => {
                warn!(error = %e, "storage commitment request not recorded");
                let rsp = rq
                    .response(
                        Status::PROCESSING_FAILURE,
                        Some("request could not be recorded"),
                    )
                    .to_command();
                return self.respond(context_id, &rsp).await;
            }
        };
        info!(transaction = %payload.transaction_uid, instances = payload.references.len(),
            job = job.id, same_association = same, "storage commitment requested");
        let rsp = rq.response(Status::SUCCESS, None).to_command();
        if let Some(end) = self.respond(context_id, &rsp).await {
            return Some(end);
        }
        if same {
            self.reports.insert(job.id, SameAssociationReport::Checking);
            let tx = self.report_tx.clone();
            let archive = self.shared.archive.clone();
            tokio::spawn(async move {
                let report = crate::commitment::check(&archive, &payload).await.map(|r| {
                    let done = r.delivered(&payload);
                    (r, done)
                });
                // The association may be gone: its end released the job.
                let _ = tx.send((job.id, context_id, report)).await;
            });
        }
        None
    }

    /// Sends a checked commitment report as an N-EVENT-REPORT-RQ.
    async fn send_report(
        &mut self,
        job: u64,
        context_id: u8,
        report: crate::commitment::Checked,
    ) -> Option<End> {
        let (report, done) = match report {
            Ok(r) => r,
            Err(e) => {
                warn!(job, error = %e, "storage commitment report not built; left to the queue");
                self.reports.remove(&job);
                self.release_job(job).await;
                return None;
            }
        };
        let explicit_vr = self
            .contexts
            .get(&context_id)
            .is_some_and(|c| c.transfer_syntax != pacs_core::dicom::IMPLICIT_VR_LITTLE_ENDIAN);
        let message_id = self.next_report_message_id;
        self.next_report_message_id = self.next_report_message_id.wrapping_add(1).max(0x8000);
        let rq = NRequest {
            field: command_field::N_EVENT_REPORT_RQ,
            message_id,
            sop_class_uid: negotiation::STORAGE_COMMITMENT_SOP_CLASS.to_owned(),
            sop_instance_uid: Some(negotiation::STORAGE_COMMITMENT_INSTANCE.to_owned()),
            type_id: Some(report.event_type()),
            has_data_set: true,
        };
        let data = report.encode(&self.shared.policy.ae_title, explicit_vr);
        let event = peer_audit::commitment_report(
            &self.shared.archive,
            &self.peer,
            &report.transaction_uid,
            &report.committed,
            report.failed.len(),
        )
        .await;
        record_or_log(&self.shared.archive, event).await;
        self.reports
            .insert(job, SameAssociationReport::Sent(message_id, done));
        self.send(context_id, &rq.to_command(), Some(&data)).await
    }

    /// The requestor's answer to a report sent on this association.
    async fn on_event_report_rsp(&mut self, command: &CommandSet) {
        let Ok(rsp) = NResponse::from_command(command) else {
            warn!("unreadable N-EVENT-REPORT-RSP ignored");
            return;
        };
        let job = self.reports.iter().find_map(|(job, r)| match r {
            SameAssociationReport::Sent(id, _) if *id == rsp.message_id_being_responded_to => {
                Some(*job)
            }
            _ => None,
        });
        let Some(job) = job else {
            warn!(
                message_id = rsp.message_id_being_responded_to,
                "unexpected N-EVENT-REPORT-RSP ignored"
            );
            return;
        };
        let done = match self.reports.remove(&job) {
            Some(SameAssociationReport::Sent(_, done)) => done,
            _ => JobDone::Kept,
        };
        if rsp.status == Status::SUCCESS {
            info!(
                job,
                "storage commitment report delivered on the same association"
            );
            if let Err(e) = self
                .shared
                .archive
                .workflow()
                .jobs
                .complete(job, done)
                .await
            {
                warn!(job, error = %e, "delivered report not marked done; it may be sent again");
            }
        } else {
            info!(job, status = %rsp.status, "report refused on the same association; left to the queue");
            self.release_job(job).await;
        }
    }

    /// Hands a held-back report job to the queue's runner now.
    async fn release_job(&mut self, job: u64) {
        let jobs = self.shared.archive.workflow().jobs;
        if let Err(e) = jobs.run_now(job).await {
            warn!(job, error = %e, "report job not released; it runs when its delay ends");
        }
    }

    /// At the end of the association: every report not delivered on it
    /// goes to a new association.
    async fn release_reports(&mut self) {
        let jobs: Vec<u64> = std::mem::take(&mut self.reports).into_keys().collect();
        for job in jobs {
            info!(
                job,
                "association ended before its commitment report was delivered; \
                 it goes to a new association"
            );
            self.release_job(job).await;
        }
    }

    /// Instances Transferred (Read) for the retrieve that just ended.
    async fn audit_retrieved(&mut self, subops: &SubOps) {
        if let Some((dest, studies)) = self.retrieving.take() {
            let total = (subops.completed + subops.failed + subops.warning) as u64;
            let event = peer_audit::retrieved(
                &self.peer,
                dest.as_deref(),
                &studies,
                subops.failed as u64,
                total,
            );
            record_or_log(&self.shared.archive, event).await;
        }
    }

    /// Whether the calling AE may query and retrieve (design invariant 5:
    /// only configured remote AEs).
    fn authorized(&self) -> bool {
        self.shared
            .policy
            .known_calling_aes
            .iter()
            .any(|ae| ae.trim_matches(' ') == self.calling_ae)
    }

    /// Answers `response` now, or after reading and dropping the data set
    /// when one follows.
    fn discarding(
        &self,
        context_id: u8,
        has_data_set: bool,
        response: Option<CommandSet>,
    ) -> Action {
        match (has_data_set, response) {
            (true, response) => Action::AwaitDataSet(Pending::Discard {
                context_id,
                response,
            }),
            (false, Some(response)) => Action::Respond(response),
            (false, None) => Action::Ignore,
        }
    }

    fn begin_store(&mut self, context_id: u8, command: &CommandSet, has_data_set: bool) -> Action {
        let rq = match CStoreRq::from_command(command) {
            Ok(rq) => rq,
            Err(e) => {
                let Ok(message_id) = command.us(tags::MESSAGE_ID) else {
                    return Action::Abort(format!("C-STORE-RQ: {e}"));
                };
                let rsp = CStoreRsp {
                    message_id_being_responded_to: message_id,
                    affected_sop_class_uid: None,
                    affected_sop_instance_uid: None,
                    status: Status::CANNOT_UNDERSTAND,
                    error_comment: Some(e.to_string()),
                }
                .to_command();
                return self.discarding(context_id, has_data_set, Some(rsp));
            }
        };
        let Some(context) = self.contexts.get(&context_id) else {
            return Action::Abort(format!("no accepted presentation context {context_id}"));
        };
        let refusal = match (
            Uid::parse(&rq.affected_sop_class_uid),
            Uid::parse(&rq.affected_sop_instance_uid),
        ) {
            _ if !has_data_set => Err((
                Status::CANNOT_UNDERSTAND,
                "C-STORE-RQ without a data set".to_owned(),
            )),
            (Err(e), _) => Err((
                Status::CANNOT_UNDERSTAND,
                format!("Affected SOP Class UID: {e}"),
            )),
            (_, Err(e)) => Err((
                Status::CANNOT_UNDERSTAND,
                format!("Affected SOP Instance UID: {e}"),
            )),
            (Ok(class), Ok(_)) if class.as_str() != context.abstract_syntax => Err((
                Status::SOP_CLASS_NOT_SUPPORTED,
                "SOP class differs from the presentation context's".to_owned(),
            )),
            (Ok(class), Ok(instance)) => Ok((class, instance)),
        };
        match refusal {
            Ok((class, instance)) => {
                let store = StoreInFlight::start(
                    &self.shared.archive,
                    &context.transfer_syntax,
                    class,
                    instance,
                    &self.calling_ae,
                );
                Action::AwaitDataSet(Pending::Store {
                    context_id,
                    rq,
                    store,
                })
            }
            Err((status, comment)) => {
                self.stats.failed += 1;
                warn!(status = %status, reason = %comment, "C-STORE refused");
                let rsp = store_rsp(&rq, status, Some(&comment));
                self.discarding(context_id, has_data_set, Some(rsp))
            }
        }
    }
}

/// A C-STORE-RSP echoing the request's identifiers (those that are valid
/// UIDs: a malformed one is not sent back).
fn store_rsp(rq: &CStoreRq, status: Status, comment: Option<&str>) -> CommandSet {
    let valid = |s: &str| Uid::parse(s).is_ok().then(|| s.to_owned());
    CStoreRsp {
        message_id_being_responded_to: rq.message_id,
        affected_sop_class_uid: valid(&rq.affected_sop_class_uid),
        affected_sop_instance_uid: valid(&rq.affected_sop_instance_uid),
        status,
        error_comment: comment.map(str::to_owned),
    }
    .to_command()
}

/// Error Comment of a Q/R request refused because its audit record could
/// not be written.
const AUDIT_FAILED: &str = "audit record could not be written";

/// Records an event whose failure cannot change the answer (it was sent,
/// or is a refusal anyway): a failure is logged.
/// Records the Procedure Record event of an accepted MPPS N-CREATE or
/// N-SET, from the record as now stored.
async fn audit_mpps(
    archive: &Archive,
    peer: &Peer,
    workflow: &pacs_core::Workflow,
    action: AuditAction,
    uid: Option<&str>,
) {
    let Some(uid) = uid else { return };
    let record = match workflow.mpps.get(uid).await {
        Ok(Some(r)) => r,
        _ => return,
    };
    let patient_id = pacs_core::dicom::parse_dataset(
        &record.dataset,
        &pacs_core::dicom::TransferSyntax::explicit_vr_little_endian(),
        true,
        archive.limits(),
    )
    .ok()
    .and_then(|h| h.dataset.string(pacs_core::dicom::tags::PATIENT_ID));
    let studies: Vec<String> = record
        .steps
        .iter()
        .map(|s| s.study_instance_uid.clone())
        .collect();
    let event = peer_audit::procedure_record(
        peer,
        action,
        uid,
        record.status.as_str(),
        patient_id,
        &studies,
    );
    record_or_log(archive, event).await;
}

async fn record_or_log(archive: &Archive, event: pacs_core::AuditEvent) {
    if let Err(e) = archive.audit().record(event).await {
        tracing::error!(error = %e, "audit record not written");
    }
}

/// The request field of a Q/R operation.
fn qr_field(operation: QrOperation) -> u16 {
    match operation {
        QrOperation::Find => command_field::C_FIND_RQ,
        QrOperation::Move => command_field::C_MOVE_RQ,
        QrOperation::Get => command_field::C_GET_RQ,
    }
}
