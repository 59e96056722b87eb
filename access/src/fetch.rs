//! A small HTTP/1.1 client for talking to an identity provider: its
//! discovery document, its key set and its token endpoint.
//!
//! HTTPS goes through rustls (TLS 1.2 and 1.3) and trusts the system's
//! certificate store plus, optionally, a PEM file of extra certificate
//! authorities (a hospital's private CA). Plain HTTP is allowed to a
//! loopback address only (a provider on the same host, or a test): a
//! provider's keys fetched in clear over a network could be swapped. Not a
//! general client: no redirects, no cookies, no proxies, one request per
//! connection, answers capped at [`MAX_ANSWER_BYTES`].

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::AccessError;

/// The largest answer read (discovery, key set, token answer).
pub(crate) const MAX_ANSWER_BYTES: usize = 1 << 20;
/// Time-out of one exchange, connection included.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) https: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
    /// Path and query, starting with `/`.
    pub(crate) path: String,
}

impl Target {
    /// Parses an `https://` URL, or an `http://` URL to a loopback host.
    pub(crate) fn parse(url: &str) -> Result<Target, AccessError> {
        let bad = |why: &str| AccessError::Setup(format!("{url:?}: {why}"));
        let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(bad("must be an https:// URL"));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_owned()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_owned()),
        };
        if authority.contains('@') {
            return Err(bad("credentials in the URL are refused"));
        }
        let default_port = if https { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("bad IPv6 address"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse::<u16>().map_err(|_| bad("bad port"))?,
                None if after.is_empty() => default_port,
                None => return Err(bad("bad authority")),
            };
            (h, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad("bad port"))?),
                None => (authority, default_port),
            }
        };
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'))
        {
            return Err(bad("bad host"));
        }
        if !https {
            let loopback = host.eq_ignore_ascii_case("localhost")
                || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                return Err(bad(
                    "plain HTTP is only used to a loopback address (127.0.0.1, ::1, localhost); \
                     use https:// for an identity provider on the network",
                ));
            }
        }
        if path.chars().any(|c| c.is_control() || c == ' ') {
            return Err(bad("bad path"));
        }
        Ok(Target {
            https,
            host: host.to_owned(),
            port,
            path,
        })
    }

    fn host_header(&self) -> String {
        let default = if self.https { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// An answer: its status, `Cache-Control: max-age` and body.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) max_age: Option<Duration>,
    pub(crate) body: Bytes,
}

/// The client: a TLS configuration with the trusted roots.
pub(crate) struct HttpClient {
    tls: tokio_rustls::TlsConnector,
}

impl HttpClient {
    /// Trusts the system's certificate store plus the PEM certificates of
    /// `ca_file`. Refuses an unreadable or empty `ca_file`.
    pub(crate) fn new(ca_file: Option<&Path>) -> Result<HttpClient, AccessError> {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        let (system, _) = roots.add_parsable_certificates(native.certs);
        if !native.errors.is_empty() {
            tracing::debug!(errors = ?native.errors, "some system certificates were not loaded");
        }
        let mut extra = 0;
        if let Some(path) = ca_file {
            let cas = CertificateDer::pem_file_iter(path)
                .map_err(|e| AccessError::Setup(format!("oidc_ca_file {}: {e}", path.display())))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    AccessError::Setup(format!("oidc_ca_file {} is not PEM: {e}", path.display()))
                })?;
            (extra, _) = roots.add_parsable_certificates(cas);
            if extra == 0 {
                return Err(AccessError::Setup(format!(
                    "oidc_ca_file {} holds no usable CA certificate",
                    path.display()
                )));
            }
        }
        if system + extra == 0 {
            tracing::warn!(
                "no trusted certificate authority for HTTPS identity providers (no system \
                 store and no oidc_ca_file); only loopback http:// providers can be reached"
            );
        }
        let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| AccessError::Setup(format!("TLS client: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(HttpClient {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    /// One request; `body` is sent as given (with its content type among
    /// `headers`).
    pub(crate) async fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(HeaderName, String)],
        body: Option<Vec<u8>>,
    ) -> Result<Answer, String> {
        let t = Target::parse(url).map_err(|e| e.to_string())?;
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(t.path.as_str())
            .header(hyper::header::HOST, t.host_header());
        for (name, value) in headers {
            let v = HeaderValue::from_str(value).map_err(|e| e.to_string())?;
            req = req.header(name, v);
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| e.to_string())?;
        let fut = async {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((t.host.as_str(), t.port))
                .await
                .map_err(|e| format!("resolving {}: {e}", t.host))?
                .filter(|a| t.https || a.ip().is_loopback())
                .collect();
            let addr = addrs
                .first()
                .ok_or_else(|| format!("no usable address for {}", t.host))?;
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connecting to {addr}: {e}"))?;
            if t.https {
                let name = ServerName::try_from(t.host.clone())
                    .map_err(|e| format!("bad server name {}: {e}", t.host))?;
                let tls = self
                    .tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS with {}: {e}", t.host))?;
                exchange(tls, req).await
            } else {
                exchange(tcp, req).await
            }
        };
        tokio::time::timeout(EXCHANGE_TIMEOUT, fut)
            .await
            .map_err(|_| format!("{url}: timed out"))?
    }
}

async fn exchange<S>(stream: S, req: hyper::Request<Full<Bytes>>) -> Result<Answer, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(conn);
    let result = async {
        let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let max_age = resp
            .headers()
            .get(hyper::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.split(',').find_map(|d| {
                    d.trim()
                        .strip_prefix("max-age=")
                        .and_then(|s| s.trim().parse::<u64>().ok())
                })
            })
            .map(Duration::from_secs);
        let body = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok(Answer {
            status,
            max_age,
            body,
        })
    }
    .await;
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_anywhere_http_only_to_loopback() {
        let t = Target::parse("https://idp.example/realms/h").ok();
        assert_eq!(
            t,
            Some(Target {
                https: true,
                host: "idp.example".into(),
                port: 443,
                path: "/realms/h".into()
            })
        );
        assert!(Target::parse("https://10.0.0.5:8443").is_ok());
        assert!(Target::parse("http://127.0.0.1:9400").is_ok());
        assert!(Target::parse("http://[::1]:9400/x").is_ok());
        assert!(Target::parse("http://localhost/realms/a").is_ok());
        assert!(Target::parse("http://10.0.0.5:8080").is_err());
        assert!(Target::parse("http://idp.example").is_err());
        assert!(Target::parse("ftp://127.0.0.1").is_err());
        assert!(Target::parse("https://user:pw@idp.example/").is_err());
        assert!(Target::parse("https://idp.example/a b").is_err());
        assert_eq!(
            Target::parse("https://idp.example?x=1")
                .map(|t| t.path)
                .ok(),
            Some("/?x=1".to_owned())
        );
        assert_eq!(
            Target::parse("https://[2001:db8::1]:8443/t")
                .map(|t| (t.host, t.port))
                .ok(),
            Some(("2001:db8::1".to_owned(), 8443))
        );
    }
}
