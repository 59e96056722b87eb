//! TLS settings of the binary: the server certificate and key (PEM) shared
//! by HTTPS and DICOM TLS, reloaded on SIGHUP, and the two rustls server
//! configurations built on them.
//!
//! Both follow BCP 195 (RFC 9325), which DICOM's "BCP 195" secure transport
//! profiles (PS3.15 B.9, B.10) adopt: TLS 1.2 and 1.3 only, rustls's
//! cipher suites (all AEAD with ephemeral key exchange; no RC4, CBC, export
//! or NULL suites exist in it), no renegotiation, no compression.
//!
//! Non-goals: OCSP stapling, certificate revocation lists, reloading the
//! client CA (a restart does that).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{bail, Context, Result};
use dimse_scp::rustls::crypto::{aws_lc_rs, CryptoProvider};
use dimse_scp::rustls::pki_types::pem::PemObject;
use dimse_scp::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use dimse_scp::rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use dimse_scp::rustls::sign::CertifiedKey;
use dimse_scp::rustls::{version, ClientConfig, RootCertStore, ServerConfig};
use tracing::{info, warn};

/// The server certificate chain and key, re-read from their files on
/// demand; every new handshake uses the latest one that loaded.
pub struct ReloadableCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for ReloadableCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadableCert")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(aws_lc_rs::default_provider())
}

fn load_certified_key(
    cert_file: &Path,
    key_file: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey> {
    let chain = CertificateDer::pem_file_iter(cert_file)
        .with_context(|| format!("cannot read tls_cert_file {}", cert_file.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("tls_cert_file {} is not PEM", cert_file.display()))?;
    if chain.is_empty() {
        bail!("tls_cert_file {} holds no certificate", cert_file.display());
    }
    let key = PrivateKeyDer::from_pem_file(key_file).with_context(|| {
        format!(
            "cannot read a PEM private key from tls_key_file {}",
            key_file.display()
        )
    })?;
    CertifiedKey::from_der(chain, key, provider).with_context(|| {
        format!(
            "tls_key_file {} does not fit tls_cert_file {}",
            key_file.display(),
            cert_file.display()
        )
    })
}

impl ReloadableCert {
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<ReloadableCert>> {
        let provider = provider();
        let key = load_certified_key(cert_file, key_file, &provider)?;
        Ok(Arc::new(ReloadableCert {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            provider,
            current: RwLock::new(Arc::new(key)),
        }))
    }

    /// Re-reads the files; on failure the certificate in use stays.
    pub fn reload(&self) -> Result<()> {
        let key = load_certified_key(&self.cert_file, &self.key_file, &self.provider)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
        Ok(())
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

/// HTTPS: TLS 1.2 and 1.3, HTTP/2 or HTTP/1.1 by ALPN, no client
/// certificate.
pub fn https_config(cert: Arc<ReloadableCert>) -> Result<Arc<ServerConfig>> {
    let mut config = ServerConfig::builder_with_provider(cert.provider.clone())
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// DICOM TLS: TLS 1.2 and 1.3. Without `client_ca`, no client certificate
/// is asked for (peers such as DCMTK's `+tla` are accepted); with it, a
/// client certificate chaining to one of its certificates is required.
pub fn dimse_config(
    cert: Arc<ReloadableCert>,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>> {
    let builder = ServerConfig::builder_with_provider(cert.provider.clone())
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])
        .context("TLS protocol versions")?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let roots = load_roots("tls_client_ca_file", path)?;
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), cert.provider.clone())
                    .build()
                    .context("cannot build the client certificate verifier")?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    Ok(Arc::new(builder.with_cert_resolver(cert)))
}

/// The CA certificates of the PEM file `path` (the `key` naming it).
fn load_roots(key: &str, path: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let cas = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read {key} {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{key} {} is not PEM", path.display()))?;
    let (added, ignored) = roots.add_parsable_certificates(cas);
    if added == 0 {
        bail!("{key} {} holds no usable CA certificate", path.display());
    }
    if ignored > 0 {
        warn!(
            ignored,
            file = %path.display(),
            "some certificates of {key} could not be used"
        );
    }
    Ok(roots)
}

/// The audit syslog client (RFC 5425 §5, PS3.15 A.6): TLS 1.2 and 1.3, the
/// collector's certificate verified against `ca_file` and the name it was
/// configured with; our certificate sent when the collector asks for one.
pub fn syslog_client_config(
    ca_file: &Path,
    client: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>> {
    let provider = provider();
    let roots = load_roots("[audit] syslog_ca_file", ca_file)?;
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])
        .context("TLS protocol versions")?
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert_file, key_file)) => {
            let chain = CertificateDer::pem_file_iter(cert_file)
                .with_context(|| format!("cannot read {}", cert_file.display()))?
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("{} is not PEM", cert_file.display()))?;
            let key = PrivateKeyDer::from_pem_file(key_file).with_context(|| {
                format!("cannot read a PEM private key from {}", key_file.display())
            })?;
            builder.with_client_auth_cert(chain, key).with_context(|| {
                format!(
                    "the syslog client key {} does not fit {}",
                    key_file.display(),
                    cert_file.display()
                )
            })?
        }
    };
    Ok(Arc::new(config))
}

/// Reloads the certificate on every SIGHUP, for as long as the process
/// runs. A file that fails to load is logged and the old certificate
/// stays in use.
#[cfg(unix)]
pub fn reload_on_sighup(cert: Arc<ReloadableCert>) -> Result<()> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot listen for SIGHUP")?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match cert.reload() {
                Ok(()) => {
                    info!(file = %cert.cert_file.display(), "SIGHUP: TLS certificate reloaded")
                }
                Err(e) => {
                    warn!(error = %format!("{e:#}"), "SIGHUP: TLS certificate not reloaded; the previous one stays in use")
                }
            }
        }
    });
    Ok(())
}

#[cfg(not(unix))]
pub fn reload_on_sighup(_cert: Arc<ReloadableCert>) -> Result<()> {
    Ok(())
}
