//! Loopback ports and a minimal blocking HTTP/1.1 client (for the checks
//! where a full client would hide what the server sent).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// A port free on 127.0.0.1 at the time of the call, and never one this
/// process was given before: the kernel may hand the same ephemeral port
/// out again once its listener is closed, and a server given it for both
/// its HTTP and its DIMSE listener (or a test's peer given a server's)
/// would fail to start.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if given.insert(port) {
            return port;
        }
    }
    panic!("no port on 127.0.0.1 that this process was not given before, in 1,000 tries");
}

/// A blocking `GET path` with `Connection: close`: (status, body).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    read_response(s)
}

/// Reads a whole `Connection: close` HTTP/1.1 response: (status, body).
pub fn read_response(mut s: TcpStream) -> std::io::Result<(u16, String)> {
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// A round-robin TCP balancer on 127.0.0.1 in front of several nodes, as
/// a load balancer would be: connection `n` goes to node `n mod N` (the
/// next one when that node does not accept), bytes are copied both ways,
/// and a close on either side is passed on. Stopped when dropped.
pub struct RoundRobin {
    pub addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl RoundRobin {
    pub async fn start(nodes: Vec<std::net::SocketAddr>) -> RoundRobin {
        assert!(!nodes.is_empty());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut next = 0usize;
            while let Ok((mut client, _)) = listener.accept().await {
                let first = next;
                next = next.wrapping_add(1);
                let nodes = nodes.clone();
                tokio::spawn(async move {
                    for k in 0..nodes.len() {
                        let node = nodes[(first + k) % nodes.len()];
                        if let Ok(mut server) = tokio::net::TcpStream::connect(node).await {
                            let _ = client.set_nodelay(true);
                            let _ = server.set_nodelay(true);
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                            return;
                        }
                    }
                });
            }
        });
        RoundRobin { addr, task }
    }
}

impl Drop for RoundRobin {
    fn drop(&mut self) {
        self.task.abort();
    }
}
