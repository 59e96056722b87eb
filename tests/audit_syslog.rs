//! The audit trail forwarded to a syslog collector over TLS (PS3.15 A.6,
//! RFC 5425) by the real binary: a collector in this test receives the
//! octet-counted RFC 5424 messages, the same `AuditMessage`s as the local
//! log and in its order, including the events recorded while no collector
//! was up and while only a collector with an untrusted certificate was
//! (whose handshake the archive refuses).
#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/pki.rs"]
mod pki;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{free_port, http_get, Server};
use dimse_scp::rustls::pki_types::pem::PemObject;
use dimse_scp::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use dimse_scp::rustls::ServerConfig;
use pki::Pki;
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A TLS acceptor serving `name.pem` / `name.key` of `pki`.
fn acceptor(pki: &Pki, name: &str) -> TlsAcceptor {
    let chain = CertificateDer::pem_file_iter(pki.path(&format!("{name}.pem")))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(pki.path(&format!("{name}.key"))).unwrap();
    let provider = Arc::new(dimse_scp::rustls::crypto::aws_lc_rs::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

/// Reads one octet-counted frame (RFC 5425 §4.3): `MSG-LEN SP SYSLOG-MSG`.
async fn read_frame<R: AsyncReadExt + Unpin>(r: &mut R) -> String {
    let mut len = Vec::new();
    loop {
        let b = r.read_u8().await.unwrap();
        if b == b' ' {
            break;
        }
        assert!(b.is_ascii_digit() && len.len() < 10, "bad frame length");
        len.push(b);
    }
    let len: usize = String::from_utf8(len).unwrap().parse().unwrap();
    let mut msg = vec![0u8; len];
    r.read_exact(&mut msg).await.unwrap();
    String::from_utf8(msg).unwrap()
}

/// The `msg` of every record of the local log, oldest first.
fn local_messages(data: &Path) -> Vec<String> {
    let mut files: Vec<_> = std::fs::read_dir(data.join("audit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(|l| {
                    let v: Value = serde_json::from_str(l).unwrap();
                    v["msg"].as_str().unwrap().to_owned()
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The `AuditMessage` of a received SYSLOG-MSG, checking its header.
fn audit_message(syslog_msg: &str) -> String {
    // <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD BOM MSG.
    let parts: Vec<&str> = syslog_msg.splitn(8, ' ').collect();
    assert_eq!(parts.len(), 8, "{syslog_msg}");
    assert!(
        parts[0] == "<85>1" || parts[0] == "<84>1",
        "PRI: facility 10, severity 5 or 4: {syslog_msg}"
    );
    assert_eq!(parts[3], "sen-pacs");
    assert_eq!(parts[5], "DICOM+RFC3881");
    assert_eq!(parts[6], "-");
    let msg = parts[7]
        .strip_prefix('\u{FEFF}')
        .expect("MSG starts with a BOM");
    assert!(msg.starts_with("<AuditMessage>"), "{msg}");
    msg.to_owned()
}

/// A QIDO-RS query (audited as Query 110112), answered whatever the
/// collector does.
async fn query(http: u16, patient_id: &'static str) {
    let (code, _) = tokio::task::spawn_blocking(move || {
        http_get(http, &format!("/dicom-web/studies?PatientID={patient_id}")).unwrap()
    })
    .await
    .unwrap();
    assert!(code == 200 || code == 204, "{code}");
}

/// Receives frames until `received` holds as many messages as `local`,
/// then checks they are the same, in the same order.
async fn receive_all<R: AsyncReadExt + Unpin>(
    conn: &mut R,
    received: &mut Vec<String>,
    local: &[String],
) {
    while received.len() < local.len() {
        let frame = tokio::time::timeout(Duration::from_secs(60), read_frame(conn))
            .await
            .expect("a recorded event was not forwarded");
        received.push(audit_message(&frame));
    }
    assert_eq!(received[..], local[..received.len()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_a_trusted_collector_in_order_after_an_outage() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    pki.leaf("ca", "collector", 2, "IP:127.0.0.1");
    pki.ca("rogue");
    pki.leaf("rogue", "impostor", 3, "IP:127.0.0.1");
    let port = free_port();
    let cfg = tmp.path().join("pacs.toml");
    std::fs::write(
        &cfg,
        format!(
            "[audit]\nsyslog_tls = \"127.0.0.1:{port}\"\nsyslog_ca_file = {:?}\nsyslog_retry_max_secs = 1\n",
            pki.path("ca.pem")
        ),
    )
    .unwrap();
    let data = tmp.path().join("data");
    let server = {
        let data = data.clone();
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || {
            Server::start(&data, &["--config", cfg.to_str().unwrap()])
        })
        .await
        .unwrap()
    };
    let http = server.http_port;

    // No collector yet: a query is answered (the local log is the record of
    // truth) and waits in the spool.
    query(http, "SYSLOG1").await;

    // A collector whose certificate does not chain to syslog_ca_file: the
    // archive refuses the handshake and sends nothing.
    {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let impostor = acceptor(&pki, "impostor");
        let (tcp, _) = tokio::time::timeout(Duration::from_secs(60), listener.accept())
            .await
            .expect("the archive did not try the collector")
            .unwrap();
        let handshake = tokio::time::timeout(Duration::from_secs(30), impostor.accept(tcp))
            .await
            .unwrap();
        assert!(
            handshake.is_err(),
            "the archive accepted an untrusted collector"
        );
    }
    // Recorded while only the impostor was up.
    query(http, "SYSLOG2").await;

    // The trusted collector gets everything since the start, in order.
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let trusted = acceptor(&pki, "collector");
    let mut conn = loop {
        let (tcp, _) = tokio::time::timeout(Duration::from_secs(60), listener.accept())
            .await
            .expect("the archive did not reconnect")
            .unwrap();
        if let Ok(Ok(tls)) =
            tokio::time::timeout(Duration::from_secs(30), trusted.accept(tcp)).await
        {
            break tls;
        }
    };
    let mut received = Vec::new();
    let expected = local_messages(&data);
    assert!(expected.len() >= 3, "start and two queries: {expected:?}");
    receive_all(&mut conn, &mut received, &expected).await;
    assert!(
        received[0].contains("csd-code=\"110120\""),
        "Application Start first"
    );
    assert!(received.iter().any(|m| m.contains("csd-code=\"110112\"")));

    // Live: an event recorded now arrives on the open connection.
    query(http, "SYSLOG3").await;
    let now = local_messages(&data);
    assert!(now.len() > expected.len());
    receive_all(&mut conn, &mut received, &now).await;
    let cursor = std::fs::read_to_string(data.join("audit/syslog.cursor")).unwrap();
    assert!(cursor.starts_with("{\"v\":1,"), "{cursor}");
    tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
}
