//! Mutual TLS between nodes: a cluster forms and commits over TLS; a plain
//! TCP peer and a peer with a certificate of another CA are refused.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use ringmq_raft::net::stats::NetStats;
use ringmq_raft::{Op, OpResult, TlsFiles};

use crate::common::{block_on, poll, Cluster};

const NAME: &str = "ringmq-cluster";

/// Writes ca.pem, cert.pem, key.pem for one CA and one node cert into `dir`.
fn make_pki(dir: &Path) -> TlsFiles {
    std::fs::create_dir_all(dir).unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "ringmq test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let node = CertificateParams::new(vec![NAME.to_string()]).unwrap();
    let node_key = KeyPair::generate().unwrap();
    let node_cert = node.signed_by(&node_key, &ca_cert, &ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), node_cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), node_key.serialize_pem()).unwrap();
    TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        ca: dir.join("ca.pem"),
        server_name: NAME.into(),
    }
}

#[test]
fn cluster_over_mutual_tls() {
    let pki = tempfile::tempdir().unwrap();
    let files = make_pki(&pki.path().join("cluster"));
    let foreign = make_pki(&pki.path().join("foreign"));
    let f2 = files.clone();
    let c = Cluster::with(3, move |cfg| cfg.tls = Some(f2.clone()));
    let leader = c.leader();
    let r = block_on(c.handle(leader).op(Op::Put {
        key: b"tls".to_vec(),
        value: b"y".to_vec(),
    }));
    let Ok(OpResult::Written { version }) = r else {
        panic!("{r:?}")
    };
    c.converged(b"tls", version);

    let target = c.running().into_iter().find(|id| *id != leader).unwrap();
    let stats = || NetStats::get(&c.node(target).net_stats().tls_failed);
    // Plain TCP on a TLS port: the handshake fails, the connection is closed.
    let before = stats();
    let mut s = TcpStream::connect(c.addrs[&target]).unwrap();
    s.write_all(&[0, 0, 0, 4, b'R', b'M', b'Q', b'C']).unwrap();
    poll("plain peer refused", Duration::from_secs(5), || {
        (stats() > before).then_some(())
    });

    // A client certificate from another CA (the server's own CA trusted, so
    // only the server's check of the client can fail).
    let before = stats();
    let roots = {
        let mut r = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_file_iter(&files.ca).unwrap() {
            r.add(c.unwrap()).unwrap();
        }
        r
    };
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(&foreign.cert)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&foreign.key).unwrap();
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(cfg), NAME.try_into().unwrap()).unwrap();
    let tcp = TcpStream::connect(c.addrs[&target]).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let _ = tls.write_all(&[0, 0, 0, 4, b'R', b'M', b'Q', b'C']);
    let _ = tls.flush();
    let mut buf = [0u8; 16];
    let _ = std::io::Read::read(&mut tls, &mut buf);
    poll("foreign-CA peer refused", Duration::from_secs(5), || {
        (stats() > before).then_some(())
    });
    // The cluster is unaffected.
    let r = block_on(c.handle(target).op(Op::Put {
        key: b"tls2".to_vec(),
        value: b"z".to_vec(),
    }));
    assert!(matches!(r, Ok(OpResult::Written { .. })), "{r:?}");
}
