//! PUBACK, PUBREC, PUBREL, PUBCOMP (v5 3.4-3.7): one shape, decode, encode, length; tests at the
//! bottom. The v5 short forms are used when possible: remaining length 2 means Success and no
//! properties, 3 means no properties (v5 3.4.2.1).

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::properties::PubRespProperties;
use crate::reason::{ReasonCode, ReasonContext};
use crate::types::{PacketId, ProtocolVersion};
use crate::wire::{check_remaining, frame_len, put_fixed_header, Reader};

/// Acknowledgement of a QoS 1/2 PUBLISH (which packet is given by `Packet`'s variant).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PubResp {
    pub packet_id: PacketId,
    pub reason: ReasonCode,
    pub properties: PubRespProperties,
}

impl PubResp {
    /// A Success acknowledgement with no properties.
    pub fn new(packet_id: PacketId) -> Self {
        PubResp {
            packet_id,
            reason: ReasonCode::Success,
            properties: PubRespProperties::default(),
        }
    }

    /// `rel_comp`: PUBREL/PUBCOMP (their reason codes differ from PUBACK/PUBREC).
    pub(crate) fn decode(
        body: &Bytes,
        version: ProtocolVersion,
        rel_comp: bool,
    ) -> Result<PubResp, DecodeError> {
        let mut r = Reader::new(body);
        let packet_id = r.packet_id()?;
        let mut resp = PubResp::new(packet_id);
        if version.is_v5() && !r.is_empty() {
            let ctx = if rel_comp {
                ReasonContext::PubRelComp
            } else {
                ReasonContext::PubAckRec
            };
            resp.reason = ReasonCode::parse_in(r.u8()?, ctx)?;
            if !r.is_empty() {
                resp.properties = PubRespProperties::read(&mut r)?;
            }
        }
        // 3.1.1 3.4.1: remaining length is exactly 2.
        r.finish()?;
        Ok(resp)
    }

    fn remaining_len(&self, version: ProtocolVersion) -> usize {
        if !version.is_v5() {
            2
        } else if !self.properties.is_empty() {
            3 + self.properties.encoded_len()
        } else if self.reason != ReasonCode::Success {
            3
        } else {
            2
        }
    }

    pub(crate) fn encoded_len(&self, version: ProtocolVersion) -> usize {
        frame_len(self.remaining_len(version))
    }

    pub(crate) fn encode(
        &self,
        first: u8,
        version: ProtocolVersion,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let remaining = self.remaining_len(version);
        check_remaining(remaining)?;
        out.reserve(frame_len(remaining));
        put_fixed_header(out, first, remaining);
        out.put_u16(self.packet_id.get());
        if remaining > 2 {
            out.put_u8(self.reason as u8);
        }
        if remaining > 3 {
            self.properties.put(out);
        }
        Ok(())
    }
}
