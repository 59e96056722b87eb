//! Hostile and broken peers, over real TCP on 127.0.0.1, with a real archive
//! behind the server. After each, a fresh association still echoes.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use dicom_ul::pdu::{
    AbortRQSource, AssociationRJ, AssociationRJResult,
    AssociationRJServiceProviderPresentationReason, AssociationRJServiceUserReason,
    AssociationRJSource,
};
use dicom_ul::Pdu;
use dimse_scp::message::{command_field, tags, CommandSet, DATA_SET_PRESENT};
use dimse_scp::{RemoteAe, Status};
use tokio::io::AsyncWriteExt;

fn permanent(reason: AssociationRJServiceUserReason) -> Pdu {
    Pdu::AssociationRJ(AssociationRJ {
        result: AssociationRJResult::Permanent,
        source: AssociationRJSource::ServiceUser(reason),
    })
}

/// The server ends the connection: an A-ABORT, or a close.
async fn expect_abort_or_close(scu: &mut Scu) {
    match scu.read_pdu().await {
        Ok(Pdu::AbortRQ { .. }) => {}
        Ok(other) => panic!("expected an A-ABORT, got {other:?}"),
        Err(e) => assert!(
            !e.contains("timed out"),
            "server neither aborted nor closed: {e}"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bytes_then_echo() {
    let server = start(|_| {}).await;
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: pacs\r\n\r\n"[..],
        &[0u8; 64][..],
        &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC][..], // a TLS ClientHello start
        &[0x07, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00][..], // A-ABORT before anything
        &[0x04, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00][..], // P-DATA before association
    ] {
        let mut scu = Scu::connect(server.addr).await;
        scu.send_raw(garbage).await.unwrap();
        expect_abort_or_close(&mut scu).await;
    }
    assert_echo_ok(server.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_pdu_then_echo() {
    let server = start(|_| {}).await;
    let mut rq = Vec::new();
    dicom_ul::write_pdu(
        &mut rq,
        &Pdu::AssociationRQ(association_rq(
            "A",
            AE,
            vec![pc(1, VERIFICATION, &[IMPLICIT_LE])],
        )),
    )
    .unwrap();
    // Half an A-ASSOCIATE-RQ, then the peer half-closes.
    let mut scu = Scu::connect(server.addr).await;
    scu.send_raw(&rq[..rq.len() / 2]).await.unwrap();
    scu.stream.shutdown().await.unwrap();
    expect_abort_or_close(&mut scu).await;
    // Half a P-DATA-TF inside an association, then a close.
    let mut scu = Scu::associate(server.addr).await;
    scu.send_raw(&[0x04, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00])
        .await
        .unwrap();
    drop(scu);
    assert_echo_ok(server.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_declared_pdu_length_is_refused_at_once() {
    let server = start(|_| {}).await;
    for pdu_type in [0x01u8, 0x04] {
        let mut scu = Scu::connect(server.addr).await;
        scu.send_raw(&[pdu_type, 0x00, 0xFF, 0xFF, 0xFF, 0xF0])
            .await
            .unwrap();
        // At once: a server waiting for the declared bytes would leave the
        // read to time out instead.
        let answer = scu.read_pdu().await;
        assert!(
            matches!(answer, Ok(Pdu::AbortRQ { .. })),
            "type {pdu_type}: {answer:?}"
        );
    }
    // Inside an association.
    let mut scu = Scu::associate(server.addr).await;
    scu.send_raw(&[0x04, 0x00, 0xFF, 0xFF, 0xFF, 0xF0])
        .await
        .unwrap();
    assert!(matches!(scu.read_pdu().await, Ok(Pdu::AbortRQ { .. })));
    assert_echo_ok(server.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pdu_larger_than_announced_maximum_aborts() {
    let server = start(|c| c.limits.max_pdu_len = 16 * 1024).await;
    let mut scu = Scu::associate(server.addr).await;
    assert_eq!(scu.server_max_pdu, 16 * 1024);
    scu.send_command(3, &Scu::store_rq(1, CT_STORAGE, "1.2.3.4"))
        .await;
    scu.send_pdv(3, false, true, &vec![0u8; 20 * 1024]).await;
    expect_abort_or_close(&mut scu).await;
    // An association request above 256 KiB as well.
    let syntaxes: Vec<String> = (0..40)
        .map(|i| format!("1.2.840.10008.1.2.4.{}", 50 + i))
        .collect();
    let ts: Vec<&str> = syntaxes.iter().map(String::as_str).collect();
    let many: Vec<_> = (0..300u32)
        .map(|i| pc((i % 128 * 2 + 1) as u8, CT_STORAGE, &ts))
        .collect();
    let mut scu = Scu::connect(server.addr).await;
    scu.send_pdu(&Pdu::AssociationRQ(association_rq("A", AE, many)))
        .await;
    expect_abort_or_close(&mut scu).await;
    assert_echo_ok(server.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_presentation_contexts() {
    let server = start(|_| {}).await;
    // 300 contexts cannot have distinct odd IDs: rejected, permanently.
    let many: Vec<_> = (0..300u32)
        .map(|i| pc((i % 128 * 2 + 1) as u8, CT_STORAGE, &[EXPLICIT_LE]))
        .collect();
    let mut scu = Scu::connect(server.addr).await;
    let answer = scu.request(association_rq("A", AE, many)).await;
    assert_eq!(
        answer,
        permanent(AssociationRJServiceUserReason::NoReasonGiven)
    );
    // The full 128, each with a pile of transfer syntaxes, are all answered.
    let syntaxes: Vec<String> = (0..40)
        .map(|i| format!("1.2.840.10008.1.2.4.{}", 50 + i))
        .collect();
    let mut ts: Vec<&str> = syntaxes.iter().map(String::as_str).collect();
    ts.push(EXPLICIT_LE);
    let mut pcs = vec![pc(1, VERIFICATION, &[IMPLICIT_LE])];
    pcs.extend((1..128u32).map(|i| pc((i * 2 + 1) as u8, CT_STORAGE, &ts)));
    let mut scu = Scu::connect(server.addr).await;
    match scu.request(association_rq("A", AE, pcs)).await {
        Pdu::AssociationAC(ac) => {
            assert_eq!(ac.presentation_contexts.len(), 128);
            // The first encapsulated syntax offered wins.
            assert_eq!(
                ac.presentation_contexts[5].transfer_syntax,
                "1.2.840.10008.1.2.4.50"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(scu.echo(1).await, Status::SUCCESS);
    scu.release().await;
    assert_echo_ok(server.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn called_and_calling_ae_checks() {
    let server = start(|c| {
        c.strict_ae = true;
        c.remote_aes = vec![RemoteAe {
            ae_title: "KNOWN".into(),
            host: "127.0.0.1".into(),
            port: 104,
            tls_subject: None,
        }];
    })
    .await;
    let echo_pc = || vec![pc(1, VERIFICATION, &[IMPLICIT_LE])];
    let cases = [
        (
            "KNOWN",
            "WRONG",
            Some(AssociationRJServiceUserReason::CalledAETitleNotRecognized),
        ),
        (
            "KNOWN",
            "pacs",
            Some(AssociationRJServiceUserReason::CalledAETitleNotRecognized),
        ),
        (
            "STRANGER",
            AE,
            Some(AssociationRJServiceUserReason::CallingAETitleNotRecognized),
        ),
        ("KNOWN", AE, None),
    ];
    for (calling, called, reject) in cases {
        let mut scu = Scu::connect(server.addr).await;
        let answer = scu
            .request(association_rq(calling, called, echo_pc()))
            .await;
        match reject {
            Some(reason) => assert_eq!(answer, permanent(reason), "{calling} -> {called}"),
            None => {
                assert!(matches!(answer, Pdu::AssociationAC(_)), "{answer:?}");
                assert_eq!(scu.echo(5).await, Status::SUCCESS);
                scu.release().await;
            }
        }
    }
}

/// Associates, retrying while the server is still releasing slots of
/// associations that just ended.
async fn associate_eventually(addr: std::net::SocketAddr) -> Scu {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut scu = Scu::connect(addr).await;
        let answer = scu
            .request(association_rq(
                "TESTSCU",
                AE,
                vec![pc(1, VERIFICATION, &[IMPLICIT_LE])],
            ))
            .await;
        match answer {
            Pdu::AssociationAC(_) => return scu,
            other if Instant::now() < deadline => {
                assert_eq!(other, local_limit());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("no slot came free: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn association_flood_beyond_the_caps() {
    // Global cap.
    let server = start_one_node(|c| {
        c.limits.max_associations = 3;
        c.limits.max_associations_per_peer = 10;
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(Scu::associate(server.addr).await);
    }
    let mut flood = Vec::new();
    for _ in 0..40 {
        flood.push(tokio::spawn({
            let addr = server.addr;
            async move {
                Scu::try_request(
                    addr,
                    association_rq("FLOOD", AE, vec![pc(1, VERIFICATION, &[IMPLICIT_LE])]),
                )
                .await
            }
        }));
    }
    for f in flood {
        // Every one is refused with an A-ASSOCIATE-RJ, none accepted,
        // aborted or closed unanswered.
        let answer = tokio::time::timeout(Duration::from_secs(60), f)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(answer, Ok(local_limit()));
    }
    // The held associations still work.
    for (i, scu) in held.iter_mut().enumerate() {
        assert_eq!(scu.echo(i as u16).await, Status::SUCCESS);
    }
    for scu in held {
        scu.release().await;
    }
    let mut scu = associate_eventually(server.addr).await;
    assert_eq!(scu.echo(9).await, Status::SUCCESS);
    scu.release().await;

    // Per-peer cap.
    let server = start_one_node(|c| {
        c.limits.max_associations = 10;
        c.limits.max_associations_per_peer = 2;
    })
    .await;
    let a = Scu::associate(server.addr).await;
    let b = Scu::associate(server.addr).await;
    let mut c = Scu::connect(server.addr).await;
    let answer = c
        .request(association_rq(
            "THIRD",
            AE,
            vec![pc(1, VERIFICATION, &[IMPLICIT_LE])],
        ))
        .await;
    assert_eq!(answer, local_limit());
    a.release().await;
    b.release().await;
    let mut scu = associate_eventually(server.addr).await;
    assert_eq!(scu.echo(1).await, Status::SUCCESS);
    scu.release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_peers_are_cut_off() {
    // (Silence before the association request: tests/hardening.rs, ARTIM.)
    let server = start(|c| c.limits.idle_timeout = Duration::from_secs(1)).await;
    // Silent inside an association: aborted, not before the time-out (the
    // client's own read deadline, 30 s, bounds the wait).
    let mut scu = Scu::associate(server.addr).await;
    let t0 = Instant::now();
    assert!(matches!(scu.read_pdu().await, Ok(Pdu::AbortRQ { .. })));
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t0.elapsed()
    );
    // Silent in the middle of a C-STORE: no partial instance.
    let object = synthetic_ct("1.2.826.0.1.3680043.10.1.1.50", 2 * 1024 * 1024);
    let dataset = dataset_of(&object);
    let mut scu = Scu::associate(server.addr).await;
    scu.send_command(
        3,
        &Scu::store_rq(1, CT_STORAGE, "1.2.826.0.1.3680043.10.1.1.50"),
    )
    .await;
    scu.send_pdv(3, false, false, &dataset[..8000]).await;
    assert!(matches!(scu.read_pdu().await, Ok(Pdu::AbortRQ { .. })));
    assert_echo_ok(server.addr).await;
    let mut server = server;
    server.stop().await;
    assert_eq!(server.archive.stats().await.unwrap().instances, 0);
    assert!(server.blob_files().is_empty(), "{:?}", server.blob_files());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abrupt_disconnect_mid_store_leaves_nothing() {
    let mut server = start(|_| {}).await;
    let object = synthetic_ct("1.2.826.0.1.3680043.10.1.1.60", 20 * 1024 * 1024);
    let dataset = dataset_of(&object);
    // Gone after the command; after the header; after half of the pixel
    // data; after 18 MB, once the blob store has switched to a streaming
    // upload (objects above 16 MiB) and is writing to disk.
    for cut in [0, 400, dataset.len() / 2, 18 * 1024 * 1024] {
        let mut scu = Scu::associate(server.addr).await;
        scu.send_command(
            3,
            &Scu::store_rq(1, CT_STORAGE, "1.2.826.0.1.3680043.10.1.1.60"),
        )
        .await;
        for chunk in dataset[..cut].chunks(16000) {
            scu.send_pdv(3, false, false, chunk).await;
        }
        drop(scu);
        assert_echo_ok(server.addr).await;
    }
    // Every association has ended once `run` returns.
    server.stop().await;
    let stats = server.archive.stats().await.unwrap();
    assert_eq!(stats.instances, 0);
    assert_eq!(stats.total_bytes, 0);
    assert!(server.blob_files().is_empty(), "{:?}", server.blob_files());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_set_that_contradicts_its_command() {
    let server = start(|_| {}).await;
    let sop = "1.2.826.0.1.3680043.10.1.1.70";
    let dataset = dataset_of(&synthetic_ct(sop, 4096));
    let mut scu = Scu::associate(server.addr).await;
    let rsp = scu
        .store(3, 1, CT_STORAGE, "1.2.826.0.1.3680043.10.1.1.71", &dataset)
        .await;
    assert_eq!(rsp.status, Status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS);
    assert!(
        rsp.error_comment
            .as_deref()
            .unwrap_or("")
            .contains("SOPInstanceUID"),
        "{rsp:?}"
    );
    let rsp = scu
        .store(3, 2, "1.2.840.10008.5.1.4.1.1.4", sop, &dataset)
        .await;
    assert_eq!(
        rsp.status,
        Status::SOP_CLASS_NOT_SUPPORTED,
        "MR class on the CT context"
    );
    assert_eq!(server.archive.stats().await.unwrap().instances, 0);
    // The association goes on.
    let rsp = scu.store(3, 3, CT_STORAGE, sop, &dataset).await;
    assert_eq!(rsp.status, Status::SUCCESS);
    assert_eq!(rsp.affected_sop_instance_uid.as_deref(), Some(sop));
    assert_eq!(rsp.affected_sop_class_uid.as_deref(), Some(CT_STORAGE));
    assert_eq!(scu.echo(4).await, Status::SUCCESS);
    scu.release().await;
    assert_eq!(server.archive.stats().await.unwrap().instances, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_keep_the_association_usable() {
    let server = start(|_| {}).await;
    let mut scu = Scu::associate(server.addr).await;
    // Invalid Affected SOP Instance UID: refused before anything is stored,
    // the data set is read and dropped.
    let dataset = dataset_of(&synthetic_ct("1.2.826.0.1.3680043.10.1.1.80", 300_000));
    let rsp = scu.store(3, 1, CT_STORAGE, "1.2.abc", &dataset).await;
    assert_eq!(rsp.status, Status::CANNOT_UNDERSTAND);
    assert_eq!(
        rsp.affected_sop_instance_uid, None,
        "a malformed UID is not echoed"
    );
    let rsp = scu
        .store(3, 2, CT_STORAGE, "../../../etc/passwd", &dataset)
        .await;
    assert_eq!(rsp.status, Status::CANNOT_UNDERSTAND);
    // A data set that is not DICOM: the archive gives up early, the rest of
    // the fragments are drained, the answer is "cannot understand".
    let rsp = scu
        .store(3, 3, CT_STORAGE, "1.2.3.4", &vec![0xFFu8; 200_000])
        .await;
    assert_eq!(rsp.status, Status::CANNOT_UNDERSTAND);
    assert!(rsp.error_comment.is_some());
    // Truncated pixel data.
    let rsp = scu
        .store(
            3,
            4,
            CT_STORAGE,
            "1.2.826.0.1.3680043.10.1.1.80",
            &dataset[..dataset.len() - 1000],
        )
        .await;
    assert_eq!(rsp.status, Status::CANNOT_UNDERSTAND, "{rsp:?}");
    // C-STORE on the Verification context, C-ECHO on a storage context.
    let rsp = scu
        .store(1, 5, CT_STORAGE, "1.2.826.0.1.3680043.10.1.1.80", &dataset)
        .await;
    assert_eq!(rsp.status, Status::UNRECOGNIZED_OPERATION);
    let echo = dimse_scp::message::CEchoRq {
        message_id: 6,
        affected_sop_class_uid: VERIFICATION.into(),
    }
    .to_command();
    scu.send_command(3, &echo).await;
    let rsp = scu.read_command().await.unwrap();
    assert_eq!(
        Status(rsp.us(tags::STATUS).unwrap()),
        Status::UNRECOGNIZED_OPERATION
    );
    // C-FIND from a calling AE that is not configured: refused as not
    // authorized (design invariant 5), with its identifier read and dropped.
    let mut find = CommandSet::new();
    find.set_uid(tags::AFFECTED_SOP_CLASS_UID, "1.2.840.10008.5.1.4.1.2.2.1");
    find.set_us(tags::COMMAND_FIELD, command_field::C_FIND_RQ);
    find.set_us(tags::MESSAGE_ID, 7);
    find.set_us(tags::PRIORITY, 0);
    find.set_us(tags::COMMAND_DATA_SET_TYPE, DATA_SET_PRESENT);
    scu.send_command(7, &find).await;
    scu.send_pdv(
        7,
        false,
        true,
        &[
            0x08, 0x00, 0x52, 0x00, 0x06, 0x00, 0x00, 0x00, b'S', b'T', b'U', b'D', b'Y', b' ',
        ],
    )
    .await;
    let rsp = scu.read_command().await.unwrap();
    assert_eq!(rsp.command_field(), Ok(command_field::C_FIND_RSP));
    assert_eq!(rsp.us(tags::MESSAGE_ID_BEING_RESPONDED_TO), Ok(7));
    assert_eq!(
        Status(rsp.us(tags::STATUS).unwrap()),
        Status::NOT_AUTHORIZED
    );
    assert!(rsp.text(tags::ERROR_COMMENT).is_ok());
    // An N-service request: unrecognized operation.
    let mut n_get = CommandSet::new();
    n_get.set_uid(tags::REQUESTED_SOP_CLASS_UID, VERIFICATION);
    n_get.set_us(tags::COMMAND_FIELD, 0x0110);
    n_get.set_us(tags::MESSAGE_ID, 8);
    n_get.set_us(tags::COMMAND_DATA_SET_TYPE, 0x0101);
    scu.send_command(1, &n_get).await;
    let rsp = scu.read_command().await.unwrap();
    assert_eq!(rsp.command_field(), Ok(0x8110));
    assert_eq!(
        Status(rsp.us(tags::STATUS).unwrap()),
        Status::UNRECOGNIZED_OPERATION
    );
    // A C-CANCEL with nothing to cancel gets no answer; the next echo does.
    let mut cancel = CommandSet::new();
    cancel.set_us(tags::COMMAND_FIELD, command_field::C_CANCEL_RQ);
    cancel.set_us(tags::MESSAGE_ID_BEING_RESPONDED_TO, 1);
    cancel.set_us(tags::COMMAND_DATA_SET_TYPE, 0x0101);
    scu.send_command(1, &cancel).await;
    assert_eq!(scu.echo(9).await, Status::SUCCESS);
    // And a good store after all that.
    let rsp = scu
        .store(3, 10, CT_STORAGE, "1.2.826.0.1.3680043.10.1.1.80", &dataset)
        .await;
    assert_eq!(rsp.status, Status::SUCCESS);
    scu.release().await;
    assert_eq!(server.archive.stats().await.unwrap().instances, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_order_violations_abort() {
    let server = start(|_| {}).await;
    let store = Scu::store_rq(1, CT_STORAGE, "1.2.3.4").encode();
    type Script = Vec<(u8, bool, bool, Vec<u8>)>;
    let cases: Vec<(&str, Script)> = vec![
        ("data before command", vec![(3, false, true, vec![0; 10])]),
        ("unaccepted context", vec![(9, true, true, store.clone())]),
        (
            "data on another context",
            vec![
                (3, true, true, store.clone()),
                (5, false, true, vec![0; 10]),
            ],
        ),
        (
            "command inside a data set",
            vec![
                (3, true, true, store.clone()),
                (3, false, false, vec![0; 10]),
                (3, true, true, store.clone()),
            ],
        ),
        (
            "data inside a command",
            vec![
                (3, true, false, store[..10].to_vec()),
                (3, false, true, vec![0; 10]),
            ],
        ),
        (
            "malformed command set",
            vec![(
                3,
                true,
                true,
                vec![0x08, 0x00, 0x18, 0x00, 0x02, 0x00, 0x00, 0x00, 0x31, 0x00],
            )],
        ),
        (
            "command set without a command field",
            vec![(1, true, true, {
                let mut c = CommandSet::new();
                c.set_us(tags::MESSAGE_ID, 1);
                c.encode()
            })],
        ),
    ];
    for (name, script) in cases {
        let mut scu = Scu::associate(server.addr).await;
        for (ctx, is_command, is_last, data) in script {
            scu.send_pdv(ctx, is_command, is_last, &data).await;
        }
        match scu.read_pdu().await {
            Ok(Pdu::AbortRQ { source }) => {
                assert!(
                    matches!(source, AbortRQSource::ServiceProvider(_)),
                    "{name}: {source:?}"
                )
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    assert_echo_ok(server.addr).await;
    assert_eq!(server.archive.stats().await.unwrap().instances, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_store_in_flight() {
    // A drain time-out far past the test: the server stops because both
    // associations released, not because time ran out.
    let server = start(|c| c.drain_timeout = Duration::from_secs(600)).await;
    let sop = "1.2.826.0.1.3680043.10.1.1.90";
    let dataset = dataset_of(&synthetic_ct(sop, 6 * 1024 * 1024));
    let mut scu = Scu::associate(server.addr).await;
    let mut idle = Scu::associate(server.addr).await;
    scu.send_command(3, &Scu::store_rq(1, CT_STORAGE, sop))
        .await;
    let (head, tail) = dataset.split_at(dataset.len() / 2);
    for chunk in head.chunks(16000) {
        scu.send_pdv(3, false, false, chunk).await;
    }
    let addr = server.addr;
    let mut server = server;
    let stopping = tokio::spawn(async move {
        server.stop().await;
        server
    });
    // New associations are refused (transient) once the drain has begun.
    request_until(
        addr,
        &transient(AssociationRJServiceProviderPresentationReason::TemporaryCongestion),
    )
    .await;
    // The busy association finishes its store; the idle one may still
    // work; both release.
    let chunks: Vec<&[u8]> = tail.chunks(16000).collect();
    let n = chunks.len();
    for (i, chunk) in chunks.into_iter().enumerate() {
        scu.send_pdv(3, false, i + 1 == n, chunk).await;
    }
    let rsp =
        dimse_scp::message::CStoreRsp::from_command(&scu.read_command().await.unwrap()).unwrap();
    assert_eq!(rsp.status, Status::SUCCESS);
    assert_eq!(idle.echo(2).await, Status::SUCCESS);
    scu.release().await;
    idle.release().await;
    let server = stopping.await.unwrap();
    assert_eq!(server.archive.stats().await.unwrap().instances, 1);
    assert_eq!(server.blob_files().len(), 1);
    let stored = server
        .archive
        .retrieve_bytes(&pacs_core::Uid::parse(sop).unwrap())
        .await
        .unwrap();
    assert_eq!(dataset_of(&stored), dataset);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_aborts_a_stalled_store_after_the_drain_time_out() {
    let server = start(|c| c.drain_timeout = Duration::from_secs(1)).await;
    let sop = "1.2.826.0.1.3680043.10.1.1.91";
    let dataset = dataset_of(&synthetic_ct(sop, 3 * 1024 * 1024));
    let mut scu = Scu::associate(server.addr).await;
    scu.send_command(3, &Scu::store_rq(1, CT_STORAGE, sop))
        .await;
    for chunk in dataset[..dataset.len() / 2].chunks(16000) {
        scu.send_pdv(3, false, false, chunk).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut server = server;
    let took = server.stop().await;
    // Not before the drain time-out (a lower bound only).
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert!(matches!(
        scu.read_pdu().await,
        Ok(Pdu::AbortRQ { .. }) | Err(_)
    ));
    assert_eq!(server.archive.stats().await.unwrap().instances, 0);
    assert!(server.blob_files().is_empty(), "{:?}", server.blob_files());
}
