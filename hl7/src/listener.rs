//! The MLLP listener on `hl7_listen`: reads framed messages, applies the
//! orders they carry to the archive's order store and the patient updates
//! and merges (ADT A08, A31, A40) to the archive, and answers each with an
//! ACK on the same connection (original acknowledgement mode).
//!
//! A message that cannot be read gets an AR and the connection goes on; a
//! message larger than `max_message_bytes` gets an AR and the connection
//! is closed (the stream cannot be trusted to resynchronise); a connection
//! idle for `idle_timeout` is closed; at most `max_connections` are served
//! at once (others are closed at once). Nothing here logs patient data:
//! only message types, control IDs and outcomes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pacs_core::audit::{AuditAction, AuditActor};
use pacs_core::orders::{change_status, now_secs, order_event, record, OrderError, OrderStatus};
use pacs_core::patients::PatientError;
use pacs_core::Archive;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::ack::{ack, AckCode, ErrorCode};
use crate::message::Message;
use crate::mllp::{frame, next_frame, FrameError};
use crate::orders::{orders_of, Control, Mapping, OrderMessage};

/// The listener's settings (the `hl7_*` config keys).
#[derive(Debug, Clone)]
pub struct Hl7Config {
    pub mapping: Mapping,
    pub max_message_bytes: usize,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// Serves `listener` until `stop` resolves.
pub async fn serve(
    listener: TcpListener,
    archive: Archive,
    config: Hl7Config,
    stop: impl std::future::Future<Output = ()>,
) {
    let config = Arc::new(config);
    let slots = Arc::new(tokio::sync::Semaphore::new(config.max_connections));
    let cancel = CancellationToken::new();
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut stop => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "HL7 accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            warn!(%peer, max = config.max_connections, "HL7 connection refused: hl7_max_connections reached");
            drop(stream);
            continue;
        };
        let (archive, config, cancel) = (archive.clone(), config.clone(), cancel.child_token());
        tokio::spawn(async move {
            let mut stream = stream;
            connection(&mut stream, peer, &archive, &config, cancel).await;
            // The slot is free before the peer sees the close, so a
            // client that reconnects at once is served.
            drop(slot);
            drop(stream);
        });
    }
    cancel.cancel();
}

async fn connection(
    stream: &mut TcpStream,
    peer: SocketAddr,
    archive: &Archive,
    config: &Hl7Config,
    cancel: CancellationToken,
) {
    debug!(%peer, "HL7 connection");
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        loop {
            match next_frame(&mut buf, config.max_message_bytes) {
                Ok(Some(message)) => {
                    let reply = handle(archive, config, &message, peer).await;
                    if stream.write_all(&frame(&reply)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e @ FrameError::TooLarge(_)) => {
                    warn!(%peer, error = %e, "HL7 message refused; connection closed");
                    let nak = ack(
                        None,
                        AckCode::Reject,
                        Some((ErrorCode::Internal, &e.to_string())),
                        now_secs(),
                    );
                    let _ = stream.write_all(&frame(&nak)).await;
                    return;
                }
            }
        }
        let read = tokio::select! {
            _ = cancel.cancelled() => return,
            r = tokio::time::timeout(config.idle_timeout, stream.read(&mut chunk)) => r,
        };
        match read {
            Err(_) => {
                debug!(%peer, "HL7 connection idle: closed");
                return;
            }
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// What applying one order failed on.
struct Failure {
    code: AckCode,
    error: ErrorCode,
    text: String,
}

fn failure(e: OrderError) -> Failure {
    let (code, error) = match &e {
        OrderError::Invalid(_) => (AckCode::Error, ErrorCode::DataType),
        OrderError::Duplicate { .. } => (AckCode::Error, ErrorCode::DuplicateKey),
        OrderError::NotFound => (AckCode::Error, ErrorCode::UnknownKey),
        OrderError::Final(_) => (AckCode::Error, ErrorCode::Internal),
        // The archive cannot take it now: rejected, to be sent again.
        OrderError::Unavailable | OrderError::Port(_) | OrderError::Audit(_) => {
            (AckCode::Reject, ErrorCode::Internal)
        }
    };
    Failure {
        code,
        error,
        text: e.to_string(),
    }
}

/// Applies one order.
async fn apply(archive: &Archive, o: OrderMessage, actor: &AuditActor) -> Result<(), OrderError> {
    let store = archive.orders().ok_or(OrderError::Unavailable)?;
    let order = o.order;
    match o.control {
        Control::New => {
            order.validate()?;
            let saved = store.insert(order).await?;
            record(
                archive,
                order_event(
                    AuditAction::Create,
                    &saved,
                    actor.clone(),
                    "order from HL7 (NW)",
                ),
            )
            .await
        }
        Control::Change => {
            let old = store
                .find_step(&order.accession_number, &order.sps_id)
                .await?
                .ok_or(OrderError::NotFound)?;
            if old.status.is_final() {
                return Err(OrderError::Final(old.status.as_str()));
            }
            let mut new = order;
            new.id = old.id.clone();
            new.status = old.status;
            if new.study_instance_uid.is_empty() {
                new.study_instance_uid = old.study_instance_uid.clone();
            }
            if new.modality.is_empty() {
                new.modality = old.modality.clone();
            }
            new.validate()?;
            let saved = store.replace(new).await?;
            record(
                archive,
                order_event(
                    AuditAction::Update,
                    &saved,
                    actor.clone(),
                    "order changed by HL7 (XO)",
                ),
            )
            .await
        }
        Control::Cancel => {
            let old = store
                .find_step(&order.accession_number, &order.sps_id)
                .await?
                .ok_or(OrderError::NotFound)?;
            let gone = store.remove(&old.id).await?.ok_or(OrderError::NotFound)?;
            record(
                archive,
                order_event(
                    AuditAction::Delete,
                    &gone,
                    actor.clone(),
                    "order cancelled by HL7 (CA)",
                ),
            )
            .await
        }
        Control::Discontinue => change_status(
            archive,
            &order.accession_number,
            &order.sps_id,
            OrderStatus::Discontinued,
            actor.clone(),
        )
        .await
        .map(|_| ()),
    }
}

/// Applies the patient changes of an ADT message: AA when all applied,
/// AE when the content is wrong (a field, an unknown patient), AR when the
/// archive cannot take it now (to be sent again).
async fn adt(
    archive: &Archive,
    config: &Hl7Config,
    m: &Message,
    actor: &AuditActor,
) -> (AckCode, Option<(ErrorCode, String)>) {
    let changes = match crate::adt::changes_of(m, &config.mapping) {
        Ok(c) => c,
        Err((code, text)) => return (AckCode::Error, Some((code, text))),
    };
    for c in changes {
        let req = pacs_core::PatientChangeRequest {
            kind: c.kind,
            from: c.from,
            into: c.into,
            demographics: c.demographics,
            actor: actor.clone(),
            source: "hl7",
        };
        match archive.change_patient(req).await {
            Ok(_) => {}
            // The HIS sends ADT for every patient; one the archive holds
            // nothing of (no study, no order) needs nothing.
            Err(PatientError::NotFound) => debug!("ADT for a patient the archive does not hold"),
            Err(e) => {
                let (code, error) = match &e {
                    PatientError::Invalid(_) => (AckCode::Error, ErrorCode::DataType),
                    PatientError::NotFound => (AckCode::Error, ErrorCode::UnknownKey),
                    PatientError::Unavailable
                    | PatientError::Audit(_)
                    | PatientError::Port(_)
                    | PatientError::Archive(_) => (AckCode::Reject, ErrorCode::Internal),
                };
                return (code, Some((error, e.to_string())));
            }
        }
    }
    (AckCode::Accept, None)
}

/// Answers one message.
pub async fn handle(
    archive: &Archive,
    config: &Hl7Config,
    bytes: &[u8],
    peer: SocketAddr,
) -> Vec<u8> {
    let now = now_secs();
    let m = match Message::parse(bytes) {
        Ok(m) => m,
        Err(e) => {
            info!(%peer, error = %e, "HL7 message unreadable: AR");
            return ack(
                None,
                AckCode::Reject,
                Some((ErrorCode::SegmentSequence, &e.to_string())),
                now,
            );
        }
    };
    let (kind, event) = (m.msh(9, 1), m.msh(9, 2));
    let control_id = m.msh(10, 1);
    let reply = |code: AckCode, err: Option<(ErrorCode, &str)>| {
        info!(%peer, message = %format!("{kind}^{event}"), control_id = %control_id, ack = code.as_str(),
            reason = err.map(|(_, t)| t).unwrap_or(""), "HL7 message answered");
        ack(Some(&m), code, err, now)
    };
    let actor = AuditActor {
        user_id: format!("hl7:{}", m.msh(3, 1)),
        role: Some("Application".into()),
        address: Some(peer.ip().to_string()),
        requestor: true,
        ..AuditActor::default()
    };
    match (kind.as_str(), event.as_str()) {
        ("ORM", "O01") | ("OMI", "O23") => {}
        ("ADT", "A08" | "A31" | "A40") => {
            let (code, err) = adt(archive, config, &m, &actor).await;
            if code == AckCode::Reject {
                warn!(%peer, "HL7 patient change not applied: the archive cannot take it now");
            }
            return reply(code, err.as_ref().map(|(c, t)| (*c, t.as_str())));
        }
        ("ADT", _) => {
            return reply(
                AckCode::Reject,
                Some((
                    ErrorCode::UnsupportedEvent,
                    "unsupported ADT event (A08, A31, A40)",
                )),
            )
        }
        ("ORM", _) | ("OMI", _) => {
            return reply(
                AckCode::Reject,
                Some((ErrorCode::UnsupportedEvent, "unsupported trigger event")),
            )
        }
        _ => {
            return reply(
                AckCode::Reject,
                Some((
                    ErrorCode::UnsupportedMessageType,
                    "unsupported message type (ORM^O01, OMI^O23)",
                )),
            )
        }
    }
    let orders = match orders_of(&m, &config.mapping) {
        Ok(o) => o,
        Err((code, text)) => return reply(AckCode::Error, Some((code, &text))),
    };
    for o in orders {
        if let Err(e) = apply(archive, o, &actor).await {
            let f = failure(e);
            if f.code == AckCode::Reject {
                warn!(%peer, error = %f.text, "HL7 order not applied: the archive cannot take it now");
            }
            return reply(f.code, Some((f.error, &f.text)));
        }
    }
    reply(AckCode::Accept, None)
}
