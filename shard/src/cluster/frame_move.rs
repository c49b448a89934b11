//! Link frames 0x30-0x39 (and 0x3D): publishes stamped with their origin, and the
//! frames that move a session's traffic from its old node to its new one
//! (`AckedCopy` 0x39: a forwarded copy the old node waits for, `acks.rs`;
//! 0x3D: the same with a prepared QoS 2 message's key, `origin.rs`)
//! (`stub.rs` on the old node, `merge.rs` on the new). Same framing as
//! `frame.rs` (`len u32 | kind u8 | body`); malformed bodies close the link.
//! `Ghost` and `GhostFlush` (0x37, 0x38) keep late copies of a moved
//! session flowing (`ghost.rs`).

use super::frame::{
    finish, get_str, need, put_str, Frame, FrameError, Origin, OriginAt, Stamp, ACKED_FROM,
    PUBLISH_FROM,
};
use bytes::{Buf, BufMut, Bytes, BytesMut};

const SESSION_COPY: u8 = 0x32;
const MOVE_DONE: u8 = 0x33;
const FLUSH: u8 = 0x34;
const FLUSHED: u8 = 0x35;
const STUB_END: u8 = 0x36;
const ACKED_COPY: u8 = 0x39;
/// `AckedCopy` with a prepared QoS 2 message's key (in the 0x3A-0x3F range
/// of `origin.rs`'s frames).
pub(super) const ACKED_COPY_KEYED: u8 = 0x3D;
const GHOST: u8 = 0x37;
const GHOST_FLUSH: u8 = 0x38;

/// Appends one of this file's frames (`frame.rs` delegates them here).
pub(super) fn encode(f: &Frame, out: &mut BytesMut) {
    let start = out.len();
    out.put_u32(0);
    match f {
        Frame::PublishFrom { origin, publish } => {
            out.put_u8(PUBLISH_FROM);
            put_at(out, *origin);
            out.put_slice(publish);
        }
        Frame::AckedFrom {
            stamp,
            origin,
            publish,
        } => {
            out.put_u8(ACKED_FROM);
            out.put_u64(stamp.stream);
            out.put_u64(stamp.id);
            put_at(out, *origin);
            out.put_slice(publish);
        }
        Frame::SessionCopy {
            client,
            origin,
            publish,
        } => {
            out.put_u8(SESSION_COPY);
            put_str(out, client);
            put_origin(out, *origin);
            out.put_slice(publish);
        }
        Frame::AckedCopy {
            stamp,
            client,
            origin,
            key,
            publish,
        } => {
            put_acked_copy(out, *stamp, (client, *origin, *key));
            out.put_slice(publish);
        }
        Frame::MoveDone(client) => {
            out.put_u8(MOVE_DONE);
            put_str(out, client);
        }
        Frame::Flush(t) | Frame::Flushed(t) => {
            out.put_u8(if matches!(f, Frame::Flush(_)) {
                FLUSH
            } else {
                FLUSHED
            });
            out.put_u64(*t);
        }
        Frame::StubEnd { client, marks } => {
            out.put_u8(STUB_END);
            put_str(out, client);
            out.put_u32(marks.len() as u32);
            for m in marks {
                put_origin(out, *m);
            }
        }
        Frame::Ghost { client, peers } => {
            out.put_u8(GHOST);
            put_str(out, client);
            out.put_u32(peers.len() as u32);
            for p in peers {
                out.put_u64(*p);
            }
        }
        Frame::GhostFlush { token, owner } => {
            out.put_u8(GHOST_FLUSH);
            out.put_u64(*token);
            out.put_u64(*owner);
        }
        _ => {
            out.truncate(start);
            return;
        }
    }
    finish(out, start);
}

/// Encodes a session copy of the MQTT bytes `mqtt` (a `Publish` frame's body).
pub(super) fn encode_copy(client: &str, origin: Origin, mqtt: &[u8], out: &mut BytesMut) {
    let start = out.len();
    out.put_u32(0);
    out.put_u8(SESSION_COPY);
    put_str(out, client);
    put_origin(out, origin);
    out.put_slice(mqtt);
    finish(out, start);
}

/// The kind and fields of an acked session copy, before its PUBLISH.
fn put_acked_copy(
    out: &mut BytesMut,
    stamp: Stamp,
    (client, origin, key): (&str, Origin, Option<super::origin::Origin>),
) {
    out.put_u8(if key.is_some() {
        ACKED_COPY_KEYED
    } else {
        ACKED_COPY
    });
    out.put_u64(stamp.stream);
    out.put_u64(stamp.id);
    if let Some(k) = key {
        out.put_u16(k.shard);
        out.put_u64(k.nonce);
    }
    put_str(out, client);
    put_origin(out, origin);
}

/// Encodes an acked session copy (`Frame::AckedCopy`) of the MQTT bytes `mqtt`.
pub(super) fn encode_acked_copy(
    stamp: Stamp,
    copy: (&str, Origin, Option<super::origin::Origin>),
    mqtt: &[u8],
    out: &mut BytesMut,
) {
    let start = out.len();
    out.put_u32(0);
    put_acked_copy(out, stamp, copy);
    out.put_slice(mqtt);
    finish(out, start);
}

/// Decodes the body of a frame of kind `kind` (0x30-0x39, 0x3D).
pub(super) fn decode(kind: u8, body: &mut Bytes) -> Result<Frame, FrameError> {
    Ok(match kind {
        PUBLISH_FROM => {
            need(body, 10, "publish from")?;
            let origin = get_at(body);
            Frame::PublishFrom {
                origin,
                publish: std::mem::take(body),
            }
        }
        ACKED_FROM => {
            need(body, 26, "acked from")?;
            let stamp = Stamp {
                stream: body.get_u64(),
                id: body.get_u64(),
            };
            let origin = get_at(body);
            Frame::AckedFrom {
                stamp,
                origin,
                publish: std::mem::take(body),
            }
        }
        SESSION_COPY => {
            let client = get_str(body, "session copy")?;
            need(body, 18, "session copy")?;
            let origin = get_origin(body);
            Frame::SessionCopy {
                client,
                origin,
                publish: std::mem::take(body),
            }
        }
        ACKED_COPY | ACKED_COPY_KEYED => {
            need(body, 16, "acked copy")?;
            let stamp = Stamp {
                stream: body.get_u64(),
                id: body.get_u64(),
            };
            let key = if kind == ACKED_COPY_KEYED {
                need(body, 10, "acked copy")?;
                Some(super::origin::Origin {
                    shard: body.get_u16(),
                    nonce: body.get_u64(),
                })
            } else {
                None
            };
            let client = get_str(body, "acked copy")?;
            need(body, 18, "acked copy")?;
            let origin = get_origin(body);
            Frame::AckedCopy {
                stamp,
                client,
                origin,
                key,
                publish: std::mem::take(body),
            }
        }
        MOVE_DONE => Frame::MoveDone(get_str(body, "move done")?),
        FLUSH | FLUSHED => {
            need(body, 8, "flush")?;
            let t = body.get_u64();
            if kind == FLUSH {
                Frame::Flush(t)
            } else {
                Frame::Flushed(t)
            }
        }
        STUB_END => {
            let client = get_str(body, "stub end")?;
            need(body, 4, "stub end")?;
            let n = body.get_u32() as usize;
            // 18 bytes a mark: a count past what the body holds is a lie.
            if n > body.len() / 18 {
                return Err(FrameError::Truncated("stub end"));
            }
            let marks = (0..n).map(|_| get_origin(body)).collect();
            Frame::StubEnd { client, marks }
        }
        GHOST => {
            let client = get_str(body, "ghost")?;
            need(body, 4, "ghost")?;
            let n = body.get_u32() as usize;
            if n > body.len() / 8 {
                return Err(FrameError::Truncated("ghost"));
            }
            let peers = (0..n).map(|_| body.get_u64()).collect();
            Frame::Ghost { client, peers }
        }
        GHOST_FLUSH => {
            need(body, 16, "ghost flush")?;
            Frame::GhostFlush {
                token: body.get_u64(),
                owner: body.get_u64(),
            }
        }
        k => return Err(FrameError::UnknownKind(k)),
    })
}

fn put_at(out: &mut BytesMut, o: OriginAt) {
    out.put_u16(o.shard);
    out.put_u64(o.seq);
}

fn get_at(body: &mut Bytes) -> OriginAt {
    OriginAt {
        shard: body.get_u16(),
        seq: body.get_u64(),
    }
}

fn put_origin(out: &mut BytesMut, o: Origin) {
    out.put_u64(o.node);
    out.put_u16(o.shard);
    out.put_u64(o.seq);
}

fn get_origin(body: &mut Bytes) -> Origin {
    Origin {
        node: body.get_u64(),
        shard: body.get_u16(),
        seq: body.get_u64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(f: Frame) {
        let mut b = BytesMut::new();
        f.encode(&mut b);
        for cut in 0..b.len() {
            let mut part = BytesMut::from(&b[..cut]);
            assert_eq!(Frame::decode(&mut part), Ok(None), "cut at {cut}");
        }
        assert_eq!(Frame::decode(&mut b), Ok(Some(f)));
        assert!(b.is_empty());
    }

    #[test]
    fn every_move_frame_round_trips() {
        let mqtt = Bytes::from_static(b"\x32\x05\x00\x01a\x00\x01");
        let at = OriginAt { shard: 2, seq: 99 };
        let o = Origin {
            node: 3,
            shard: 1,
            seq: 7,
        };
        round_trip(Frame::PublishFrom {
            origin: at,
            publish: mqtt.clone(),
        });
        round_trip(Frame::AckedFrom {
            stamp: Stamp { stream: 5, id: 6 },
            origin: at,
            publish: mqtt.clone(),
        });
        round_trip(Frame::SessionCopy {
            client: "c".into(),
            origin: o,
            publish: mqtt.clone(),
        });
        let key = super::super::origin::Origin {
            shard: 1,
            nonce: 77,
        };
        for key in [None, Some(key)] {
            round_trip(Frame::AckedCopy {
                stamp: Stamp { stream: 5, id: 6 },
                client: "c".into(),
                origin: o,
                key,
                publish: mqtt.clone(),
            });
            let mut b = BytesMut::new();
            encode_acked_copy(Stamp { stream: 5, id: 6 }, ("c", o, key), &mqtt, &mut b);
            assert_eq!(
                Frame::decode(&mut b),
                Ok(Some(Frame::AckedCopy {
                    stamp: Stamp { stream: 5, id: 6 },
                    client: "c".into(),
                    origin: o,
                    key,
                    publish: mqtt.clone(),
                }))
            );
        }
        // A keyed copy cut short in its key closes the link.
        let mut b = BytesMut::from(&[0, 0, 0, 21, ACKED_COPY_KEYED][..]);
        b.extend_from_slice(&[0; 20]);
        assert!(Frame::decode(&mut b).is_err());
        round_trip(Frame::MoveDone("c".into()));
        round_trip(Frame::Flush(4));
        round_trip(Frame::Flushed(4));
        round_trip(Frame::StubEnd {
            client: "c".into(),
            marks: vec![o, Origin { node: 1, ..o }],
        });
        round_trip(Frame::Ghost {
            client: "c".into(),
            peers: vec![3, 4],
        });
        round_trip(Frame::Ghost {
            client: "c".into(),
            peers: vec![],
        });
        round_trip(Frame::GhostFlush { token: 9, owner: 2 });
    }

    #[test]
    fn bad_move_frames_are_refused() {
        // A publish-from cut inside its origin, a stub end announcing more marks than it holds.
        let mut b = BytesMut::from(&[0, 0, 0, 4, PUBLISH_FROM, 0, 1, 0][..]);
        assert_eq!(
            Frame::decode(&mut b),
            Err(FrameError::Truncated("publish from"))
        );
        let mut b = BytesMut::new();
        b.put_u32(8);
        b.put_u8(STUB_END);
        b.put_u16(1);
        b.put_u8(b'c');
        b.put_u32(1000);
        assert_eq!(
            Frame::decode(&mut b),
            Err(FrameError::Truncated("stub end"))
        );
        // An acked copy cut inside its stamp.
        let mut b = BytesMut::from(&[0, 0, 0, 9, ACKED_COPY, 0, 0, 0, 0, 0, 0, 0, 1][..]);
        assert_eq!(
            Frame::decode(&mut b),
            Err(FrameError::Truncated("acked copy"))
        );
        let mut b = BytesMut::new();
        b.put_u32(7);
        b.put_u8(GHOST);
        b.put_u16(0);
        b.put_u32(2);
        assert_eq!(Frame::decode(&mut b), Err(FrameError::Truncated("ghost")));
        let mut b = BytesMut::from(&[0, 0, 0, 9, GHOST_FLUSH, 0, 0, 0, 0, 0, 0, 0, 1][..]);
        assert_eq!(
            Frame::decode(&mut b),
            Err(FrameError::Truncated("ghost flush"))
        );
        let mut b = BytesMut::from(&[0, 0, 0, 1, 0x3F][..]);
        assert_eq!(Frame::decode(&mut b), Err(FrameError::UnknownKind(0x3F)));
    }
}
