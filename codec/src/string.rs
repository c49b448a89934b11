//! `MqttString`: a validated UTF-8 Encoded String (v5 1.5.4) held as a zero-copy `Bytes` slice.

use std::borrow::Borrow;
use std::fmt;

use bytes::Bytes;

use crate::error::DecodeError;

/// Longest string the 2-byte length prefix can carry [MQTT-1.5.4-1] / v5 1.5.4.
pub const MAX_STRING_LEN: usize = u16::MAX as usize;

/// Validated UTF-8 string: well-formed UTF-8 (so no surrogates) [MQTT-1.5.4-1], no U+0000
/// [MQTT-1.5.4-2], at most 65,535 bytes. A BOM is kept as is [MQTT-1.5.4-3].
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MqttString(Bytes);

/// Checks the UTF-8 string rules on raw bytes.
#[inline]
pub(crate) fn validate_utf8(b: &[u8]) -> Result<(), DecodeError> {
    if b.len() > MAX_STRING_LEN {
        return Err(DecodeError::StringTooLong);
    }
    // Fast path for ASCII (the usual topic): only U+0000 to reject.
    if b.is_ascii() {
        // [MQTT-1.5.4-2] MUST NOT include an encoding of the null character U+0000.
        if b.contains(&0) {
            return Err(DecodeError::NullCharacter);
        }
        return Ok(());
    }
    // [MQTT-1.5.4-1] ill-formed UTF-8, including UTF-16 surrogates U+D800..U+DFFF
    // (which `from_utf8` rejects), is a Malformed Packet.
    if std::str::from_utf8(b).is_err() {
        return Err(DecodeError::InvalidUtf8);
    }
    // [MQTT-1.5.4-2]
    if b.contains(&0) {
        return Err(DecodeError::NullCharacter);
    }
    Ok(())
}

impl MqttString {
    /// The empty string.
    pub const fn new() -> Self {
        MqttString(Bytes::new())
    }

    /// Wraps a static string. Panics on U+0000 or a length over 65,535 (a programming error).
    pub fn from_static(s: &'static str) -> Self {
        match validate_utf8(s.as_bytes()) {
            Ok(()) => MqttString(Bytes::from_static(s.as_bytes())),
            Err(e) => panic!("invalid MQTT string literal {s:?}: {e}"),
        }
    }

    /// Wraps bytes already checked by `validate_utf8`.
    #[inline]
    pub(crate) fn from_validated(b: Bytes) -> Self {
        MqttString(b)
    }

    #[inline]
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor validates the bytes as UTF-8 (`validate_utf8` or `&str`).
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    #[inline]
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// Length in bytes (not characters).
    #[inline]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl TryFrom<Bytes> for MqttString {
    type Error = DecodeError;
    fn try_from(b: Bytes) -> Result<Self, DecodeError> {
        validate_utf8(&b)?;
        Ok(MqttString(b))
    }
}

impl TryFrom<&str> for MqttString {
    type Error = DecodeError;
    fn try_from(s: &str) -> Result<Self, DecodeError> {
        validate_utf8(s.as_bytes())?;
        Ok(MqttString(Bytes::copy_from_slice(s.as_bytes())))
    }
}

impl TryFrom<String> for MqttString {
    type Error = DecodeError;
    fn try_from(s: String) -> Result<Self, DecodeError> {
        validate_utf8(s.as_bytes())?;
        Ok(MqttString(Bytes::from(s.into_bytes())))
    }
}

impl std::ops::Deref for MqttString {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for MqttString {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for MqttString {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq<str> for MqttString {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for MqttString {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for MqttString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for MqttString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_null_character_mqtt_1_5_4_2() {
        assert_eq!(
            MqttString::try_from("a\0b"),
            Err(DecodeError::NullCharacter)
        );
    }

    #[test]
    fn rejects_encoded_surrogate_mqtt_1_5_4_1() {
        // U+D800 encoded as if it were a scalar value.
        let b = Bytes::from_static(&[0x61, 0xED, 0xA0, 0x80]);
        assert_eq!(MqttString::try_from(b), Err(DecodeError::InvalidUtf8));
    }

    #[test]
    fn keeps_bom_mqtt_1_5_4_3() {
        let s = MqttString::try_from("\u{FEFF}a").unwrap();
        assert_eq!(s.as_bytes(), &[0xEF, 0xBB, 0xBF, b'a']);
    }

    #[test]
    fn spec_example_1_5_4_1() {
        // Figure 1.1: "A𪛔" = 41 F0 AA 9B 94
        let b = Bytes::from_static(&[0x41, 0xF0, 0xAA, 0x9B, 0x94]);
        assert_eq!(MqttString::try_from(b).unwrap().as_str(), "A\u{2A6D4}");
    }

    #[test]
    fn rejects_overlong() {
        let s = "a".repeat(MAX_STRING_LEN + 1);
        assert_eq!(MqttString::try_from(s), Err(DecodeError::StringTooLong));
    }
}
