//! AUTH (v5 3.15, v5 only): decode, encode, length; tests at the bottom.
//! Short form: remaining length 0 = Success, no properties (v5 3.15.2.1).

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::properties::AuthProperties;
use crate::props::Props;
use crate::reason::{ReasonCode, ReasonContext};
use crate::types::ProtocolVersion;
use crate::wire::{check_remaining, frame_len, put_fixed_header, Reader};

/// AUTH: extended authentication exchange (v5 4.12).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Auth {
    pub reason: ReasonCode,
    pub properties: Props<AuthProperties>,
}

impl Auth {
    pub(crate) fn decode(body: &Bytes) -> Result<Auth, DecodeError> {
        let mut r = Reader::new(body);
        let mut a = Auth::default();
        if !r.is_empty() {
            // v5 3.15.2.1: Success, Continue authentication, Re-authenticate.
            a.reason = ReasonCode::parse_in(r.u8()?, ReasonContext::Auth)?;
            if !r.is_empty() {
                a.properties = AuthProperties::read_props(&mut r)?;
            }
        }
        r.finish()?;
        Ok(a)
    }

    fn remaining_len(&self) -> usize {
        if !self.properties.is_empty() {
            1 + self.properties.encoded_len()
        } else if self.reason != ReasonCode::Success {
            1
        } else {
            0
        }
    }

    pub(crate) fn encoded_len(&self) -> usize {
        frame_len(self.remaining_len())
    }

    pub(crate) fn encode(
        &self,
        version: ProtocolVersion,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        // AUTH exists only in v5 (3.1.1 2.2.1: packet type 15 is reserved).
        if !version.is_v5() {
            return Err(EncodeError::NotInVersion);
        }
        let remaining = self.remaining_len();
        check_remaining(remaining)?;
        out.reserve(frame_len(remaining));
        put_fixed_header(out, 0xF0, remaining);
        if remaining > 0 {
            out.put_u8(self.reason as u8);
        }
        if remaining > 1 {
            self.properties.put(out);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{both_ways, dec};
    use crate::{MqttString, Packet};

    const V4: ProtocolVersion = ProtocolVersion::V3_1_1;
    const V5: ProtocolVersion = ProtocolVersion::V5;

    #[test]
    fn v5_short_form_and_full() {
        both_ways(V5, &[0xF0, 0], &Packet::Auth(Auth::default()));
        let a = Auth {
            reason: ReasonCode::ContinueAuthentication,
            properties: AuthProperties {
                authentication_method: Some(MqttString::from_static("SCRAM")),
                authentication_data: Some(Bytes::from_static(b"\x01")),
                ..Default::default()
            }
            .into(),
        };
        let raw = [
            0xF0, 14, 0x18, 12, 0x15, 0, 5, b'S', b'C', b'R', b'A', b'M', 0x16, 0, 1, 1,
        ];
        both_ways(V5, &raw, &Packet::Auth(a));
    }

    #[test]
    fn reserved_type_below_v5() {
        assert_eq!(dec(V4, &[0xF0, 0]), Err(DecodeError::ReservedPacketType));
        let mut out = BytesMut::new();
        assert_eq!(
            Auth::default().encode(V4, &mut out),
            Err(EncodeError::NotInVersion)
        );
    }

    #[test]
    fn reason_and_flags() {
        assert_eq!(
            dec(V5, &[0xF0, 1, 0x80]),
            Err(DecodeError::InvalidReasonCode)
        );
        assert_eq!(
            dec(V5, &[0xF1, 0]),
            Err(DecodeError::InvalidFixedHeaderFlags)
        );
    }
}
