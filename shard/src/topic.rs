//! Topic names and filters at the level of `&str`: level splitting, the `$`-topic rule, shared
//! subscription parts and a direct (trie-free) matcher.
//!
//! Syntax validation lives in `ringmq_codec` (`TopicName`, `TopicFilter`); everything here assumes
//! its input was validated there and never allocates.

use memchr::memchr;

/// Separator between topic levels (v5 4.7.1.1).
pub const SEPARATOR: u8 = b'/';
/// Prefix of a shared subscription filter (v5 4.8.2).
pub const SHARE_PREFIX: &str = "$share/";

/// Iterator over the levels of a topic name or filter, split on `/` with memchr.
/// `"a//b"` yields `"a"`, `""`, `"b"`; `"/"` yields `""`, `""` (zero-length levels are valid).
#[derive(Clone, Debug)]
pub struct Levels<'a> {
    rest: Option<&'a str>,
}

impl<'a> Iterator for Levels<'a> {
    type Item = &'a str;

    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        let s = self.rest?;
        match memchr(SEPARATOR, s.as_bytes()) {
            Some(i) => {
                self.rest = Some(&s[i + 1..]);
                Some(&s[..i])
            }
            None => {
                self.rest = None;
                Some(s)
            }
        }
    }
}

/// Splits `s` into its levels.
#[inline]
pub fn levels(s: &str) -> Levels<'_> {
    Levels { rest: Some(s) }
}

/// True for topics whose first level starts with `$` (`$SYS/...`): wildcards in the first level
/// of a filter never match them [MQTT-4.7.2-1].
#[inline]
pub fn is_dollar(topic: &str) -> bool {
    topic.as_bytes().first() == Some(&b'$')
}

/// Splits a shared subscription filter `$share/{group}/{filter}` into `(group, filter)`
/// (v5 4.8.2). Returns `None` for a non-shared filter. The syntax (group without `+ # /`,
/// non-empty filter) is validated by the codec's `TopicFilter` [MQTT-4.8.2-1] [MQTT-4.8.2-2];
/// this only cuts the string.
#[inline]
pub fn split_shared(filter: &str) -> Option<(&str, &str)> {
    let rest = filter.strip_prefix(SHARE_PREFIX)?;
    let i = memchr(SEPARATOR, rest.as_bytes())?;
    Some((&rest[..i], &rest[i + 1..]))
}

/// True if the filter contains a `+` or `#` level.
pub fn has_wildcards(filter: &str) -> bool {
    levels(filter).any(|l| l == "+" || l == "#")
}

/// Does `topic` match `filter`? Direct level-by-level walk, no allocation; used for one-off
/// checks (the router uses its trie). `filter` must not be a `$share/` filter (split it first).
///
/// - `+` matches exactly one level, `#` the parent level and any number of levels below
///   (v5 4.7.1.2, 4.7.1.3).
/// - Levels compare byte for byte: no normalization, case-sensitive [MQTT-4.7.3-4].
/// - A wildcard in the first level never matches a topic starting with `$` [MQTT-4.7.2-1].
pub fn matches(filter: &str, topic: &str) -> bool {
    let mut f = levels(filter);
    let mut t = levels(topic);
    let mut first = true;
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return !(first && is_dollar(topic)),
            (Some("+"), Some(_)) => {
                if first && is_dollar(topic) {
                    return false;
                }
            }
            (Some(fl), Some(tl)) => {
                if fl != tl {
                    return false;
                }
            }
            (None, None) => return true,
            // "a/#" also matches "a": the filter has exactly one `#` level left.
            (Some(_), None) => return false,
            (None, Some(_)) => return false,
        }
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lv(s: &str) -> Vec<&str> {
        levels(s).collect()
    }

    #[test]
    fn levels_split_on_separator_v5_4_7_1_1() {
        assert_eq!(lv("a/b/c"), ["a", "b", "c"]);
        assert_eq!(lv("a"), ["a"]);
        assert_eq!(lv("/"), ["", ""]);
        assert_eq!(lv("/a"), ["", "a"]);
        assert_eq!(lv("a//b"), ["a", "", "b"]);
        assert_eq!(lv("a/"), ["a", ""]);
    }

    #[test]
    fn multi_level_wildcard_matches_parent_and_children_v5_4_7_1_2() {
        assert!(matches("sport/tennis/player1/#", "sport/tennis/player1"));
        assert!(matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking"
        ));
        assert!(matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/score/wimbledon"
        ));
        assert!(matches("sport/#", "sport"));
        assert!(matches("#", "a/b/c"));
        assert!(matches("#", "/"));
        assert!(!matches("sport/tennis/#", "sport"));
    }

    #[test]
    fn single_level_wildcard_matches_one_level_v5_4_7_1_3() {
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("sport/+", "sport/"));
        assert!(matches("+", "a"));
        assert!(!matches("+", "/a"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        assert!(matches("+/#", "a"));
        assert!(!matches("a/+/#", "a"));
    }

    #[test]
    fn dollar_topics_not_matched_by_first_level_wildcard_mqtt_4_7_2_1() {
        assert!(!matches("#", "$SYS/broker/uptime"));
        assert!(!matches("+/broker/uptime", "$SYS/broker/uptime"));
        assert!(!matches("+", "$SYS"));
        assert!(matches("$SYS/#", "$SYS/broker/uptime"));
        assert!(matches("$SYS/+/uptime", "$SYS/broker/uptime"));
        assert!(matches("$SYS/#", "$SYS"));
        // Only the first level is special.
        assert!(matches("a/+", "a/$b"));
        assert!(matches("a/#", "a/$b/c"));
    }

    #[test]
    fn matching_compares_bytes_without_normalization_mqtt_4_7_3_4() {
        assert!(matches("ACCOUNTS", "ACCOUNTS"));
        assert!(!matches("ACCOUNTS", "Accounts"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
        assert!(matches("a b/c", "a b/c"));
    }

    #[test]
    fn shared_filter_splits_group_and_filter_v5_4_8_2() {
        assert_eq!(split_shared("$share/g/a/+"), Some(("g", "a/+")));
        assert_eq!(split_shared("$share/g/#"), Some(("g", "#")));
        assert_eq!(split_shared("$share/g//x"), Some(("g", "/x")));
        assert_eq!(split_shared("$share/g"), None);
        assert_eq!(split_shared("$sharex/g/a"), None);
        assert_eq!(split_shared("a/b"), None);
        assert_eq!(split_shared("$SYS/a"), None);
    }

    #[test]
    fn wildcard_detection() {
        assert!(has_wildcards("a/+/b"));
        assert!(has_wildcards("#"));
        assert!(!has_wildcards("a/b+/c#"));
        assert!(!has_wildcards("a/b"));
    }
}
