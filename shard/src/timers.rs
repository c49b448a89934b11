//! Periodic work of a shard: expiring offline sessions.

use crate::shard::Shard;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Removes sessions whose Session Expiry Interval has passed since their
/// connection closed [MQTT-4.1.0-?] (v5 3.1.2.11.2). Runs once a second.
pub(crate) async fn expiry_sweep(shard: Rc<Shard>) {
    loop {
        glommio::timer::sleep(Duration::from_secs(1)).await;
        if shard.stopping.get() {
            return;
        }
        let now = Instant::now();
        let expired: Vec<u32> = shard
            .sessions
            .borrow()
            .iter()
            .filter(|(_, s)| {
                s.conn.is_none()
                    && s.expiry != u32::MAX
                    && s.disconnected_at.get().is_some_and(|t| {
                        now.saturating_duration_since(t) >= Duration::from_secs(s.expiry as u64)
                    })
            })
            .map(|(id, _)| id as u32)
            .collect();
        for sid in expired {
            crate::connect::remove_session(&shard, sid);
        }
    }
}
