//! The snapshot image: the whole replicated map at one applied log id.
//!
//! Encoded with postcard behind a magic and a format number, so an image from
//! another build is refused rather than misread.

use std::io;

use serde::{Deserialize, Serialize};

const MAGIC: [u8; 4] = *b"RMQS";
const IMAGE_FORMAT: u8 = 1;

/// The map and the version counter at the snapshot's log id.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SnapshotImage {
    /// The highest version handed out so far.
    pub revision: u64,
    /// Every key with its version and value, in key order.
    pub rows: Vec<(Vec<u8>, u64, Vec<u8>)>,
}

impl SnapshotImage {
    pub fn encode(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(16 + self.rows.len() * 48);
        out.extend_from_slice(&MAGIC);
        out.push(IMAGE_FORMAT);
        postcard::to_io(self, &mut out)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(out)
    }

    pub fn decode(raw: &[u8]) -> io::Result<Self> {
        let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
        if raw.len() < 5 || raw[..4] != MAGIC {
            return Err(bad("snapshot image: bad magic".into()));
        }
        if raw[4] != IMAGE_FORMAT {
            return Err(bad(format!(
                "snapshot image: format {}, expected {IMAGE_FORMAT}",
                raw[4]
            )));
        }
        postcard::from_bytes(&raw[5..]).map_err(|e| bad(format!("snapshot image: {e}")))
    }
}
