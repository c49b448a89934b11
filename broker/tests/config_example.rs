//! ringmq.example.toml stays in step with the code: it is exactly what
//! `ringmq config example` generates, it parses to `Config::default()`, and
//! it sets every key.

use ringmq_broker::config::{self, Config};

const EXAMPLE: &str = include_str!("../../ringmq.example.toml");

#[test]
fn example_file_is_the_generated_one() {
    assert!(
        EXAMPLE == config::example_toml(),
        "ringmq.example.toml is stale: run `cargo run --bin ringmq -- config example > ringmq.example.toml`"
    );
}

#[test]
fn example_file_is_every_key_at_its_default() {
    let parsed: Config = toml::from_str(EXAMPLE).expect("example parses");
    assert_eq!(parsed, Config::default());
    let file: toml::Table = EXAMPLE.parse().unwrap();
    for (section, keys) in Config::default().to_toml() {
        for key in keys.as_table().unwrap().keys() {
            assert!(
                file.get(&section).and_then(|s| s.get(key)).is_some(),
                "{section}.{key} missing from ringmq.example.toml"
            );
        }
    }
}

#[test]
fn example_file_passes_config_check() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../ringmq.example.toml");
    config::check_file(std::path::Path::new(path)).expect("valid");
}

#[test]
fn every_key_is_in_the_configuration_reference() {
    let doc = include_str!("../../docs/configuration.md");
    for (section, keys) in Config::default().to_toml() {
        for key in keys.as_table().unwrap().keys() {
            assert!(
                doc.contains(&format!("`{section}.{key}`")),
                "docs/configuration.md lacks {section}.{key}"
            );
        }
    }
}
