//! A [`Command`] as it travels through the log: shared, encoded once.
//!
//! openraft clones an entry for every follower it replicates to, for the
//! state machine, and for the in-memory log tail; it serializes it for the
//! log row and for every AppendEntries frame. With a plain `Command` each of
//! those is a deep copy (two allocations per op) or a full postcard pass.
//! A `Payload` is an `Arc`: a clone is a reference count, and the postcard
//! bytes are made once (on the node that proposed the command) or kept as
//! received (on a follower), then copied verbatim into every frame and row.
//! A follower decodes the bytes into a `Command` once, when it applies them.
//!
//! On the wire and on disk a payload is a postcard byte string holding the
//! postcard encoding of the `Command`.

use std::fmt;
use std::io;
use std::sync::{Arc, OnceLock};

use serde::de::{self, Deserializer, Visitor};
use serde::ser::{self, Serializer};
use serde::{Deserialize, Serialize};

use crate::command::Command;

/// A shared, lazily encoded or decoded command (openraft's `D`).
#[derive(Clone)]
pub struct Payload(Arc<Inner>);

struct Inner {
    cmd: OnceLock<Command>,
    raw: OnceLock<Vec<u8>>,
}

impl Payload {
    /// A payload proposed on this node.
    pub fn new(cmd: Command) -> Self {
        let inner = Inner {
            cmd: OnceLock::from(cmd),
            raw: OnceLock::new(),
        };
        Payload(Arc::new(inner))
    }

    /// A payload received as bytes (decoded when first needed).
    pub fn from_raw(raw: Vec<u8>) -> Self {
        let inner = Inner {
            cmd: OnceLock::new(),
            raw: OnceLock::from(raw),
        };
        Payload(Arc::new(inner))
    }

    /// The command (decoded from the bytes on first use).
    pub fn command(&self) -> io::Result<&Command> {
        if let Some(cmd) = self.0.cmd.get() {
            return Ok(cmd);
        }
        let raw = self.0.raw.get().map(Vec::as_slice).unwrap_or_default();
        let cmd: Command = postcard::from_bytes(raw)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("log payload: {e}")))?;
        Ok(self.0.cmd.get_or_init(|| cmd))
    }

    /// The postcard bytes (encoded on first use).
    pub fn raw(&self) -> Result<&[u8], postcard::Error> {
        if let Some(raw) = self.0.raw.get() {
            return Ok(raw);
        }
        let cmd = self.0.cmd.get().cloned().unwrap_or_default();
        let raw = postcard::to_stdvec(&cmd)?;
        Ok(self.0.raw.get_or_init(|| raw))
    }

    /// Ops in the command, when known without decoding (for counters).
    pub fn ops_hint(&self) -> usize {
        self.0.cmd.get().map_or(0, |c| c.ops.len())
    }

    /// About how many bytes this payload holds (for the log tail's budget).
    pub fn weight(&self) -> usize {
        match (self.0.raw.get(), self.0.cmd.get()) {
            (Some(raw), _) => raw.len(),
            (None, Some(cmd)) => cmd
                .ops
                .iter()
                .map(|op| 16 + op.key().len() + op.value_len())
                .sum(),
            (None, None) => 0,
        }
    }
}

impl From<Command> for Payload {
    fn from(cmd: Command) -> Self {
        Payload::new(cmd)
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0.cmd.get(), self.0.raw.get()) {
            (Some(cmd), _) => write!(f, "Payload({cmd:?})"),
            (None, Some(raw)) => write!(f, "Payload({} bytes)", raw.len()),
            (None, None) => write!(f, "Payload(empty)"),
        }
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0.cmd.get(), self.0.raw.get()) {
            (Some(cmd), _) => write!(f, "{cmd}"),
            (None, Some(raw)) => write!(f, "Command({} bytes)", raw.len()),
            (None, None) => write!(f, "Command(empty)"),
        }
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
            || matches!((self.raw(), other.raw()), (Ok(a), Ok(b)) if a == b)
    }
}

impl Eq for Payload {}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let raw = self.raw().map_err(ser::Error::custom)?;
        s.serialize_bytes(raw)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Raw;
        impl<'de> Visitor<'de> for Raw {
            type Value = Payload;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a postcard-encoded command as bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Payload, E> {
                Ok(Payload::from_raw(v.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Payload, E> {
                Ok(Payload::from_raw(v))
            }
        }
        d.deserialize_bytes(Raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Op;

    #[test]
    fn round_trip_encodes_once_and_decodes_lazily() {
        let cmd = Command {
            ops: vec![
                Op::Put {
                    key: b"k".to_vec(),
                    value: b"v".to_vec(),
                },
                Op::Cas {
                    key: b"own/c".to_vec(),
                    expected: 7,
                    value: None,
                },
            ],
        };
        let p = Payload::new(cmd.clone());
        let wire = postcard::to_stdvec(&p).unwrap();
        let q: Payload = postcard::from_bytes(&wire).unwrap();
        assert_eq!(q.command().unwrap(), &cmd);
        assert_eq!(p, q);
        assert_eq!(postcard::to_stdvec(&q).unwrap(), wire);
        assert_eq!(p.weight(), q.weight());
    }

    #[test]
    fn garbage_bytes_fail_on_decode_not_on_receipt() {
        let wire = postcard::to_stdvec(&serde_bytes_like(&[0xff, 0xff, 0xff])).unwrap();
        let q: Payload = postcard::from_bytes(&wire).unwrap();
        assert!(q.command().is_err());
    }

    fn serde_bytes_like(b: &[u8]) -> Payload {
        Payload::from_raw(b.to_vec())
    }
}
