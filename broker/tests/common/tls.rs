//! TLS for the test harness: certificates made in the test with rcgen, and the
//! transport switch that runs the existing suites over TLS.
//!
//! `RINGMQ_TEST_TRANSPORT=tls cargo test -p ringmq-broker --test mqtt_pubsub` starts every
//! in-process broker with one `mqtts://127.0.0.1:0` listener and connects every harness client
//! (rumqttc v4/v5 and our raw codec client) through TLS, trusting the test CA. Unset (or `tcp`):
//! plain TCP as before.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// Whether the harness runs its clients over TLS (`RINGMQ_TEST_TRANSPORT=tls`).
pub fn enabled() -> bool {
    std::env::var("RINGMQ_TEST_TRANSPORT").is_ok_and(|v| v == "tls")
}

/// A certificate and its key, as PEM files.
#[derive(Clone, Debug)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A test PKI: a CA, a server certificate for 127.0.0.1/localhost, and
/// client certificates (good, from another CA, expired).
pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub server: Pair,
    /// CN `alice`, issued by `ca`.
    pub client: Pair,
    /// CN `mallory`, issued by another CA.
    pub foreign_client: Pair,
    /// CN `alice`, issued by `ca`, expired in 2020.
    pub expired_client: Pair,
    /// Issued by `ca`, valid, with no CN in its subject (only O).
    pub no_cn_client: Pair,
    /// A second server certificate (CN `reloaded`) by `ca`, for reload tests.
    pub server2: Pair,
    ca_pem: String,
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write PEM");
    p
}

fn ca(cn: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, cn);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

fn leaf(
    dir: &Path,
    name: &str,
    cn: &str,
    sans: Vec<String>,
    client: bool,
    expired: bool,
    issuer: &CertifiedIssuer<'static, KeyPair>,
) -> Pair {
    let mut p = CertificateParams::new(sans).unwrap();
    if cn.is_empty() {
        // No CN at all (rcgen's default subject has one).
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(DnType::OrganizationName, "ringmq tests");
    } else {
        p.distinguished_name.push(DnType::CommonName, cn);
    }
    p.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    if expired {
        p.not_before = rcgen::date_time_ymd(2019, 1, 1);
        p.not_after = rcgen::date_time_ymd(2020, 1, 1);
    }
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, issuer).unwrap();
    Pair {
        cert: write(dir, &format!("{name}.pem"), &cert.pem()),
        key: write(dir, &format!("{name}.key"), &key.serialize_pem()),
    }
}

impl Pki {
    /// A fresh PKI in a new directory.
    pub fn new() -> Pki {
        let dir = super::broker::scratch_dir().join("pki");
        std::fs::create_dir_all(&dir).unwrap();
        let other = ca("other CA");
        let ca = ca("ringmq test CA");
        let sans = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let server = leaf(&dir, "server", "localhost", sans.clone(), false, false, &ca);
        let server2 = leaf(&dir, "server2", "reloaded", sans, false, false, &ca);
        let client = leaf(&dir, "client", "alice", vec![], true, false, &ca);
        let foreign_client = leaf(&dir, "foreign", "mallory", vec![], true, false, &other);
        let expired_client = leaf(&dir, "expired", "alice", vec![], true, true, &ca);
        let no_cn_client = leaf(&dir, "no-cn", "", vec![], true, false, &ca);
        let ca_pem = ca.pem();
        Pki {
            ca: write(&dir, "ca.pem", &ca_pem),
            dir,
            server,
            client,
            foreign_client,
            expired_client,
            no_cn_client,
            server2,
            ca_pem,
        }
    }

    /// The process-wide PKI of the harness.
    pub fn shared() -> &'static Pki {
        static PKI: OnceLock<Pki> = OnceLock::new();
        PKI.get_or_init(Pki::new)
    }

    /// A rustls client configuration trusting this CA (ring provider).
    pub fn client_config(&self, alpn: Option<&[u8]>) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        if let Some(a) = alpn {
            cfg.alpn_protocols = vec![a.to_vec()];
        }
        Arc::new(cfg)
    }

    /// As [`Pki::client_config`], presenting `pair` as the client certificate (mTLS).
    pub fn client_config_with_cert(&self, pair: &Pair) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(&pair.cert)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&pair.key).unwrap();
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .unwrap();
        Arc::new(cfg)
    }

    /// The core's TLS files for a listener with this PKI's server certificate.
    pub fn server_files(&self) -> ringmq_shard::config::TlsFiles {
        ringmq_shard::config::TlsFiles {
            cert: Some(self.server.cert.clone()),
            key: Some(self.server.key.clone()),
            ..Default::default()
        }
    }
}

#[allow(deprecated)]
fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// An `mqtts://127.0.0.1:0` listener with the shared PKI's server certificate.
pub fn listener() -> ringmq_shard::config::Listener {
    ringmq_shard::config::Listener {
        addr: "127.0.0.1:0".parse().unwrap(),
        transport: ringmq_shard::config::Transport::Mqtts,
        tls: Pki::shared().server_files(),
        proxy_protocol: false,
        allow_anonymous: None,
    }
}

/// Opens a TLS connection presenting the client certificate `pair` (trusting the shared CA).
pub async fn connect_with_cert(
    tcp: tokio::net::TcpStream,
    pair: &Pair,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let cfg = Pki::shared().client_config_with_cert(pair);
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
}

/// Opens a TLS connection to `addr` (trusting the shared CA), for raw clients.
pub async fn connect(
    tcp: tokio::net::TcpStream,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let cfg = Pki::shared().client_config(None);
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
}
