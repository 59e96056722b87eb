//! The client address and scheme of an HTTP request, and the headers a
//! trusted reverse proxy may set (`trusted_proxies`).
//!
//! When the TCP peer is one of `trusted_proxies`, the client address is the
//! rightmost address of `X-Forwarded-For` that is not itself a trusted
//! proxy (the addresses left of it were written by the client and prove
//! nothing), and the scheme is `X-Forwarded-Proto`. From any other peer
//! those headers are ignored. The result goes into the request as
//! [`ClientAddr`] and [`ClientScheme`], and replaces the address in
//! `ConnectInfo<SocketAddr>`, so that every layer below sees the resolved
//! client. This layer must be the outermost one.
//!
//! Under HTTPS (ours, or the proxy's) answers carry
//! `Strict-Transport-Security` (RFC 6797).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;
use pacs_core::{ClientAddr, ClientScheme};

/// HSTS for a year; subdomains are the site's own business.
const HSTS: &str = "max-age=31536000";

/// What the layer needs.
#[derive(Debug, Clone)]
pub struct ClientResolution {
    pub trusted_proxies: Arc<Vec<IpNet>>,
    /// This listener serves HTTPS itself.
    pub tls: bool,
}

fn trusted(proxies: &[IpNet], ip: IpAddr) -> bool {
    let ip = canonical(ip);
    proxies.iter().any(|n| n.contains(&ip))
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// The client behind `peer` (see the module documentation).
fn resolve(proxies: &[IpNet], peer: IpAddr, headers: &HeaderMap, tls: bool) -> (IpAddr, bool) {
    if !trusted(proxies, peer) {
        return (peer, tls);
    }
    let mut client = peer;
    // Every X-Forwarded-For line, in order, as one list (RFC 9110 5.3).
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for hop in hops.iter().rev() {
        let Some(ip) = parse_hop(hop) else {
            // Unparseable: stop at the last address we could trust.
            break;
        };
        client = ip;
        if !trusted(proxies, ip) {
            break;
        }
    }
    let https = match headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
    {
        Some(p) => p.trim().eq_ignore_ascii_case("https"),
        None => tls,
    };
    (canonical(client), https)
}

/// One X-Forwarded-For entry: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or
/// `[2001:db8::1]:5678`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    hop.parse::<SocketAddr>().ok().map(|s| s.ip())
}

/// The layer (`axum::middleware::from_fn_with_state`).
pub async fn resolve_client(
    State(settings): State<ClientResolution>,
    mut req: Request,
    next: Next,
) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    if let Some(peer) = peer {
        let (client, https) = resolve(
            &settings.trusted_proxies,
            peer.ip(),
            req.headers(),
            settings.tls,
        );
        req.extensions_mut().insert(ClientAddr(client));
        req.extensions_mut().insert(ClientScheme { https });
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::new(client, peer.port())));
        let mut res = next.run(req).await;
        if https {
            res.headers_mut().insert(
                axum::http::header::STRICT_TRANSPORT_SECURITY,
                HeaderValue::from_static(HSTS),
            );
        }
        return res;
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            if let (Ok(k), Ok(v)) = (
                axum::http::HeaderName::try_from(*k),
                HeaderValue::from_str(v),
            ) {
                h.append(k, v);
            }
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn forwarded_headers_only_from_trusted_peers() {
        let proxies: Vec<IpNet> = vec![
            "10.0.0.0/8".parse().expect("CIDR"),
            IpNet::from(ip("127.0.0.1")),
        ];
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6, 203.0.113.7"),
            ("x-forwarded-for", "10.1.1.1"),
            ("x-forwarded-proto", "https"),
        ]);
        // From an untrusted peer: the headers mean nothing.
        assert_eq!(
            resolve(&proxies, ip("192.0.2.1"), &h, false),
            (ip("192.0.2.1"), false)
        );
        // From a trusted one: the rightmost untrusted hop.
        assert_eq!(
            resolve(&proxies, ip("127.0.0.1"), &h, false),
            (ip("203.0.113.7"), true)
        );
        // IPv4-mapped peers are the IPv4 address.
        assert_eq!(
            resolve(&proxies, ip("::ffff:127.0.0.1"), &h, false).0,
            ip("203.0.113.7")
        );
        // Only trusted hops: the leftmost one.
        let h = headers(&[("x-forwarded-for", "10.2.2.2, 10.1.1.1")]);
        assert_eq!(
            resolve(&proxies, ip("10.0.0.1"), &h, true),
            (ip("10.2.2.2"), true)
        );
        // Garbage stops the walk at the last good address.
        let h = headers(&[("x-forwarded-for", "203.0.113.7, nonsense")]);
        assert_eq!(
            resolve(&proxies, ip("10.0.0.1"), &h, false).0,
            ip("10.0.0.1")
        );
        // Ports and brackets.
        let h = headers(&[("x-forwarded-for", "[2001:db8::1]:443")]);
        assert_eq!(
            resolve(&proxies, ip("10.0.0.1"), &h, false).0,
            ip("2001:db8::1")
        );
    }
}
