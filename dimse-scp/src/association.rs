//! One association, from the A-ASSOCIATE-RQ to the release or abort: the
//! thin IO loop around the message layer.
//!
//! The loop reads PDUs (each read bounded by the idle time-out), feeds their
//! PDVs to the [`Reassembler`], and hands each complete command to
//! [`Association::dispatch`], which is the extension point for services:
//! it matches the command field and says what to do with the data set that
//! may follow (stream it to the archive, or read and discard it) and what
//! to answer. Requests are served one at a time (no asynchronous operations
//! window is negotiated, PS3.7 D.3.3.3), so the loop reads the next request
//! only after the response to the previous one has been sent.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dicom_ul::association::Error as UlError;
use dicom_ul::pdu::{AbortRQServiceProviderReason, AbortRQSource, PDataValue, PDataValueType};
use dicom_ul::Pdu;
use pacs_core::{Archive, StoreStatus, Uid};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::message::pdv::MAX_COMMAND_SET_LEN;
use crate::message::{
    command_field, fragment, max_fragment_len, tags, CEchoRq, CEchoRsp, CStoreRq, CStoreRsp,
    CommandSet, GroupLength, Pdv, Reassembled, Reassembler, Response,
};
use crate::negotiation::{self, AcceptedContext, Negotiated, Policy, QrOperation, Service};
use crate::status::Status;
use crate::store::{failure_status, StoreInFlight};

/// Value bytes per outgoing PDV when the peer announced no maximum.
const UNLIMITED_PEER_FRAGMENT: usize = 1024 * 1024;
/// How long we keep reading (and discarding) after sending an A-ABORT or
/// A-ASSOCIATE-RJ, so the peer reads our PDU before the connection closes.
const LINGER: Duration = Duration::from_secs(2);
/// How much we discard while lingering.
const LINGER_MAX_BYTES: usize = 1024 * 1024;
/// On shutdown, how long an association silent between messages is given
/// for bytes of a next message already on their way.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(100);
/// Largest A-ASSOCIATE-RQ read, whatever `max_pdu_len` says: the maximum
/// length negotiated governs P-DATA-TF PDUs, and a request proposing 128
/// contexts with several transfer syntaxes each can exceed a small one.
pub(crate) const MAX_ASSOCIATE_RQ_LEN: u32 = 256 * 1024;

/// What every association of a server shares.
pub(crate) struct Shared {
    pub archive: Archive,
    pub policy: Policy,
    pub idle_timeout: Duration,
    /// Graceful shutdown: finish the message in progress, then abort.
    pub shutdown: CancellationToken,
    /// Hard stop after the drain time-out: abort now.
    pub abort: CancellationToken,
}

/// Why a connection ended abnormally.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("peer closed the connection")]
    Closed,
    #[error("idle for longer than the {0:?} time-out")]
    Timeout(Duration),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("unreadable PDU: {0}")]
    Protocol(String),
}

/// The socket with PDU framing (`dicom-ul`'s codec) and time-outs.
struct Conn {
    socket: TcpStream,
    read_buf: BytesMut,
    write_buf: Vec<u8>,
    /// Largest PDU we accept (what we announced).
    max_pdu: u32,
    timeout: Duration,
}

impl Conn {
    async fn read_pdu(&mut self) -> Result<Pdu, ConnError> {
        let read = dicom_ul::association::read_pdu_from_wire_async(
            &mut self.socket,
            &mut self.read_buf,
            self.max_pdu,
            true,
        );
        match tokio::time::timeout(self.timeout, read).await {
            Err(_) => Err(ConnError::Timeout(self.timeout)),
            Ok(Ok(pdu)) => Ok(pdu),
            Ok(Err(UlError::ConnectionClosed { .. })) => Err(ConnError::Closed),
            Ok(Err(e)) => Err(ConnError::Protocol(error_chain(&e))),
        }
    }

    async fn write_pdu(&mut self, pdu: &Pdu) -> Result<(), ConnError> {
        self.write_buf.clear();
        dicom_ul::write_pdu(&mut self.write_buf, pdu)
            .map_err(|e| ConnError::Protocol(e.to_string()))?;
        match tokio::time::timeout(self.timeout, self.socket.write_all(&self.write_buf)).await {
            Err(_) => Err(ConnError::Timeout(self.timeout)),
            Ok(r) => Ok(r?),
        }
    }

    /// Sends a last PDU (A-ABORT, A-ASSOCIATE-RJ, A-RELEASE-RP) and closes:
    /// half-close, then read and discard for a short while so that the
    /// peer's unread data does not turn our close into a reset that would
    /// destroy the PDU before the peer reads it.
    async fn close_with(mut self, pdu: Option<&Pdu>) {
        if let Some(pdu) = pdu {
            if self.write_pdu(pdu).await.is_err() {
                return;
            }
        }
        let _ = self.socket.shutdown().await;
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

/// Reads the A-ASSOCIATE-RQ of a connection over the association limits
/// and rejects it (transient, local limit exceeded).
pub(crate) async fn reject_over_limit(socket: TcpStream, max_pdu: u32, timeout: Duration) {
    let mut conn = Conn {
        socket,
        read_buf: BytesMut::new(),
        write_buf: Vec::new(),
        max_pdu,
        timeout,
    };
    match conn.read_pdu().await {
        Ok(Pdu::AssociationRQ(_)) => {
            let rj = Pdu::AssociationRJ(negotiation::reject_local_limit());
            conn.close_with(Some(&rj)).await;
        }
        Ok(_) => {
            conn.close_with(Some(&abort_pdu(
                AbortRQServiceProviderReason::UnexpectedPdu,
            )))
            .await
        }
        Err(_) => conn.close_with(None).await,
    }
}

/// Serves one connection to its end. Never panics on input; returns when
/// the association is released or aborted, or the connection fails.
pub(crate) async fn serve_connection(socket: TcpStream, shared: Arc<Shared>) {
    let mut conn = Conn {
        socket,
        read_buf: BytesMut::new(),
        write_buf: Vec::with_capacity(16 * 1024),
        max_pdu: shared.policy.max_pdu_len.max(MAX_ASSOCIATE_RQ_LEN),
        // ARTIM (PS3.8 §9.1.5) and idle time-out are the same limit here.
        timeout: shared.idle_timeout,
    };
    // Sta2: awaiting the A-ASSOCIATE-RQ.
    let rq = tokio::select! {
        biased;
        _ = shared.shutdown.cancelled() => return conn.close_with(None).await,
        r = conn.read_pdu() => r,
    };
    let rq = match rq {
        Ok(Pdu::AssociationRQ(rq)) => rq,
        Ok(other) => {
            debug!(pdu = %other.short_description(), "expected an A-ASSOCIATE-RQ");
            let reason = match other {
                Pdu::Unknown { .. } => AbortRQServiceProviderReason::UnrecognizedPdu,
                _ => AbortRQServiceProviderReason::UnexpectedPdu,
            };
            return conn.close_with(Some(&abort_pdu(reason))).await;
        }
        Err(ConnError::Closed) => return,
        // ARTIM expiry: close the transport, nothing to send (PS3.8 AA-2).
        Err(e @ ConnError::Timeout(_)) => {
            debug!(error = %e, "no association request");
            return conn.close_with(None).await;
        }
        Err(e) => {
            info!(error = %e, "no valid association request");
            let pdu = abort_pdu(AbortRQServiceProviderReason::InvalidPduParameter);
            return conn.close_with(Some(&pdu)).await;
        }
    };
    let span = tracing::Span::current();
    span.record("calling_ae", rq.calling_ae_title.as_str());
    span.record("called_ae", rq.called_ae_title.as_str());
    let negotiated = match negotiation::negotiate(&rq, &shared.policy) {
        Ok(n) => n,
        Err(rj) => {
            info!(reason = %rj.source, result = ?rj.result, "association rejected");
            return conn.close_with(Some(&Pdu::AssociationRJ(rj))).await;
        }
    };
    if let Err(e) = conn
        .write_pdu(&Pdu::AssociationAC(negotiated.ac.clone()))
        .await
    {
        info!(error = %e, "could not send A-ASSOCIATE-AC");
        return;
    }
    // From now on, PDUs above what we announced are refused.
    conn.max_pdu = shared.policy.max_pdu_len;
    info!(
        contexts_proposed = rq.presentation_contexts.len(),
        contexts_accepted = negotiated.contexts.len(),
        peer_max_pdu = negotiated.peer_max_pdu,
        "association accepted"
    );
    let mut assoc = Association::new(conn, negotiated, shared);
    let end = assoc.run().await;
    let Association {
        conn,
        stats,
        pending,
        ..
    } = assoc;
    if let Some(Pending::Store { store, .. }) = pending {
        store.cancel().await;
    }
    info!(
        stored = stats.stored,
        failed = stats.failed,
        echoes = stats.echoes,
        ended = %end.describe(),
        "association ended"
    );
    conn.close_with(end.final_pdu().as_ref()).await;
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
}

/// What a handler decided for a command.
enum Action {
    /// Answer now (no data set follows).
    Respond(CommandSet),
    /// Read the data set that follows, then continue as described.
    AwaitDataSet(Pending),
    /// Nothing to answer.
    Ignore,
    /// The command cannot be answered: end the association.
    Abort(String),
}

#[derive(Default)]
struct Stats {
    stored: u64,
    failed: u64,
    echoes: u64,
}

struct Association {
    conn: Conn,
    shared: Arc<Shared>,
    contexts: BTreeMap<u8, AcceptedContext>,
    calling_ae: String,
    peer_max_pdu: u32,
    reassembler: Reassembler,
    pending: Option<Pending>,
    stats: Stats,
}

impl Association {
    fn new(conn: Conn, negotiated: Negotiated, shared: Arc<Shared>) -> Association {
        let contexts: BTreeMap<u8, AcceptedContext> =
            negotiated.contexts.into_iter().map(|c| (c.id, c)).collect();
        Association {
            conn,
            reassembler: Reassembler::new(contexts.keys().copied(), MAX_COMMAND_SET_LEN),
            contexts,
            shared,
            calling_ae: negotiated.calling_ae,
            peer_max_pdu: negotiated.peer_max_pdu,
            pending: None,
            stats: Stats::default(),
        }
    }

    async fn run(&mut self) -> End {
        loop {
            let at_boundary = self.reassembler.is_idle() && self.conn.read_buf.is_empty();
            let shared = self.shared.clone();
            let pdu = tokio::select! {
                biased;
                _ = shared.abort.cancelled() => return End::Shutdown,
                _ = shared.shutdown.cancelled(), if at_boundary => None,
                r = self.conn.read_pdu() => Some(r),
            };
            let Some(pdu) = pdu else {
                // Shutting down between messages, unless the peer has
                // already started the next one (its bytes are in the socket
                // or arrive within a moment): then finish that one.
                let socket = &self.conn.socket;
                match tokio::time::timeout(SHUTDOWN_GRACE, socket.readable()).await {
                    Err(_) => return End::Shutdown,
                    Ok(Err(e)) => return End::ConnectionLost(e.into()),
                    Ok(Ok(())) => {}
                }
                match self.conn.socket.try_read_buf(&mut self.conn.read_buf) {
                    Ok(0) => return End::ConnectionLost(ConnError::Closed),
                    Ok(_) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return End::Shutdown,
                    Err(e) => return End::ConnectionLost(e.into()),
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
        if let Some(Pending::Store { store, .. }) = &mut self.pending {
            let abort = self.shared.abort.clone();
            tokio::select! {
                biased;
                _ = abort.cancelled() => return Some(End::Shutdown),
                _ = store.forward(fragment) => {}
            }
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
                        match outcome.status {
                            StoreStatus::Stored => {
                                debug!(sop = %rq.affected_sop_instance_uid, "stored")
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
            Some(Pending::Discard { response: None, .. }) | None => None,
        }
    }

    /// Sends a response; `Some` if the association must end (send failed,
    /// or a graceful shutdown is waiting for this message boundary).
    async fn respond(&mut self, context_id: u8, command: &CommandSet) -> Option<End> {
        let max = max_fragment_len(self.peer_max_pdu, UNLIMITED_PEER_FRAGMENT);
        for pdv in fragment(context_id, true, Bytes::from(command.encode()), max) {
            let pdu = Pdu::PData {
                data: vec![PDataValue {
                    presentation_context_id: pdv.context_id,
                    value_type: PDataValueType::Command,
                    is_last: pdv.is_last,
                    data: pdv.data.to_vec(),
                }],
            };
            if let Err(e) = self.conn.write_pdu(&pdu).await {
                return Some(End::ConnectionLost(e));
            }
        }
        if self.shared.shutdown.is_cancelled() {
            return Some(End::Shutdown);
        }
        None
    }

    /// The services: what to do with each command (PS3.7 §9.3). The
    /// extension point for C-FIND, C-MOVE and C-GET.
    fn dispatch(&mut self, context_id: u8, command: &CommandSet, has_data_set: bool) -> Action {
        let Ok(field) = command.command_field() else {
            return Action::Abort("command set without a readable Command Field".into());
        };
        if command_field::is_response(field) {
            // We send no requests on this association yet.
            warn!(
                command_field = format_args!("{field:#06x}"),
                "unexpected response ignored"
            );
            return self.discarding(context_id, has_data_set, None);
        }
        if field == command_field::C_CANCEL_RQ {
            // Every request is answered before the next is read, so there is
            // never anything left to cancel (PS3.7 §9.3.2.3).
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
        let response = match (field, service) {
            (command_field::C_ECHO_RQ, Service::Verification) => {
                self.stats.echoes += 1;
                match CEchoRq::from_command(command) {
                    Ok(rq) => CEchoRsp {
                        message_id_being_responded_to: rq.message_id,
                        affected_sop_class_uid: Some(context.abstract_syntax.clone()),
                        status: Status::SUCCESS,
                    }
                    .to_command(),
                    Err(e) => refuse(Status::CANNOT_UNDERSTAND, &e.to_string()),
                }
            }
            (command_field::C_STORE_RQ, Service::Storage) => {
                return self.begin_store(context_id, command, has_data_set);
            }
            (
                command_field::C_FIND_RQ,
                Service::QueryRetrieve {
                    operation: QrOperation::Find,
                    ..
                },
            )
            | (
                command_field::C_MOVE_RQ,
                Service::QueryRetrieve {
                    operation: QrOperation::Move,
                    ..
                },
            )
            | (
                command_field::C_GET_RQ,
                Service::QueryRetrieve {
                    operation: QrOperation::Get,
                    ..
                },
            ) => refuse(
                Status::SOP_CLASS_NOT_SUPPORTED,
                "query/retrieve is not served yet",
            ),
            _ => refuse(
                Status::UNRECOGNIZED_OPERATION,
                "operation not supported on this presentation context",
            ),
        };
        self.discarding(context_id, has_data_set, Some(response))
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
