//! Remote AE titles bound to addresses (design invariant 5): a
//! `[[remote_ae]]` entry's `host` says where its AE title may call from,
//! as an IP address, a CIDR block (`10.0.0.0/8`) or a DNS name (resolved
//! when an association arrives, the answer kept for [`DNS_TTL`]).
//!
//! A calling AE title that no entry lists is [`Binding::Unlisted`] (what
//! it may do is the association policy's business); a listed title calling
//! from an address none of its entries covers is [`Binding::WrongAddress`].
//!
//! Non-goals: no reverse lookups; no TLS certificate binding.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::server::RemoteAe;

/// How long a resolved name is trusted.
pub const DNS_TTL: Duration = Duration::from_secs(30);
/// How long a failed resolution is remembered (the title is refused
/// meanwhile).
const DNS_NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// Bound on one resolution.
const DNS_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a remote AE may call from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Ip(IpAddr),
    /// Network address and prefix length.
    Cidr(IpAddr, u8),
    Name(String),
}

impl HostPattern {
    /// Parses a `host` value; `Err` says why it is none of the three.
    pub fn parse(s: &str) -> Result<HostPattern, String> {
        let s = s.trim();
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(HostPattern::Ip(ip.to_canonical()));
        }
        if let Some((net, len)) = s.split_once('/') {
            let net: IpAddr = net
                .parse()
                .map_err(|_| format!("host {s:?}: {net:?} is not an IP address"))?;
            let max = if net.is_ipv4() { 32 } else { 128 };
            let len: u8 = len
                .parse()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("host {s:?}: prefix length must be 0 to {max}"))?;
            return Ok(HostPattern::Cidr(net, len));
        }
        // RFC 1123 host name: labels of letters, digits and hyphens.
        let valid = !s.is_empty()
            && s.len() <= 253
            && s.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !valid {
            return Err(format!(
                "host {s:?} is not an IP address, a CIDR block (10.0.0.0/8) or a DNS name"
            ));
        }
        Ok(HostPattern::Name(s.to_ascii_lowercase()))
    }
}

/// Whether `ip` lies in `net/len`.
fn in_cidr(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// What [`AeBindings::check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// No entry has this AE title.
    Unlisted,
    /// An entry has this title and covers the address.
    Bound,
    /// Entries have this title, none covers the address.
    WrongAddress,
}

/// The AE titles of the configuration and their hosts.
pub(crate) struct AeBindings {
    entries: Vec<(String, HostPattern)>,
    cache: Mutex<HashMap<String, (Instant, Vec<IpAddr>)>>,
}

impl AeBindings {
    /// From the configured remote AEs; `Err` names a bad `host`.
    pub(crate) fn new(remote_aes: &[RemoteAe]) -> Result<AeBindings, String> {
        let entries = remote_aes
            .iter()
            .map(|r| {
                HostPattern::parse(&r.host)
                    .map(|p| (r.ae_title.trim_matches(' ').to_owned(), p))
                    .map_err(|e| format!("remote AE {}: {e}", r.ae_title))
            })
            .collect::<Result<_, _>>()?;
        Ok(AeBindings {
            entries,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Whether `calling_ae` may call from `peer`.
    pub(crate) async fn check(&self, calling_ae: &str, peer: IpAddr) -> Binding {
        let peer = peer.to_canonical();
        let calling_ae = calling_ae.trim_matches(' ');
        let mut listed = false;
        for (ae, pattern) in &self.entries {
            if ae != calling_ae {
                continue;
            }
            listed = true;
            let covered = match pattern {
                HostPattern::Ip(ip) => *ip == peer,
                HostPattern::Cidr(net, len) => in_cidr(peer, *net, *len),
                HostPattern::Name(name) => self.resolve(name).await.contains(&peer),
            };
            if covered {
                return Binding::Bound;
            }
        }
        if listed {
            Binding::WrongAddress
        } else {
            Binding::Unlisted
        }
    }

    /// The addresses of `name`, from the cache while fresh.
    async fn resolve(&self, name: &str) -> Vec<IpAddr> {
        let now = Instant::now();
        if let Ok(cache) = self.cache.lock() {
            if let Some((until, ips)) = cache.get(name) {
                if *until > now {
                    return ips.clone();
                }
            }
        }
        let looked_up = tokio::time::timeout(DNS_TIMEOUT, tokio::net::lookup_host((name, 0))).await;
        let (ips, ttl) = match looked_up {
            Ok(Ok(addrs)) => (
                addrs.map(|a| a.ip().to_canonical()).collect::<Vec<_>>(),
                DNS_TTL,
            ),
            Ok(Err(e)) => {
                warn!(host = %name, error = %e, "cannot resolve a remote AE's host");
                (Vec::new(), DNS_NEGATIVE_TTL)
            }
            Err(_) => {
                warn!(host = %name, "resolving a remote AE's host timed out");
                (Vec::new(), DNS_NEGATIVE_TTL)
            }
        };
        debug!(host = %name, addresses = ips.len(), "remote AE host resolved");
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(name.to_owned(), (now + ttl, ips.clone()));
        }
        ips
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ae(title: &str, host: &str) -> RemoteAe {
        RemoteAe {
            ae_title: title.into(),
            host: host.into(),
            port: 104,
        }
    }

    #[test]
    fn host_patterns() {
        assert_eq!(
            HostPattern::parse("10.1.2.3"),
            Ok(HostPattern::Ip([10, 1, 2, 3].into()))
        );
        assert_eq!(
            HostPattern::parse("::ffff:10.1.2.3"),
            Ok(HostPattern::Ip([10, 1, 2, 3].into()))
        );
        assert_eq!(
            HostPattern::parse("10.0.0.0/8"),
            Ok(HostPattern::Cidr([10, 0, 0, 0].into(), 8))
        );
        assert_eq!(
            HostPattern::parse("ct-1.Hospital.vn"),
            Ok(HostPattern::Name("ct-1.hospital.vn".into()))
        );
        for bad in [
            "10.0.0.0/33",
            "fe80::/129",
            "x/8",
            "",
            "a..b",
            "-a.b",
            "a_b",
            "host/../x",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cidr_membership() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(in_cidr(ip("10.200.1.1"), ip("10.0.0.0"), 8));
        assert!(!in_cidr(ip("11.0.0.1"), ip("10.0.0.0"), 8));
        assert!(in_cidr(ip("192.168.1.77"), ip("192.168.1.77"), 32));
        assert!(in_cidr(ip("1.2.3.4"), ip("0.0.0.0"), 0));
        assert!(in_cidr(ip("2001:db8::1"), ip("2001:db8::"), 32));
        assert!(!in_cidr(ip("2001:db9::1"), ip("2001:db8::"), 32));
        assert!(!in_cidr(ip("10.0.0.1"), ip("::"), 0));
    }

    #[tokio::test]
    async fn titles_bound_to_their_hosts() {
        let b = AeBindings::new(&[
            ae("WS", "127.0.0.2"),
            ae("WS", "10.0.0.0/8"),
            ae("LOCAL", "localhost"),
        ])
        .unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(b.check("WS", ip("127.0.0.2")).await, Binding::Bound);
        assert_eq!(b.check("WS ", ip("10.9.9.9")).await, Binding::Bound);
        assert_eq!(b.check("WS", ip("127.0.0.1")).await, Binding::WrongAddress);
        assert_eq!(b.check("OTHER", ip("127.0.0.1")).await, Binding::Unlisted);
        assert_eq!(b.check("LOCAL", ip("127.0.0.1")).await, Binding::Bound);
        assert_eq!(
            b.check("LOCAL", ip("10.0.0.1")).await,
            Binding::WrongAddress
        );
        assert!(AeBindings::new(&[ae("X", "not a host")]).is_err());
    }
}
