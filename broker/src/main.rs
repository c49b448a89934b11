//! `ringmq`: the broker binary.
fn main() {}
