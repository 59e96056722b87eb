//! Who is at the other end of an HTTP request, as the listener resolved it.
//!
//! The binary's listener puts a [`ClientAddr`] and a [`ClientScheme`] in
//! every request's extensions: the TCP peer, or, when that peer is one of
//! the configured `trusted_proxies`, what the proxy says in
//! `X-Forwarded-For` / `X-Forwarded-Proto`. Authentication throttling and
//! the audit trail read the address from here, never from the headers.

use std::net::IpAddr;

/// The client's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// Whether the client reached us over HTTPS (directly, or through a trusted
/// proxy that terminated TLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientScheme {
    pub https: bool,
}
