//! Topic names (what a PUBLISH carries) and topic filters (what a SUBSCRIBE carries), v5 4.7.

use std::fmt;

use bytes::Bytes;

use crate::error::DecodeError;
use crate::string::{validate_utf8, MqttString};

/// A topic name: non-empty, no wildcards. The only empty one is made by
/// [`TopicName::empty_for_alias`] for a v5 PUBLISH that names its topic by alias.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(MqttString);

/// A topic filter: non-empty, wildcards only in whole levels, `#` last. `$share/{group}/{filter}`
/// is checked as a shared subscription (v5 4.8.2).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicFilter(MqttString);

/// Checks the topic-name rules on a valid string.
#[inline]
pub(crate) fn check_topic_name(b: &[u8]) -> Result<(), DecodeError> {
    // [MQTT-4.7.3-1] Topic Names and Topic Filters MUST be at least one character long.
    if b.is_empty() {
        return Err(DecodeError::TopicEmpty);
    }
    // [MQTT-3.3.2-2] The Topic Name in the PUBLISH packet MUST NOT contain wildcard characters.
    if b.iter().any(|&c| c == b'+' || c == b'#') {
        return Err(DecodeError::TopicNameWildcard);
    }
    Ok(())
}

/// True when every byte is ASCII other than U+0000, `+` and `#`: such bytes are a valid
/// string [MQTT-1.5.4-1/2] and, if non-empty, a valid topic name [MQTT-3.3.2-2]. Checks eight
/// bytes at a time; false only sends the caller to the full checks.
#[inline]
pub(crate) fn is_plain_topic(b: &[u8]) -> bool {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    // High bit of each byte set where that byte is 0, '+', '#' or >= 0x80 (exact as a
    // "none of them" test: the has-zero-byte trick can only misflag bytes above a real hit).
    #[inline(always)]
    fn bad(x: u64) -> u64 {
        let zero = |v: u64| v.wrapping_sub(LO) & !v;
        (x | zero(x) | zero(x ^ (LO * b'+' as u64)) | zero(x ^ (LO * b'#' as u64))) & HI
    }
    #[inline(always)]
    fn word(c: &[u8]) -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        u64::from_le_bytes(w)
    }
    let n = b.len();
    if n < 8 {
        // Pad with '/', a plain byte.
        let mut w = [b'/'; 8];
        w[..n].copy_from_slice(b);
        return bad(u64::from_le_bytes(w)) == 0;
    }
    let mut acc = 0;
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        acc |= bad(word(c));
    }
    // The last 8 bytes (overlapping what was checked) cover the tail.
    acc |= bad(word(&b[n - 8..]));
    acc == 0
}

/// Checks the topic-filter rules on a valid string.
pub(crate) fn check_topic_filter(b: &[u8]) -> Result<(), DecodeError> {
    // [MQTT-4.7.3-1]
    if b.is_empty() {
        return Err(DecodeError::FilterEmpty);
    }
    if let Some(rest) = b.strip_prefix(b"$share/") {
        // [MQTT-4.8.2-1] ShareName MUST be at least one character long and MUST NOT contain
        // "/", "+" or "#"; [MQTT-4.8.2-2] it MUST be followed by "/" and a Topic Filter.
        let Some(slash) = rest.iter().position(|&c| c == b'/') else {
            return Err(DecodeError::SharedSubscriptionInvalid);
        };
        let (group, filter) = (&rest[..slash], &rest[slash + 1..]);
        if group.is_empty() || group.iter().any(|&c| c == b'+' || c == b'#') || filter.is_empty() {
            return Err(DecodeError::SharedSubscriptionInvalid);
        }
        return check_filter_levels(filter);
    }
    check_filter_levels(b)
}

fn check_filter_levels(b: &[u8]) -> Result<(), DecodeError> {
    let n = b.len();
    for (i, &c) in b.iter().enumerate() {
        let alone = (i == 0 || b[i - 1] == b'/') && (i + 1 == n || b[i + 1] == b'/');
        match c {
            // [MQTT-4.7.1-1] '#' MUST be on its own or after a separator, and MUST be last.
            b'#' if !alone || i + 1 != n => return Err(DecodeError::TopicFilterInvalid),
            // [MQTT-4.7.1-2] '+' MUST occupy an entire level of the filter.
            b'+' if !alone => return Err(DecodeError::TopicFilterInvalid),
            _ => {}
        }
    }
    Ok(())
}

impl TopicName {
    /// The empty topic of a v5 PUBLISH that carries a Topic Alias instead (v5 3.3.2.3.4).
    pub fn empty_for_alias() -> Self {
        TopicName(MqttString::new())
    }

    /// Wraps a string checked by `check_topic_name`.
    #[inline]
    pub(crate) fn from_checked(s: MqttString) -> Self {
        TopicName(s)
    }

    /// Wraps a static topic name. Panics if invalid (a programming error).
    pub fn from_static(s: &'static str) -> Self {
        match TopicName::try_from(Bytes::from_static(s.as_bytes())) {
            Ok(t) => t,
            Err(e) => panic!("invalid topic name {s:?}: {e}"),
        }
    }

    #[inline]
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    #[inline]
    pub fn as_mqtt_str(&self) -> &MqttString {
        &self.0
    }

    #[inline]
    pub fn into_inner(self) -> MqttString {
        self.0
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl TopicFilter {
    /// Wraps a static filter. Panics if invalid (a programming error).
    pub fn from_static(s: &'static str) -> Self {
        match TopicFilter::try_from(Bytes::from_static(s.as_bytes())) {
            Ok(t) => t,
            Err(e) => panic!("invalid topic filter {s:?}: {e}"),
        }
    }

    #[inline]
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    #[inline]
    pub fn as_mqtt_str(&self) -> &MqttString {
        &self.0
    }

    #[inline]
    pub fn into_inner(self) -> MqttString {
        self.0
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True if any level is `+` or `#` (in the filter part of a shared subscription).
    pub fn has_wildcards(&self) -> bool {
        let f = self.shared().map_or(self.as_str(), |(_, f)| f);
        f.bytes().any(|c| c == b'+' || c == b'#')
    }

    /// `Some((group, filter))` for `$share/{group}/{filter}` (v5 4.8.2), else `None`.
    pub fn shared(&self) -> Option<(&str, &str)> {
        let rest = self.as_str().strip_prefix("$share/")?;
        let slash = rest.find('/')?;
        Some((&rest[..slash], &rest[slash + 1..]))
    }
}

macro_rules! topic_conversions {
    ($ty:ident, $check:ident) => {
        impl TryFrom<MqttString> for $ty {
            type Error = DecodeError;
            fn try_from(s: MqttString) -> Result<Self, DecodeError> {
                $check(s.as_bytes())?;
                Ok($ty(s))
            }
        }
        impl TryFrom<Bytes> for $ty {
            type Error = DecodeError;
            fn try_from(b: Bytes) -> Result<Self, DecodeError> {
                validate_utf8(&b)?;
                $check(&b)?;
                Ok($ty(MqttString::from_validated(b)))
            }
        }
        impl TryFrom<&str> for $ty {
            type Error = DecodeError;
            fn try_from(s: &str) -> Result<Self, DecodeError> {
                $ty::try_from(Bytes::copy_from_slice(s.as_bytes()))
            }
        }
        impl TryFrom<String> for $ty {
            type Error = DecodeError;
            fn try_from(s: String) -> Result<Self, DecodeError> {
                $ty::try_from(Bytes::from(s.into_bytes()))
            }
        }
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self.as_str(), f)
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }
    };
}

topic_conversions!(TopicName, check_topic_name);
topic_conversions!(TopicFilter, check_topic_filter);

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(s: &str) -> Result<TopicFilter, DecodeError> {
        TopicFilter::try_from(s)
    }

    #[test]
    fn plain_topic_fast_path_matches_bytewise_rule() {
        let naive = |b: &[u8]| {
            b.iter()
                .all(|&c| (1..0x80).contains(&c) && c != b'+' && c != b'#')
        };
        let mut buf = [b'a'; 40];
        for len in 0..=buf.len() {
            assert!(is_plain_topic(&buf[..len]));
            for at in 0..len {
                for c in 0..=255u8 {
                    buf[at] = c;
                    assert_eq!(
                        is_plain_topic(&buf[..len]),
                        naive(&buf[..len]),
                        "{len} {at} {c}"
                    );
                }
                buf[at] = b'a';
            }
        }
    }

    #[test]
    fn valid_filters_mqtt_4_7_1() {
        for f in [
            "#",
            "+",
            "sport/#",
            "sport/tennis/#",
            "+/tennis/#",
            "sport/+/player1",
            "/+",
            "+/+",
            "/",
            "//",
            "$SYS/#",
            "$share/g/a/#",
            "$share/g/+",
        ] {
            assert!(filter(f).is_ok(), "{f}");
        }
    }

    #[test]
    fn invalid_filters_mqtt_4_7_1_1_and_2() {
        for f in [
            "sport/tennis#",
            "sport/tennis/#/ranking",
            "sport+",
            "a/b+/c",
            "##",
            "#/",
            "",
        ] {
            assert!(filter(f).is_err(), "{f}");
        }
    }

    #[test]
    fn shared_subscription_rules_mqtt_4_8_2_1_and_2() {
        for f in [
            "$share/",
            "$share//a",
            "$share/g",
            "$share/g/",
            "$share/g+/a",
            "$share/#/a",
        ] {
            assert_eq!(
                filter(f),
                Err(DecodeError::SharedSubscriptionInvalid),
                "{f}"
            );
        }
        let f = filter("$share/grp/a/+/c").unwrap();
        assert_eq!(f.shared(), Some(("grp", "a/+/c")));
        assert!(f.has_wildcards());
        assert_eq!(filter("a/b").unwrap().shared(), None);
    }

    #[test]
    fn topic_names_mqtt_3_3_2_2() {
        assert!(TopicName::try_from("a/b").is_ok());
        assert!(TopicName::try_from("/").is_ok());
        assert_eq!(
            TopicName::try_from("a/+"),
            Err(DecodeError::TopicNameWildcard)
        );
        assert_eq!(
            TopicName::try_from("#"),
            Err(DecodeError::TopicNameWildcard)
        );
        assert_eq!(TopicName::try_from(""), Err(DecodeError::TopicEmpty));
    }
}
