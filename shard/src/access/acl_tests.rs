use super::*;

const FILE: &str = "\
# anonymous section
topic read $SYS/#
topic read public/#
topic deny public/secret

user roger
topic foo/bar
topic write sensors/+/cmd
topic read sensors/#
topic deny sensors/private/#

user alice
topic readwrite alice/#

# every client
pattern write $SYS/broker/connection/%c/state
pattern readwrite devices/%c/#
pattern read users/%u/inbox
";

fn acl() -> Acl {
    Acl::parse(FILE, "acl").expect("parses")
}

fn ok(a: &Acl, u: Option<&str>, c: &str, t: &str, acc: Access) -> bool {
    a.check(u, c, t, acc).allowed
}

#[test]
fn anonymous_section_applies_to_clients_without_username() {
    let a = acl();
    assert!(ok(&a, None, "c", "$SYS/broker/uptime", Access::Read));
    assert!(!ok(&a, None, "c", "$SYS/broker/uptime", Access::Write));
    assert!(ok(&a, None, "c", "public/news", Access::Read));
    assert!(!ok(&a, None, "c", "public/news", Access::Write));
    // The anonymous section is not roger's.
    assert!(!ok(&a, Some("roger"), "c", "public/news", Access::Read));
}

#[test]
fn deny_wins_over_an_earlier_grant() {
    let a = acl();
    assert!(!ok(&a, None, "c", "public/secret", Access::Read));
    let d = a.check(None, "c", "public/secret", Access::Read);
    assert_eq!(d.line, Some(4));
    assert!(ok(&a, Some("roger"), "c", "sensors/1/temp", Access::Read));
    assert!(!ok(
        &a,
        Some("roger"),
        "c",
        "sensors/private/x",
        Access::Read
    ));
    assert!(!ok(&a, Some("roger"), "c", "sensors/private", Access::Read));
}

#[test]
fn access_words_read_write_readwrite_and_default() {
    let a = acl();
    // No access word: readwrite.
    assert!(ok(&a, Some("roger"), "c", "foo/bar", Access::Read));
    assert!(ok(&a, Some("roger"), "c", "foo/bar", Access::Write));
    assert!(ok(&a, Some("roger"), "c", "sensors/1/cmd", Access::Write));
    assert!(!ok(&a, Some("roger"), "c", "sensors/1/temp", Access::Write));
    // A rule that matches but does not grant the access asked does not decide.
    assert!(ok(&a, Some("roger"), "c", "sensors/1/cmd", Access::Read));
}

#[test]
fn unknown_user_gets_only_patterns() {
    let a = acl();
    assert!(!ok(&a, Some("mallory"), "m1", "public/news", Access::Read));
    assert!(ok(&a, Some("mallory"), "m1", "devices/m1/x", Access::Write));
    assert!(ok(
        &a,
        Some("mallory"),
        "m1",
        "users/mallory/inbox",
        Access::Read
    ));
    assert!(!ok(
        &a,
        Some("mallory"),
        "m1",
        "users/alice/inbox",
        Access::Read
    ));
}

#[test]
fn patterns_substitute_client_id_and_username_per_level() {
    let a = acl();
    assert!(ok(&a, None, "dev7", "devices/dev7/t", Access::Write));
    assert!(ok(&a, None, "dev7", "devices/dev7", Access::Read));
    assert!(!ok(&a, None, "dev7", "devices/dev8/t", Access::Write));
    // %u rules are skipped for anonymous clients.
    assert!(!ok(&a, None, "dev7", "users//inbox", Access::Read));
    // Bridge state topic from Mosquitto's example: $ rule starts with $.
    assert!(ok(
        &a,
        None,
        "br1",
        "$SYS/broker/connection/br1/state",
        Access::Write
    ));
    // Not a whole level: no substitution (literal %c).
    let b = Acl::parse("pattern read x-%c/y\n", "f").unwrap();
    assert!(!b.check(None, "c", "x-c/y", Access::Read).allowed);
    assert!(b.check(None, "c", "x-%c/y", Access::Read).allowed);
}

#[test]
fn wildcards_in_ids_deny_every_pattern() {
    let a = acl();
    for id in ["a+", "#", "x#y"] {
        let d = a.check(None, id, &format!("devices/{id}/t"), Access::Read);
        assert!(!d.allowed && d.dangerous, "{id}");
    }
    let d = a.check(Some("u+"), "ok", "devices/ok/t", Access::Read);
    assert!(!d.allowed && d.dangerous);
    // The user's own rules still apply (they are checked first).
    assert!(ok(&a, Some("alice"), "c#", "alice/x", Access::Write));
}

#[test]
fn ids_spanning_levels_never_match_a_pattern_level() {
    let a = acl();
    assert!(!ok(&a, None, "a/b", "devices/a/b/t", Access::Read));
    assert!(!ok(&a, None, "a/b", "devices/a/t", Access::Read));
    // Mosquitto 2.0 compared one level by prefix: id "ab" matched level "a".
    assert!(!ok(&a, None, "ab", "devices/a", Access::Read));
    assert!(!ok(&a, None, "", "devices//t", Access::Read));
}

#[test]
fn dollar_topics_need_dollar_rules_mqtt_4_7_2_1() {
    let a = Acl::parse("topic #\ntopic +/x\n", "f").unwrap();
    assert!(a.check(None, "c", "a/b", Access::Read).allowed);
    assert!(!a.check(None, "c", "$SYS/x", Access::Read).allowed);
    assert!(!a.check(None, "c", "$x/x", Access::Read).allowed);
}

#[test]
fn nothing_matched_is_denied() {
    let a = acl();
    let d = a.check(Some("alice"), "c", "bob/x", Access::Read);
    assert_eq!(
        d,
        Decision {
            allowed: false,
            line: None,
            dangerous: false
        }
    );
    let empty = Acl::parse("", "f").unwrap();
    assert!(!empty.check(None, "c", "a", Access::Read).allowed);
}

#[test]
fn parse_errors_name_file_and_line() {
    let e = Acl::parse("topic read a\ntopic reed b\n", "acl.conf").unwrap_err();
    assert_eq!(e.line, 2);
    assert!(e.to_string().starts_with("acl.conf:2: "), "{e}");
    for (text, line) in [
        ("user\n", 1),
        ("topic\n", 1),
        ("\n\ntopic read a/#/b\n", 3),
        ("topic read a+\n", 1),
        ("topc read a\n", 1),
    ] {
        let e = Acl::parse(text, "f").unwrap_err();
        assert_eq!(e.line, line, "{text:?}: {e}");
    }
    // Comments, blank lines, spaces in filters and usernames are fine.
    let a = Acl::parse("  # c\n\nuser john smith\ntopic read a b/c\n", "f").unwrap();
    assert!(
        a.check(Some("john smith"), "c", "a b/c", Access::Read)
            .allowed
    );
}

#[test]
fn covers_and_overlaps() {
    assert!(covers("#", "a/b"));
    assert!(covers("a/#", "a"));
    assert!(covers("a/#", "a/+/c"));
    assert!(covers("a/+", "a/b"));
    assert!(covers("a/+", "a/+"));
    assert!(!covers("a/+", "a/#"));
    assert!(!covers("a/b", "a/+"));
    assert!(!covers("#", "$SYS/#"));
    assert!(covers("$SYS/#", "$SYS/broker/+"));
    assert!(overlaps("a/+", "+/b"));
    assert!(overlaps("a/#", "a"));
    assert!(overlaps("#", "a"));
    assert!(!overlaps("a/b", "a/c"));
    assert!(!overlaps("a", "a/b"));
    assert!(!overlaps("+/#", "$SYS/x"));
    assert!(overlaps("$SYS/#", "$SYS/+/x"));
}

#[test]
fn classify_subscriptions() {
    let a = acl();
    let roger = a.client(Some("roger"), "r1");
    assert_eq!(roger.classify("foo/bar"), SubClass::Full);
    assert_eq!(roger.classify("sensors/private/#"), SubClass::Never);
    assert_eq!(roger.classify("sensors/#"), SubClass::Check);
    assert_eq!(roger.classify("sensors/1/temp"), SubClass::Full);
    assert_eq!(roger.classify("sensors/+/temp"), SubClass::Check);
    assert_eq!(roger.classify("other/#"), SubClass::Never);
    assert_eq!(roger.classify("devices/r1/#"), SubClass::Full);
    assert_eq!(roger.classify("#"), SubClass::Check);
    let anon = a.client(None, "c");
    assert_eq!(anon.classify("$SYS/#"), SubClass::Full);
    assert_eq!(anon.classify("public/secret"), SubClass::Never);
    assert_eq!(anon.classify("public/+"), SubClass::Check);
    // Write-only rules grant no read.
    let w = Acl::parse("topic write a/#\n", "f")
        .unwrap()
        .client(None, "c");
    assert_eq!(w.classify("a/b"), SubClass::Never);
}

/// Classification never disagrees with the per-topic decision.
#[test]
fn classify_agrees_with_decide() {
    let a = acl();
    let topics = [
        "foo/bar",
        "sensors/1/temp",
        "sensors/private/x",
        "sensors/1/cmd",
        "public/news",
        "public/secret",
        "$SYS/broker/uptime",
        "devices/r1/x",
        "devices/r1",
        "alice/x",
        "users/roger/inbox",
        "a",
        "a/b/c",
    ];
    let filters = [
        "#",
        "+/#",
        "foo/bar",
        "sensors/#",
        "sensors/+/temp",
        "sensors/private/#",
        "public/+",
        "$SYS/#",
        "devices/+/#",
        "users/+/inbox",
        "+",
        "a/#",
    ];
    for (u, c) in [
        (None, "c"),
        (Some("roger"), "r1"),
        (Some("alice"), "c#"),
        (Some("zed"), "z"),
    ] {
        let ca = a.client(u, c);
        for f in filters {
            let class = ca.classify(f);
            for t in topics.iter().filter(|t| matches(f, t)) {
                let ok = ca.allows(t, Access::Read);
                match class {
                    SubClass::Full => assert!(ok, "{u:?} {f} {t}"),
                    SubClass::Never => assert!(!ok, "{u:?} {f} {t}"),
                    SubClass::Check => {}
                }
            }
        }
    }
}
