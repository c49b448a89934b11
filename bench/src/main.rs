//! `ringmq-bench`: the bundled load generator.
fn main() {}
