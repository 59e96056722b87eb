//! A byte-level DIMSE client: associates, sends commands and data sets in
//! PDVs it cuts itself, and reads every PDU back as it came, so a test can
//! send what a well-behaved SCU never would and see exactly what the
//! server answers (PS3.8 PDUs, PS3.7 command sets).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use dicom_ul::pdu::AssociationRQ;
use dicom_ul::pdu::{PDataValue, PDataValueType, PresentationContextProposed, UserVariableItem};
use dicom_ul::Pdu;
use dimse_scp::message::{
    tags, CEchoRq, CStoreRq, CStoreRsp, CommandSet, Pdv, Reassembled, Reassembler,
};
use dimse_scp::Status;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The called AE title the in-process test servers use.
pub const AE: &str = "PACS";
pub const VERIFICATION: &str = "1.2.840.10008.1.1";
pub const CT_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
pub const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
pub const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

pub struct Scu {
    pub stream: TcpStream,
    buf: BytesMut,
    /// Largest PDU the server accepts.
    pub server_max_pdu: u32,
    /// Largest PDU length field the server sent (P-DATA-TF and others).
    pub largest_pdu_len: u32,
}

/// A proposed presentation context.
pub fn pc(id: u8, abstract_syntax: &str, ts: &[&str]) -> PresentationContextProposed {
    PresentationContextProposed {
        id,
        abstract_syntax: abstract_syntax.into(),
        transfer_syntaxes: ts.iter().map(|s| s.to_string()).collect(),
    }
}

pub fn association_rq(
    calling: &str,
    called: &str,
    pcs: Vec<PresentationContextProposed>,
) -> AssociationRQ {
    AssociationRQ {
        protocol_version: 1,
        calling_ae_title: calling.into(),
        called_ae_title: called.into(),
        application_context_name: "1.2.840.10008.3.1.1.1".into(),
        presentation_contexts: pcs,
        user_variables: vec![
            UserVariableItem::MaxLength(16384),
            UserVariableItem::ImplementationClassUID("1.2.3.4".into()),
        ],
    }
}

impl Scu {
    pub async fn connect(addr: SocketAddr) -> Scu {
        Scu::from_stream(TcpStream::connect(addr).await.unwrap())
    }

    /// An SCU over a stream connected by the test (to set socket options).
    pub fn from_stream(stream: TcpStream) -> Scu {
        // Best effort: a connection the server has already closed may not
        // take the option, and the test then reads why.
        let _ = stream.set_nodelay(true);
        Scu {
            stream,
            buf: BytesMut::new(),
            server_max_pdu: 16384,
            largest_pdu_len: 0,
        }
    }

    /// Connects and sends an A-ASSOCIATE-RQ; the answer PDU, or why there
    /// was none (refused, closed unanswered).
    pub async fn try_request(addr: SocketAddr, rq: AssociationRQ) -> Result<Pdu, String> {
        let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let mut scu = Scu::from_stream(stream);
        let mut out = Vec::new();
        dicom_ul::write_pdu(&mut out, &Pdu::AssociationRQ(rq)).map_err(|e| e.to_string())?;
        scu.stream
            .write_all(&out)
            .await
            .map_err(|e| e.to_string())?;
        scu.read_pdu().await
    }

    /// Sends an A-ASSOCIATE-RQ and returns the answer PDU.
    pub async fn request(&mut self, rq: AssociationRQ) -> Pdu {
        self.send_pdu(&Pdu::AssociationRQ(rq)).await;
        let pdu = self.read_pdu().await.unwrap();
        if let Pdu::AssociationAC(ac) = &pdu {
            for v in &ac.user_variables {
                if let UserVariableItem::MaxLength(n) = v {
                    self.server_max_pdu = *n;
                }
            }
        }
        pdu
    }

    /// Connects and associates with Verification (1) and CT storage (3, 5
    /// for implicit VR) contexts; panics unless accepted.
    pub async fn associate(addr: SocketAddr) -> Scu {
        let mut scu = Scu::connect(addr).await;
        let pdu = scu
            .request(association_rq(
                "TESTSCU",
                AE,
                vec![
                    pc(1, VERIFICATION, &[IMPLICIT_LE]),
                    pc(3, CT_STORAGE, &[EXPLICIT_LE]),
                    pc(5, CT_STORAGE, &[IMPLICIT_LE]),
                    pc(7, "1.2.840.10008.5.1.4.1.2.2.1", &[IMPLICIT_LE]),
                ],
            ))
            .await;
        assert!(matches!(pdu, Pdu::AssociationAC(_)), "{pdu:?}");
        scu
    }

    pub async fn send_pdu(&mut self, pdu: &Pdu) {
        let mut out = Vec::new();
        dicom_ul::write_pdu(&mut out, pdu).unwrap();
        self.stream.write_all(&out).await.unwrap();
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// The next PDU, or the error (closed, unreadable) that prevented it.
    /// Records the largest PDU length field seen in `largest_pdu_len`.
    pub async fn read_pdu(&mut self) -> Result<Pdu, String> {
        let read = async {
            while self.buf.len() < 6 {
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) => return Err("connection closed".to_owned()),
                    Ok(_) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
            let len = u32::from_be_bytes([self.buf[2], self.buf[3], self.buf[4], self.buf[5]]);
            self.largest_pdu_len = self.largest_pdu_len.max(len);
            dicom_ul::association::read_pdu_from_wire_async(
                &mut self.stream,
                &mut self.buf,
                4 * 1024 * 1024,
                false,
            )
            .await
            .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(Duration::from_secs(30), read).await {
            Err(_) => Err("timed out".into()),
            Ok(r) => r,
        }
    }

    pub async fn send_pdv(&mut self, context_id: u8, is_command: bool, is_last: bool, data: &[u8]) {
        self.send_pdu(&Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: context_id,
                value_type: if is_command {
                    PDataValueType::Command
                } else {
                    PDataValueType::Data
                },
                is_last,
                data: data.to_vec(),
            }],
        })
        .await;
    }

    pub async fn send_command(&mut self, context_id: u8, command: &CommandSet) {
        self.send_pdv(context_id, true, true, &command.encode())
            .await;
    }

    /// Sends a data set in fragments that fit the server's maximum PDU.
    pub async fn send_data(&mut self, context_id: u8, data: &[u8]) {
        let max = (self.server_max_pdu as usize - 6).min(64 * 1024);
        let chunks: Vec<&[u8]> = if data.is_empty() {
            vec![&[][..]]
        } else {
            data.chunks(max).collect()
        };
        let n = chunks.len();
        for (i, c) in chunks.into_iter().enumerate() {
            self.send_pdv(context_id, false, i + 1 == n, c).await;
        }
    }

    /// Reads PDUs until one complete command set arrives.
    pub async fn read_command(&mut self) -> Result<CommandSet, String> {
        let mut r = Reassembler::new((1..=255).step_by(2), 1 << 16);
        loop {
            match self.read_pdu().await? {
                Pdu::PData { data } => {
                    for v in data {
                        let pdv = Pdv {
                            context_id: v.presentation_context_id,
                            is_command: v.value_type == PDataValueType::Command,
                            is_last: v.is_last,
                            data: v.data.into(),
                        };
                        if let Some(Reassembled::Command { command, .. }) =
                            r.push(pdv).map_err(|e| e.to_string())?
                        {
                            return Ok(command);
                        }
                    }
                }
                other => return Err(format!("{other:?}")),
            }
        }
    }

    /// Reads PDUs until one whole message arrives: its command, and its
    /// data set if it has one.
    pub async fn read_message(&mut self) -> (CommandSet, Option<Vec<u8>>) {
        let mut r = Reassembler::new((1..=255).step_by(2), 1 << 16);
        let mut command: Option<CommandSet> = None;
        let mut data = Vec::new();
        for _ in 0..100_000 {
            match self.read_pdu().await.unwrap() {
                Pdu::PData { data: values } => {
                    for v in values {
                        let pdv = Pdv {
                            context_id: v.presentation_context_id,
                            is_command: v.value_type == PDataValueType::Command,
                            is_last: v.is_last,
                            data: v.data.into(),
                        };
                        match r.push(pdv).unwrap() {
                            Some(Reassembled::Command {
                                command: c,
                                has_data_set,
                                ..
                            }) => {
                                if !has_data_set {
                                    return (c, None);
                                }
                                command = Some(c);
                            }
                            Some(Reassembled::Data {
                                fragment, is_last, ..
                            }) => {
                                data.extend_from_slice(&fragment);
                                if is_last {
                                    return (command.unwrap(), Some(data));
                                }
                            }
                            None => {}
                        }
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        panic!("message never completed")
    }

    pub async fn echo(&mut self, message_id: u16) -> Status {
        let rq = CEchoRq {
            message_id,
            affected_sop_class_uid: VERIFICATION.into(),
        };
        self.send_command(1, &rq.to_command()).await;
        let rsp = self.read_command().await.unwrap();
        assert_eq!(
            rsp.us(tags::MESSAGE_ID_BEING_RESPONDED_TO).unwrap(),
            message_id
        );
        Status(rsp.us(tags::STATUS).unwrap())
    }

    pub fn store_rq(message_id: u16, class: &str, instance: &str) -> CommandSet {
        CStoreRq {
            message_id,
            affected_sop_class_uid: class.into(),
            affected_sop_instance_uid: instance.into(),
            priority: 0,
            move_originator_ae_title: None,
            move_originator_message_id: None,
        }
        .to_command()
    }

    /// A C-STORE of `dataset` on context `ctx`.
    pub async fn store(
        &mut self,
        ctx: u8,
        message_id: u16,
        class: &str,
        instance: &str,
        dataset: &[u8],
    ) -> CStoreRsp {
        self.send_command(ctx, &Scu::store_rq(message_id, class, instance))
            .await;
        self.send_data(ctx, dataset).await;
        let rsp = CStoreRsp::from_command(&self.read_command().await.unwrap()).unwrap();
        assert_eq!(rsp.message_id_being_responded_to, message_id);
        rsp
    }

    pub async fn release(mut self) {
        self.send_pdu(&Pdu::ReleaseRQ).await;
        let pdu = self.read_pdu().await.unwrap();
        assert_eq!(pdu, Pdu::ReleaseRP);
    }
}

/// A fresh association that echoes successfully: the server is alive and
/// well after whatever a test did.
pub async fn assert_echo_ok(addr: SocketAddr) {
    let mut scu = Scu::associate(addr).await;
    assert_eq!(scu.echo(77).await, Status::SUCCESS);
    scu.release().await;
}
