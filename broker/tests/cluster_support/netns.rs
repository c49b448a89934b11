//! Real network partitions for multi-process tests: each node in its own
//! network namespace, joined to a bridge in the test's namespace by a veth
//! pair; taking a node's veth down cuts it off (cluster port and MQTT port
//! alike), bringing it up heals. Nothing global is touched (no firewall
//! rules); names carry the test's PID; everything is deleted on drop.
//! Needs root (CAP_NET_ADMIN) and `ip`: [`Net::create`] returns `None`
//! otherwise and the test says it skipped.

use std::process::Command;

pub struct Net {
    tag: String,
    subnet: u8,
    nodes: usize,
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

impl Net {
    /// A bridge and `nodes` namespaces, or None when this host cannot.
    pub fn create(nodes: usize) -> Option<Net> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        let pid = std::process::id();
        let net = Net {
            tag: format!("rq{}", pid % 100_000),
            subnet: (pid % 200 + 20) as u8,
            nodes,
        };
        let br = net.bridge();
        let gw = format!("10.213.{}.254/24", net.subnet);
        let ok = ip(&["link", "add", &br, "type", "bridge"])
            && ip(&["addr", "add", &gw, "dev", &br])
            && ip(&["link", "set", &br, "up"])
            && (1..=nodes).all(|i| net.add_node(i));
        if !ok {
            drop(net);
            return None;
        }
        Some(net)
    }

    fn bridge(&self) -> String {
        format!("b{}", self.tag)
    }

    pub fn ns(&self, i: usize) -> String {
        format!("{}n{i}", self.tag)
    }

    fn veth(&self, i: usize) -> String {
        format!("v{}x{i}", self.tag)
    }

    fn peer(&self, i: usize) -> String {
        format!("p{}x{i}", self.tag)
    }

    /// Node `i`'s address (inside its namespace, reachable from the test's).
    pub fn addr(&self, i: usize) -> String {
        format!("10.213.{}.{i}", self.subnet)
    }

    fn add_node(&self, i: usize) -> bool {
        let (ns, v, p) = (self.ns(i), self.veth(i), self.peer(i));
        let a = format!("{}/24", self.addr(i));
        ip(&["netns", "add", &ns])
            && ip(&["link", "add", &v, "type", "veth", "peer", "name", &p])
            && ip(&["link", "set", &p, "netns", &ns])
            && ip(&["-n", &ns, "addr", "add", &a, "dev", &p])
            && ip(&["-n", &ns, "link", "set", &p, "up"])
            && ip(&["-n", &ns, "link", "set", "lo", "up"])
            && ip(&["link", "set", &v, "master", &self.bridge()])
            && ip(&["link", "set", &v, "up"])
    }

    /// Cuts node `i` off from everyone (the others and the test's clients).
    pub fn cut(&self, i: usize) {
        assert!(ip(&["link", "set", &self.veth(i), "down"]), "ip link down");
    }

    /// Cuts nodes `i` and `j` off from each other only (a blackhole route
    /// in each one's namespace); both still reach the others and the test.
    pub fn cut_between(&self, i: usize, j: usize) {
        for (a, b) in [(i, j), (j, i)] {
            let to = format!("{}/32", self.addr(b));
            let ok = ip(&["-n", &self.ns(a), "route", "add", "blackhole", &to]);
            assert!(ok, "ip route add blackhole");
        }
    }

    /// Undoes [`Net::cut_between`].
    pub fn heal_between(&self, i: usize, j: usize) {
        for (a, b) in [(i, j), (j, i)] {
            let to = format!("{}/32", self.addr(b));
            let ok = ip(&["-n", &self.ns(a), "route", "del", "blackhole", &to]);
            assert!(ok, "ip route del blackhole");
        }
    }

    /// Reconnects node `i`.
    pub fn heal(&self, i: usize) {
        assert!(ip(&["link", "set", &self.veth(i), "up"]), "ip link up");
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for i in 1..=self.nodes {
            let _ = ip(&["link", "del", &self.veth(i)]);
            let _ = ip(&["netns", "del", &self.ns(i)]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}
