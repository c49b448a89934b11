//! Checks that need more than one value's type: the CPUs present, ranges the
//! MQTT spec sets, values that must parse as something richer.

use super::types::Durability;
use super::{Config, ConfigError, Sources};
use std::fmt::Display;

/// CPUs present on this host (online), as the shards may be pinned to them.
pub fn cpus_present() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n < 1 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        n as usize
    }
}

impl Config {
    /// Checks the whole configuration; the error names the offending key as
    /// the user gave it (flag, variable or file key).
    pub fn validate(&self, src: &Sources) -> Result<(), ConfigError> {
        let bad = |key: &str, value: &dyn Display, why: &str| {
            Err(ConfigError(format!("{}: {why}", src.describe(key, value))))
        };
        let cpus = cpus_present();
        let p = &self.placement;
        if p.cores > cpus {
            return bad("cores", &p.cores, &format!("only {cpus} CPUs present"));
        }
        if let Some(&c) = p.cpu_list.0.iter().find(|&&c| c >= cpus) {
            let why = format!("CPU {c} does not exist (CPUs 0-{} present)", cpus - 1);
            return bad("cpu_list", &p.cpu_list, &why);
        }
        if !p.cpu_list.0.is_empty() && p.cores > p.cpu_list.0.len() {
            let why = format!("{} CPUs listed for {} shards", p.cpu_list.0.len(), p.cores);
            return bad("cpu_list", &p.cpu_list, &why);
        }
        if p.io_memory < 64 << 10 {
            return bad("io_memory", &p.io_memory, "must be at least 65536");
        }
        if p.io_uring_buffers == 0
            || !p.io_uring_buffers.is_power_of_two()
            || p.io_uring_buffers > 32768
        {
            let why = "must be a power of two from 1 to 32768";
            return bad("io_uring_buffers", &p.io_uring_buffers, why);
        }
        if p.io_uring_buffer_size < 64 {
            return bad(
                "io_uring_buffer_size",
                &p.io_uring_buffer_size,
                "must be at least 64",
            );
        }
        if p.io_uring_send_zc != 0 && p.io_uring_send_zc < 1024 {
            let why = "must be 0 (off) or at least 1024";
            return bad("io_uring_send_zc", &p.io_uring_send_zc, why);
        }
        if p.idle_spin_us > 10_000 {
            let why = "must be at most 10000 (10 ms)";
            return bad("idle_spin_us", &p.idle_spin_us, why);
        }
        if p.mesh_capacity == 0 {
            return bad("mesh_capacity", &0, "must be at least 1");
        }
        let l = &self.listeners;
        if l.listen.is_empty() {
            return bad("listen", &"", "at least one listener is needed");
        }
        if let Some(dup) = (1..l.listen.len()).find(|&i| l.listen[..i].contains(&l.listen[i])) {
            return bad("listen", &l.listen[dup], "listed twice");
        }
        for u in &l.listen {
            let o = &u.options;
            if u.scheme.is_tls() {
                if o.cert.is_none() && l.tls_cert.0.is_none() {
                    return bad("listen", u, "a TLS listener needs tls_cert (or ?cert=FILE)");
                }
                if o.key.is_none() && l.tls_key.0.is_none() {
                    return bad("listen", u, "a TLS listener needs tls_key (or ?key=FILE)");
                }
                let require = o.require_client_cert.unwrap_or(l.tls_require_client_cert);
                if require && o.client_ca.is_none() && l.tls_client_ca.0.is_none() {
                    let why = "require_client_cert needs tls_client_ca (or ?client_ca=FILE)";
                    return bad("listen", u, why);
                }
            }
        }
        if l.backlog == 0 {
            return bad("backlog", &0, "must be at least 1");
        }
        if let Some(f) = &self.auth.password_file.0 {
            if let Err(e) = ringmq_shard::access::passwd::PasswordFile::load(f) {
                let why = match e.line {
                    0 => e.what,
                    n => format!("line {n}: {}", e.what),
                };
                return bad("password_file", &f.display(), &why);
            }
        }
        self.validate_limits(src)?;
        let d = &self.persistence;
        if d.durability == Durability::Batch && d.batch_interval_ms == 0 {
            return bad(
                "batch_interval_ms",
                &0,
                "must be at least 1 with durability batch",
            );
        }
        if d.data_dir.as_os_str().is_empty() {
            return bad("data_dir", &"\"\"", "must not be empty");
        }
        let a = &self.authz;
        if let Some(f) = &a.acl_file.0 {
            // Read and parsed now: a broker never starts on rules it cannot read.
            if let Err(e) = ringmq_shard::access::acl::Acl::load(f) {
                return bad("acl_file", &a.acl_file, &e.to_string());
            }
        }
        if a.auth_fail_max > 0 && a.auth_fail_window_secs == 0 {
            return bad(
                "auth_fail_window_secs",
                &0,
                "must be at least 1 (or auth_fail_max 0)",
            );
        }
        if a.auth_fail_max > 0 && a.auth_fail_ban_secs == 0 {
            return bad(
                "auth_fail_ban_secs",
                &0,
                "must be at least 1 (or auth_fail_max 0)",
            );
        }
        let level = &self.logging.log_level;
        if let Err(e) = crate::logging::parse_filter(level) {
            return bad("log_level", level, &e);
        }
        self.validate_cluster(src)?;
        self.validate_links(src)
    }

    fn validate_limits(&self, src: &Sources) -> Result<(), ConfigError> {
        let bad = |key: &str, value: &dyn Display, why: &str| {
            Err(ConfigError(format!("{}: {why}", src.describe(key, value))))
        };
        let m = &self.limits;
        // v5 3.1.2.11.4: Maximum Packet Size zero is a Protocol Error; the
        // Remaining Length cannot exceed 268,435,455 (plus 5 header bytes).
        if !(16..=268_435_460).contains(&m.max_packet_size) {
            let v = m.max_packet_size;
            return bad("max_packet_size", &v, "must be in 16..=268435460");
        }
        // v5 3.1.2.11.3: Receive Maximum zero is a Protocol Error.
        if m.receive_maximum == 0 {
            return bad("receive_maximum", &0, "must be at least 1");
        }
        // [MQTT-1.5.4-1]: strings are at most 65,535 bytes.
        if !(1..=65_535).contains(&m.max_topic_length) {
            let v = m.max_topic_length;
            return bad("max_topic_length", &v, "must be in 1..=65535");
        }
        if m.max_topic_levels == 0 {
            return bad("max_topic_levels", &0, "must be at least 1");
        }
        // [MQTT-3.1.3-5]: 1-23 bytes of 0-9a-zA-Z MUST be allowed; strings
        // are at most 65,535 bytes [MQTT-1.5.4-1].
        if !(23..=65_535).contains(&m.max_client_id_length) {
            let v = m.max_client_id_length;
            return bad("max_client_id_length", &v, "must be in 23..=65535");
        }
        if m.max_connections == 0 {
            return bad("max_connections", &0, "must be at least 1");
        }
        if m.max_subscriptions_per_client == 0 {
            return bad("max_subscriptions_per_client", &0, "must be at least 1");
        }
        if m.outbound_buffer_bytes < 1024 {
            let v = m.outbound_buffer_bytes;
            return bad("outbound_buffer_bytes", &v, "must be at least 1024");
        }
        if m.retained_replay_batch == 0 {
            return bad("retained_replay_batch", &0, "must be at least 1");
        }
        if m.packet_timeout_ms == 0 {
            return bad("packet_timeout_ms", &0, "must be at least 1");
        }
        // One packet of the largest size must fit, or it could never complete.
        if m.partial_packet_budget < m.max_packet_size as usize {
            let v = m.partial_packet_budget;
            let why = format!("must be at least max_packet_size ({})", m.max_packet_size);
            return bad("partial_packet_budget", &v, &why);
        }
        if m.slow_consumer_timeout_ms == 0 {
            return bad("slow_consumer_timeout_ms", &0, "must be at least 1");
        }
        // A message larger than the budget could never be held.
        let q = self.sessions.max_queued_bytes;
        if q < u64::from(m.max_packet_size) || q > u64::from(u32::MAX) {
            let why = "must be in max_packet_size..=4294967295";
            return bad("max_queued_bytes", &q, why);
        }
        Ok(())
    }
}
