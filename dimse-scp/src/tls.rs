//! DICOM TLS (PS3.15 Annex B, the BCP 195 profiles): the TLS handshake of a
//! connection accepted on the TLS port, and the check of the client
//! certificate against the remote AE it claims to be.
//!
//! The TLS configuration itself (protocol versions, certificates, whether a
//! client certificate is required) is built by the caller as a
//! `rustls::ServerConfig`; this module only runs the handshake within the
//! ARTIM timer and keeps what the association needs from it. After the
//! handshake, a TLS association is served by exactly the same code as a
//! plain one (the association loop is generic over the stream).
//!
//! Non-goals: certificate revocation (CRL, OCSP), and user identity
//! negotiation (PS3.7 D.3.3.7).

use std::net::SocketAddr;
use std::sync::Arc;

use dicom_ul::pdu::AssociationRJSource;
use dicom_ul::pdu::{AssociationRJ, AssociationRJResult, AssociationRJServiceUserReason};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::server::RemoteAe;

/// The DICOM TLS listener beside the plain one.
#[derive(Debug, Clone)]
pub struct DimseTls {
    pub listen: SocketAddr,
    /// Protocol versions, cipher suites, certificate (its resolver may
    /// reload it) and client-certificate policy.
    pub server_config: Arc<ServerConfig>,
}

/// How the peer reached us.
#[derive(Debug, Clone, Default)]
pub(crate) enum PeerIdentity {
    /// The plain DIMSE port.
    #[default]
    Plain,
    /// The TLS port; the client's end-entity certificate if it sent one
    /// (the TLS configuration has verified its chain when it requires one).
    Tls {
        certificate: Option<CertificateDer<'static>>,
    },
}

/// The TLS handshake on an accepted connection. The caller bounds it in
/// time (it counts against the ARTIM timer). `Err` says why it failed, for
/// the log.
pub(crate) async fn handshake(
    config: Arc<ServerConfig>,
    socket: TcpStream,
) -> Result<(TlsStream<TcpStream>, PeerIdentity), std::io::Error> {
    let stream = TlsAcceptor::from(config).accept(socket).await?;
    let certificate = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|c| c.clone().into_owned());
    Ok((stream, PeerIdentity::Tls { certificate }))
}

/// Why a calling AE title does not match the peer's certificate.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum CertificateMismatch {
    #[error("calling AE {0:?} is bound to a TLS certificate but associated without TLS")]
    NotTls(String),
    #[error("calling AE {0:?} is bound to a TLS certificate but the peer sent none")]
    NoCertificate(String),
    #[error(
        "the peer's certificate is not valid for {subject:?}, which calling AE {ae:?} is bound to"
    )]
    WrongCertificate { ae: String, subject: String },
}

/// A calling AE title whose `[[remote_ae]]` entry names a `tls_subject`
/// must come over TLS with a client certificate whose subjectAltName holds
/// that DNS name or IP address (RFC 6125 matching, as a server name is
/// checked; the certificate's chain has been verified by the handshake
/// against `tls_client_ca_file`). Calling AE titles without a
/// `tls_subject` are not checked here.
pub(crate) fn check_client_certificate(
    calling_ae: &str,
    remote_aes: &[RemoteAe],
    peer: &PeerIdentity,
) -> Result<(), CertificateMismatch> {
    let calling = calling_ae.trim_matches(' ');
    let subjects = remote_aes
        .iter()
        .filter(|r| r.ae_title.trim_matches(' ') == calling)
        .filter_map(|r| r.tls_subject.as_deref());
    let mut bound = None;
    for subject in subjects {
        let certificate = match peer {
            PeerIdentity::Plain => return Err(CertificateMismatch::NotTls(calling.to_owned())),
            PeerIdentity::Tls { certificate: None } => {
                return Err(CertificateMismatch::NoCertificate(calling.to_owned()))
            }
            PeerIdentity::Tls {
                certificate: Some(c),
            } => c,
        };
        if certificate_names(certificate, subject) {
            return Ok(());
        }
        bound = Some(subject);
    }
    match bound {
        None => Ok(()),
        Some(subject) => Err(CertificateMismatch::WrongCertificate {
            ae: calling.to_owned(),
            subject: subject.to_owned(),
        }),
    }
}

/// Whether the certificate's subjectAltName holds `subject` (a DNS name or
/// an IP address).
fn certificate_names(certificate: &CertificateDer<'_>, subject: &str) -> bool {
    let Ok(name) = ServerName::try_from(subject) else {
        return false;
    };
    let Ok(parsed) = rustls::server::ParsedCertificate::try_from(certificate) else {
        return false;
    };
    rustls::client::verify_server_name(&parsed, &name).is_ok()
}

/// A-ASSOCIATE-RJ permanent, service-user, "calling-AE-title-not-recognized"
/// (PS3.8 §9.3.4): the calling AE title is not the one the certificate
/// vouches for.
pub(crate) fn reject_certificate_mismatch() -> AssociationRJ {
    AssociationRJ {
        result: AssociationRJResult::Permanent,
        source: AssociationRJSource::ServiceUser(
            AssociationRJServiceUserReason::CallingAETitleNotRecognized,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(ae: &str, subject: Option<&str>) -> RemoteAe {
        RemoteAe {
            ae_title: ae.into(),
            host: "127.0.0.1".into(),
            port: 104,
            tls_subject: subject.map(Into::into),
        }
    }

    #[test]
    fn unbound_titles_pass_whatever_the_transport() {
        let aes = [remote("CT1", None)];
        assert_eq!(
            check_client_certificate("CT1", &aes, &PeerIdentity::Plain),
            Ok(())
        );
        assert_eq!(
            check_client_certificate("OTHER", &aes, &PeerIdentity::Plain),
            Ok(())
        );
    }

    #[test]
    fn bound_titles_need_tls_and_a_certificate() {
        let aes = [remote("CT1", Some("ct1.example"))];
        assert_eq!(
            check_client_certificate("CT1 ", &aes, &PeerIdentity::Plain),
            Err(CertificateMismatch::NotTls("CT1".into()))
        );
        assert_eq!(
            check_client_certificate("CT1", &aes, &PeerIdentity::Tls { certificate: None }),
            Err(CertificateMismatch::NoCertificate("CT1".into()))
        );
        // Bytes that are not a certificate name nothing.
        let junk = PeerIdentity::Tls {
            certificate: Some(CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00])),
        };
        assert!(matches!(
            check_client_certificate("CT1", &aes, &junk),
            Err(CertificateMismatch::WrongCertificate { .. })
        ));
    }
}
