//! PROXY protocol listeners: with a crafted v1 or v2 header the client's address is the one the
//! header carries (as `ringmq ctl clients` shows it), on plain MQTT and in front of TLS; without
//! a valid header the connection is closed (`proxy_header_invalid`).

mod common;

use common::raw::bytes_of;
use common::{check_for_blocking, Broker, WAIT};
use ringmq_shard::config::{Listener, Transport};
use ringmq_shard::control::{Query, Reply};
use ringmq_shard::stats::CloseReason;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn proxied(transport: Transport) -> Listener {
    Listener {
        addr: "127.0.0.1:0".parse().unwrap(),
        transport,
        tls: common::tls::Pki::shared().server_files(),
        proxy_protocol: true,
        allow_anonymous: None,
    }
}

/// One shard: `mqtt://...?proxy=true` first, `mqtts://...?proxy=true` second.
fn broker(shards: usize) -> Broker {
    Broker::start_with(shards, |c| {
        c.listen = vec![proxied(Transport::Mqtt), proxied(Transport::Mqtts)];
    })
}

fn v2_tcp4(src: [u8; 4], sport: u16) -> Vec<u8> {
    let mut b = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    b.extend_from_slice(&[0x21, 0x11, 0, 12]);
    b.extend_from_slice(&src);
    b.extend_from_slice(&[127, 0, 0, 1]);
    b.extend_from_slice(&sport.to_be_bytes());
    b.extend_from_slice(&1883u16.to_be_bytes());
    b
}

/// The peer address `ctl clients` shows for `id`.
fn peer_of(b: &Broker, id: &str) -> Option<String> {
    let q = Query::Clients {
        pattern: Some(id.to_string()),
    };
    b.handle()
        .query(q, None, WAIT)
        .into_iter()
        .find_map(|r| match r {
            Reply::Clients(_, list) => list.into_iter().find(|c| c.client_id == id),
            _ => None,
        })
        .and_then(|c| c.peer)
}

async fn expect_connack<S: tokio::io::AsyncRead + Unpin>(s: &mut S) {
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(WAIT, s.read(&mut buf))
        .await
        .expect("CONNACK in time")
        .expect("read");
    assert!(
        n >= 4 && buf[0] == 0x20,
        "CONNACK expected, got {:?}",
        &buf[..n]
    );
}

/// Header and CONNECT in one write, as HAProxy does when the client was quick.
#[tokio::test]
async fn v1_and_v2_headers_carry_the_client_address_on_one_and_two_shards() {
    for shards in [1, 2] {
        let b = broker(shards);
        let plain = b.addrs()[0];
        let mut s = TcpStream::connect(plain).await.unwrap();
        let mut bytes = b"PROXY TCP4 203.0.113.9 127.0.0.1 40001 1883\r\n".to_vec();
        bytes.extend(bytes_of::connect_ok(4, "via-v1"));
        s.write_all(&bytes).await.unwrap();
        expect_connack(&mut s).await;
        let shown = check_for_blocking(WAIT, "via-v1 listed", || peer_of(&b, "via-v1"));
        assert_eq!(shown, "203.0.113.9:40001");

        // v2, the header alone first, CONNECT in a second write.
        let mut s2 = TcpStream::connect(plain).await.unwrap();
        s2.write_all(&v2_tcp4([198, 51, 100, 20], 40002))
            .await
            .unwrap();
        s2.write_all(&bytes_of::connect_ok(5, "via-v2"))
            .await
            .unwrap();
        expect_connack(&mut s2).await;
        let shown = check_for_blocking(WAIT, "via-v2 listed", || peer_of(&b, "via-v2"));
        assert_eq!(shown, "198.51.100.20:40002");
        drop((s, s2));
    }
}

#[tokio::test]
async fn a_v2_header_in_front_of_tls() {
    let b = broker(1);
    let tls: SocketAddr = b.addrs()[1];
    let mut tcp = TcpStream::connect(tls).await.unwrap();
    tcp.write_all(&v2_tcp4([192, 0, 2, 33], 40003))
        .await
        .unwrap();
    let mut s = common::tls::connect(tcp)
        .await
        .expect("TLS after the header");
    s.write_all(&bytes_of::connect_ok(4, "via-tls"))
        .await
        .unwrap();
    s.flush().await.unwrap();
    expect_connack(&mut s).await;
    let shown = check_for_blocking(WAIT, "via-tls listed", || peer_of(&b, "via-tls"));
    assert_eq!(shown, "192.0.2.33:40003");
}

/// Waits until the broker closed `s` (EOF or reset).
async fn closed(s: &mut TcpStream) {
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(Duration::from_secs(15), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => {}
            Err(_) => panic!("the broker did not close the connection"),
        }
    }
}

#[tokio::test]
async fn no_valid_header_is_closed_and_counted() {
    let b = broker(1);
    let plain = b.addrs()[0];
    let bad: [&[u8]; 3] = [
        &bytes_of::connect_ok(4, "no-header"),
        b"PROXY TCP4 999.0.113.9 127.0.0.1 40001 1883\r\n",
        b"PROXY TCP4 203.0.113.9 127.0.0.1 40001\r\n",
    ];
    for (i, bytes) in bad.iter().enumerate() {
        let mut s = TcpStream::connect(plain).await.unwrap();
        s.write_all(bytes).await.unwrap();
        closed(&mut s).await;
        check_for_blocking(WAIT, "proxy_header_invalid counted", || {
            let n = b.stat(|s| s.closes_for(CloseReason::ProxyHeaderInvalid));
            let l = b.stat(|s| {
                s.listener(0)
                    .map_or(0, |l| l.failures_for(CloseReason::ProxyHeaderInvalid))
            });
            (n > i as u64 && l > i as u64).then_some(())
        });
    }
    // A header that never completes is shed at the deadline.
    let mut s = TcpStream::connect(plain).await.unwrap();
    s.write_all(b"PROXY TCP4 203.0.").await.unwrap();
    closed(&mut s).await;
    check_for_blocking(WAIT, "handshake_timeout counted", || {
        (b.stat(|s| s.closes_for(CloseReason::HandshakeTimeout)) >= 1).then_some(())
    });
    assert_eq!(peer_of(&b, "no-header"), None);
}
