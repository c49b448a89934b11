//! CONNACK (v5 3.2, 3.1.1 3.2): decode, encode, length; tests at the bottom.
//! Below v5 the reason travels as a CONNACK return code (`ReasonCode::to_connect_return_code`).

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::properties::ConnAckProperties;
use crate::reason::{ConnectReturnCode, ReasonCode, ReasonContext};
use crate::types::ProtocolVersion;
use crate::wire::{check_remaining, frame_len, put_fixed_header, Reader};

/// CONNACK. In 3.1/3.1.1 `reason` is one of the six codes `ConnectReturnCode::to_reason_code`
/// yields, and encode maps any other reason to the closest return code.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnAck {
    pub session_present: bool,
    pub reason: ReasonCode,
    pub properties: ConnAckProperties,
}

impl ConnAck {
    pub(crate) fn decode(body: &Bytes, version: ProtocolVersion) -> Result<ConnAck, DecodeError> {
        let mut r = Reader::new(body);
        let flags = r.u8()?;
        let code = r.u8()?;
        let (session_present, reason, properties) = match version {
            // 3.1: the first byte is unused.
            ProtocolVersion::V3_1 => (
                false,
                ConnectReturnCode::try_from(code)?.to_reason_code(),
                ConnAckProperties::default(),
            ),
            ProtocolVersion::V3_1_1 => {
                // [MQTT-3.2.2-1] (3.1.1) bits 7-1 are reserved and MUST be 0.
                if flags & 0xFE != 0 {
                    return Err(DecodeError::ConnAckReservedFlags);
                }
                let rc = ConnectReturnCode::try_from(code)?.to_reason_code();
                (flags & 1 != 0, rc, ConnAckProperties::default())
            }
            ProtocolVersion::V5 => {
                // v5 3.2.2.1: bits 7-1 are reserved and MUST be 0.
                if flags & 0xFE != 0 {
                    return Err(DecodeError::ConnAckReservedFlags);
                }
                let rc = ReasonCode::parse_in(code, ReasonContext::ConnAck)?;
                (flags & 1 != 0, rc, ConnAckProperties::read(&mut r)?)
            }
        };
        // [MQTT-3.2.2-6] / [MQTT-3.2.2-4] (3.1.1) a refused connection has Session Present 0.
        if session_present && reason != ReasonCode::Success {
            return Err(DecodeError::SessionPresentOnError);
        }
        r.finish()?;
        Ok(ConnAck {
            session_present,
            reason,
            properties,
        })
    }

    fn remaining_len(&self, version: ProtocolVersion) -> usize {
        if version.is_v5() {
            2 + self.properties.encoded_len()
        } else {
            2
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
        let code = if version.is_v5() {
            self.reason as u8
        } else {
            self.reason.to_connect_return_code() as u8
        };
        let sp = self.session_present && version != ProtocolVersion::V3_1 && code == 0;
        out.reserve(frame_len(remaining));
        put_fixed_header(out, 0x20, remaining);
        out.put_u8(sp as u8);
        out.put_u8(code);
        if version.is_v5() {
            self.properties.put(out);
        }
        Ok(())
    }
}
