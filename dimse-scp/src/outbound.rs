//! Associations the archive requests: the one helper for everything we
//! initiate (C-MOVE sub-operations, storage commitment reports, Instance
//! Availability Notifications, and later forwarding).
//!
//! [`Outbound::open`] connects to a `[[remote_ae]]` with our AE title as
//! calling AE, proposes the presentation contexts given and, per SOP
//! class, an SCP/SCU Role Selection sub-item (PS3.7 D.3.3.4) when the
//! caller asks for one (a storage commitment report proposes the SCP role,
//! PS3.4 J.3.3.1.3). Every read and write is bounded by the time-out. The
//! SCU operations send a request and wait for the response with the same
//! Message ID; data sets that follow a response are read and dropped.
//!
//! Non-goals: TLS to the peer (plain TCP only, as for C-MOVE until now),
//! asynchronous operations (one request at a time), answering requests
//! the peer sends us on this association (there are none in the services
//! that use it).

use std::time::Duration;

use bytes::Bytes;
use dicom_ul::pdu::{
    AbortRQServiceProviderReason, AbortRQSource, AssociationRQ, PDataValueType,
    PresentationContextProposed, PresentationContextResultReason, RequestorRoles, UserVariableItem,
};
use dicom_ul::Pdu;
use tokio::net::TcpStream;
use tracing::debug;

use crate::association::{write_message, Conn, ConnError};
use crate::message::pdv::MAX_COMMAND_SET_LEN;
use crate::message::{
    command_field, CommandSet, NRequest, NResponse, Pdv, Reassembled, Reassembler,
};
use crate::negotiation::{
    APPLICATION_CONTEXT_NAME, IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME,
};
use crate::server::RemoteAe;
use crate::status::Status;

/// What to propose.
pub(crate) struct OutboundRequest<'a> {
    pub our_ae: &'a str,
    pub remote: &'a RemoteAe,
    pub contexts: Vec<PresentationContextProposed>,
    /// Role Selection sub-items: (SOP class, our SCU role, our SCP role).
    pub roles: Vec<(String, bool, bool)>,
    /// The Maximum Length we announce (and enforce on what we read).
    pub max_pdu_len: u32,
    pub timeout: Duration,
}

/// An accepted presentation context of an outbound association.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OutboundContext {
    pub id: u8,
    pub abstract_syntax: String,
    pub transfer_syntax: String,
}

/// What every association we request shares: our AE title, the peers
/// (`[[remote_ae]]`), the Maximum Length and the time-out of the server's
/// configuration.
#[derive(Debug, Clone)]
pub(crate) struct OutboundSettings {
    pub our_ae: String,
    pub remote_aes: Vec<RemoteAe>,
    pub max_pdu_len: u32,
    pub timeout: Duration,
}

impl OutboundSettings {
    pub fn from_config(config: &crate::DimseConfig) -> OutboundSettings {
        OutboundSettings {
            our_ae: config.ae_title.clone(),
            remote_aes: config.remote_aes.clone(),
            max_pdu_len: config.limits.max_pdu_len,
            timeout: config.limits.idle_timeout,
        }
    }

    /// The `[[remote_ae]]` with this AE title.
    pub fn remote(&self, ae_title: &str) -> Option<&RemoteAe> {
        self.remote_aes
            .iter()
            .find(|r| r.ae_title.trim_matches(' ') == ae_title)
    }

    /// Opens an association to `remote` proposing one SOP class (Explicit
    /// and Implicit VR Little Endian) with the Role Selection sub-items
    /// given; the accepted context, or why there is none (the association
    /// then released).
    pub async fn open_one(
        &self,
        remote: &RemoteAe,
        sop_class: &str,
        roles: Vec<(String, bool, bool)>,
    ) -> Result<(Outbound, OutboundContext), String> {
        let out = Outbound::open(OutboundRequest {
            our_ae: &self.our_ae,
            remote,
            contexts: vec![PresentationContextProposed {
                id: 1,
                abstract_syntax: sop_class.to_owned(),
                transfer_syntaxes: vec![
                    pacs_core::dicom::EXPLICIT_VR_LITTLE_ENDIAN.to_owned(),
                    pacs_core::dicom::IMPLICIT_VR_LITTLE_ENDIAN.to_owned(),
                ],
            }],
            roles,
            max_pdu_len: self.max_pdu_len,
            timeout: self.timeout,
        })
        .await?;
        match out.context_for(sop_class).cloned() {
            Some(context) => Ok((out, context)),
            None => {
                out.release().await;
                Err(format!(
                    "{} did not accept the context of {sop_class}",
                    remote.ae_title
                ))
            }
        }
    }
}

/// An established association we requested.
pub(crate) struct Outbound {
    pub conn: Conn,
    pub contexts: Vec<OutboundContext>,
    /// The acceptor's answers to our Role Selection sub-items.
    pub roles: Vec<(String, RequestorRoles)>,
    pub peer_max_pdu: u32,
    next_message_id: u16,
}

impl Outbound {
    /// Connects, requests the association and reads the answer. The error
    /// says why, for logs and job errors (unreachable, rejected...).
    pub async fn open(req: OutboundRequest<'_>) -> Result<Outbound, String> {
        let addr = format!("{}:{}", req.remote.host, req.remote.port);
        let socket = tokio::time::timeout(req.timeout, TcpStream::connect(&addr))
            .await
            .map_err(|_| format!("connecting to {addr} timed out"))?
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        if let Err(e) = socket.set_nodelay(true) {
            debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let mut conn = Conn::new(
            Box::new(socket),
            crate::tls::PeerIdentity::Plain,
            req.max_pdu_len,
            req.timeout,
        );
        let mut user_variables = vec![
            UserVariableItem::MaxLength(req.max_pdu_len),
            UserVariableItem::ImplementationClassUID(IMPLEMENTATION_CLASS_UID.to_owned()),
            UserVariableItem::ImplementationVersionName(IMPLEMENTATION_VERSION_NAME.to_owned()),
        ];
        user_variables.extend(req.roles.iter().map(|(uid, scu, scp)| {
            UserVariableItem::ScuScpRoleSelectionSubItem(
                uid.clone(),
                RequestorRoles {
                    scu: *scu,
                    scp: *scp,
                },
            )
        }));
        let rq = AssociationRQ {
            protocol_version: 1,
            calling_ae_title: req.our_ae.to_owned(),
            called_ae_title: req.remote.ae_title.clone(),
            application_context_name: APPLICATION_CONTEXT_NAME.to_owned(),
            presentation_contexts: req.contexts.clone(),
            user_variables,
        };
        conn.write_pdu(&Pdu::AssociationRQ(rq))
            .await
            .map_err(|e| e.to_string())?;
        let ac = match conn.read_pdu().await.map_err(|e| e.to_string())? {
            Pdu::AssociationAC(ac) => ac,
            Pdu::AssociationRJ(rj) => return Err(format!("association rejected: {}", rj.source)),
            other => return Err(format!("unexpected {}", other.short_description())),
        };
        let peer_max_pdu = crate::negotiation::peer_max_length(&ac.user_variables);
        if !crate::message::can_carry_pdv(peer_max_pdu) {
            // Nothing we could send fits its PDUs (PS3.8 §9.3.1, D.1).
            conn.close_with(Some(&Pdu::AbortRQ {
                source: AbortRQSource::ServiceProvider(
                    AbortRQServiceProviderReason::InvalidPduParameter,
                ),
            }))
            .await;
            return Err(format!(
                "peer's maximum PDU length {peer_max_pdu} cannot carry a PDV"
            ));
        }
        let contexts = ac
            .presentation_contexts
            .iter()
            .filter(|r| r.reason == PresentationContextResultReason::Acceptance)
            .filter_map(|r| {
                let p = req.contexts.iter().find(|p| p.id == r.id)?;
                Some(OutboundContext {
                    id: r.id,
                    abstract_syntax: p.abstract_syntax.clone(),
                    transfer_syntax: r.transfer_syntax.trim_end_matches(['\0', ' ']).to_owned(),
                })
            })
            .collect();
        let roles = ac
            .user_variables
            .iter()
            .filter_map(|v| match v {
                UserVariableItem::ScuScpRoleSelectionSubItem(uid, r) => {
                    Some((uid.trim_end_matches(['\0', ' ']).to_owned(), *r))
                }
                _ => None,
            })
            .collect();
        Ok(Outbound {
            conn,
            contexts,
            roles,
            peer_max_pdu,
            next_message_id: 1,
        })
    }

    /// The first accepted context for a SOP class.
    pub fn context_for(&self, abstract_syntax: &str) -> Option<&OutboundContext> {
        self.contexts
            .iter()
            .find(|c| c.abstract_syntax == abstract_syntax)
    }

    /// Whether the acceptor agreed that we take the SCP role for a SOP
    /// class (PS3.7 D.3.3.4: an absent answer means it did not).
    pub fn we_are_scp(&self, abstract_syntax: &str) -> bool {
        self.roles
            .iter()
            .any(|(uid, r)| uid == abstract_syntax && r.scp)
    }

    /// A fresh Message ID (never 0).
    pub fn next_message_id(&mut self) -> u16 {
        let id = self.next_message_id;
        self.next_message_id = self.next_message_id.wrapping_add(1).max(1);
        id
    }

    /// Sends a message (command, then data set if any).
    pub async fn send(
        &mut self,
        context_id: u8,
        command: &CommandSet,
        data: Option<&[u8]>,
    ) -> Result<(), ConnError> {
        write_message(&mut self.conn, self.peer_max_pdu, context_id, command, data).await
    }

    /// Reads until the response to `message_id` is complete; other
    /// commands and any data set are dropped.
    pub async fn read_response(&mut self, message_id: u16) -> Result<CommandSet, ConnError> {
        let ids: Vec<u8> = self.contexts.iter().map(|c| c.id).collect();
        let mut reassembler = Reassembler::new(ids, MAX_COMMAND_SET_LEN);
        loop {
            match self.conn.read_pdu().await? {
                Pdu::PData { data } => {
                    for v in data {
                        let pdv = Pdv {
                            context_id: v.presentation_context_id,
                            is_command: v.value_type == PDataValueType::Command,
                            is_last: v.is_last,
                            data: Bytes::from(v.data),
                        };
                        let event = reassembler
                            .push(pdv)
                            .map_err(|e| ConnError::Protocol(e.to_string()))?;
                        if let Some(Reassembled::Command { command, .. }) = event {
                            let field = command.command_field().ok();
                            let answers = command
                                .us(crate::message::tags::MESSAGE_ID_BEING_RESPONDED_TO)
                                .ok();
                            if field.is_some_and(command_field::is_response)
                                && answers == Some(message_id)
                            {
                                return Ok(command);
                            }
                        }
                    }
                }
                Pdu::AbortRQ { .. } => return Err(ConnError::Closed),
                other => {
                    return Err(ConnError::Protocol(format!(
                        "unexpected {}",
                        other.short_description()
                    )))
                }
            }
        }
    }

    /// A DIMSE-N operation as SCU (N-EVENT-REPORT, N-CREATE, N-SET,
    /// N-ACTION...): sends `rq` (its Message ID is assigned here) with the
    /// data set, and returns the response.
    pub async fn n_request(
        &mut self,
        context_id: u8,
        mut rq: NRequest,
        data: Option<&[u8]>,
    ) -> Result<NResponse, ConnError> {
        rq.message_id = self.next_message_id();
        rq.has_data_set = data.is_some();
        self.send(context_id, &rq.to_command(), data).await?;
        let command = self.read_response(rq.message_id).await?;
        NResponse::from_command(&command).map_err(|e| ConnError::Protocol(e.to_string()))
    }

    /// N-EVENT-REPORT as the SCP of a SOP class (PS3.7 §10.1.1): the
    /// status the peer answered.
    pub async fn n_event_report(
        &mut self,
        context_id: u8,
        sop_class_uid: &str,
        sop_instance_uid: &str,
        event_type_id: u16,
        data: &[u8],
    ) -> Result<Status, ConnError> {
        let rq = NRequest {
            field: command_field::N_EVENT_REPORT_RQ,
            message_id: 0,
            sop_class_uid: sop_class_uid.to_owned(),
            sop_instance_uid: Some(sop_instance_uid.to_owned()),
            type_id: Some(event_type_id),
            has_data_set: true,
        };
        Ok(self.n_request(context_id, rq, Some(data)).await?.status)
    }

    /// N-CREATE as SCU (PS3.7 §10.1.5): the response (its Affected SOP
    /// Instance UID is the one the peer assigned when we gave none). For
    /// Instance Availability Notification (PS3.4 R, `ian.rs`).
    pub async fn n_create(
        &mut self,
        context_id: u8,
        sop_class_uid: &str,
        sop_instance_uid: Option<&str>,
        data: &[u8],
    ) -> Result<NResponse, ConnError> {
        let rq = NRequest {
            field: command_field::N_CREATE_RQ,
            message_id: 0,
            sop_class_uid: sop_class_uid.to_owned(),
            sop_instance_uid: sop_instance_uid.map(str::to_owned),
            type_id: None,
            has_data_set: true,
        };
        self.n_request(context_id, rq, Some(data)).await
    }

    /// A-RELEASE-RQ, then wait (bounded) for the A-RELEASE-RP.
    pub async fn release(mut self) {
        if self.conn.write_pdu(&Pdu::ReleaseRQ).await.is_ok() {
            let _ = self.conn.read_pdu().await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::identifier::{encode, OutElement};
    use crate::negotiation::MPPS_SOP_CLASS;
    use crate::{DimseConfig, DimseServer};
    use pacs_core::dicom::EXPLICIT_VR_LITTLE_ENDIAN;
    use pacs_core::mpps::MppsStatus;
    use pacs_core::{Archive, Limits};
    use std::net::SocketAddr;
    use std::sync::Arc;

    fn mpps(status: &str) -> Vec<u8> {
        encode(&[OutElement::text(0x0040_0252, *b"CS", status)], true)
    }

    /// The SCU side against our own MPPS SCP, over TCP: N-CREATE, a
    /// duplicate, N-SET to COMPLETED, then an N-SET refused.
    #[tokio::test]
    async fn n_create_and_n_set_as_scu() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = storage::ObjectBlobStore::open(&format!(
            "file://{}",
            dir.path().join("objects").display()
        ))
        .unwrap();
        let index = storage::SledIndex::open(&dir.path().join("index")).unwrap();
        let archive = Archive::new(Arc::new(blobs), Arc::new(index), Limits::default());
        let config = DimseConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ae_title: "ARCHIVE".into(),
            ..DimseConfig::default()
        };
        let server = DimseServer::bind(config).await.unwrap();
        let addr = server.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(archive.clone(), async move {
            let _ = stopped.await;
        }));
        let remote = RemoteAe {
            ae_title: "ARCHIVE".into(),
            host: "127.0.0.1".into(),
            port: addr.port(),
            tls_subject: None,
        };
        let mut out = Outbound::open(OutboundRequest {
            our_ae: "MODALITY",
            remote: &remote,
            contexts: vec![PresentationContextProposed {
                id: 1,
                abstract_syntax: MPPS_SOP_CLASS.into(),
                transfer_syntaxes: vec![EXPLICIT_VR_LITTLE_ENDIAN.into()],
            }],
            roles: Vec::new(),
            max_pdu_len: 16384,
            timeout: Duration::from_secs(30),
        })
        .await
        .unwrap();
        let ctx = out.context_for(MPPS_SOP_CLASS).unwrap().id;
        let uid = "1.2.826.0.1.3680043.2.1125.77";
        let created = out
            .n_create(ctx, MPPS_SOP_CLASS, Some(uid), &mpps("IN PROGRESS"))
            .await
            .unwrap();
        assert_eq!(created.status, Status::SUCCESS);
        assert_eq!(created.sop_instance_uid.as_deref(), Some(uid));
        let again = out
            .n_create(ctx, MPPS_SOP_CLASS, Some(uid), &mpps("IN PROGRESS"))
            .await
            .unwrap();
        assert_eq!(again.status, Status::DUPLICATE_SOP_INSTANCE);
        let set = || NRequest {
            field: command_field::N_SET_RQ,
            message_id: 0,
            sop_class_uid: MPPS_SOP_CLASS.into(),
            sop_instance_uid: Some(uid.into()),
            type_id: None,
            has_data_set: true,
        };
        let done = out
            .n_request(ctx, set(), Some(&mpps("COMPLETED")))
            .await
            .unwrap();
        assert_eq!(done.status, Status::SUCCESS);
        let late = out
            .n_request(ctx, set(), Some(&mpps("DISCONTINUED")))
            .await
            .unwrap();
        assert_eq!(late.status, Status::PROCESSING_FAILURE);
        out.release().await;
        let record = archive.workflow().mpps.get(uid).await.unwrap().unwrap();
        assert_eq!(record.status, MppsStatus::Completed);
        assert_eq!(record.creator_ae, "MODALITY");
        let _ = stop.send(());
        task.await.unwrap().unwrap();
    }
}
