//! DISCONNECT (v5 3.14, 3.1.1 3.14): decode, encode, length; tests at the bottom.
//! v5 short forms: remaining length 0 = Normal disconnection, 1 = reason only (v5 3.14.2.1);
//! decode takes both, encode writes the reason with an empty property length (rumqttc 0.25
//! cannot read the 1-byte form).

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::properties::DisconnectProperties;
use crate::props::Props;
use crate::reason::{ReasonCode, ReasonContext};
use crate::types::ProtocolVersion;
use crate::wire::{check_remaining, frame_len, put_fixed_header, Reader};

/// DISCONNECT. Below v5 it has no body: `reason` decodes as `NormalDisconnection`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Disconnect {
    pub reason: ReasonCode,
    pub properties: Props<DisconnectProperties>,
}

impl Disconnect {
    /// A DISCONNECT with `reason` and no properties.
    pub fn new(reason: ReasonCode) -> Self {
        Disconnect {
            reason,
            properties: Props::none(),
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
                d.properties = DisconnectProperties::read_props(&mut r)?;
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
            // Reason plus an empty property length: a length of 1 is legal
            // (v5 3.14.2.2.1) but some clients (rumqttc 0.25) cannot parse it.
            2
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{both_ways, dec};
    use crate::{MqttString, Packet};

    const V4: ProtocolVersion = ProtocolVersion::V3_1_1;
    const V5: ProtocolVersion = ProtocolVersion::V5;

    #[test]
    fn v311_empty() {
        both_ways(V4, &[0xE0, 0], &Packet::Disconnect(Disconnect::default()));
        assert_eq!(dec(V4, &[0xE0, 1, 0]), Err(DecodeError::TrailingBytes));
        // [MQTT-2.2.2-2] (3.1.1) reserved flags.
        assert_eq!(
            dec(V4, &[0xE1, 0]),
            Err(DecodeError::InvalidFixedHeaderFlags)
        );
    }

    #[test]
    fn v5_short_forms_3_14_2_1() {
        both_ways(V5, &[0xE0, 0], &Packet::Disconnect(Disconnect::default()));
        let d = Disconnect::new(ReasonCode::ServerShuttingDown);
        // Written with an empty property length (rumqttc 0.25 cannot parse length 1) ...
        both_ways(V5, &[0xE0, 2, 0x8B, 0], &Packet::Disconnect(d.clone()));
        // ... and the 1-byte form still decodes.
        assert_eq!(dec(V5, &[0xE0, 1, 0x8B]), Ok(Packet::Disconnect(d)));
        assert_eq!(
            dec(V5, &[0xE0, 2, 0, 0]),
            Ok(Packet::Disconnect(Disconnect::default()))
        );
    }

    #[test]
    fn v5_with_properties() {
        let mut d = Disconnect::new(ReasonCode::UseAnotherServer);
        d.properties.server_reference = Some(MqttString::from_static("h"));
        d.properties.session_expiry_interval = Some(0);
        let raw = [0xE0, 11, 0x9C, 9, 0x11, 0, 0, 0, 0, 0x1C, 0, 1, b'h'];
        both_ways(V5, &raw, &Packet::Disconnect(d));
    }

    #[test]
    fn v5_reason_not_allowed() {
        // 0x84 Unsupported Protocol Version is a CONNACK code only.
        assert_eq!(
            dec(V5, &[0xE0, 1, 0x84]),
            Err(DecodeError::InvalidReasonCode)
        );
    }
}
