//! The Query/Retrieve SCP (PS3.4 Annex C): C-FIND, C-GET and C-MOVE as
//! operations the association loop drives one step at a time, so that it
//! can read a C-CANCEL (or, for C-GET, the C-STORE-RSP of a sub-operation)
//! between two pending responses.
//!
//! - C-FIND: the identifier becomes a [`Query`](pacs_core::query::Query);
//!   the archive answers it once (capped at `max_find_results`), and each
//!   step sends one pending response with one match.
//! - C-GET: each step sends one instance as a C-STORE sub-operation on this
//!   association, on a storage context whose requestor took the SCP role
//!   ([`store_context`] picks it); the loop routes the C-STORE-RSP back
//!   here.
//! - C-MOVE: a task ([`run_move`]) opens an association to the destination
//!   and sends the instances; each step forwards its progress as a pending
//!   response.
//!
//! Instances are sent as stored (the data set bytes of the Part 10 blob
//! after its meta group) when the peer accepted the stored transfer
//! syntax. Otherwise, if it accepted the SOP class in Explicit VR LE or
//! Implicit VR LE, the instance is transcoded (by the server's one
//! pixel-work service, [`imaging::service::PixelService`], bounded in
//! concurrency and memory together with DICOMweb's) and sent in that
//! syntax; what cannot be transcoded, or finds the service busy past its
//! queue wait, is a failed sub-operation. Nothing is ever compressed.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dicom_ul::pdu::{PDataValue, PDataValueType, PresentationContextProposed};
use dicom_ul::Pdu;
use futures::StreamExt;
use imaging::service::{PixelError, PixelService};
use pacs_core::dicom::{
    parse_part10, ParseError, EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN,
};
use pacs_core::query::{Level, Match, Query};
use pacs_core::records::InstanceRecord;
use pacs_core::{Archive, ArchiveError, Limits};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, info, warn, Instrument};

use crate::association::{write_message, Conn, ConnError};
use crate::identifier::{failed_instances_identifier, FindRequest, Refusal, RetrieveKeys};
use crate::message::{
    command_field, fragment, max_fragment_len, tags, CStoreRq, CStoreRsp, CommandSet, Response,
    DATA_SET_PRESENT,
};
use crate::outbound::{Outbound, OutboundRequest};
use crate::server::RemoteAe;
use crate::status::{Status, StatusKind};

/// Value bytes per outgoing PDV when the peer announced no maximum.
pub(crate) const UNLIMITED_PEER_FRAGMENT: usize = 1024 * 1024;
/// Pending C-MOVE progress reports buffered between the move task and the
/// association loop.
const MOVE_PROGRESS_DEPTH: usize = 16;
/// Presentation contexts one C-MOVE association may propose (PS3.8
/// §9.3.2.2: odd IDs 1-255).
const MAX_MOVE_CONTEXTS: usize = 128;

/// Counts of C-GET / C-MOVE sub-operations (PS3.4 C.4.2.1.6).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SubOps {
    pub remaining: usize,
    pub completed: usize,
    pub failed: usize,
    pub warning: usize,
    pub failed_uids: Vec<String>,
}

impl SubOps {
    pub fn new(total: usize) -> SubOps {
        SubOps {
            remaining: total,
            ..SubOps::default()
        }
    }

    pub fn fail(&mut self, sop: &str) {
        self.remaining = self.remaining.saturating_sub(1);
        self.failed += 1;
        self.failed_uids.push(sop.to_owned());
    }

    /// Counts a sub-operation by the status of its C-STORE-RSP.
    pub fn record(&mut self, sop: &str, status: Status) {
        match status.kind() {
            StatusKind::Success => {
                self.remaining = self.remaining.saturating_sub(1);
                self.completed += 1;
            }
            StatusKind::Warning => {
                self.remaining = self.remaining.saturating_sub(1);
                self.warning += 1;
            }
            _ => self.fail(sop),
        }
    }

    /// The final status (PS3.4 C.4.2.3.1, C.4.3.3.1): success when every
    /// sub-operation succeeded, A702 when every one failed, B000 otherwise.
    pub fn final_status(&self) -> Status {
        if self.failed == 0 && self.warning == 0 {
            Status::SUCCESS
        } else if self.completed == 0 && self.warning == 0 {
            Status::UNABLE_TO_PERFORM_SUBOPERATIONS
        } else {
            Status::SUBOPERATIONS_COMPLETE_WITH_FAILURES
        }
    }
}

fn count(n: usize) -> u16 {
    // Counts past 65535 cannot be expressed (US); they saturate.
    u16::try_from(n).unwrap_or(u16::MAX)
}

/// A C-FIND, C-GET or C-MOVE response, with the sub-operation counts when
/// given (`with_remaining`: Pending and Cancel carry Remaining, PS3.4
/// C.4.2.1.6) and the Data Set Type set when an identifier follows.
pub(crate) fn qr_response(
    field: u16,
    message_id: u16,
    sop_class: &str,
    status: Status,
    comment: Option<&str>,
    subops: Option<(&SubOps, bool)>,
    has_identifier: bool,
) -> CommandSet {
    let mut c = Response {
        command_field: command_field::response_to(field),
        message_id_being_responded_to: message_id,
        affected_sop_class_uid: Some(sop_class),
        affected_sop_instance_uid: None,
        status,
        error_comment: comment,
    }
    .to_command();
    if let Some((s, with_remaining)) = subops {
        if with_remaining {
            c.set_us(tags::NUMBER_OF_REMAINING_SUBOPERATIONS, count(s.remaining));
        }
        c.set_us(tags::NUMBER_OF_COMPLETED_SUBOPERATIONS, count(s.completed));
        c.set_us(tags::NUMBER_OF_FAILED_SUBOPERATIONS, count(s.failed));
        c.set_us(tags::NUMBER_OF_WARNING_SUBOPERATIONS, count(s.warning));
    }
    if has_identifier {
        c.set_us(tags::COMMAND_DATA_SET_TYPE, DATA_SET_PRESENT);
    }
    c
}

/// A Q/R request being served.
pub(crate) struct QrRequest {
    pub context_id: u8,
    pub field: u16,
    pub message_id: u16,
    pub sop_class: String,
    /// Identifiers are written in Explicit VR (else Implicit VR) LE.
    pub explicit_vr: bool,
}

impl QrRequest {
    pub fn response(
        &self,
        status: Status,
        comment: Option<&str>,
        subops: Option<(&SubOps, bool)>,
        has_identifier: bool,
    ) -> CommandSet {
        qr_response(
            self.field,
            self.message_id,
            &self.sop_class,
            status,
            comment,
            subops,
            has_identifier,
        )
    }

    /// The final response of a retrieve: its status by the counts (or
    /// Cancel), with Failed SOP Instance UID List when some failed.
    pub fn retrieve_final(
        &self,
        subops: &SubOps,
        cancelled: bool,
    ) -> (CommandSet, Option<Vec<u8>>) {
        let status = if cancelled {
            Status::CANCEL
        } else {
            subops.final_status()
        };
        let identifier = (!subops.failed_uids.is_empty())
            .then(|| failed_instances_identifier(&subops.failed_uids, self.explicit_vr));
        let comment = (status.kind() == StatusKind::Failure
            || status.kind() == StatusKind::Warning)
            .then_some("one or more sub-operations failed");
        let command = self.response(
            status,
            comment,
            Some((subops, cancelled)),
            identifier.is_some(),
        );
        (command, identifier)
    }
}

/// A C-FIND in progress: the matches still to send.
pub(crate) struct FindOp {
    pub rq: QrRequest,
    pub request: FindRequest,
    pub rows: VecDeque<Match>,
    pub cancelled: bool,
}

impl FindOp {
    /// The next response to send and whether it is the last.
    pub fn step(&mut self, our_ae: &str) -> (CommandSet, Option<Vec<u8>>, bool) {
        if self.cancelled {
            return (
                self.rq.response(Status::CANCEL, None, None, false),
                None,
                true,
            );
        }
        match self.rows.pop_front() {
            Some(row) => {
                let status = if self.request.optional_keys_unsupported {
                    Status::PENDING_WARNING
                } else {
                    Status::PENDING
                };
                let identifier = self.request.response(&row, our_ae, self.rq.explicit_vr);
                (
                    self.rq.response(status, None, None, true),
                    Some(identifier),
                    false,
                )
            }
            None => (
                self.rq.response(Status::SUCCESS, None, None, false),
                None,
                true,
            ),
        }
    }
}

/// A C-GET in progress.
pub(crate) struct GetOp {
    pub rq: QrRequest,
    pub queue: VecDeque<InstanceRecord>,
    pub subops: SubOps,
    /// The sub-operation whose C-STORE-RSP is awaited: its Message ID and
    /// SOP Instance UID.
    pub awaiting: Option<(u16, String)>,
    pub cancelled: bool,
    pub next_message_id: u16,
}

/// A C-MOVE in progress: the task sending the instances and its reports.
pub(crate) struct MoveOp {
    pub rq: QrRequest,
    pub events: mpsc::Receiver<MoveEvent>,
    pub cancel: CancellationToken,
    /// Cancels the task when the association ends first.
    pub _guard: DropGuard,
}

/// What the move task reports.
#[derive(Debug)]
pub(crate) enum MoveEvent {
    /// A sub-operation ended; more remain.
    Progress(SubOps),
    /// The move is over (all sent, cancelled, or the destination failed).
    Done { subops: SubOps, cancelled: bool },
}

/// The operation of an association (one at a time).
pub(crate) enum Operation {
    Find(FindOp),
    Get(GetOp),
    Move(MoveOp),
    Worklist(crate::worklist::WorklistOp),
}

impl Operation {
    pub fn message_id(&self) -> u16 {
        match self {
            Operation::Find(f) => f.rq.message_id,
            Operation::Get(g) => g.rq.message_id,
            Operation::Move(m) => m.rq.message_id,
            Operation::Worklist(w) => w.rq.message_id,
        }
    }

    /// C-CANCEL (PS3.7 §9.3.2.3): the operation ends at its next step.
    pub fn cancel(&mut self) {
        match self {
            Operation::Find(f) => f.cancelled = true,
            Operation::Get(g) => g.cancelled = true,
            Operation::Move(m) => m.cancel.cancel(),
            Operation::Worklist(w) => w.cancelled = true,
        }
    }
}

/// Runs a C-FIND query (the matches, capped by the query's limit).
pub(crate) async fn find(archive: &Archive, query: &Query) -> Result<Vec<Match>, Refusal> {
    match archive.find(query).await {
        Ok(result) => {
            if result.total > result.matches.len() {
                info!(
                    total = result.total,
                    returned = result.matches.len(),
                    "C-FIND matches capped at max_find_results"
                );
            }
            Ok(result.matches)
        }
        Err(e) => {
            warn!(error = %e, "C-FIND failed");
            Err(Refusal {
                status: Status::OUT_OF_RESOURCES,
                comment: "storage unavailable".into(),
            })
        }
    }
}

/// The instances a retrieve identifier names, without duplicates, in
/// study / series / instance order as the index gives them. Unknown UIDs
/// match nothing (zero sub-operations is a success).
pub(crate) async fn instances_to_retrieve(
    archive: &Archive,
    keys: &RetrieveKeys,
) -> Result<Vec<InstanceRecord>, Refusal> {
    let unavailable = |e: ArchiveError| {
        warn!(error = %e, "cannot list the instances to retrieve");
        Refusal {
            status: Status::UNABLE_TO_CALCULATE_MATCHES,
            comment: "storage unavailable".into(),
        }
    };
    let mut out: Vec<InstanceRecord> = Vec::new();
    match keys {
        RetrieveKeys::Patient(id) => {
            let mut query = Query::new(Level::Study);
            query
                .add_key(crate::identifier::PATIENT_ID, id)
                .map_err(|e| Refusal {
                    status: Status::CANNOT_UNDERSTAND,
                    comment: e.to_string(),
                })?;
            let studies = archive.find(&query).await.map_err(unavailable)?;
            for row in studies.matches {
                if let Some(study) = row.study {
                    out.extend(
                        archive
                            .instances_of_study(&study.study_instance_uid)
                            .await
                            .map_err(unavailable)?,
                    );
                }
            }
        }
        RetrieveKeys::Studies(uids) => {
            for uid in uids {
                out.extend(archive.instances_of_study(uid).await.map_err(unavailable)?);
            }
        }
        RetrieveKeys::Series(uids) => {
            for uid in uids {
                out.extend(
                    archive
                        .instances_of_series(uid)
                        .await
                        .map_err(unavailable)?,
                );
            }
        }
        RetrieveKeys::Instances(uids) => {
            for uid in uids {
                match archive.instance(uid).await {
                    Ok(record) => out.push(record),
                    Err(ArchiveError::NotFound(_)) => {}
                    Err(e) => return Err(unavailable(e)),
                }
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|r| seen.insert(r.sop_instance_uid.clone()));
    Ok(out)
}

/// Why an instance could not be sent.
#[derive(Debug)]
pub(crate) enum SendError {
    /// Nothing was sent: the sub-operation fails, the association goes on.
    Unavailable(String),
    /// The association is unusable (the peer is gone, or the blob broke
    /// off mid-message so the message cannot be completed).
    Broken(ConnError),
}

/// The accepted storage context to send `record` on, and its transfer
/// syntax: one in the stored syntax if there is one (sent as stored), else
/// one in Explicit VR LE, then Implicit VR LE, then any other syntax the
/// instance can be transcoded to, lossless ones (RLE, JPEG Lossless) before
/// JPEG Baseline. `accepted` lists (context ID, abstract
/// syntax, transfer syntax) of the contexts usable for C-STORE.
pub(crate) fn store_context<'a>(
    accepted: impl Iterator<Item = (u8, &'a str, &'a str)>,
    sop_class: &str,
    stored_ts: &str,
) -> Option<(u8, String)> {
    let usable = accepted.filter(|(_, class, _)| *class == sop_class);
    let rank = |ts: &str| -> Option<u8> {
        if ts == stored_ts {
            Some(0)
        } else if !imaging::transcode::can_transcode(stored_ts, ts) {
            None
        } else if ts == EXPLICIT_VR_LITTLE_ENDIAN {
            Some(1)
        } else if ts == IMPLICIT_VR_LITTLE_ENDIAN {
            Some(2)
        } else if imaging::transcode::is_lossy_target(ts) {
            Some(4)
        } else {
            Some(3)
        }
    };
    usable
        .filter_map(|(id, _, ts)| rank(ts).map(|r| (r, id, ts)))
        .min_by_key(|(r, id, _)| (*r, *id))
        .map(|(_, id, ts)| (id, ts.to_owned()))
}

/// Sends one C-STORE-RQ with the instance's data set in `transfer_syntax`
/// (the accepted syntax of `context_id`), fragmented to the peer's maximum
/// PDU. In the stored syntax, the blob after its file meta group is
/// streamed as is; in another, the instance is transcoded first. Either
/// way the blob is read (and transcoded) before the command is sent, so a
/// missing, unreadable or untranscodable blob fails the sub-operation
/// without touching the association.
// The message's parts and where the object comes from; a struct of them
// would be built only to be taken apart here.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn send_instance(
    conn: &mut Conn,
    context_id: u8,
    transfer_syntax: &str,
    rq: &CStoreRq,
    archive: &Archive,
    record: &InstanceRecord,
    peer_max_pdu: u32,
    pixel: &PixelService,
) -> Result<(), SendError> {
    if transfer_syntax != record.transfer_syntax_uid {
        let data = transcoded(pixel, archive, record, transfer_syntax).await?;
        return write_message(
            conn,
            peer_max_pdu,
            context_id,
            &rq.to_command(),
            Some(&data),
        )
        .await
        .map_err(SendError::Broken);
    }
    let limits: &Limits = archive.limits();
    let (_, mut stream) = archive
        .retrieve(&record.sop_instance_uid)
        .await
        .map_err(|e| SendError::Unavailable(e.to_string()))?;
    let mut buf = BytesMut::new();
    let mut done = false;
    let offset = loop {
        if !done {
            match stream.next().await {
                Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                Some(Err(e)) => return Err(SendError::Unavailable(e.to_string())),
                None => done = true,
            }
        }
        match parse_part10(&buf, done, limits) {
            Ok(header) => {
                if header.meta.transfer_syntax_uid != record.transfer_syntax_uid {
                    return Err(SendError::Unavailable(
                        "stored transfer syntax differs from the index".into(),
                    ));
                }
                break header.dataset_offset;
            }
            Err(ParseError::Incomplete) if !done => continue,
            Err(e) => return Err(SendError::Unavailable(e.to_string())),
        }
    };
    let offset = usize::try_from(offset)
        .ok()
        .filter(|o| *o <= buf.len())
        .ok_or_else(|| SendError::Unavailable("data set offset outside the blob".into()))?;
    let _ = buf.split_to(offset);
    write_message(conn, peer_max_pdu, context_id, &rq.to_command(), None)
        .await
        .map_err(SendError::Broken)?;
    let max = max_fragment_len(peer_max_pdu, UNLIMITED_PEER_FRAGMENT);
    loop {
        while !done && buf.len() <= max {
            match stream.next().await {
                Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                Some(Err(e)) => {
                    return Err(SendError::Broken(ConnError::Protocol(format!(
                        "blob read failed mid-message: {e}"
                    ))))
                }
                None => done = true,
            }
        }
        let is_last = done && buf.len() <= max;
        let data = buf.split_to(buf.len().min(max));
        let pdu = Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: context_id,
                value_type: PDataValueType::Data,
                is_last,
                data: data.to_vec(),
            }],
        };
        conn.write_pdu(&pdu).await.map_err(SendError::Broken)?;
        if is_last {
            return Ok(());
        }
    }
}

/// The instance's data set transcoded to `target_ts` by the pixel-work
/// service (which reads the object under its memory budget and converts
/// it off the async runtime).
async fn transcoded(
    pixel: &PixelService,
    archive: &Archive,
    record: &InstanceRecord,
    target_ts: &str,
) -> Result<Vec<u8>, SendError> {
    let from = record.transfer_syntax_uid.as_str();
    let started = std::time::Instant::now();
    match pixel.convert_dataset(archive, record, target_ts).await {
        Ok(data) => {
            debug!(sop = %record.sop_instance_uid, from = %from, to = %target_ts,
                elapsed_ms = started.elapsed().as_millis() as u64, "instance transcoded");
            Ok(data)
        }
        // Out of resources: the sub-operation fails (PS3.4 C.4.3.1.3.1).
        Err(PixelError::Busy) => Err(SendError::Unavailable(
            "out of resources: the pixel-work service stayed busy past its queue wait".into(),
        )),
        Err(e) => Err(SendError::Unavailable(format!(
            "{e} (stored in {from}, the peer accepted {target_ts})"
        ))),
    }
}

// ---------------------------------------------------------------------------
// The C-MOVE SCU side

/// Everything the move task needs.
pub(crate) struct MoveJob {
    pub archive: Archive,
    pub destination: RemoteAe,
    pub our_ae: String,
    pub originator_ae: String,
    pub originator_message_id: u16,
    pub instances: Vec<InstanceRecord>,
    pub max_pdu_len: u32,
    pub timeout: Duration,
    pub pixel: Arc<PixelService>,
}

/// Starts the move task; its reports arrive on the returned receiver.
pub(crate) fn start_move(job: MoveJob, rq: QrRequest) -> MoveOp {
    let (tx, rx) = mpsc::channel(MOVE_PROGRESS_DEPTH);
    let cancel = CancellationToken::new();
    let token = cancel.clone();
    tokio::spawn(run_move(job, token, tx).in_current_span());
    MoveOp {
        rq,
        events: rx,
        _guard: cancel.clone().drop_guard(),
        cancel,
    }
}

/// An association we requested, for C-STORE sub-operations.
struct StoreScu {
    out: Outbound,
}

async fn run_move(job: MoveJob, cancel: CancellationToken, tx: mpsc::Sender<MoveEvent>) {
    let mut subops = SubOps::new(job.instances.len());
    let dest = format!(
        "{}@{}:{}",
        job.destination.ae_title, job.destination.host, job.destination.port
    );
    if job.instances.is_empty() {
        let _ = tx
            .send(MoveEvent::Done {
                subops,
                cancelled: false,
            })
            .await;
        return;
    }
    let mut scu = match associate(&job).await {
        Ok(scu) => scu,
        Err(e) => {
            warn!(destination = %dest, error = %e,
                "C-MOVE destination unreachable; every sub-operation fails");
            for r in &job.instances {
                subops.fail(r.sop_instance_uid.as_str());
            }
            let _ = tx
                .send(MoveEvent::Done {
                    subops,
                    cancelled: false,
                })
                .await;
            return;
        }
    };
    info!(destination = %dest, instances = job.instances.len(), "C-MOVE association established");
    let mut cancelled = false;
    let mut broken = false;
    for (i, record) in job.instances.iter().enumerate() {
        let sop = record.sop_instance_uid.as_str();
        if broken {
            subops.fail(sop);
            continue;
        }
        if cancel.is_cancelled() {
            cancelled = true;
            break;
        }
        match scu.store(&job, record).await {
            Ok(status) => {
                if status.kind() != StatusKind::Success {
                    debug!(sop = %sop, status = %status, "C-MOVE sub-operation not successful");
                }
                subops.record(sop, status);
            }
            Err(SendError::Unavailable(m)) => {
                warn!(sop = %sop, reason = %m, "C-MOVE sub-operation failed");
                subops.fail(sop);
            }
            Err(SendError::Broken(e)) => {
                warn!(destination = %dest, error = %e, "C-MOVE association to the destination broke");
                subops.fail(sop);
                broken = true;
            }
        }
        if i + 1 < job.instances.len()
            && !broken
            && tx.send(MoveEvent::Progress(subops.clone())).await.is_err()
        {
            // The requesting association is gone.
            scu.out.conn.close_with(Some(&Pdu::ReleaseRQ)).await;
            return;
        }
    }
    if !broken {
        scu.release().await;
    }
    let _ = tx.send(MoveEvent::Done { subops, cancelled }).await;
}

/// The presentation contexts a C-MOVE association proposes: one per (SOP
/// class, stored transfer syntax) pair with that syntax alone, so the
/// destination can take instances as stored; then one per SOP class with
/// Explicit VR LE and Implicit VR LE, for instances to be transcoded when
/// it refuses the stored syntax. A separate context (rather than adding the
/// uncompressed syntaxes to the first) keeps the destination from choosing
/// an uncompressed syntax when it would have taken the stored one. Capped
/// at [`MAX_MOVE_CONTEXTS`], stored-syntax contexts first.
fn move_contexts(instances: &[InstanceRecord]) -> Vec<PresentationContextProposed> {
    let mut contexts: Vec<(String, Vec<String>)> = Vec::new();
    for r in instances {
        let pair = (
            r.sop_class_uid.to_string(),
            vec![r.transfer_syntax_uid.clone()],
        );
        if !contexts.contains(&pair) {
            contexts.push(pair);
        }
    }
    let uncompressed = vec![
        EXPLICIT_VR_LITTLE_ENDIAN.to_owned(),
        IMPLICIT_VR_LITTLE_ENDIAN.to_owned(),
    ];
    let mut classes: Vec<String> = Vec::new();
    for r in instances {
        let class = r.sop_class_uid.to_string();
        if !classes.contains(&class) {
            classes.push(class);
        }
    }
    for class in classes {
        contexts.push((class, uncompressed.clone()));
    }
    contexts
        .into_iter()
        .take(MAX_MOVE_CONTEXTS)
        .enumerate()
        .map(|(i, (class, ts))| PresentationContextProposed {
            id: (2 * i + 1) as u8,
            abstract_syntax: class,
            transfer_syntaxes: ts,
        })
        .collect()
}

/// Opens the association to the move destination, proposing
/// [`move_contexts`].
async fn associate(job: &MoveJob) -> Result<StoreScu, String> {
    let out = Outbound::open(OutboundRequest {
        our_ae: &job.our_ae,
        remote: &job.destination,
        contexts: move_contexts(&job.instances),
        roles: Vec::new(),
        max_pdu_len: job.max_pdu_len,
        timeout: job.timeout,
    })
    .await?;
    Ok(StoreScu { out })
}

impl StoreScu {
    /// One C-STORE sub-operation: the status the destination answered.
    async fn store(&mut self, job: &MoveJob, record: &InstanceRecord) -> Result<Status, SendError> {
        let accepted = self
            .out
            .contexts
            .iter()
            .map(|c| (c.id, c.abstract_syntax.as_str(), c.transfer_syntax.as_str()));
        let Some((context_id, transfer_syntax)) = store_context(
            accepted,
            record.sop_class_uid.as_str(),
            &record.transfer_syntax_uid,
        ) else {
            return Err(SendError::Unavailable(format!(
                "the destination accepted no context for {} in {} or a syntax it can be \
                 transcoded to",
                record.sop_class_uid, record.transfer_syntax_uid
            )));
        };
        let message_id = self.out.next_message_id();
        let rq = CStoreRq {
            message_id,
            affected_sop_class_uid: record.sop_class_uid.to_string(),
            affected_sop_instance_uid: record.sop_instance_uid.to_string(),
            priority: crate::message::priority::MEDIUM,
            move_originator_ae_title: Some(job.originator_ae.clone()),
            move_originator_message_id: Some(job.originator_message_id),
        };
        send_instance(
            &mut self.out.conn,
            context_id,
            &transfer_syntax,
            &rq,
            &job.archive,
            record,
            self.out.peer_max_pdu,
            &job.pixel,
        )
        .await?;
        let command = self
            .out
            .read_response(message_id)
            .await
            .map_err(SendError::Broken)?;
        let rsp = CStoreRsp::from_command(&command)
            .map_err(|e| SendError::Broken(ConnError::Protocol(e.to_string())))?;
        Ok(rsp.status)
    }

    /// A-RELEASE-RQ, then wait (bounded) for the A-RELEASE-RP.
    async fn release(self) {
        self.out.release().await
    }
}

/// Fragments a whole message (command, then data set if any) into
/// P-DATA-TF PDUs.
pub(crate) fn message_pdus(
    context_id: u8,
    command: &CommandSet,
    data: Option<&[u8]>,
    peer_max_pdu: u32,
) -> Vec<Pdu> {
    let max = max_fragment_len(peer_max_pdu, UNLIMITED_PEER_FRAGMENT);
    let mut pdvs = fragment(context_id, true, Bytes::from(command.encode()), max);
    if let Some(data) = data {
        pdvs.extend(fragment(
            context_id,
            false,
            Bytes::copy_from_slice(data),
            max,
        ));
    }
    pdvs.into_iter()
        .map(|pdv| Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: pdv.context_id,
                value_type: if pdv.is_command {
                    PDataValueType::Command
                } else {
                    PDataValueType::Data
                },
                is_last: pdv.is_last,
                data: pdv.data.to_vec(),
            }],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_status_by_counts() {
        let mut s = SubOps::new(3);
        assert_eq!(s.final_status(), Status::SUCCESS);
        s.record("1.1", Status::SUCCESS);
        s.record("1.2", Status(0xB000));
        assert_eq!(s.remaining, 1);
        assert_eq!(
            s.final_status(),
            Status::SUBOPERATIONS_COMPLETE_WITH_FAILURES
        );
        let mut all_failed = SubOps::new(2);
        all_failed.record("1.1", Status::OUT_OF_RESOURCES);
        all_failed.fail("1.2");
        assert_eq!(all_failed.failed_uids, vec!["1.1", "1.2"]);
        assert_eq!(
            all_failed.final_status(),
            Status::UNABLE_TO_PERFORM_SUBOPERATIONS
        );
        let mut partial = SubOps::new(2);
        partial.record("1.1", Status::SUCCESS);
        partial.fail("1.2");
        assert_eq!(
            partial.final_status(),
            Status::SUBOPERATIONS_COMPLETE_WITH_FAILURES
        );
    }

    #[test]
    fn retrieve_responses_carry_counts() {
        let rq = QrRequest {
            context_id: 1,
            field: command_field::C_GET_RQ,
            message_id: 9,
            sop_class: "1.2.840.10008.5.1.4.1.2.2.3".into(),
            explicit_vr: false,
        };
        let mut s = SubOps::new(2);
        s.record("1.2.3", Status::SUCCESS);
        s.fail("1.2.4");
        let (c, identifier) = rq.retrieve_final(&s, false);
        assert_eq!(c.command_field(), Ok(command_field::C_GET_RSP));
        assert_eq!(
            c.us(tags::STATUS),
            Ok(Status::SUBOPERATIONS_COMPLETE_WITH_FAILURES.0)
        );
        assert!(!c.contains(tags::NUMBER_OF_REMAINING_SUBOPERATIONS));
        assert_eq!(c.us(tags::NUMBER_OF_COMPLETED_SUBOPERATIONS), Ok(1));
        assert_eq!(c.us(tags::NUMBER_OF_FAILED_SUBOPERATIONS), Ok(1));
        assert!(c.has_data_set());
        assert!(identifier.is_some());
        let (c, _) = rq.retrieve_final(&SubOps::new(4), true);
        assert_eq!(c.us(tags::STATUS), Ok(Status::CANCEL.0));
        assert_eq!(c.us(tags::NUMBER_OF_REMAINING_SUBOPERATIONS), Ok(4));
        assert!(!c.has_data_set());
    }

    #[test]
    fn store_context_prefers_stored_then_uncompressed_then_lossless() {
        const MR: &str = "1.2.840.10008.5.1.4.1.1.4";
        const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
        const RLE: &str = "1.2.840.10008.1.2.5";
        const JPEG_LS: &str = "1.2.840.10008.1.2.4.80";
        const JPEG_BASE: &str = "1.2.840.10008.1.2.4.50";
        const JPEG_SV1: &str = "1.2.840.10008.1.2.4.70";
        const JPEG_2K: &str = "1.2.840.10008.1.2.4.90";
        const BE: &str = "1.2.840.10008.1.2.2";
        let ex = EXPLICIT_VR_LITTLE_ENDIAN;
        let im = IMPLICIT_VR_LITTLE_ENDIAN;
        // (accepted contexts, SOP class, stored syntax, expected choice)
        type Case<'a> = (
            Vec<(u8, &'a str, &'a str)>,
            &'a str,
            &'a str,
            Option<(u8, &'a str)>,
        );
        let table: Vec<Case> = vec![
            (
                vec![(1, MR, im), (3, MR, ex), (5, MR, RLE)],
                MR,
                RLE,
                Some((5, RLE)),
            ),
            (vec![(1, MR, im), (3, MR, ex)], MR, RLE, Some((3, ex))),
            (vec![(1, MR, im), (3, CT, ex)], MR, RLE, Some((1, im))),
            (vec![(1, MR, BE)], MR, RLE, Some((1, BE))),
            (vec![(1, MR, BE), (3, MR, im)], MR, RLE, Some((3, im))),
            (vec![(1, CT, ex)], MR, RLE, None),
            (vec![(1, MR, ex), (3, MR, im)], MR, JPEG_LS, None),
            (vec![(1, MR, JPEG_LS)], MR, JPEG_LS, Some((1, JPEG_LS))),
            // Compressed only when nothing uncompressed is accepted, and
            // lossless before lossy.
            (vec![(1, CT, RLE)], CT, ex, Some((1, RLE))),
            (vec![(1, CT, RLE), (3, CT, im)], CT, ex, Some((3, im))),
            (
                vec![(1, CT, JPEG_BASE), (3, CT, JPEG_SV1)],
                CT,
                ex,
                Some((3, JPEG_SV1)),
            ),
            (vec![(1, CT, JPEG_BASE)], CT, ex, Some((1, JPEG_BASE))),
            (vec![(1, CT, JPEG_2K)], CT, ex, None),
            (vec![], CT, ex, None),
        ];
        for (accepted, class, stored, expected) in table {
            let got = store_context(accepted.iter().copied(), class, stored);
            assert_eq!(
                got,
                expected.map(|(id, ts)| (id, ts.to_owned())),
                "{accepted:?} {class} {stored}"
            );
        }
    }

    #[test]
    fn move_contexts_offer_stored_then_uncompressed() {
        let uid = |s: &str| -> pacs_core::Uid { s.parse().expect("valid UID") };
        let record = |class: &str, ts: &str, sop: &str| InstanceRecord {
            sop_instance_uid: uid(sop),
            sop_class_uid: uid(class),
            series_instance_uid: uid("1.2.1"),
            study_instance_uid: uid("1.2"),
            instance_number: String::new(),
            rows: None,
            columns: None,
            bits_allocated: None,
            number_of_frames: None,
            photometric_interpretation: String::new(),
            content_date: String::new(),
            content_time: String::new(),
            transfer_syntax_uid: ts.into(),
            blob_key: String::new(),
            size: 0,
            sha256: String::new(),
            pixel_data_offset: None,
            received_at_ms: 0,
        };
        let instances = vec![
            record("1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.1.2.5", "1.1"),
            record("1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.1.2.5", "1.2"),
            record(
                "1.2.840.10008.5.1.4.1.1.2",
                EXPLICIT_VR_LITTLE_ENDIAN,
                "1.3",
            ),
        ];
        let proposed = move_contexts(&instances);
        let got: Vec<(u8, &str, Vec<&str>)> = proposed
            .iter()
            .map(|p| {
                (
                    p.id,
                    p.abstract_syntax.as_str(),
                    p.transfer_syntaxes.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        let both = vec![EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN];
        assert_eq!(
            got,
            vec![
                (1, "1.2.840.10008.5.1.4.1.1.4", vec!["1.2.840.10008.1.2.5"]),
                (
                    3,
                    "1.2.840.10008.5.1.4.1.1.2",
                    vec![EXPLICIT_VR_LITTLE_ENDIAN]
                ),
                (5, "1.2.840.10008.5.1.4.1.1.4", both.clone()),
                (7, "1.2.840.10008.5.1.4.1.1.2", both),
            ]
        );
        let many: Vec<InstanceRecord> = (0..200)
            .map(|i| record(&format!("1.2.3.{i}"), EXPLICIT_VR_LITTLE_ENDIAN, "1.1"))
            .collect();
        let proposed = move_contexts(&many);
        assert_eq!(proposed.len(), MAX_MOVE_CONTEXTS);
        assert_eq!(proposed.last().map(|p| p.id), Some(255));
    }

    #[test]
    fn message_pdus_fragment_both_parts() {
        let c = qr_response(
            command_field::C_FIND_RQ,
            1,
            "1.2",
            Status::PENDING,
            None,
            None,
            true,
        );
        let data = vec![7u8; 100];
        let pdus = message_pdus(3, &c, Some(&data), 16 + 6);
        let mut command_last = 0;
        let mut data_bytes = 0;
        for pdu in &pdus {
            let Pdu::PData { data } = pdu else {
                panic!("not P-DATA")
            };
            for v in data {
                assert!(v.data.len() <= 16);
                match v.value_type {
                    PDataValueType::Command => command_last += usize::from(v.is_last),
                    PDataValueType::Data => data_bytes += v.data.len(),
                }
            }
        }
        assert_eq!(command_last, 1);
        assert_eq!(data_bytes, 100);
    }
}
