//! A self-signed certificate for the TLS listeners: written to a temporary directory for the
//! server's `[tls]` files, and trusted by the test's own rustls clients.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use hubcast_server::config::TlsConfig;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

use crate::TIMEOUT;

/// A certificate for `localhost` and 127.0.0.1 and its key, in a temporary directory that is
/// removed on drop.
#[derive(Debug)]
pub struct SelfSigned {
    /// The directory holding `cert.pem` and `key.pem`.
    pub dir: PathBuf,
    /// The certificate in PEM, for clients that take PEM (tonic).
    pub cert_pem: String,
    /// The certificate in DER, for rustls root stores.
    pub cert_der: CertificateDer<'static>,
}

impl SelfSigned {
    /// A fresh certificate; `name` keeps the directories of concurrent tests apart.
    ///
    /// # Panics
    /// If the certificate cannot be made or written.
    pub fn new(name: &str) -> Self {
        let certified =
            rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
                .expect("self-signed certificate");
        let dir = std::env::temp_dir().join(format!("hubcast-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let cert_pem = certified.cert.pem();
        std::fs::write(dir.join("cert.pem"), &cert_pem).expect("write cert");
        std::fs::write(dir.join("key.pem"), certified.signing_key.serialize_pem())
            .expect("write key");
        Self {
            dir,
            cert_pem,
            cert_der: certified.cert.der().clone(),
        }
    }

    /// The server's TLS settings for these files.
    pub fn config(&self) -> TlsConfig {
        TlsConfig {
            cert_file: self.dir.join("cert.pem"),
            key_file: self.dir.join("key.pem"),
        }
    }

    /// A rustls client that trusts this certificate and offers `alpn`.
    ///
    /// # Panics
    /// If rustls refuses the configuration.
    pub fn connector(&self, alpn: &[u8]) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert_der.clone()).expect("add root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }

    /// A TLS connection to `addr` (as `localhost`) offering `alpn`, within [`TIMEOUT`].
    ///
    /// # Panics
    /// If the connection or the handshake fails or takes too long.
    pub async fn handshake(
        &self,
        addr: SocketAddr,
        alpn: &[u8],
    ) -> tokio_rustls::client::TlsStream<TcpStream> {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        tokio::time::timeout(
            TIMEOUT,
            self.connector(alpn)
                .connect(ServerName::try_from("localhost").expect("name"), tcp),
        )
        .await
        .expect("TLS handshake in time")
        .expect("TLS handshake")
    }
}

impl Drop for SelfSigned {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
