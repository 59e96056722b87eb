//! The DIMSE listener of the real `pacs` binary under shutdown and
//! descriptor exhaustion.
//!
//! SIGTERM with a real peer (pynetdicom): an association between two
//! C-STOREs is not cut off. New associations get A-ASSOCIATE-RJ transient
//! while the open one stores again and releases; then the process exits 0
//! with both instances stored.
//!
//! File-descriptor exhaustion (the binary run under `prlimit`): accept
//! fails with EMFILE, the listener backs off, and once descriptors are free
//! again it accepts and serves a C-ECHO.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// The peer: one association (pynetdicom), a C-STORE, then (told by the
/// test that the server has been sent SIGTERM) new associations until one
/// is rejected, a second C-STORE on the first association, and its
/// release. The probes are written byte by byte (PS3.8 §9.3) and read
/// strictly: an answer other than A-ASSOCIATE-AC or -RJ, or a close, fails
/// the script. (pynetdicom's own requestor may report an abort for an
/// A-ASSOCIATE-RJ that arrives before it checks its socket, so it is not
/// the probe.) After the RJ the server must leave the close to the
/// requestor (Sta13, PS3.8 §9.2).
const PEER: &str = r#"
import socket, struct, sys, time
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification
port, first, second = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ae = AE(ae_title="DRAINSCU")
ae.add_requested_context(CTImageStorage)
ae.add_requested_context(Verification)
assoc = ae.associate("127.0.0.1", port, ae_title="PACS")
assert assoc.is_established, "first association"
print("store1 %04x" % assoc.send_c_store(dcmread(first)).Status, flush=True)
sys.stdin.readline()

def item(kind, body):
    return struct.pack(">BBH", kind, 0, len(body)) + body

def pdu(kind, body):
    return struct.pack(">BBI", kind, 0, len(body)) + body

def recv_exact(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        assert chunk, "the server closed the connection instead of answering"
        out += chunk
    return out

def read_pdu(s):
    kind, _, n = struct.unpack(">BBI", recv_exact(s, 6))
    return kind, recv_exact(s, n)

context = item(0x20, bytes([1, 0, 0, 0]) + item(0x30, b"1.2.840.10008.1.1")
               + item(0x40, b"1.2.840.10008.1.2"))
request = pdu(0x01, struct.pack(">HH", 1, 0) + b"PACS".ljust(16) + b"PROBE".ljust(16)
              + bytes(32) + item(0x10, b"1.2.840.10008.3.1.1.1") + context
              + item(0x50, item(0x51, struct.pack(">I", 16384))))
for _ in range(600):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(request)
    kind, body = read_pdu(s)
    if kind == 0x02:
        s.sendall(pdu(0x05, bytes(4)))
        assert read_pdu(s)[0] == 0x06, "A-RELEASE-RP"
        s.close()
        time.sleep(0.05)
        continue
    assert kind == 0x03, "answered with PDU type %d, not A-ASSOCIATE-RJ" % kind
    s.settimeout(0.5)
    try:
        early = s.recv(1)
        assert early, "the server closed before the requestor did"
    except socket.timeout:
        pass
    s.close()
    print("probe rejected result=%d source=%d reason=%d" % (body[1], body[2], body[3]), flush=True)
    break
print("store2 %04x" % assoc.send_c_store(dcmread(second)).Status, flush=True)
assoc.release()
print("released %s" % assoc.is_released, flush=True)
"#;

#[test]
fn sigterm_lets_an_open_association_store_again_and_release() {
    let Some(python) = pynetdicom_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let study = "1.2.826.0.1.3680043.10.9";
    let series = "1.2.826.0.1.3680043.10.9.1";
    let files: Vec<_> = [
        "1.2.826.0.1.3680043.10.9.1.1",
        "1.2.826.0.1.3680043.10.9.1.2",
    ]
    .iter()
    .map(|sop| {
        let p = tmp.path().join(format!("{sop}.dcm"));
        std::fs::write(&p, small_object(study, series, sop)).unwrap();
        p
    })
    .collect();
    // A drain time-out far past the test: the server can only exit
    // because the association released.
    let config = tmp.path().join("pacs.toml");
    // Any calling AE may associate (the test is about the listener).
    std::fs::write(&config, "strict_ae = false\ndrain_timeout = 600\n").unwrap();
    let mut server = Server::start(&dir, &["--config", config.to_str().unwrap()]);

    let mut peer = Command::new(&python)
        .arg("-c")
        .arg(PEER)
        .arg(server.dimse_port.to_string())
        .args(&files)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(peer.stdout.take().unwrap()).lines();
    let mut next_line = || lines.next().map(|l| l.unwrap()).unwrap_or_default();
    assert_eq!(next_line(), "store1 0000");

    let kill = Command::new("kill")
        .arg("-TERM")
        .arg(server.child.id().to_string())
        .status()
        .unwrap();
    assert!(kill.success());
    peer.stdin.take().unwrap().write_all(b"go\n").unwrap();
    // Rejected, transient (2), by the service provider (presentation: 3),
    // temporary congestion (1) (PS3.8 §9.3.4).
    assert_eq!(next_line(), "probe rejected result=2 source=3 reason=1");
    assert_eq!(next_line(), "store2 0000");
    assert_eq!(next_line(), "released True");
    assert!(peer.wait().unwrap().success());

    // It exits by itself once the association has released.
    let mut exit = None;
    for _ in 0..2400 {
        exit = server.child.try_wait().unwrap();
        if exit.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let exit = exit.expect("the server did not exit after the release");
    let log = std::fs::read_to_string(&server.log).unwrap_or_default();
    assert!(exit.success(), "SIGTERM must exit 0: {exit:?}\n{log}");
    assert!(log.contains("archive closed cleanly"), "{log}");
    let stats = pacs(&dir, &["stats", "--json"]);
    let stats: serde_json::Value = serde_json::from_str(&stdout(&stats)).unwrap();
    assert_eq!(stats["instances"], 2, "{stats}");
}

/// Polls `cond` every 50 ms, at most `tries` times.
fn eventually(tries: u32, mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..tries {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn accept_recovers_after_descriptor_exhaustion() {
    let Some(echoscu) = dcmtk("echoscu") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    // Unassociated connections are kept (long ARTIM, a pending cap above
    // the descriptor limit), so each one holds a descriptor of the server.
    let config = tmp.path().join("pacs.toml");
    std::fs::write(
        &config,
        "strict_ae = false\nartim_timeout = 600\nmax_pending_connections = 4096\n",
    )
    .unwrap();
    let http_port = free_port();
    let dimse_port = free_port();
    let log = tmp.path().join("server.log");
    let child = Command::new("/usr/bin/prlimit")
        .arg("--nofile=256:256")
        .arg("--")
        .arg(pacs_bin())
        .arg("--data-dir")
        .arg(&dir)
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .arg("--http-listen")
        .arg(format!("127.0.0.1:{http_port}"))
        .arg("--dimse-listen")
        .arg(format!("127.0.0.1:{dimse_port}"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    let mut server = Server {
        child,
        http_port,
        dimse_port,
        log: log.clone(),
    };
    assert!(
        eventually(2400, || matches!(
            http_get(http_port, "/healthz"),
            Ok((200, _))
        )),
        "not healthy: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let log_has = |what: &str| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(what)
    };

    // Silent connections until the server runs out of descriptors (the
    // kernel completes the handshakes; accept then fails with EMFILE).
    let mut silent = Vec::new();
    while !log_has("accept failed") {
        assert!(
            silent.len() < 2000,
            "no accept failure after {} connections",
            silent.len()
        );
        for _ in 0..16 {
            silent.push(TcpStream::connect(("127.0.0.1", dimse_port)).unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Descriptors free again: the listener accepts and serves.
    drop(silent);
    let echo = || {
        Command::new(&echoscu)
            .args(["-aec", "PACS", "127.0.0.1", &dimse_port.to_string()])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    assert!(
        eventually(600, echo),
        "no C-ECHO after the descriptors were freed: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(matches!(http_get(http_port, "/healthz"), Ok((200, _))));
    let exit = terminate(&mut server.child);
    assert!(exit.success(), "{exit:?}");
}
