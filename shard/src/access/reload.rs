//! What SIGHUP and `ringmq ctl reload` re-read: a registry of named reload
//! functions (the ACL file here; the password file and the certificates
//! plug in theirs), each run and reported on its own.
//!
//! A reload function either puts new material in force and says what it
//! loaded, or keeps the old material and says why (file and line): a file
//! that fails to parse never leaves the broker with no rules.

use std::sync::Mutex;

/// One part's reload result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// What was reloaded (`acl`, `passwords`, `certificates`).
    pub name: String,
    pub ok: bool,
    /// What is now in force, or the error (previous material kept).
    pub message: String,
}

/// A reload function: `Ok(summary)` when the new material is in force,
/// `Err(error)` when the previous one is kept.
pub type ReloadFn = Box<dyn Fn() -> Result<String, String> + Send + Sync>;

/// Named reload functions, run in registration order.
#[derive(Default)]
pub struct Reloaders {
    items: Mutex<Vec<(String, ReloadFn)>>,
}

impl Reloaders {
    /// Adds (or replaces) the reload function called `name`.
    pub fn register(&self, name: &str, f: ReloadFn) {
        let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        items.retain(|(n, _)| n != name);
        items.push((name.to_string(), f));
    }

    /// Names registered.
    pub fn names(&self) -> Vec<String> {
        let items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        items.iter().map(|(n, _)| n.clone()).collect()
    }

    /// Runs every reload function; logs and returns each outcome.
    pub fn reload_all(&self) -> Vec<Outcome> {
        let items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        items
            .iter()
            .map(|(name, f)| {
                let (ok, message) = match f() {
                    Ok(m) => (true, m),
                    Err(e) => (false, e),
                };
                if ok {
                    tracing::info!(part = %name, "reloaded: {message}");
                } else {
                    tracing::error!(part = %name, "reload failed, previous kept in force: {message}");
                }
                Outcome {
                    name: name.clone(),
                    ok,
                    message,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[test]
    fn each_part_reported_separately_in_order() {
        let r = Reloaders::default();
        let n = Arc::new(AtomicU32::new(0));
        let n2 = n.clone();
        r.register(
            "a",
            Box::new(move || {
                n2.fetch_add(1, Ordering::Relaxed);
                Ok("fine".into())
            }),
        );
        r.register("b", Box::new(|| Err("f:3: bad".into())));
        let out = r.reload_all();
        assert_eq!(out.len(), 2);
        assert!(out[0].ok && out[0].name == "a");
        assert!(!out[1].ok && out[1].message == "f:3: bad");
        r.register("a", Box::new(|| Ok("again".into())));
        assert_eq!(r.names(), ["b", "a"]);
        assert_eq!(n.load(Ordering::Relaxed), 1);
    }
}
