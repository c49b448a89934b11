//! Framing and the handshake: what a connection between two nodes carries.
//!
//! Every frame is a 4-byte big-endian length and a body. The first frame each
//! way is the handshake, in a fixed layout that never changes between
//! protocol versions so that any two builds can at least tell each other
//! apart:
//!
//! ```text
//! hello  = "RMQC" | version u16 | from u64 | to u64 | cluster-id len u16 | cluster-id
//! answer = 0x00                       accepted
//!        | 0x01 | reason (utf-8)      refused (the connection is then closed)
//! ```
//!
//! After the handshake every body is one postcard-encoded [`super::wire`]
//! message of that protocol version.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::types::NodeId;

/// The node-to-node protocol version this build speaks.
/// 2: pipelined append streams; a forwarded command travels as its
/// postcard bytes (see `crate::payload`).
pub const PROTOCOL_VERSION: u16 = 2;
const MAGIC: [u8; 4] = *b"RMQC";
/// Longest cluster id accepted in a handshake.
pub const MAX_CLUSTER_ID: usize = 256;

/// Why reading a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

/// Reads one frame body (at most `max` bytes).
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Vec<u8>, FrameError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    // Grow with the bytes that actually arrive: a peer announcing a large
    // frame and sending nothing costs no more than a small buffer.
    let mut body = Vec::with_capacity(len.min(64 << 10));
    let got = r.take(len as u64).read_to_end(&mut body).await?;
    if got < len {
        return Err(FrameError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "frame cut short",
        )));
    }
    Ok(body)
}

/// Writes one frame and flushes it.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame over 4 GiB"))?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(body).await?;
    w.flush().await
}

/// The first frame a connecting node sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub version: u16,
    pub from: NodeId,
    pub to: NodeId,
    pub cluster_id: String,
}

/// Why a hello could not even be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    #[error("not a ringmq cluster handshake (bad magic)")]
    Magic,
    #[error("truncated handshake")]
    Truncated,
    #[error("cluster id is not utf-8 or longer than {MAX_CLUSTER_ID} bytes")]
    ClusterId,
}

impl Hello {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + self.cluster_id.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.from.to_be_bytes());
        out.extend_from_slice(&self.to.to_be_bytes());
        out.extend_from_slice(&(self.cluster_id.len() as u16).to_be_bytes());
        out.extend_from_slice(self.cluster_id.as_bytes());
        out
    }

    pub fn decode(b: &[u8]) -> Result<Hello, HelloError> {
        if b.len() < 4 || b[..4] != MAGIC {
            return Err(HelloError::Magic);
        }
        if b.len() < 24 {
            return Err(HelloError::Truncated);
        }
        let version = u16::from_be_bytes([b[4], b[5]]);
        let from = u64::from_be_bytes(b[6..14].try_into().map_err(|_| HelloError::Truncated)?);
        let to = u64::from_be_bytes(b[14..22].try_into().map_err(|_| HelloError::Truncated)?);
        let len = u16::from_be_bytes([b[22], b[23]]) as usize;
        if len > MAX_CLUSTER_ID {
            return Err(HelloError::ClusterId);
        }
        let id = b.get(24..24 + len).ok_or(HelloError::Truncated)?;
        if b.len() != 24 + len {
            return Err(HelloError::Truncated);
        }
        let cluster_id = std::str::from_utf8(id)
            .map_err(|_| HelloError::ClusterId)?
            .to_string();
        Ok(Hello {
            version,
            from,
            to,
            cluster_id,
        })
    }
}

/// The answer frame: accepted, or refused with a reason.
pub fn answer(refusal: Option<&str>) -> Vec<u8> {
    match refusal {
        None => vec![0],
        Some(reason) => {
            let mut out = vec![1];
            out.extend_from_slice(reason.as_bytes());
            out
        }
    }
}

/// Reads an answer frame: `Ok(())` when accepted, the reason when refused.
pub fn parse_answer(b: &[u8]) -> Result<(), String> {
    match b.first() {
        Some(0) if b.len() == 1 => Ok(()),
        Some(1) => Err(String::from_utf8_lossy(&b[1..]).into_owned()),
        _ => Err("malformed handshake answer".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trip_and_must_fail() {
        let h = Hello {
            version: PROTOCOL_VERSION,
            from: 3,
            to: 1,
            cluster_id: "prod-eu".into(),
        };
        assert_eq!(Hello::decode(&h.encode()), Ok(h.clone()));
        let raw = h.encode();
        assert_eq!(Hello::decode(b"GET / HTTP/1.1"), Err(HelloError::Magic));
        assert_eq!(Hello::decode(&raw[..20]), Err(HelloError::Truncated));
        assert_eq!(
            Hello::decode(&raw[..raw.len() - 1]),
            Err(HelloError::Truncated)
        );
        let mut long = raw.clone();
        long.push(0);
        assert_eq!(Hello::decode(&long), Err(HelloError::Truncated));
        let mut bad = raw;
        let n = bad.len();
        bad[n - 1] = 0xff;
        assert_eq!(Hello::decode(&bad), Err(HelloError::ClusterId));
    }

    #[test]
    fn answers() {
        assert_eq!(parse_answer(&answer(None)), Ok(()));
        assert_eq!(
            parse_answer(&answer(Some("wrong cluster"))),
            Err("wrong cluster".into())
        );
        assert!(parse_answer(&[7]).is_err());
        assert!(parse_answer(&[]).is_err());
    }
}
