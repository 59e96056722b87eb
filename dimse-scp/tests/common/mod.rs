//! Shared by the integration tests: an in-process server on 127.0.0.1 with
//! a real archive (local disk + sled) in a temp dir, a small byte-level SCU
//! built on the crate's own message layer, and helpers for external peers.
#![allow(clippy::unwrap_used, dead_code, unused_imports)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dicom_ul::pdu::{
    AssociationRJ, AssociationRJResult, AssociationRJServiceProviderPresentationReason,
    AssociationRJSource,
};
use dicom_ul::Pdu;
use dimse_scp::{DimseConfig, DimseError, DimseServer};
use pacs_core::{Archive, Limits};
use tokio::net::TcpStream;

pub use pacs_testkit::dimse::*;
pub use pacs_testkit::fixtures::open_archive;
pub use pacs_testkit::peers::{pynetdicom_available, python, tool_available as peer_available};
pub use pacs_testkit::samples::{files_under, sample_dir, synthetic_ct};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
}

/// A running server and its archive. In the engines pass with
/// `PACS_TEST_NODES=N`, N servers on one PostgreSQL database and S3 bucket
/// behind a round-robin balancer: `addr` is the balancer's, `archive` the
/// first node's (every node sees the same archive).
pub struct Server {
    pub addr: SocketAddr,
    pub archive: Archive,
    pub dir: tempfile::TempDir,
    stop: Vec<oneshot::Sender<()>>,
    task: Vec<JoinHandle<Result<(), DimseError>>>,
    balancer: Option<pacs_testkit::net::RoundRobin>,
}

/// Starts a server on 127.0.0.1 port 0 (in the engines pass, as many
/// nodes as `PACS_TEST_NODES` asks); `tweak` adjusts the configuration.
pub async fn start(tweak: impl FnOnce(&mut DimseConfig)) -> Server {
    start_nodes(pacs_testkit::engines::nodes(), tweak).await
}

/// [`start`], always one node: for the tests of the association limits,
/// which hold per node.
pub async fn start_one_node(tweak: impl FnOnce(&mut DimseConfig)) -> Server {
    start_nodes(1, tweak).await
}

async fn start_nodes(nodes: usize, tweak: impl FnOnce(&mut DimseConfig)) -> Server {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut config = DimseConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ae_title: AE.into(),
        ..DimseConfig::default()
    };
    tweak(&mut config);
    let archive = open_archive(dir.path(), config.limits.clone()).await;
    let mut addrs = Vec::new();
    let mut stop = Vec::new();
    let mut task = Vec::new();
    for n in 0..nodes {
        let node = if n == 0 {
            archive.clone()
        } else {
            pacs_testkit::engines::sibling_archive(dir.path(), config.limits.clone()).await
        };
        let server = DimseServer::bind(config.clone()).await.unwrap();
        addrs.push(server.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        task.push(tokio::spawn(server.run(node, async move {
            let _ = rx.await;
        })));
        stop.push(tx);
    }
    let (addr, balancer) = if nodes == 1 {
        (addrs[0], None)
    } else {
        let b = pacs_testkit::net::RoundRobin::start(addrs).await;
        (b.addr, Some(b))
    };
    Server {
        addr,
        archive,
        dir,
        stop,
        task,
        balancer,
    }
}

impl Server {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Signals shutdown (to every node at once) and waits (bounded) for
    /// `run` to return on each.
    pub async fn stop(&mut self) -> Duration {
        let t0 = std::time::Instant::now();
        for tx in self.stop.drain(..) {
            let _ = tx.send(());
        }
        for task in self.task.drain(..) {
            tokio::time::timeout(Duration::from_secs(60), task)
                .await
                .expect("server did not stop within 60 s")
                .unwrap()
                .unwrap();
        }
        self.balancer = None;
        t0.elapsed()
    }

    /// What the archive's blob store holds: the files under `objects/`,
    /// or (engines pass) every key of its bucket, staging and partial
    /// uploads included.
    pub fn blob_files(&self) -> Vec<String> {
        if pacs_testkit::engines::postgres_s3() {
            return pacs_testkit::engines::keys_for(self.dir.path());
        }
        files_under(&self.dir.path().join("objects"))
            .into_iter()
            .map(|p| p.display().to_string())
            .collect()
    }
}

/// The data set part of a Part 10 file (everything after the meta header).
pub fn dataset_of(part10: &[u8]) -> Vec<u8> {
    let header = pacs_core::dicom::parse_part10(part10, true, &Limits::default()).unwrap();
    part10[header.dataset_offset as usize..].to_vec()
}

/// Transfer syntax UID of a Part 10 file.
pub fn transfer_syntax_of(part10: &[u8]) -> String {
    let header = pacs_core::dicom::parse_part10(part10, true, &Limits::default()).unwrap();
    header.meta.transfer_syntax_uid
}

/// SOP Instance UID of a Part 10 file.
pub fn sop_instance_of(part10: &[u8]) -> pacs_core::Uid {
    let header = pacs_core::dicom::parse_part10(part10, true, &Limits::default()).unwrap();
    pacs_core::Uid::parse(&header.meta.media_storage_sop_instance_uid).unwrap()
}

// ---------------------------------------------------------------------------
// External peers

/// Output of a finished external command.
pub struct Run {
    pub success: bool,
    pub output: String,
}

/// Runs a command with a time-out, capturing stdout and stderr.
pub async fn run(program: &str, args: &[String], limit: Duration) -> Run {
    let child = tokio::process::Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(limit, child)
        .await
        .unwrap_or_else(|_| panic!("{program} did not finish within {limit:?}"))
        .unwrap();
    Run {
        success: out.status.success(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

pub async fn echoscu(port: u16, called: &str) -> Run {
    let args = vec![
        "-aet".to_string(),
        "ECHOSCU".into(),
        "-aec".into(),
        called.into(),
        "127.0.0.1".into(),
        port.to_string(),
    ];
    run("/usr/bin/echoscu", &args, Duration::from_secs(30)).await
}

/// Waits until a peer started by a test listens on `port`, however long
/// its start takes on a loaded machine; panics if `child` exits first or
/// after two minutes.
pub async fn wait_listening(port: u16, child: &mut tokio::process::Child) {
    for _ in 0..2400 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the peer exited before listening on {port}: {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the peer never listened on {port}");
}

// ---------------------------------------------------------------------------
// Association requests during a drain

/// An A-ASSOCIATE-RJ, transient, from the service provider (presentation).
pub fn transient(reason: AssociationRJServiceProviderPresentationReason) -> Pdu {
    Pdu::AssociationRJ(AssociationRJ {
        result: AssociationRJResult::Transient,
        source: AssociationRJSource::ServiceProviderPresentation(reason),
    })
}

pub fn local_limit() -> Pdu {
    transient(AssociationRJServiceProviderPresentationReason::LocalLimitExceeded)
}

pub fn echo_rq(calling: &str) -> dicom_ul::pdu::AssociationRQ {
    association_rq(calling, AE, vec![pc(1, VERIFICATION, &[IMPLICIT_LE])])
}

pub fn encoded_rq(calling: &str) -> Vec<u8> {
    let mut out = Vec::new();
    dicom_ul::write_pdu(&mut out, &Pdu::AssociationRQ(echo_rq(calling))).unwrap();
    out
}

/// Retries an association request until the server answers with `want`
/// (state reached); associations accepted meanwhile are released.
///
/// A connection closed unanswered is retried too: with several nodes
/// behind the balancer, a node with no association open ends its stop at
/// once and drops what it had accepted but not read, and the balancer
/// sends the next connection to a node still listening. On one node a
/// bare close is never `want`, so a server that closes instead of
/// answering still fails here ("never answered").
pub async fn request_until(addr: SocketAddr, want: &Pdu) {
    let rq = encoded_rq("PROBE");
    let mut closed = 0;
    for _ in 0..600 {
        let mut scu = Scu::connect(addr).await;
        let answer = match scu.send_raw(&rq).await {
            Ok(()) => scu.read_pdu().await,
            Err(e) => Err(e.to_string()),
        };
        match answer {
            Ok(Pdu::AssociationAC(_)) => scu.release().await,
            Ok(p) if p == *want => return,
            Ok(other) => panic!("unexpected answer while waiting for {want:?}: {other:?}"),
            Err(_) => closed += 1,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server never answered {want:?} ({closed} connections closed unanswered)");
}
