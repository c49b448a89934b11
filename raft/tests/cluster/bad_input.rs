//! Bad input on the cluster port and foreign data dirs: refused with one
//! clear line, counted, nothing corrupted, the cluster keeps working.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use ringmq_raft::net::frame::{Hello, PROTOCOL_VERSION};
use ringmq_raft::net::stats::NetStats;
use ringmq_raft::net::wire::{self, Request};
use ringmq_raft::OpenError;

use crate::common::{poll, put_ok, Cluster, CLUSTER};

fn send_frame(s: &mut TcpStream, body: &[u8]) {
    s.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
    s.write_all(body).unwrap();
}

/// Reads one frame; None when the peer closed the connection.
fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    Some(body)
}

fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

fn connect(c: &Cluster, id: u64) -> TcpStream {
    let s = TcpStream::connect(c.addrs[&id]).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn refused_with(s: &mut TcpStream, words: &str) {
    let answer = read_frame(s).expect("an answer");
    assert_eq!(answer[0], 1, "refused");
    let reason = String::from_utf8_lossy(&answer[1..]).into_owned();
    assert!(
        reason.contains(words),
        "reason {reason:?} should mention {words:?}"
    );
    assert!(closed(s));
}

#[test]
fn garbage_foreign_and_wrong_version_peers_are_refused() {
    let c = Cluster::new(3);
    let leader = c.leader();
    let target = 1;
    let stats = || c.node(target).net_stats();
    let hello = |version, cluster: &str, to| {
        Hello {
            version,
            from: 9,
            to,
            cluster_id: cluster.into(),
        }
        .encode()
    };

    // Not a frame at all: an HTTP request (its first 4 bytes read as a huge length).
    let mut s = connect(&c, target);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(closed(&mut s));
    // A frame that is not a handshake.
    let mut s = connect(&c, target);
    send_frame(&mut s, b"hello there, raft");
    refused_with(&mut s, "bad magic");
    // Another protocol version.
    let mut s = connect(&c, target);
    send_frame(&mut s, &hello(PROTOCOL_VERSION + 1, CLUSTER, target));
    refused_with(&mut s, "protocol version");
    // Another cluster.
    let mut s = connect(&c, target);
    send_frame(&mut s, &hello(PROTOCOL_VERSION, "other-cluster", target));
    refused_with(&mut s, "cluster id");
    // Addressed to another node.
    let mut s = connect(&c, target);
    send_frame(&mut s, &hello(PROTOCOL_VERSION, CLUSTER, 2));
    refused_with(&mut s, "addressed to node 2");
    // A good handshake, then a malformed message and then an oversized frame.
    let mut s = connect(&c, target);
    send_frame(&mut s, &hello(PROTOCOL_VERSION, CLUSTER, target));
    assert_eq!(read_frame(&mut s), Some(vec![0]));
    send_frame(&mut s, &[0xff, 0xff, 0xff, 0x13, 0x37]);
    assert!(closed(&mut s));
    let mut s = connect(&c, target);
    send_frame(&mut s, &hello(PROTOCOL_VERSION, CLUSTER, target));
    assert_eq!(read_frame(&mut s), Some(vec![0]));
    s.write_all(&u32::MAX.to_be_bytes()).unwrap();
    assert!(closed(&mut s));
    // A pipelined append stream (protocol 2) carrying garbage, then one
    // carrying a message that is not an AppendEntries.
    let stream_mode = wire::encode(&Request::AppendStream).unwrap();
    let mut s = connect(&c, target);
    send_frame(&mut s, &hello(PROTOCOL_VERSION, CLUSTER, target));
    assert_eq!(read_frame(&mut s), Some(vec![0]));
    send_frame(&mut s, &stream_mode);
    send_frame(&mut s, &[0xff, 0xff, 0xff, 0x13, 0x37]);
    assert!(closed(&mut s));
    let mut s = connect(&c, target);
    send_frame(&mut s, &hello(PROTOCOL_VERSION, CLUSTER, target));
    assert_eq!(read_frame(&mut s), Some(vec![0]));
    send_frame(&mut s, &stream_mode);
    send_frame(
        &mut s,
        &wire::encode(&Request::Read(b"k".to_vec())).unwrap(),
    );
    assert!(closed(&mut s));

    poll("counters", Duration::from_secs(5), || {
        let st = stats();
        (NetStats::get(&st.refused_version) == 1
            && NetStats::get(&st.refused_cluster) == 1
            && NetStats::get(&st.refused_node) == 1
            && NetStats::get(&st.malformed) >= 5
            && NetStats::get(&st.oversized) == 1)
            .then_some(())
    });
    // Nothing reached Raft: the cluster still commits, through the poked node too.
    let version = put_ok(&c.handle(target), b"still", b"ok");
    c.converged(b"still", version);
    assert!(c.running().contains(&leader));
}

#[test]
fn a_data_dir_of_another_cluster_or_node_is_refused() {
    let mut c = Cluster::new(1);
    c.leader();
    c.stop(1);
    let mut cfg = c.config(1);
    cfg.cluster_id = "someone-else".into();
    match ringmq_raft::RaftNode::start(cfg) {
        Err(e @ OpenError::ForeignCluster { .. }) => {
            assert!(
                e.to_string()
                    .contains("belongs to cluster \"test-cluster\""),
                "{e}"
            )
        }
        Err(e) => panic!("expected ForeignCluster, got {e}"),
        Ok(_) => panic!("expected ForeignCluster, got a running node"),
    }
    let mut cfg = c.config(1);
    cfg.node_id = 2;
    cfg.bootstrap.clear();
    match ringmq_raft::RaftNode::start(cfg) {
        Err(OpenError::WrongNode {
            found: 1,
            expected: 2,
            ..
        }) => {}
        Err(e) => panic!("expected WrongNode, got {e}"),
        Ok(_) => panic!("expected WrongNode, got a running node"),
    }
    // The dir is intact: the right identity opens it and the data is there.
    c.restart(1);
    c.leader();
    put_ok(&c.handle(1), b"k", b"v");
}
