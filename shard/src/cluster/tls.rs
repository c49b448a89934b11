//! Mutual TLS on node links: every node presents a certificate signed by the
//! cluster's CA and accepts only peers that do the same; the name checked on
//! the accepting node's certificate is the cluster id, so one CA and one name
//! cover every node (as the metadata links in `raft/` do). The server side is
//! the listeners' rustls setup (`net/tls.rs`, client certificates required);
//! the streams are futures-rustls over glommio's sockets.

use crate::config::{TlsFiles, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::PathBuf;
use std::sync::Arc;

/// Ready-made configurations of both ends of a link.
#[derive(Clone)]
pub struct LinkTls {
    pub server: Arc<ServerConfig>,
    pub client: Arc<ClientConfig>,
    /// The name every node certificate carries (the cluster id).
    pub name: ServerName<'static>,
}

impl std::fmt::Debug for LinkTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LinkTls({:?})", self.name)
    }
}

impl PartialEq for LinkTls {
    fn eq(&self, o: &Self) -> bool {
        Arc::ptr_eq(&self.server, &o.server) && Arc::ptr_eq(&self.client, &o.client)
    }
}

impl Eq for LinkTls {}

/// Loads this node's certificate and key and the cluster CA; errors name the file.
pub fn load(cert: PathBuf, key: PathBuf, ca: PathBuf, name: &str) -> Result<LinkTls, String> {
    let files = TlsFiles {
        cert: Some(cert.clone()),
        key: Some(key.clone()),
        client_ca: Some(ca.clone()),
        require_client_cert: true,
        identity_as_username: false,
    };
    let server = crate::net::tls::server_config(&files, &Transport::Mqtts)?;
    let chain = crate::net::tls::read_certs(&cert, "--cluster-tls-cert")?;
    let key = PrivateKeyDer::from_pem_file(&key)
        .map_err(|e| format!("--cluster-tls-key {}: {e}", key.display()))?;
    let mut roots = RootCertStore::empty();
    for c in crate::net::tls::read_certs(&ca, "--cluster-tls-ca")? {
        roots
            .add(c)
            .map_err(|e| format!("--cluster-tls-ca {}: {e}", ca.display()))?;
    }
    // The provider the listeners use (ring: builds without cmake/nasm).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| format!("--cluster-tls-key: does not match --cluster-tls-cert ({e})"))?;
    // The listeners' server config offers ALPN `mqtt`; a link asks for it too.
    client.alpn_protocols = vec![b"mqtt".to_vec()];
    let name = ServerName::try_from(name.to_string())
        .map_err(|e| format!("--cluster-id {name:?}: not a TLS server name ({e})"))?;
    Ok(LinkTls {
        server,
        client: Arc::new(client),
        name,
    })
}
