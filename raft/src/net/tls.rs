//! Mutual TLS between nodes (rustls with the `ring` provider).
//!
//! Every node presents a certificate signed by the cluster's CA and accepts
//! only peers that do the same; the name checked on the server's certificate
//! is one shared cluster name (`server_name`), so one CA and one naming rule
//! cover every node.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Where the PEM files are and which name the nodes' certificates carry.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// This node's certificate chain (PEM).
    pub cert: PathBuf,
    /// This node's private key (PEM).
    pub key: PathBuf,
    /// The cluster CA that signs every node's certificate (PEM).
    pub ca: PathBuf,
    /// The DNS name every node certificate carries (checked on connect).
    pub server_name: String,
}

/// Ready-made acceptor and connector.
#[derive(Clone)]
pub struct Tls {
    pub acceptor: TlsAcceptor,
    pub connector: TlsConnector,
    pub server_name: ServerName<'static>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// The `ring` provider, as the project's TLS setup uses everywhere (rustls
/// 0.23.48 deprecates it for lacking post-quantum key exchange; the cluster
/// keeps one provider across the workspace until that changes).
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Tls {
    /// Loads the files; every error names the file and what is wrong with it.
    pub fn load(files: &TlsFiles) -> Result<Tls, String> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
            .map_err(|e| format!("cluster tls cert {}: {e}", files.cert.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("cluster tls cert {}: {e}", files.cert.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "cluster tls cert {}: no certificate in file",
                files.cert.display()
            ));
        }
        let key = PrivateKeyDer::from_pem_file(&files.key)
            .map_err(|e| format!("cluster tls key {}: {e}", files.key.display()))?;
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(&files.ca)
            .map_err(|e| format!("cluster tls ca {}: {e}", files.ca.display()))?
        {
            let ca = ca.map_err(|e| format!("cluster tls ca {}: {e}", files.ca.display()))?;
            roots
                .add(ca)
                .map_err(|e| format!("cluster tls ca {}: {e}", files.ca.display()))?;
        }
        if roots.is_empty() {
            return Err(format!(
                "cluster tls ca {}: no certificate in file",
                files.ca.display()
            ));
        }
        let roots = Arc::new(roots);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| format!("cluster tls ca {}: {e}", files.ca.display()))?;
        let server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(|e| format!("cluster tls cert/key: {e}"))?;
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(|e| format!("cluster tls cert/key: {e}"))?;
        let server_name = ServerName::try_from(files.server_name.clone())
            .map_err(|e| format!("cluster tls server name {:?}: {e}", files.server_name))?;
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
            server_name,
        })
    }
}
