//! TLS for both listeners (HTTP: WebSockets and REST; gRPC: control plane and event stream)
//! from a PEM certificate chain and private key, with rustls and its `ring` provider.
//!
//! The files are read and checked once, at bind, so a missing file, a file without a
//! certificate or key, or a key that does not belong to the certificate stops the server
//! with a message naming the file, instead of failing every handshake later.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

/// `[tls]`: serve both listeners over TLS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// The loaded certificate and key, in the two forms the listeners need.
#[derive(Clone)]
pub(crate) struct Tls {
    /// For the HTTP listener (tokio-rustls), ALPN `http/1.1`.
    pub(crate) http: tokio_rustls::TlsAcceptor,
    /// For the gRPC listener, ALPN `h2`. Our own acceptor rather than tonic's, so that the
    /// handshake runs under the listener's deadline and pending-socket cap
    /// (`server::sockets`).
    pub(crate) grpc: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read tls.{what} {}: {e}", path.display()))
}

impl Tls {
    /// Reads and checks the files of `config`.
    ///
    /// # Errors
    /// A file cannot be read, holds no certificate or key, or the key does not match.
    pub(crate) fn load(config: &TlsConfig) -> Result<Self, String> {
        let cert_pem = read(&config.cert_file, "cert_file")?;
        let key_pem = read(&config.key_file, "key_file")?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("tls.cert_file {}: {e}", config.cert_file.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "tls.cert_file {} holds no PEM certificate",
                config.cert_file.display()
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            format!(
                "tls.key_file {} holds no usable PEM private key: {e}",
                config.key_file.display()
            )
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut http = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| {
                format!(
                    "tls.cert_file {} and tls.key_file {} do not make a usable pair: {e}",
                    config.cert_file.display(),
                    config.key_file.display()
                )
            })?;
        let mut grpc = http.clone();
        http.alpn_protocols = vec![b"http/1.1".to_vec()];
        grpc.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            http: tokio_rustls::TlsAcceptor::from(Arc::new(http)),
            grpc: tokio_rustls::TlsAcceptor::from(Arc::new(grpc)),
        })
    }
}
