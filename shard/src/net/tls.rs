//! TLS for `mqtts://` and `wss://` listeners, by rustls.
//!
//! - [`TlsAcceptor`]: one listener's server configuration, built from its PEM
//!   files, shared by every shard and swapped whole on reload: connections
//!   accepted after a reload use the new certificate, established ones keep
//!   theirs (their `ServerConnection` holds its own `Arc`).
//! - `TlsLayer` (`tls_conn.rs`): one connection's TLS state, the layer of
//!   the transport stack (`stack.rs`) right above the socket: ciphertext in,
//!   plaintext out and back, no I/O of its own beyond what the stack hands it.
//!
//! Protocol versions TLS 1.2 and 1.3 only, rustls's default (safe) suites,
//! ALPN `mqtt` offered on `mqtts` (`http/1.1` on `wss`, which browsers ask
//! for), session resumption by tickets (RFC 8446 4.6.1, RFC 5077) and by the
//! server-side session cache. Crypto provider: `ring`, which builds with a C
//! compiler alone (aws-lc-rs also wants cmake and nasm on a fresh machine).

use super::tls_conn::TlsLayer;
use crate::config::{TlsFiles, Transport};
use crate::stats::CloseReason;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{UnbufferedServerConnection, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig};
use std::io;
use std::path::Path;
use std::sync::{Arc, RwLock};

/// The ALPN protocol id of MQTT (IANA registry: "mqtt").
const ALPN_MQTT: &[u8] = b"mqtt";
/// Browsers' WebSocket connections ask for HTTP/1.1.
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// One TLS listener's configuration, shared by every shard.
pub struct TlsAcceptor {
    files: TlsFiles,
    transport: Transport,
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsAcceptor {
    /// Reads the listener's files; the error names the file at fault.
    pub fn new(files: &TlsFiles, transport: &Transport) -> Result<Self, String> {
        let cfg = server_config(files, transport)?;
        Ok(TlsAcceptor {
            files: files.clone(),
            transport: transport.clone(),
            current: RwLock::new(cfg),
        })
    }

    /// Re-reads the files. On error the old configuration stays in use.
    pub fn reload(&self) -> Result<(), String> {
        let cfg = server_config(&self.files, &self.transport)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = cfg;
        Ok(())
    }

    /// The configuration new connections use now.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A new connection's TLS layer.
    pub(crate) fn accept(&self) -> Result<TlsLayer, CloseReason> {
        let conn =
            UnbufferedServerConnection::new(self.config()).map_err(|_| CloseReason::TlsError)?;
        Ok(TlsLayer::new(conn))
    }
}

pub(crate) fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{what} {}: no certificate in it", path.display()));
    }
    Ok(certs)
}

/// Builds a listener's rustls configuration from its files.
pub fn server_config(files: &TlsFiles, transport: &Transport) -> Result<Arc<ServerConfig>, String> {
    let scheme = transport.scheme();
    let cert_path = files
        .cert
        .as_deref()
        .ok_or_else(|| format!("--tls-cert: a {scheme}:// listener needs a certificate"))?;
    let key_path = files
        .key
        .as_deref()
        .ok_or_else(|| format!("--tls-key: a {scheme}:// listener needs a private key"))?;
    let chain = read_certs(cert_path, "--tls-cert")?;
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| format!("--tls-key {}: {e}", key_path.display()))?;
    // ring has no post-quantum key exchange (rustls deprecates its default
    // provider for that); it is the provider that builds without cmake/nasm.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in read_certs(ca, "--tls-client-ca")? {
                roots
                    .add(c)
                    .map_err(|e| format!("--tls-client-ca {}: {e}", ca.display()))?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let v = if files.require_client_cert {
                v
            } else {
                v.allow_unauthenticated()
            };
            let v = v
                .build()
                .map_err(|e| format!("--tls-client-ca {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(v)
        }
        None if files.require_client_cert => {
            return Err("--tls-require-client-cert: needs --tls-client-ca".into());
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_single_cert(chain, key).map_err(|e| {
        format!(
            "--tls-key {}: does not match --tls-cert {} ({e})",
            key_path.display(),
            cert_path.display()
        )
    })?;
    cfg.alpn_protocols = vec![match transport {
        Transport::Wss { .. } => ALPN_HTTP11.to_vec(),
        _ => ALPN_MQTT.to_vec(),
    }];
    cfg.ticketer =
        rustls::crypto::ring::Ticketer::new().map_err(|e| format!("TLS tickets: {e}"))?;
    Ok(Arc::new(cfg))
}

/// A TLS failure as the stack's error: the typed reason rides inside.
pub(crate) fn fault(reason: CloseReason) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, StackFault(reason))
}

/// The close reason a layer gave an error, if it was a layer's.
pub(crate) fn fault_reason(e: &io::Error) -> Option<CloseReason> {
    e.get_ref()
        .and_then(|i| i.downcast_ref::<StackFault>())
        .map(|f| f.0)
}

/// A layer refused the peer's bytes.
#[derive(Debug)]
pub(crate) struct StackFault(pub CloseReason);

impl std::fmt::Display for StackFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl std::error::Error for StackFault {}

/// The typed reason of a rustls error, in or after the handshake.
pub(crate) fn reason_for(e: &rustls::Error, handshaking: bool) -> CloseReason {
    use rustls::Error as E;
    match e {
        E::InvalidCertificate(_) | E::NoCertificatesPresented => CloseReason::TlsBadCertificate,
        E::InvalidMessage(_) | E::InappropriateMessage { .. } if handshaking => {
            CloseReason::TlsHandshakeFailed
        }
        _ if handshaking => CloseReason::TlsHandshakeFailed,
        _ => CloseReason::TlsError,
    }
}
