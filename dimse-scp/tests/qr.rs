//! Query/Retrieve SCP end to end on 127.0.0.1, over an archive loaded with
//! `sample-data/studies`: C-FIND, C-GET, C-MOVE and C-CANCEL with the
//! crate's own byte-level SCU (exact statuses and counts), with DCMTK
//! (`findscu`, `getscu`, `movescu` to `storescp`) and with pynetdicom.
//!
//! A missing peer fails the test when `PACS_REQUIRE_PEERS` is set, and
//! otherwise prints SKIPPED and passes.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use dicom_ul::pdu::{RequestorRoles, UserVariableItem};
use dicom_ul::Pdu;
use dimse_scp::message::{command_field, tags, CStoreRsp, CommandSet, DATA_SET_PRESENT};
use dimse_scp::{RemoteAe, Status};
use pacs_core::dicom::{parse_dataset, parse_part10, DataSet, TransferSyntax};
use pacs_core::{Archive, Limits};
use pacs_testkit::net::free_port;

const FINDSCU: &str = "/usr/bin/findscu";
const GETSCU: &str = "/usr/bin/getscu";
const MOVESCU: &str = "/usr/bin/movescu";
const STORESCP: &str = "/usr/bin/storescp";
const STUDY_FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";
const STUDY_MOVE: &str = "1.2.840.10008.5.1.4.1.2.2.2";
const STUDY_GET: &str = "1.2.840.10008.5.1.4.1.2.2.3";
const PATIENT_FIND: &str = "1.2.840.10008.5.1.4.1.2.1.1";
const CT_STUDY: &str = "2.25.10580310851379504485814918705078594299";
const CT_PRIOR_STUDY: &str = "2.25.98675502377789379655201241491797196321";
const MR_STUDY: &str = "2.25.77877917239551877359248355397676798685";
const CALLER: &str = "QRSCU";

async fn load_samples(archive: &Archive) -> usize {
    let files = sample_files(&sample_dir());
    for f in &files {
        let file = tokio::fs::File::open(f).await.unwrap();
        archive.store(file).await.unwrap();
    }
    files.len()
}

fn sample_files(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect()
}

fn remote(ae: &str, port: u16) -> RemoteAe {
    RemoteAe {
        ae_title: ae.into(),
        host: "127.0.0.1".into(),
        port,
        tls_subject: None,
    }
}

/// A server with the samples loaded; `extra` remote AEs besides the
/// query/retrieve callers.
async fn loaded_server(extra: Vec<RemoteAe>) -> Server {
    let server = start(move |c| {
        c.remote_aes = vec![
            remote(CALLER, 1),
            remote("FINDSCU", 1),
            remote("GETSCU", 1),
            remote("MOVESCU", 1),
            remote("PYSCU", 1),
        ];
        c.remote_aes.extend(extra);
    })
    .await;
    assert_eq!(load_samples(&server.archive).await, 50);
    server
}

/// Explicit VR Little Endian identifier from (tag, VR, value).
fn identifier(elements: &[(u32, &str, &str)]) -> Vec<u8> {
    encode_identifier(elements, true)
}

fn encode_identifier(elements: &[(u32, &str, &str)], explicit: bool) -> Vec<u8> {
    let mut sorted = elements.to_vec();
    sorted.sort_by_key(|e| e.0);
    let mut out = Vec::new();
    for (tag, vr, value) in sorted {
        let mut v = value.as_bytes().to_vec();
        if v.len() % 2 == 1 {
            v.push(if vr == "UI" { 0 } else { b' ' });
        }
        out.extend_from_slice(&((tag >> 16) as u16).to_le_bytes());
        out.extend_from_slice(&((tag & 0xFFFF) as u16).to_le_bytes());
        if explicit {
            out.extend_from_slice(vr.as_bytes());
            out.extend_from_slice(&(v.len() as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(&v);
    }
    out
}

fn read_identifier(bytes: &[u8]) -> DataSet {
    parse_dataset(
        bytes,
        &TransferSyntax::explicit_vr_little_endian(),
        true,
        &Limits::default(),
    )
    .unwrap()
    .dataset
}

fn qr_rq(field: u16, class: &str, message_id: u16, destination: Option<&str>) -> CommandSet {
    let mut c = CommandSet::new();
    c.set_uid(tags::AFFECTED_SOP_CLASS_UID, class);
    c.set_us(tags::COMMAND_FIELD, field);
    c.set_us(tags::MESSAGE_ID, message_id);
    c.set_us(tags::PRIORITY, 0);
    c.set_us(tags::COMMAND_DATA_SET_TYPE, DATA_SET_PRESENT);
    if let Some(d) = destination {
        c.set_text(tags::MOVE_DESTINATION, d);
    }
    c
}

/// One message read back: command and data set (if any).
async fn read_message(scu: &mut Scu) -> (CommandSet, Option<Vec<u8>>) {
    scu.read_message().await
}

fn status_of(c: &CommandSet) -> Status {
    Status(c.us(tags::STATUS).unwrap())
}

async fn associate_qr(addr: std::net::SocketAddr, calling: &str, roles: bool) -> Scu {
    associate_qr_over(Scu::connect(addr).await, calling, roles).await
}

async fn associate_qr_over(scu: Scu, calling: &str, roles: bool) -> Scu {
    associate_qr_with_max_pdu(scu, calling, roles, 16384).await
}

/// Associates announcing `max_pdu` as our Maximum Length Received.
async fn associate_qr_with_max_pdu(mut scu: Scu, calling: &str, roles: bool, max_pdu: u32) -> Scu {
    let mut rq = association_rq(
        calling,
        AE,
        vec![
            pc(1, STUDY_FIND, &[EXPLICIT_LE]),
            pc(3, STUDY_MOVE, &[EXPLICIT_LE]),
            pc(5, STUDY_GET, &[EXPLICIT_LE]),
            pc(7, CT_STORAGE, &[EXPLICIT_LE]),
            pc(9, PATIENT_FIND, &[IMPLICIT_LE]),
        ],
    );
    for v in &mut rq.user_variables {
        if let UserVariableItem::MaxLength(n) = v {
            *n = max_pdu;
        }
    }
    if roles {
        rq.user_variables
            .push(UserVariableItem::ScuScpRoleSelectionSubItem(
                CT_STORAGE.into(),
                RequestorRoles {
                    scu: false,
                    scp: true,
                },
            ));
    }
    let pdu = scu.request(rq).await;
    assert!(matches!(pdu, Pdu::AssociationAC(_)), "{pdu:?}");
    scu
}

/// A C-FIND over the byte-level SCU: the pending identifiers and the final
/// status.
async fn find(
    scu: &mut Scu,
    ctx: u8,
    class: &str,
    keys: &[(u32, &str, &str)],
) -> (Vec<DataSet>, Status) {
    scu.send_command(ctx, &qr_rq(command_field::C_FIND_RQ, class, 11, None))
        .await;
    // Context 9 is the implicit VR one.
    scu.send_data(ctx, &encode_identifier(keys, ctx != 9)).await;
    let mut out = Vec::new();
    for _ in 0..1000 {
        let (c, data) = read_message(scu).await;
        assert_eq!(c.us(tags::MESSAGE_ID_BEING_RESPONDED_TO), Ok(11));
        let status = status_of(&c);
        if status == Status::PENDING || status == Status::PENDING_WARNING {
            let data = data.expect("pending C-FIND-RSP without identifier");
            let ds = if ctx == 9 {
                parse_dataset(
                    &data,
                    &TransferSyntax::implicit_vr_little_endian(),
                    true,
                    &Limits::default(),
                )
                .unwrap()
                .dataset
            } else {
                read_identifier(&data)
            };
            out.push(ds);
        } else {
            return (out, status);
        }
    }
    panic!("too many C-FIND responses")
}

const LEVEL: u32 = 0x0008_0052;
const NAME: u32 = 0x0010_0010;
const PID: u32 = 0x0010_0020;
const STUDY_UID: u32 = 0x0020_000D;
const SERIES_UID: u32 = 0x0020_000E;
const SOP_UID: u32 = 0x0008_0018;
const STUDY_DATE: u32 = 0x0008_0020;
const MODALITIES: u32 = 0x0008_0061;
const CHARSET: u32 = 0x0008_0005;

fn study_uids(rows: &[DataSet]) -> Vec<String> {
    let mut v: Vec<String> = rows.iter().filter_map(|d| d.uid(STUDY_UID)).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_find_at_every_level() {
    let server = loaded_server(vec![]).await;
    let mut scu = associate_qr(server.addr, CALLER, false).await;
    // STUDY, UTF-8 wild card on the name: both studies of Nguyễn, the
    // response declares ISO_IR 192 and carries exactly the keys asked.
    let t0 = Instant::now();
    let (rows, status) = find(
        &mut scu,
        1,
        STUDY_FIND,
        &[
            (CHARSET, "CS", "ISO_IR 192"),
            (LEVEL, "CS", "STUDY"),
            (NAME, "PN", "Nguyễn*"),
            (STUDY_UID, "UI", ""),
            (MODALITIES, "CS", ""),
            (STUDY_DATE, "DA", ""),
            (0x0032_1060, "LO", ""),
        ],
    )
    .await;
    println!("C-FIND STUDY by name: {:?}", t0.elapsed());
    assert_eq!(status, Status::SUCCESS);
    assert_eq!(
        study_uids(&rows),
        vec![CT_STUDY.to_string(), CT_PRIOR_STUDY.to_string()]
    );
    for r in &rows {
        assert_eq!(r.string(NAME).unwrap(), "Nguyễn^Văn An");
        assert_eq!(r.string(CHARSET).unwrap(), "ISO_IR 192");
        assert_eq!(r.string(LEVEL).unwrap(), "STUDY");
        assert_eq!(r.string(0x0008_0054).unwrap(), AE);
        assert_eq!(r.strings(MODALITIES), vec!["CT"]);
        assert!(r.contains(0x0032_1060), "unknown key returned zero-length");
        assert!(!r.contains(SERIES_UID));
    }
    // Date range, ModalitiesInStudy, UID list.
    let (rows, _) = find(
        &mut scu,
        1,
        STUDY_FIND,
        &[
            (LEVEL, "CS", "STUDY"),
            (STUDY_DATE, "DA", "20260301-20260405"),
        ],
    )
    .await;
    assert_eq!(
        study_uids(&rows),
        vec![CT_STUDY.to_string(), MR_STUDY.to_string()]
    );
    let (rows, _) = find(
        &mut scu,
        1,
        STUDY_FIND,
        &[(LEVEL, "CS", "STUDY"), (MODALITIES, "CS", "MR")],
    )
    .await;
    assert_eq!(study_uids(&rows), vec![MR_STUDY.to_string()]);
    let list = format!("{CT_PRIOR_STUDY}\\{MR_STUDY}");
    let (rows, _) = find(
        &mut scu,
        1,
        STUDY_FIND,
        &[(LEVEL, "CS", "STUDY"), (STUDY_UID, "UI", &list)],
    )
    .await;
    assert_eq!(
        study_uids(&rows),
        vec![MR_STUDY.to_string(), CT_PRIOR_STUDY.to_string()]
    );
    // SERIES and IMAGE.
    let (rows, _) = find(
        &mut scu,
        1,
        STUDY_FIND,
        &[
            (LEVEL, "CS", "SERIES"),
            (STUDY_UID, "UI", CT_STUDY),
            (0x0008_0060, "CS", ""),
            (SERIES_UID, "UI", ""),
        ],
    )
    .await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].string(0x0008_0060).unwrap(), "CT");
    let series = rows[0].uid(SERIES_UID).unwrap();
    let (rows, _) = find(
        &mut scu,
        1,
        STUDY_FIND,
        &[
            (LEVEL, "CS", "IMAGE"),
            (STUDY_UID, "UI", CT_STUDY),
            (SERIES_UID, "UI", &series),
            (SOP_UID, "UI", ""),
        ],
    )
    .await;
    assert_eq!(rows.len(), 24);
    assert!(rows
        .iter()
        .all(|r| r.uid(SERIES_UID).as_deref() == Some(&series)));
    // Patient Root, PATIENT level, implicit VR context.
    let (rows, _) = find(
        &mut scu,
        9,
        PATIENT_FIND,
        &[
            (LEVEL, "CS", "PATIENT"),
            (PID, "LO", "VN-0002"),
            (NAME, "PN", ""),
        ],
    )
    .await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].string(NAME).unwrap(), "Trần^Thị Bích");
    // Refusals: bad date range (C000), missing level (A900).
    let (rows, status) = find(
        &mut scu,
        1,
        STUDY_FIND,
        &[(LEVEL, "CS", "STUDY"), (STUDY_DATE, "DA", "2026-99-99")],
    )
    .await;
    assert!(rows.is_empty());
    assert_eq!(status, Status::CANNOT_UNDERSTAND);
    let (_, status) = find(&mut scu, 1, STUDY_FIND, &[(NAME, "PN", "A*")]).await;
    assert_eq!(status, Status::IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS);
    scu.release().await;

    // An AE that is not configured may echo but not query.
    let mut stranger = associate_qr(server.addr, "STRANGER", false).await;
    let (rows, status) = find(&mut stranger, 1, STUDY_FIND, &[(LEVEL, "CS", "STUDY")]).await;
    assert!(rows.is_empty());
    assert_eq!(status, Status::NOT_AUTHORIZED);
    stranger.release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_find_result_cap_and_cancel() {
    let server = start(|c| {
        c.remote_aes = vec![remote(CALLER, 1)];
        c.max_find_results = 2;
    })
    .await;
    load_samples(&server.archive).await;
    let mut scu = associate_qr(server.addr, CALLER, false).await;
    let (rows, status) = find(&mut scu, 1, STUDY_FIND, &[(LEVEL, "CS", "IMAGE")]).await;
    assert_eq!(rows.len(), 2, "capped at max_find_results");
    assert_eq!(status, Status::SUCCESS);
    scu.release().await;
    drop(server);

    // C-CANCEL right behind the request. Deterministic by TCP
    // back-pressure: the client reads nothing until its C-CANCEL is sent,
    // and the 50 pending responses are made larger (empty return keys
    // for unsupported attributes) than the socket buffers between server
    // and client can hold. So the server cannot send them all first: it
    // is blocked writing when the client starts reading, and the C-CANCEL
    // is already waiting in its socket when it next reads.
    let server = loaded_server(vec![]).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    let client_buffer = socket.recv_buffer_size().unwrap() as usize;
    let stream = socket.connect(server.addr).await.unwrap();
    let mut scu = associate_qr_over(Scu::from_stream(stream), CALLER, false).await;
    // The most the kernel lets the server's socket hold (tcp_wmem max).
    let server_buffer: usize = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|t| t.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(64 * 1024 * 1024);
    let buffered = server_buffer + client_buffer;
    // Twice what the buffers hold, spread over 50 responses of 8 bytes
    // per empty key (explicit VR, short form).
    let keys_needed = (2 * buffered).div_ceil(50 * 8);
    assert!(
        keys_needed * 8 < 1024 * 1024 - 1024,
        "socket buffers of {buffered} bytes too large for this test's identifier"
    );
    let private_keys: Vec<(u32, &str, &str)> = (0..keys_needed as u32)
        .map(|i| {
            (
                ((0x0009 + 2 * (i / 0xE000)) << 16) | (0x1000 + i % 0xE000),
                "LO",
                "",
            )
        })
        .collect();
    let mut keys = vec![(LEVEL, "CS", "IMAGE")];
    keys.extend(private_keys);
    scu.send_command(1, &qr_rq(command_field::C_FIND_RQ, STUDY_FIND, 5, None))
        .await;
    scu.send_data(1, &identifier(&keys)).await;
    let mut cancel = CommandSet::new();
    cancel.set_us(tags::COMMAND_FIELD, command_field::C_CANCEL_RQ);
    cancel.set_us(tags::MESSAGE_ID_BEING_RESPONDED_TO, 5);
    cancel.set_us(tags::COMMAND_DATA_SET_TYPE, 0x0101);
    scu.send_command(1, &cancel).await;
    let mut pendings = 0;
    let final_status = loop {
        let (c, data) = read_message(&mut scu).await;
        let s = status_of(&c);
        if s != Status::PENDING && s != Status::PENDING_WARNING {
            break s;
        }
        assert!(data.is_some_and(|d| d.len() >= keys_needed * 8));
        pendings += 1;
    };
    assert_eq!(final_status, Status::CANCEL, "after {pendings} pending");
    assert!(
        pendings < 50,
        "{pendings} pending responses: cancel ignored"
    );
    // The association is still usable.
    let (rows, status) = find(
        &mut scu,
        1,
        STUDY_FIND,
        &[(LEVEL, "CS", "STUDY"), (STUDY_UID, "UI", MR_STUDY)],
    )
    .await;
    assert_eq!((rows.len(), status), (1, Status::SUCCESS));
    scu.release().await;
}

/// The CT study's files by SOP Instance UID.
fn ct_study_files() -> BTreeMap<String, Vec<u8>> {
    sample_files(&sample_dir().join("ct-phantom"))
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (sop_instance_of(&bytes).to_string(), bytes)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pdu_fits_the_peer_max_pdu() {
    const PEER_MAX: u32 = 4096;
    let server = loaded_server(vec![]).await;
    let scu = Scu::connect(server.addr).await;
    let mut scu = associate_qr_with_max_pdu(scu, CALLER, true, PEER_MAX).await;
    // C-FIND responses larger than the peer's maximum (1000 empty return
    // keys: 8 kB per identifier).
    let mut keys = vec![(LEVEL, "CS", "IMAGE"), (STUDY_UID, "UI", CT_STUDY)];
    keys.extend((0..1000u32).map(|i| ((0x0009 << 16) | (0x1000 + i), "LO", "")));
    let (rows, status) = find(&mut scu, 1, STUDY_FIND, &keys).await;
    assert_eq!(rows.len(), 24);
    assert_eq!(status, Status::SUCCESS);
    assert!(rows.iter().all(|r| r.iter().count() > 1000));
    // C-GET: 24 instances of about 130 kB, as C-STORE sub-operations.
    let (received, final_rsp, _) = c_get_study(&mut scu, CT_STUDY, 31).await;
    assert_eq!(status_of(&final_rsp), Status::SUCCESS);
    assert_eq!(received.len(), 24);
    assert!(
        scu.largest_pdu_len <= PEER_MAX,
        "a PDU of {} bytes for a peer accepting {PEER_MAX}",
        scu.largest_pdu_len
    );
    scu.release().await;

    // A maximum that cannot carry a PDV item with one byte of value (its
    // 6-byte header and more): aborted rather than accepted.
    let mut rq = association_rq(CALLER, AE, vec![pc(1, STUDY_FIND, &[EXPLICIT_LE])]);
    rq.user_variables = vec![UserVariableItem::MaxLength(6)];
    let answer = Scu::try_request(server.addr, rq).await;
    assert!(matches!(answer, Ok(Pdu::AbortRQ { .. })), "{answer:?}");
    // 0 means no limit (PS3.8 D.1).
    let scu = Scu::connect(server.addr).await;
    let mut scu = associate_qr_with_max_pdu(scu, CALLER, true, 0).await;
    let (received, final_rsp, _) = c_get_study(&mut scu, CT_STUDY, 32).await;
    assert_eq!(status_of(&final_rsp), Status::SUCCESS);
    assert_eq!(received.len(), 24);
    scu.release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_get_sends_on_the_same_association() {
    let server = loaded_server(vec![]).await;
    let expected = ct_study_files();
    let mut scu = associate_qr(server.addr, CALLER, true).await;
    let t0 = Instant::now();
    scu.send_command(5, &qr_rq(command_field::C_GET_RQ, STUDY_GET, 21, None))
        .await;
    scu.send_data(
        5,
        &identifier(&[(LEVEL, "CS", "STUDY"), (STUDY_UID, "UI", CT_STUDY)]),
    )
    .await;
    let mut received = BTreeMap::new();
    let mut last_remaining = usize::MAX;
    let final_rsp = loop {
        let (c, data) = read_message(&mut scu).await;
        match c.command_field().unwrap() {
            command_field::C_STORE_RQ => {
                let sop = c.text(tags::AFFECTED_SOP_INSTANCE_UID).unwrap();
                let msg = c.us(tags::MESSAGE_ID).unwrap();
                received.insert(sop.clone(), data.unwrap());
                let rsp = CStoreRsp {
                    message_id_being_responded_to: msg,
                    affected_sop_class_uid: Some(CT_STORAGE.into()),
                    affected_sop_instance_uid: Some(sop),
                    status: Status::SUCCESS,
                    error_comment: None,
                };
                scu.send_command(7, &rsp.to_command()).await;
            }
            command_field::C_GET_RSP => {
                if status_of(&c) == Status::PENDING {
                    let remaining = c.us(tags::NUMBER_OF_REMAINING_SUBOPERATIONS).unwrap() as usize;
                    assert!(remaining < last_remaining);
                    last_remaining = remaining;
                } else {
                    break c;
                }
            }
            other => panic!("unexpected {other:#x}"),
        }
        assert!(received.len() <= 24);
    };
    println!(
        "C-GET of the 24-slice CT (byte-level SCU): {:?}",
        t0.elapsed()
    );
    assert_eq!(status_of(&final_rsp), Status::SUCCESS);
    assert_eq!(
        final_rsp.us(tags::NUMBER_OF_COMPLETED_SUBOPERATIONS),
        Ok(24)
    );
    assert_eq!(final_rsp.us(tags::NUMBER_OF_FAILED_SUBOPERATIONS), Ok(0));
    assert_eq!(received.len(), 24);
    for (sop, data) in &received {
        assert!(*data == dataset_of(&expected[sop]), "{sop} differs");
    }
    // The MR study is RLE, for which no context was proposed: every
    // sub-operation fails, A702 with the failed UIDs listed.
    scu.send_command(5, &qr_rq(command_field::C_GET_RQ, STUDY_GET, 22, None))
        .await;
    scu.send_data(
        5,
        &identifier(&[(LEVEL, "CS", "STUDY"), (STUDY_UID, "UI", MR_STUDY)]),
    )
    .await;
    let final_rsp = loop {
        let (c, data) = read_message(&mut scu).await;
        assert_eq!(c.command_field(), Ok(command_field::C_GET_RSP));
        if status_of(&c) != Status::PENDING {
            let failed = read_identifier(&data.unwrap()).strings(0x0008_0058);
            assert_eq!(failed.len(), 16);
            break c;
        }
    };
    assert_eq!(
        status_of(&final_rsp),
        Status::UNABLE_TO_PERFORM_SUBOPERATIONS
    );
    assert_eq!(final_rsp.us(tags::NUMBER_OF_FAILED_SUBOPERATIONS), Ok(16));
    // C-CANCEL of a C-GET after the first sub-operation.
    scu.send_command(5, &qr_rq(command_field::C_GET_RQ, STUDY_GET, 23, None))
        .await;
    scu.send_data(
        5,
        &identifier(&[(LEVEL, "CS", "STUDY"), (STUDY_UID, "UI", CT_STUDY)]),
    )
    .await;
    let (c, _) = read_message(&mut scu).await;
    assert_eq!(c.command_field(), Ok(command_field::C_STORE_RQ));
    let mut cancel = CommandSet::new();
    cancel.set_us(tags::COMMAND_FIELD, command_field::C_CANCEL_RQ);
    cancel.set_us(tags::MESSAGE_ID_BEING_RESPONDED_TO, 23);
    cancel.set_us(tags::COMMAND_DATA_SET_TYPE, 0x0101);
    scu.send_command(5, &cancel).await;
    let rsp = CStoreRsp {
        message_id_being_responded_to: c.us(tags::MESSAGE_ID).unwrap(),
        affected_sop_class_uid: None,
        affected_sop_instance_uid: None,
        status: Status::SUCCESS,
        error_comment: None,
    };
    scu.send_command(7, &rsp.to_command()).await;
    let final_rsp = loop {
        let (c, _) = read_message(&mut scu).await;
        assert_eq!(
            c.command_field(),
            Ok(command_field::C_GET_RSP),
            "no more stores after the cancel"
        );
        if status_of(&c) != Status::PENDING {
            break c;
        }
    };
    assert_eq!(status_of(&final_rsp), Status::CANCEL);
    assert_eq!(final_rsp.us(tags::NUMBER_OF_COMPLETED_SUBOPERATIONS), Ok(1));
    assert_eq!(
        final_rsp.us(tags::NUMBER_OF_REMAINING_SUBOPERATIONS),
        Ok(23)
    );
    scu.release().await;
}

/// A C-MOVE over the byte-level SCU: the final response and its identifier.
async fn c_move(scu: &mut Scu, destination: &str, study: &str) -> (CommandSet, Option<Vec<u8>>) {
    scu.send_command(
        3,
        &qr_rq(command_field::C_MOVE_RQ, STUDY_MOVE, 31, Some(destination)),
    )
    .await;
    scu.send_data(
        3,
        &identifier(&[(LEVEL, "CS", "STUDY"), (STUDY_UID, "UI", study)]),
    )
    .await;
    for _ in 0..1000 {
        let (c, data) = read_message(scu).await;
        assert_eq!(c.command_field(), Ok(command_field::C_MOVE_RSP));
        if status_of(&c) != Status::PENDING {
            return (c, data);
        }
    }
    panic!("too many C-MOVE responses")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_move_unknown_and_unreachable_destinations() {
    let dead_port = free_port();
    let server = loaded_server(vec![remote("DEADEND", dead_port)]).await;
    let mut scu = associate_qr(server.addr, CALLER, false).await;
    let (c, _) = c_move(&mut scu, "NOWHERE", CT_STUDY).await;
    assert_eq!(status_of(&c), Status::MOVE_DESTINATION_UNKNOWN);
    let (c, data) = c_move(&mut scu, "DEADEND", CT_STUDY).await;
    assert_eq!(status_of(&c), Status::UNABLE_TO_PERFORM_SUBOPERATIONS);
    assert_eq!(c.us(tags::NUMBER_OF_FAILED_SUBOPERATIONS), Ok(24));
    assert_eq!(c.us(tags::NUMBER_OF_COMPLETED_SUBOPERATIONS), Ok(0));
    assert_eq!(
        read_identifier(&data.unwrap()).strings(0x0008_0058).len(),
        24
    );
    scu.release().await;
}

// ---------------------------------------------------------------------------
// DCMTK

/// Reads the responses `findscu -X` wrote.
fn read_extracted(dir: &Path) -> Vec<DataSet> {
    let mut out = Vec::new();
    for f in files_under(dir) {
        if !f.file_name().unwrap().to_string_lossy().starts_with("rsp") {
            continue;
        }
        let bytes = std::fs::read(&f).unwrap();
        out.push(
            parse_part10(&bytes, true, &Limits::default())
                .unwrap()
                .dataset,
        );
    }
    out
}

async fn findscu(port: u16, model: &str, keys: &[&str]) -> (Run, Vec<DataSet>) {
    let dir = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = vec![
        model.into(),
        "-X".into(),
        "-od".into(),
        dir.path().display().to_string(),
        "-aet".into(),
        "FINDSCU".into(),
        "-aec".into(),
        AE.into(),
    ];
    for k in keys {
        args.push("-k".into());
        args.push(k.to_string());
    }
    args.extend(["127.0.0.1".into(), port.to_string()]);
    let run = run(FINDSCU, &args, Duration::from_secs(60)).await;
    let rows = read_extracted(dir.path());
    (run, rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dcmtk_findscu() {
    if !peer_available(FINDSCU, "dcmtk_findscu") {
        return;
    }
    let server = loaded_server(vec![]).await;
    let port = server.port();
    let (run, rows) = findscu(
        port,
        "-S",
        &[
            "0008,0052=STUDY",
            "0010,0010=Nguy*",
            "0020,000D",
            "0008,0061",
            "0010,0020",
        ],
    )
    .await;
    assert!(run.success, "{}", run.output);
    assert_eq!(
        study_uids(&rows),
        vec![CT_STUDY.to_string(), CT_PRIOR_STUDY.to_string()],
        "{}",
        run.output
    );
    assert!(rows
        .iter()
        .all(|r| r.string(NAME).as_deref() == Some("Nguyễn^Văn An")));
    assert!(rows
        .iter()
        .all(|r| r.string(PID).as_deref() == Some("VN-0001")));
    let (run, rows) = findscu(
        port,
        "-S",
        &[
            "0008,0052=STUDY",
            "0008,0020=20260301-20260405",
            "0008,0061=MR",
            "0020,000D",
        ],
    )
    .await;
    assert!(run.success, "{}", run.output);
    assert_eq!(study_uids(&rows), vec![MR_STUDY.to_string()]);
    let (run, rows) = findscu(
        port,
        "-P",
        &["0008,0052=PATIENT", "0010,0020=VN-0003", "0010,0010"],
    )
    .await;
    assert!(run.success, "{}", run.output);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].string(NAME).unwrap(), "Lê^Hoàng Nam");
    let (run, rows) = findscu(
        port,
        "-P",
        &[
            "0008,0052=SERIES",
            "0010,0020=VN-0002",
            &format!("0020,000D={MR_STUDY}"),
            "0020,000E",
            "0008,0060",
        ],
    )
    .await;
    assert!(run.success, "{}", run.output);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].string(0x0008_0060).unwrap(), "MR");
    assert_eq!(rows[0].string(PID).unwrap(), "VN-0002");
    let (run, rows) = findscu(
        port,
        "-S",
        &[
            "0008,0052=IMAGE",
            &format!("0020,000D={CT_PRIOR_STUDY}"),
            "0008,0018",
        ],
    )
    .await;
    assert!(run.success, "{}", run.output);
    assert_eq!(rows.len(), 8);
}

/// getscu of the CT study into `dir`, with extra options.
async fn getscu_ct_study(dir: &Path, extra: &[&str]) -> Vec<PathBuf> {
    let server = loaded_server(vec![]).await;
    let mut args: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
    args.extend([
        "-S".into(),
        "-aet".into(),
        "GETSCU".into(),
        "-aec".into(),
        AE.into(),
        "-od".into(),
        dir.display().to_string(),
        "-k".into(),
        "0008,0052=STUDY".into(),
        "-k".into(),
        format!("0020,000D={CT_STUDY}"),
        "127.0.0.1".into(),
        server.port().to_string(),
    ]);
    let t0 = Instant::now();
    let run = run(GETSCU, &args, Duration::from_secs(120)).await;
    println!("getscu {extra:?} of the 24-slice CT: {:?}", t0.elapsed());
    assert!(run.success, "{}", run.output);
    let got = files_under(dir);
    assert_eq!(got.len(), 24, "{}", run.output);
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dcmtk_getscu_study() {
    if !peer_available(GETSCU, "dcmtk_getscu_study") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let expected = ct_study_files();
    for f in getscu_ct_study(dir.path(), &[]).await {
        let bytes = std::fs::read(&f).unwrap();
        let sop = sop_instance_of(&bytes).to_string();
        assert!(
            dataset_of(&bytes) == dataset_of(&expected[&sop]),
            "{sop}: data set differs"
        );
    }
}

/// getscu that proposes JPEG Lossless first (`+xs`): the archive accepts
/// it and converts the uncompressed CT to it; DCMTK's `dcmdjpeg` decodes
/// every slice back to the stored samples.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dcmtk_getscu_gets_jpeg_lossless_converted() {
    if !peer_available(GETSCU, "dcmtk_getscu_gets_jpeg_lossless_converted")
        || !peer_available(
            "/usr/bin/dcmdjpeg",
            "dcmtk_getscu_gets_jpeg_lossless_converted",
        )
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let expected = ct_study_files();
    let got = getscu_ct_study(dir.path(), &["+xs"]).await;
    for f in got {
        let bytes = std::fs::read(&f).unwrap();
        let header = parse_part10(&bytes, true, &Limits::default()).unwrap();
        assert_eq!(header.meta.transfer_syntax_uid, "1.2.840.10008.1.2.4.70");
        let sop = sop_instance_of(&bytes).to_string();
        let out = f.with_extension("native");
        let run = run(
            "/usr/bin/dcmdjpeg",
            &[f.display().to_string(), out.display().to_string()],
            Duration::from_secs(30),
        )
        .await;
        assert!(run.success, "{}", run.output);
        let decoded = std::fs::read(&out).unwrap();
        let le = TransferSyntax::explicit_vr_little_endian();
        assert!(
            native_pixels(&dataset_of(&decoded), &le).1
                == native_pixels(&dataset_of(&expected[&sop]), &le).1,
            "{sop}: dcmdjpeg decodes other pixels"
        );
        assert!(bytes.len() < expected[&sop].len(), "{sop}: not compressed");
    }
}

/// A DCMTK storescp on a free port writing into `dir`; killed on drop.
struct StoreScp {
    child: tokio::process::Child,
    port: u16,
}

impl StoreScp {
    async fn start(dir: &Path) -> StoreScp {
        let port = free_port();
        let child = tokio::process::Command::new(STORESCP)
            .args([
                "-aet",
                "STORESCP",
                "-od",
                &dir.display().to_string(),
                &port.to_string(),
            ])
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut child = child;
        wait_listening(port, &mut child).await;
        StoreScp { child, port }
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dcmtk_movescu_to_storescp() {
    if !peer_available(MOVESCU, "dcmtk_movescu_to_storescp")
        || !peer_available(STORESCP, "dcmtk_movescu_to_storescp")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let scp = StoreScp::start(dir.path()).await;
    let server = loaded_server(vec![remote("STORESCP", scp.port)]).await;
    let args: Vec<String> = vec![
        "-S".into(),
        "-aet".into(),
        "MOVESCU".into(),
        "-aec".into(),
        AE.into(),
        "-aem".into(),
        "STORESCP".into(),
        "-k".into(),
        "0008,0052=STUDY".into(),
        "-k".into(),
        format!("0020,000D={CT_STUDY}"),
        "127.0.0.1".into(),
        server.port().to_string(),
    ];
    let t0 = Instant::now();
    let out = run(MOVESCU, &args, Duration::from_secs(120)).await;
    println!("movescu of the 24-slice CT to storescp: {:?}", t0.elapsed());
    assert!(out.success, "{}", out.output);
    let expected = ct_study_files();
    let got = files_under(dir.path());
    assert_eq!(got.len(), 24, "{}", out.output);
    for f in got {
        let bytes = std::fs::read(&f).unwrap();
        let sop = sop_instance_of(&bytes).to_string();
        assert!(dataset_of(&bytes) == dataset_of(&expected[&sop]), "{sop}");
    }
    // The byte-level view of the same move: success and 24 completed.
    let mut scu = associate_qr(server.addr, CALLER, false).await;
    let (c, _) = c_move(&mut scu, "STORESCP", CT_PRIOR_STUDY).await;
    assert_eq!(status_of(&c), Status::SUCCESS);
    assert_eq!(c.us(tags::NUMBER_OF_COMPLETED_SUBOPERATIONS), Ok(8));
    scu.release().await;
    scp.stop().await;
}

/// MR is RLE and storescp (default options) accepts only uncompressed
/// syntaxes: the move transcodes, and storescp writes what it received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dcmtk_movescu_transcodes_for_storescp() {
    if !peer_available(MOVESCU, "dcmtk_movescu_transcodes_for_storescp")
        || !peer_available(STORESCP, "dcmtk_movescu_transcodes_for_storescp")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let scp = StoreScp::start(dir.path()).await;
    let server = loaded_server(vec![remote("STORESCP", scp.port)]).await;
    let (_, mixed_bad) = store_broken(&server.archive).await;
    let args: Vec<String> = vec![
        "-S".into(),
        "-aet".into(),
        "MOVESCU".into(),
        "-aec".into(),
        AE.into(),
        "-aem".into(),
        "STORESCP".into(),
        "-k".into(),
        "0008,0052=STUDY".into(),
        "-k".into(),
        format!("0020,000D={MR_STUDY}"),
        "127.0.0.1".into(),
        server.port().to_string(),
    ];
    let t0 = Instant::now();
    let out = run(MOVESCU, &args, Duration::from_secs(120)).await;
    println!(
        "movescu of the RLE MR to storescp (transcoded): {:?}",
        t0.elapsed()
    );
    assert!(out.success, "{}", out.output);
    let expected = mr_expected_pixels();
    let got = files_under(dir.path());
    assert_eq!(got.len(), 16, "{}", out.output);
    for f in got {
        let bytes = std::fs::read(&f).unwrap();
        let sop = sop_instance_of(&bytes).to_string();
        let ts = transfer_syntax_of(&bytes);
        assert!(
            ts == EXPLICIT_LE || ts == IMPLICIT_LE,
            "{sop} stored as {ts}"
        );
        let syntax = TransferSyntax::from_uid(&ts).unwrap();
        let (_, pixels) = native_pixels(&dataset_of(&bytes), &syntax);
        assert!(pixels == expected[&sop], "{sop}: pixels differ");
    }
    // The byte-level view: 16 completed; then the mixed study, B000.
    let mut scu = associate_qr(server.addr, CALLER, false).await;
    let (c, _) = c_move(&mut scu, "STORESCP", MR_STUDY).await;
    assert_eq!(status_of(&c), Status::SUCCESS);
    assert_eq!(c.us(tags::NUMBER_OF_COMPLETED_SUBOPERATIONS), Ok(16));
    let (c, data) = c_move(&mut scu, "STORESCP", MIXED_STUDY).await;
    assert_eq!(status_of(&c), Status::SUBOPERATIONS_COMPLETE_WITH_FAILURES);
    assert_eq!(c.us(tags::NUMBER_OF_COMPLETED_SUBOPERATIONS), Ok(1));
    assert_eq!(c.us(tags::NUMBER_OF_FAILED_SUBOPERATIONS), Ok(1));
    assert_eq!(
        read_identifier(&data.unwrap()).strings(0x0008_0058),
        vec![mixed_bad]
    );
    let (c, _) = c_move(&mut scu, "STORESCP", US_STUDY).await;
    assert_eq!(status_of(&c), Status::SUCCESS);
    scu.release().await;
    scp.stop().await;
}

// ---------------------------------------------------------------------------
// pynetdicom

const PY_SCRIPT: &str = r#"
import sys, os, traceback
from pydicom.dataset import Dataset
from pynetdicom import AE, evt, build_role
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind as SFIND,
    PatientRootQueryRetrieveInformationModelFind as PFIND,
    StudyRootQueryRetrieveInformationModelGet as SGET,
    StudyRootQueryRetrieveInformationModelMove as SMOVE,
    CTImageStorage,
)
port = int(sys.argv[1]); ct = sys.argv[2]

def q(level, **kw):
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.QueryRetrieveLevel = level
    for k, v in kw.items():
        setattr(ds, k, v)
    return ds

def get(assoc, msg_id):
    last = None
    for status, ident in assoc.send_c_get(q("STUDY", StudyInstanceUID=ct), SGET, msg_id=msg_id):
        last = status
    return last

ae = AE(ae_title="PYSCU")
for c in (SFIND, PFIND, SGET, SMOVE, CTImageStorage):
    ae.add_requested_context(c)
received = []
cancel_get = {"msg_id": None}
def on_store(event):
    received.append(event.request.AffectedSOPInstanceUID)
    if cancel_get["msg_id"] is not None and len(received) == 1:
        cx = [c.context_id for c in event.assoc.accepted_contexts if c.abstract_syntax == SGET][0]
        event.assoc.send_c_cancel(cancel_get["msg_id"], cx)
    return 0x0000
assoc = ae.associate("127.0.0.1", port, ae_title="PACS",
    ext_neg=[build_role(CTImageStorage, scp_role=True)],
    evt_handlers=[(evt.EVT_C_STORE, on_store)])
ok = False
try:
    assert assoc.is_established
    for model, level, kw, expect in [
        (PFIND, "PATIENT", dict(PatientName="Nguyễn*", PatientID=""), 1),
        (SFIND, "STUDY", dict(PatientName="Nguyễn*", StudyInstanceUID=""), 2),
        (SFIND, "SERIES", dict(StudyInstanceUID=ct, Modality="", SeriesInstanceUID=""), 1),
        (SFIND, "IMAGE", dict(StudyInstanceUID=ct, SOPInstanceUID=""), 24),
    ]:
        rows = []
        for status, ident in assoc.send_c_find(q(level, **kw), model):
            if status.Status in (0xFF00, 0xFF01):
                rows.append(ident)
            else:
                assert status.Status == 0, hex(status.Status)
        assert len(rows) == expect, (level, len(rows))
        if "PatientName" in kw:
            for r in rows:
                assert r.SpecificCharacterSet == "ISO_IR 192", r.SpecificCharacterSet
                assert str(r.PatientName) == "Nguyễn^Văn An", str(r.PatientName)
    print("FIND OK", flush=True)
    last = get(assoc, 7)
    assert last.Status == 0, hex(last.Status)
    assert last.NumberOfCompletedSuboperations == 24
    assert len(received) == 24
    print("GET OK", flush=True)
    # C-CANCEL of a C-GET, sent from the first sub-operation's handler.
    received.clear()
    cancel_get["msg_id"] = 8
    last = get(assoc, 8)
    assert last.Status == 0xFE00, hex(last.Status)
    assert len(received) == 1, len(received)
    assert last.NumberOfCompletedSuboperations == 1
    print("CANCEL GET OK", flush=True)
    last = None
    for status, ident in assoc.send_c_move(q("STUDY", StudyInstanceUID=ct), "PYSTORE", SMOVE):
        last = status
    assert last.Status == 0, hex(last.Status)
    assert last.NumberOfCompletedSuboperations == 24
    print("MOVE OK", flush=True)
    assoc.release()
    stranger = AE(ae_title="STRANGER")
    stranger.add_requested_context(SFIND)
    a = stranger.associate("127.0.0.1", port, ae_title="PACS")
    assert a.is_established
    (status, ident), = list(a.send_c_find(q("STUDY"), SFIND))
    assert status.Status == 0x0124, hex(status.Status)
    a.release()
    print("UNAUTHORIZED OK", flush=True)
    ok = True
finally:
    if not ok:
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
"#;

const PY_STORE_SCP: &str = r#"
import sys
from pynetdicom import AE, evt, AllStoragePresentationContexts
count = 0
def on_store(event):
    global count
    count += 1
    return 0x0000
ae = AE(ae_title="PYSTORE")
ae.supported_contexts = AllStoragePresentationContexts
ae.start_server(("127.0.0.1", int(sys.argv[1])), block=True,
    evt_handlers=[(evt.EVT_C_STORE, on_store)])
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pynetdicom_find_get_move_cancel() {
    if !pynetdicom_available("pynetdicom_find_get_move_cancel") {
        return;
    }
    let store_port = free_port();
    let mut store_scp = tokio::process::Command::new(python())
        .args(["-c", PY_STORE_SCP, &store_port.to_string()])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_listening(store_port, &mut store_scp).await;
    let server = loaded_server(vec![remote("PYSTORE", store_port)]).await;
    let out = run(
        &python(),
        &[
            "-c".into(),
            PY_SCRIPT.into(),
            server.port().to_string(),
            CT_STUDY.into(),
        ],
        Duration::from_secs(120),
    )
    .await;
    let _ = store_scp.kill().await;
    assert!(out.success, "{}", out.output);
    for step in [
        "FIND OK",
        "GET OK",
        "CANCEL GET OK",
        "MOVE OK",
        "UNAUTHORIZED OK",
    ] {
        assert!(out.output.contains(step), "{step}: {}", out.output);
    }
}

// ---------------------------------------------------------------------------
// Transcoding for peers that do not accept the stored transfer syntax

const MR_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.4";
const US_MF_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.3.1";
const US_STUDY: &str = "2.25.279539430787323045048148604839695629515";
const JPEG_EXTENDED: &str = "1.2.840.10008.1.2.4.51";
const BAD_STUDY: &str = "2.25.4242000000000000000000000000000001";
const MIXED_STUDY: &str = "2.25.4242000000000000000000000000000002";

/// The encapsulated fragments of a Part 10 file (Basic Offset Table
/// excluded).
fn fragments(part10: &[u8]) -> Vec<Vec<u8>> {
    let header = parse_part10(part10, true, &Limits::default()).unwrap();
    let mut at = header.pixel_data.unwrap().value_offset as usize;
    let mut out = Vec::new();
    loop {
        let group = u16::from_le_bytes([part10[at], part10[at + 1]]);
        let element = u16::from_le_bytes([part10[at + 2], part10[at + 3]]);
        let len = u32::from_le_bytes(part10[at + 4..at + 8].try_into().unwrap()) as usize;
        at += 8;
        if (group, element) == (0xFFFE, 0xE0DD) {
            break;
        }
        out.push(part10[at..at + len].to_vec());
        at += len;
    }
    out.remove(0);
    out
}

/// The MR study's native pixels by SOP Instance UID.
fn mr_expected_pixels() -> BTreeMap<String, Vec<u8>> {
    sample_files(&sample_dir().join("mr-head"))
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            let frags = fragments(&bytes);
            assert_eq!(frags.len(), 1);
            (
                sop_instance_of(&bytes).to_string(),
                imaging::codec::rle::decode_frame(
                    &frags[0],
                    imaging::codec::FrameLayout {
                        rows: 192,
                        columns: 192,
                        samples_per_pixel: 1,
                        bytes_per_sample: 2,
                    },
                )
                .unwrap(),
            )
        })
        .collect()
}

/// A bare data set's header and its native Pixel Data bytes.
fn native_pixels(data: &[u8], syntax: &TransferSyntax) -> (DataSet, Vec<u8>) {
    let header = parse_dataset(data, syntax, true, &Limits::default()).unwrap();
    let pd = header.pixel_data.expect("no pixel data");
    let start = pd.value_offset as usize;
    let len = pd.length.expect("pixel data is not native") as usize;
    (header.dataset, data[start..start + len].to_vec())
}

/// An object the archive stores but cannot transcode: CT, JPEG Extended
/// with 12 bits stored, and garbage where the JPEG stream should be.
fn undecodable(study: &str, sop: &str) -> Vec<u8> {
    fn el(out: &mut Vec<u8>, tag: u32, vr: &[u8; 2], value: &[u8]) {
        let mut v = value.to_vec();
        if v.len() % 2 == 1 {
            v.push(if vr == b"UI" { 0 } else { b' ' });
        }
        out.extend_from_slice(&((tag >> 16) as u16).to_le_bytes());
        out.extend_from_slice(&(tag as u16).to_le_bytes());
        out.extend_from_slice(vr);
        out.extend_from_slice(&(v.len() as u16).to_le_bytes());
        out.extend_from_slice(&v);
    }
    let meta = pacs_core::dicom::FileMeta {
        transfer_syntax_uid: JPEG_EXTENDED.into(),
        media_storage_sop_class_uid: CT_STORAGE.into(),
        media_storage_sop_instance_uid: sop.into(),
        implementation_class_uid: "2.25.1".into(),
        implementation_version_name: None,
        source_ae_title: None,
    };
    let mut out = pacs_core::dicom::encode_file_meta(&meta);
    el(&mut out, 0x0008_0016, b"UI", CT_STORAGE.as_bytes());
    el(&mut out, 0x0008_0018, b"UI", sop.as_bytes());
    el(&mut out, 0x0008_0060, b"CS", b"CT");
    el(&mut out, 0x0010_0010, b"PN", b"BROKEN^JPEG");
    el(&mut out, 0x0010_0020, b"LO", b"BAD-0001");
    el(&mut out, 0x0020_000D, b"UI", study.as_bytes());
    el(
        &mut out,
        0x0020_000E,
        b"UI",
        format!("{study}.1").as_bytes(),
    );
    el(&mut out, 0x0028_0002, b"US", &1u16.to_le_bytes());
    el(&mut out, 0x0028_0004, b"CS", b"MONOCHROME2");
    el(&mut out, 0x0028_0010, b"US", &16u16.to_le_bytes());
    el(&mut out, 0x0028_0011, b"US", &16u16.to_le_bytes());
    el(&mut out, 0x0028_0100, b"US", &16u16.to_le_bytes());
    el(&mut out, 0x0028_0101, b"US", &12u16.to_le_bytes());
    el(&mut out, 0x0028_0102, b"US", &11u16.to_le_bytes());
    el(&mut out, 0x0028_0103, b"US", &0u16.to_le_bytes());
    out.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0]);
    out.extend_from_slice(&u32::MAX.to_le_bytes());
    out.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]);
    let garbage = [0xFF, 0xD8, 0xFF, 0xC1, 0x13, 0x37, 0xDE, 0xAD, 0xBE, 0xEF];
    out.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
    out.extend_from_slice(&(garbage.len() as u32).to_le_bytes());
    out.extend_from_slice(&garbage);
    out.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
    out
}

/// Stores the broken objects: BAD_STUDY holds one undecodable instance,
/// MIXED_STUDY one undecodable and one plain Explicit VR LE CT.
async fn store_broken(archive: &Archive) -> (String, String) {
    let bad = format!("{BAD_STUDY}.1.1");
    let mixed_bad = format!("{MIXED_STUDY}.1.1");
    archive
        .store(&undecodable(BAD_STUDY, &bad)[..])
        .await
        .unwrap();
    archive
        .store(&undecodable(MIXED_STUDY, &mixed_bad)[..])
        .await
        .unwrap();
    let good = sample_data::synthetic::object(&sample_data::synthetic::Spec {
        study: MIXED_STUDY,
        series: &format!("{MIXED_STUDY}.1"),
        sop: &format!("{MIXED_STUDY}.1.2"),
        patient_id: "BAD-0001",
        ..Default::default()
    });
    archive.store(&good[..]).await.unwrap();
    (bad, mixed_bad)
}

/// An SCU taking the SCP role for CT (7), MR (9) and US multi-frame (11)
/// storage, in uncompressed syntaxes only.
async fn associate_uncompressed_only(addr: std::net::SocketAddr) -> Scu {
    let mut scu = Scu::connect(addr).await;
    let mut rq = association_rq(
        CALLER,
        AE,
        vec![
            pc(3, STUDY_MOVE, &[EXPLICIT_LE]),
            pc(5, STUDY_GET, &[EXPLICIT_LE]),
            pc(7, CT_STORAGE, &[EXPLICIT_LE]),
            pc(9, MR_STORAGE, &[EXPLICIT_LE]),
            pc(11, US_MF_STORAGE, &[IMPLICIT_LE]),
        ],
    );
    for class in [CT_STORAGE, MR_STORAGE, US_MF_STORAGE] {
        rq.user_variables
            .push(UserVariableItem::ScuScpRoleSelectionSubItem(
                class.into(),
                RequestorRoles {
                    scu: false,
                    scp: true,
                },
            ));
    }
    let pdu = scu.request(rq).await;
    assert!(matches!(pdu, Pdu::AssociationAC(_)), "{pdu:?}");
    scu
}

/// A C-GET of `study` answering each C-STORE-RQ with success: the data
/// sets received by SOP Instance UID, the final response and identifier.
async fn c_get_study(
    scu: &mut Scu,
    study: &str,
    message_id: u16,
) -> (BTreeMap<String, Vec<u8>>, CommandSet, Option<Vec<u8>>) {
    scu.send_command(
        5,
        &qr_rq(command_field::C_GET_RQ, STUDY_GET, message_id, None),
    )
    .await;
    scu.send_data(
        5,
        &identifier(&[(LEVEL, "CS", "STUDY"), (STUDY_UID, "UI", study)]),
    )
    .await;
    let mut received = BTreeMap::new();
    for _ in 0..1000 {
        let (c, data) = read_message(scu).await;
        match c.command_field().unwrap() {
            command_field::C_STORE_RQ => {
                let sop = c.text(tags::AFFECTED_SOP_INSTANCE_UID).unwrap();
                let class = c.text(tags::AFFECTED_SOP_CLASS_UID).unwrap();
                let ctx = match class.as_str() {
                    CT_STORAGE => 7,
                    MR_STORAGE => 9,
                    US_MF_STORAGE => 11,
                    other => panic!("C-STORE of unexpected class {other}"),
                };
                received.insert(sop.clone(), data.unwrap());
                let rsp = CStoreRsp {
                    message_id_being_responded_to: c.us(tags::MESSAGE_ID).unwrap(),
                    affected_sop_class_uid: Some(class),
                    affected_sop_instance_uid: Some(sop),
                    status: Status::SUCCESS,
                    error_comment: None,
                };
                scu.send_command(ctx, &rsp.to_command()).await;
            }
            command_field::C_GET_RSP if status_of(&c) == Status::PENDING => {}
            command_field::C_GET_RSP => return (received, c, data),
            other => panic!("unexpected {other:#x}"),
        }
    }
    panic!("C-GET never finished")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_get_transcodes_for_an_uncompressed_only_scu() {
    let server = loaded_server(vec![]).await;
    let (bad, mixed_bad) = store_broken(&server.archive).await;
    let mut scu = associate_uncompressed_only(server.addr).await;

    // MR (RLE) arrives in Explicit VR LE, pixel for pixel.
    let t0 = Instant::now();
    let (received, final_rsp, _) = c_get_study(&mut scu, MR_STUDY, 41).await;
    println!(
        "C-GET of the 16-slice RLE MR with transcoding: {:?}",
        t0.elapsed()
    );
    assert_eq!(status_of(&final_rsp), Status::SUCCESS);
    assert_eq!(
        final_rsp.us(tags::NUMBER_OF_COMPLETED_SUBOPERATIONS),
        Ok(16)
    );
    let expected = mr_expected_pixels();
    assert_eq!(received.len(), 16);
    for (sop, data) in &received {
        let (ds, pixels) = native_pixels(data, &TransferSyntax::explicit_vr_little_endian());
        assert!(pixels == expected[sop], "{sop}: pixels differ");
        assert_eq!(ds.string(0x0028_0004).as_deref(), Some("MONOCHROME2"));
        assert_eq!(ds.uid(SOP_UID).as_deref(), Some(sop.as_str()));
    }

    // US (JPEG Baseline, YBR_FULL_422) arrives in Implicit VR LE as RGB.
    let (received, final_rsp, _) = c_get_study(&mut scu, US_STUDY, 42).await;
    assert_eq!(status_of(&final_rsp), Status::SUCCESS);
    assert_eq!(received.len(), 1);
    let (ds, pixels) = native_pixels(
        received.values().next().unwrap(),
        &TransferSyntax::implicit_vr_little_endian(),
    );
    assert_eq!(pixels.len(), 24 * 240 * 320 * 3);
    assert_eq!(ds.string(0x0028_0004).as_deref(), Some("RGB"));
    assert_eq!(ds.u16(0x0028_0006), Some(0));
    assert_eq!(ds.string(0x0028_2110).as_deref(), Some("01"));

    // Undecodable alone: A702, its UID listed as failed.
    let (received, final_rsp, data) = c_get_study(&mut scu, BAD_STUDY, 43).await;
    assert!(received.is_empty());
    assert_eq!(
        status_of(&final_rsp),
        Status::UNABLE_TO_PERFORM_SUBOPERATIONS
    );
    assert_eq!(final_rsp.us(tags::NUMBER_OF_FAILED_SUBOPERATIONS), Ok(1));
    assert_eq!(
        read_identifier(&data.unwrap()).strings(0x0008_0058),
        vec![bad]
    );

    // Next to a good instance: B000, one completed, one failed.
    let (received, final_rsp, data) = c_get_study(&mut scu, MIXED_STUDY, 44).await;
    assert_eq!(received.len(), 1);
    assert_eq!(
        status_of(&final_rsp),
        Status::SUBOPERATIONS_COMPLETE_WITH_FAILURES
    );
    assert_eq!(final_rsp.us(tags::NUMBER_OF_COMPLETED_SUBOPERATIONS), Ok(1));
    assert_eq!(final_rsp.us(tags::NUMBER_OF_FAILED_SUBOPERATIONS), Ok(1));
    assert_eq!(
        read_identifier(&data.unwrap()).strings(0x0008_0058),
        vec![mixed_bad]
    );

    // The association and the server go on serving.
    let (received, final_rsp, _) = c_get_study(&mut scu, CT_PRIOR_STUDY, 45).await;
    assert_eq!(status_of(&final_rsp), Status::SUCCESS);
    assert_eq!(received.len(), 8);
    scu.release().await;
    let mut other = associate_uncompressed_only(server.addr).await;
    let (_, final_rsp, _) = c_get_study(&mut other, MR_STUDY, 1).await;
    assert_eq!(status_of(&final_rsp), Status::SUCCESS);
    other.release().await;
}

const PY_GET_UNCOMPRESSED: &str = r#"
import sys, os, traceback, glob
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt, build_role
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelGet as SGET,
    MRImageStorage, UltrasoundMultiFrameImageStorage,
)
port = int(sys.argv[1]); samples = sys.argv[2]; mr = sys.argv[3]; us = sys.argv[4]
expected = {}
for f in glob.glob(os.path.join(samples, "mr-head", "*", "*.dcm")) + \
         glob.glob(os.path.join(samples, "us-cine", "*", "*.dcm")):
    ds = pydicom.dcmread(f)
    expected[ds.SOPInstanceUID] = ds.pixel_array
problems = []
received = []
def on_store(event):
    ds = event.dataset
    ds.file_meta = event.file_meta
    ts = ds.file_meta.TransferSyntaxUID
    if ts not in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        problems.append(f"{ds.SOPInstanceUID}: sent in {ts}")
    got = ds.pixel_array
    want = expected[ds.SOPInstanceUID]
    if got.shape != want.shape:
        problems.append(f"{ds.SOPInstanceUID}: shape {got.shape} != {want.shape}")
    elif ds.SOPClassUID == MRImageStorage:
        if not np.array_equal(got, want):
            problems.append(f"{ds.SOPInstanceUID}: MR pixels differ")
    else:
        # JPEG Baseline: decoders may round differently by a level or two.
        worst = int(np.abs(got.astype(int) - want.astype(int)).max())
        if worst > 3 or ds.PhotometricInterpretation != "RGB":
            problems.append(f"{ds.SOPInstanceUID}: US off by {worst}, {ds.PhotometricInterpretation}")
    received.append(ds.SOPInstanceUID)
    return 0x0000
ae = AE(ae_title="PYSCU")
ae.add_requested_context(SGET)
for c in (MRImageStorage, UltrasoundMultiFrameImageStorage):
    ae.add_requested_context(c, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
assoc = ae.associate("127.0.0.1", port, ae_title="PACS",
    ext_neg=[build_role(MRImageStorage, scp_role=True),
             build_role(UltrasoundMultiFrameImageStorage, scp_role=True)],
    evt_handlers=[(evt.EVT_C_STORE, on_store)])
ok = False
try:
    assert assoc.is_established
    for study, n, label in ((mr, 16, "MR"), (us, 1, "US")):
        received.clear()
        q = Dataset(); q.QueryRetrieveLevel = "STUDY"; q.StudyInstanceUID = study
        last = None
        for status, ident in assoc.send_c_get(q, SGET):
            last = status
        assert last.Status == 0, hex(last.Status)
        assert len(received) == n, (label, len(received))
        assert not problems, problems
        print(f"GET {label} OK", flush=True)
    assoc.release()
    ok = True
finally:
    if not ok:
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pynetdicom_get_transcoded_matches_pydicom_decode() {
    if !pynetdicom_available("pynetdicom_get_transcoded_matches_pydicom_decode") {
        return;
    }
    let server = loaded_server(vec![]).await;
    let out = run(
        &python(),
        &[
            "-c".into(),
            PY_GET_UNCOMPRESSED.into(),
            server.port().to_string(),
            sample_dir().display().to_string(),
            MR_STUDY.into(),
            US_STUDY.into(),
        ],
        Duration::from_secs(120),
    )
    .await;
    assert!(out.success, "{}", out.output);
    for step in ["GET MR OK", "GET US OK"] {
        assert!(out.output.contains(step), "{step}: {}", out.output);
    }
}

/// C-GET conversions run in the server's one pixel-work service (shared
/// with DICOMweb), not on a task of their own: while its only slot is
/// taken, each conversion is a failed sub-operation (A702 when all fail);
/// once it is free, the same C-GET succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_get_conversions_share_the_pixel_work_bound() {
    let pixel = std::sync::Arc::new(imaging::service::PixelService::new(
        &Limits {
            render_concurrency: 1,
            pixel_queue_wait: Duration::ZERO,
            ..Limits::default()
        },
        0,
    ));
    let shared = pixel.clone();
    let server = start(move |c| {
        c.remote_aes = vec![remote(CALLER, 1)];
        c.pixel = Some(shared);
    })
    .await;
    load_samples(&server.archive).await;
    let mut scu = associate_uncompressed_only(server.addr).await;
    let held = pixel.reserve(1).await.unwrap();
    let (received, final_rsp, _) = c_get_study(&mut scu, MR_STUDY, 1).await;
    assert!(received.is_empty());
    assert_eq!(
        status_of(&final_rsp),
        Status::UNABLE_TO_PERFORM_SUBOPERATIONS
    );
    assert_eq!(final_rsp.us(tags::NUMBER_OF_FAILED_SUBOPERATIONS), Ok(16));
    drop(held);
    let (received, final_rsp, _) = c_get_study(&mut scu, MR_STUDY, 2).await;
    assert_eq!(status_of(&final_rsp), Status::SUCCESS);
    assert_eq!(received.len(), 16);
    scu.release().await;
}
