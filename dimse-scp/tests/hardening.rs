//! The listener's limits under hostile or careless peers, over real TCP on
//! 127.0.0.1 against the real server: the ARTIM timer, connections that
//! have not associated yet, bursts past the association caps, unknown
//! command fields, and the drain on shutdown.
//!
//! No assertion here depends on how fast the machine is: waits are on
//! events (a close, an answer, a state seen by a new association), and the
//! deadlines that bound them are far longer than the limits under test.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use dicom_ul::pdu::AssociationRJServiceProviderPresentationReason;
use dicom_ul::Pdu;
use dimse_scp::message::{tags, CommandSet, DATA_SET_PRESENT, NO_DATA_SET};
use dimse_scp::Status;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes; what it sent before. Panics if it has
/// neither closed nor sent anything within `limit` (a deadline far past
/// the time-out under test).
async fn bytes_until_close(
    stream: &mut tokio::net::tcp::OwnedReadHalf,
    limit: Duration,
) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buf)).await {
            Err(_) => panic!("the server kept the connection open for {limit:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artim_closes_connections_without_a_timely_association_request() {
    // Idle time-out at its default (300 s); ARTIM at 1 s.
    let server = start(|c| c.limits.artim_timeout = Duration::from_secs(1)).await;
    assert_eq!(
        server.archive.limits().idle_timeout,
        Duration::from_secs(300)
    );

    // Silent: closed, nothing sent (PS3.8 AA-2).
    let (mut read, _write) = TcpStream::connect(server.addr).await.unwrap().into_split();
    let got = bytes_until_close(&mut read, Duration::from_secs(60)).await;
    assert!(got.is_empty(), "{got:?}");

    // Trickled: one byte of a valid A-ASSOCIATE-RQ every 200 ms (about 30 s
    // for the whole request). The ARTIM timer bounds the whole request, so
    // the server closes long before the last byte, and never answers.
    let rq = encoded_rq("TRICKLE");
    assert!(rq.len() > 100);
    let (mut read, mut write) = TcpStream::connect(server.addr).await.unwrap().into_split();
    let trickle = tokio::spawn(async move {
        for b in rq {
            if write.write_all(&[b]).await.is_err() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        true
    });
    let got = bytes_until_close(&mut read, Duration::from_secs(120)).await;
    assert!(got.is_empty(), "the trickled request was answered: {got:?}");
    trickle.abort();
    assert_echo_ok(server.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unassociated_connections_hold_no_association_slots() {
    let server = start_one_node(|c| {
        c.limits.max_associations = 4;
        c.limits.max_associations_per_peer = 2;
        // Far beyond the test: the slow connections stay pending throughout.
        c.limits.artim_timeout = Duration::from_secs(600);
    })
    .await;
    // A trickle of slow connections from this host, more than both caps:
    // each sends half an A-ASSOCIATE-RQ and stalls.
    let rq = encoded_rq("SLOW");
    let mut slow = Vec::new();
    for _ in 0..12 {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(&rq[..rq.len() / 2]).await.unwrap();
        slow.push(s);
    }
    // Normal associations from the same host still succeed, up to the
    // per-peer cap at once.
    for round in 0..3u16 {
        let mut a = Scu::associate(server.addr).await;
        let mut b = Scu::associate(server.addr).await;
        assert_eq!(a.echo(round).await, Status::SUCCESS);
        assert_eq!(b.echo(round).await, Status::SUCCESS);
        // The per-peer cap itself still holds.
        let third = Scu::try_request(server.addr, echo_rq("THIRD")).await;
        assert_eq!(third, Ok(local_limit()));
        a.release().await;
        b.release().await;
    }
    // The slow connections were never answered.
    for mut s in slow {
        let mut buf = [0u8; 16];
        let r = tokio::time::timeout(Duration::from_millis(10), s.read(&mut buf)).await;
        assert!(r.is_err(), "a slow connection got an answer: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_connection_cap_closes_only_past_it() {
    // One node: the cap holds per listener.
    let server = start_one_node(|c| {
        c.limits.max_pending_connections = 3;
        c.limits.artim_timeout = Duration::from_secs(600);
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // The fourth unassociated connection is closed unanswered.
    let (mut read, _w) = TcpStream::connect(server.addr).await.unwrap().into_split();
    assert!(bytes_until_close(&mut read, Duration::from_secs(60))
        .await
        .is_empty());
    // Once one pending place is free, associations work again.
    drop(silent.pop());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match Scu::try_request(server.addr, echo_rq("NEXT")).await {
            Ok(Pdu::AssociationAC(_)) => break,
            other if tokio::time::Instant::now() < deadline => {
                eprintln!("not yet: {other:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("no pending place came free: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_association_past_the_caps_gets_a_rejection() {
    let server = start_one_node(|c| {
        c.limits.max_associations = 2;
        c.limits.max_associations_per_peer = 2;
    })
    .await;
    let mut held = vec![
        Scu::associate(server.addr).await,
        Scu::associate(server.addr).await,
    ];
    // A burst of 200 at once: each reads an A-ASSOCIATE-RJ, none an
    // A-ABORT or a bare close.
    let burst: Vec<_> = (0..200)
        .map(|_| {
            let addr = server.addr;
            tokio::spawn(async move { Scu::try_request(addr, echo_rq("BURST")).await })
        })
        .collect();
    let mut answers = Vec::new();
    for b in burst {
        answers.push(b.await.unwrap());
    }
    let wrong: Vec<_> = answers
        .iter()
        .filter(|a| **a != Ok(local_limit()))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of 200 not rejected: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    for (i, scu) in held.iter_mut().enumerate() {
        assert_eq!(scu.echo(i as u16).await, Status::SUCCESS);
    }
    for scu in held {
        scu.release().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_command_fields_are_unrecognized_operations() {
    let server = start(|_| {}).await;
    let mut scu = Scu::associate(server.addr).await;
    for (i, field) in [0x0ABCu16, 0x0000, 0x0002, 0x8ABC, 0xFFFF]
        .into_iter()
        .enumerate()
    {
        let message_id = 100 + i as u16;
        let mut c = CommandSet::new();
        c.set_uid(tags::AFFECTED_SOP_CLASS_UID, VERIFICATION);
        c.set_us(tags::COMMAND_FIELD, field);
        c.set_us(tags::MESSAGE_ID, message_id);
        c.set_us(tags::COMMAND_DATA_SET_TYPE, NO_DATA_SET);
        scu.send_command(1, &c).await;
        let rsp = scu.read_command().await.unwrap();
        assert_eq!(rsp.command_field(), Ok(field | 0x8000), "{field:#06x}");
        assert_eq!(rsp.us(tags::MESSAGE_ID_BEING_RESPONDED_TO), Ok(message_id));
        assert_eq!(
            Status(rsp.us(tags::STATUS).unwrap()),
            Status::UNRECOGNIZED_OPERATION,
            "{field:#06x}"
        );
    }
    // With a data set: read and dropped, then answered.
    let mut c = CommandSet::new();
    c.set_us(tags::COMMAND_FIELD, 0x0456);
    c.set_us(tags::MESSAGE_ID, 200);
    c.set_us(tags::COMMAND_DATA_SET_TYPE, DATA_SET_PRESENT);
    scu.send_command(1, &c).await;
    scu.send_data(1, &[0u8; 40_000]).await;
    let rsp = scu.read_command().await.unwrap();
    assert_eq!(rsp.command_field(), Ok(0x8456));
    assert_eq!(rsp.us(tags::MESSAGE_ID_BEING_RESPONDED_TO), Ok(200));
    assert_eq!(
        Status(rsp.us(tags::STATUS).unwrap()),
        Status::UNRECOGNIZED_OPERATION
    );
    // The association goes on.
    assert_eq!(scu.echo(201).await, Status::SUCCESS);
    scu.release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_open_associations_until_they_release() {
    // A drain time-out far past the test: the server can only stop because
    // the open association released.
    let server = start(|c| c.drain_timeout = Duration::from_secs(600)).await;
    let mut scu = Scu::associate(server.addr).await;
    let sops = [
        "1.2.826.0.1.3680043.10.1.1.301",
        "1.2.826.0.1.3680043.10.1.1.302",
        "1.2.826.0.1.3680043.10.1.1.303",
    ];
    let rsp = scu
        .store(
            3,
            1,
            CT_STORAGE,
            sops[0],
            &dataset_of(&synthetic_ct(sops[0], 4096)),
        )
        .await;
    assert_eq!(rsp.status, Status::SUCCESS);

    let addr = server.addr;
    let mut server = server;
    let stopping = tokio::spawn(async move {
        server.stop().await;
        server
    });
    // Draining: a new association gets A-ASSOCIATE-RJ transient.
    request_until(
        addr,
        &transient(AssociationRJServiceProviderPresentationReason::TemporaryCongestion),
    )
    .await;
    // The open one goes on: more C-STOREs, then its release.
    for (i, sop) in sops[1..].iter().enumerate() {
        let rsp = scu
            .store(
                3,
                2 + i as u16,
                CT_STORAGE,
                sop,
                &dataset_of(&synthetic_ct(sop, 4096)),
            )
            .await;
        assert_eq!(rsp.status, Status::SUCCESS);
    }
    scu.release().await;
    let server = stopping.await.unwrap();
    assert_eq!(server.archive.stats().await.unwrap().instances, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_aborts_associations_still_open_after_the_drain_time_out() {
    // Long enough for an echo once the drain is seen to have begun.
    let drain = Duration::from_secs(15);
    let server = start(|c| c.drain_timeout = drain).await;
    let mut scu = Scu::associate(server.addr).await;
    assert_eq!(scu.echo(1).await, Status::SUCCESS);
    let addr = server.addr;
    let mut server = server;
    let stopping = tokio::spawn(async move {
        let took = server.stop().await;
        (server, took)
    });
    request_until(
        addr,
        &transient(AssociationRJServiceProviderPresentationReason::TemporaryCongestion),
    )
    .await;
    // Still served during the drain; the peer never releases.
    assert_eq!(scu.echo(2).await, Status::SUCCESS);
    assert!(matches!(scu.read_pdu().await, Ok(Pdu::AbortRQ { .. })));
    let (_server, took) = stopping.await.unwrap();
    // Not before the drain time-out (a lower bound only).
    assert!(took >= drain, "{took:?}");
}

/// A connection accepted during the drain whose request arrives only after
/// the drain has ended (the listener closed) still gets its
/// A-ASSOCIATE-RJ transient, not a bare close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_read_after_the_drain_ended_is_still_rejected() {
    // One node: the test watches that node's listener close.
    let server = start_one_node(|c| c.drain_timeout = Duration::from_secs(600)).await;
    let addr = server.addr;
    // Holds the drain open until the test lets it end.
    let open = Scu::associate(addr).await;
    let mut server = server;
    let stopping = tokio::spawn(async move {
        server.stop().await;
        server
    });
    let congestion = transient(AssociationRJServiceProviderPresentationReason::TemporaryCongestion);
    request_until(addr, &congestion).await;
    // Accepted while draining (an A-ASSOCIATE-RJ on a second connection
    // shows the listener has taken the ones before it), silent so far.
    let mut late = Scu::connect(addr).await;
    request_until(addr, &congestion).await;
    // The drain ends; the listener closes.
    open.release().await;
    let mut closed = false;
    for _ in 0..600 {
        if TcpStream::connect(addr).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(closed, "the listener did not close after the drain");
    late.send_pdu(&Pdu::AssociationRQ(echo_rq("LATE"))).await;
    assert_eq!(late.read_pdu().await, Ok(congestion));
    drop(late);
    stopping.await.unwrap();
}
