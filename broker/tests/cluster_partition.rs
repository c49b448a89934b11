//! Issue 14: a partition over real processes. Three `ringmq --cores 1` binaries, each in its own
//! network namespace on a bridge (`cluster_support::netns`; root only, skipped otherwise), clients
//! we did not write (mosquitto_sub/pub). The node cut off refuses CONNECT with "Server
//! unavailable"; the majority keeps its leader, routes and deliveries and loses nothing it
//! acknowledged (a QoS 1 message for the cut node's subscriber is acknowledged from node 1's
//! outbox); the links notice the silence and read as down; healed, routes made meanwhile
//! resync, the outbox copy arrives and messages flow to the returning node again.
mod cluster_support;
mod common;

use cluster_support::mosq::{
    collect, link_up, publish_acked, publish_one, wait_links, Sub, SETTLE,
};
use cluster_support::{netns::Net, Cluster};
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn a_partitioned_node_refuses_the_majority_keeps_serving_and_healing_resyncs() {
    let Some(net) = Net::create(3) else {
        eprintln!("skipped: needs root and `ip` to make network namespaces");
        return;
    };
    // Under --durability sync (the default) a QoS 1 publish waits for every node with
    // subscribers on its topic, node 3 included, at most --cluster-ack-timeout.
    let c = Cluster::start_in(&net, 3, &["--cluster-ack-timeout", "1000"]);
    c.wait_leader(&[1, 2, 3]);
    wait_links(&c, &[1, 2, 3]);
    let s1 = Sub::start(c.get(1), "part-s1", "part/x", &["-q", "1"]);
    let s2 = Sub::start(c.get(2), "part-s2", "part/x", &["-q", "1"]);
    let s3 = Sub::start(c.get(3), "part-s3", "part/x", &["-q", "1"]);
    common::check_for_blocking(SETTLE, "node 1 has the routes of nodes 2 and 3", || {
        let s = c.get(1).status()?;
        let ls = s["links"].as_array()?;
        ls.iter()
            .all(|l| l["peer_routes"].as_u64() >= Some(1))
            .then_some(())
    });
    let before: Vec<String> = (0..3).map(|i| format!("before-{i}")).collect();
    publish_acked(c.get(1), "part-p1", "part/x", &before);
    for (n, s) in [(1, &s1), (2, &s2), (3, &s3)] {
        let got = collect(s, "part/x", &before, Duration::from_secs(10));
        assert_eq!(got, before, "node {n} before the cut");
    }

    // Node 3 cut off: nodes 1 and 2 see its link go down (it is silent, not closed).
    net.cut(3);
    let t = Instant::now();
    common::check_for_blocking(SETTLE, "links to node 3 down on nodes 1 and 2", || {
        (link_up(&c, 1, 3) == Some(false) && link_up(&c, 2, 3) == Some(false)).then_some(())
    });
    eprintln!("links to the cut node read as down after {:?}", t.elapsed());
    let (leader, _) = c.wait_leader(&[1, 2]);
    assert_ne!(leader, 3);

    // The majority: a subscription made now gets its SUBACK (no wait for node 3), and
    // every message acknowledged to the publisher reaches both majority subscribers.
    let s2b = Sub::start(c.get(2), "part-s2b", "part2/x", &["-q", "1"]);
    common::check_for_blocking(SETTLE, "node 1 has node 2's new route", || {
        let s = c.get(1).status()?;
        let l = s["links"]
            .as_array()?
            .iter()
            .find(|l| l["peer"] == 2)?
            .clone();
        (l["peer_routes"].as_u64() >= Some(2)).then_some(())
    });
    // A topic only the majority subscribes to: acknowledged at once, nothing lost.
    let during: Vec<String> = (0..20).map(|i| format!("during-{i}")).collect();
    for m in &during {
        let err = publish_one(c.get(1), "part-p1", "part2/x", m);
        assert!(err.is_empty(), "{m} refused during the partition: {err}");
    }
    assert_eq!(
        collect(&s2b, "part2/x", &during, Duration::from_secs(10)),
        during
    );
    // A topic the cut node subscribes to: its durable copy cannot be had there, so it is
    // stored in node 1's outbox and the publish acknowledged (docs/cluster-data-plane.md,
    // "Durable outbox"); the majority's subscribers get it now, node 3's after the heal.
    let held = "held-0".to_string();
    let err = publish_one(c.get(1), "part-p1", "part/x", &held);
    assert!(err.is_empty(), "refused while node 3 is cut off: {err:?}");
    for s in [&s1, &s2] {
        let want = std::slice::from_ref(&held);
        assert_eq!(collect(s, "part/x", want, Duration::from_secs(10)), want);
    }
    let l = c.get(1).status().expect("status")["links"]
        .as_array()
        .expect("links")
        .iter()
        .find(|l| l["peer"] == 3)
        .cloned()
        .expect("link to 3");
    assert_eq!(l["outbox_rows"], 1, "{l}");

    // The minority: CONNECT refused with "Server unavailable", v5 and 3.1.1, bounded.
    for v in ["mqttv5", "mqttv311"] {
        let t = Instant::now();
        let out = Command::new("ip")
            .args(["netns", "exec", &net.ns(3), "mosquitto_pub"])
            .args(["-h", &net.addr(3), "-p", "1883", "-V", v])
            .args(["-i", "part-minority", "-t", "part/x", "-m", "x"])
            .output()
            .expect("run mosquitto_pub");
        let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(!out.status.success(), "{v}: published on a minority");
        assert!(err.contains("unavailable"), "{v}: {err}");
        assert!(
            t.elapsed() < Duration::from_secs(8),
            "{v}: {:?}",
            t.elapsed()
        );
    }

    // Healed: links up again, one leader; the route node 2 made meanwhile reached node 3
    // (a publish on node 3 gets to part-s2b on node 2), and node 3 gets messages again.
    net.heal(3);
    c.wait_leader(&[1, 2, 3]);
    wait_links(&c, &[1, 2, 3]);
    // The copy node 1 held for node 3 reaches its subscriber, still connected there.
    let want = std::slice::from_ref(&held);
    assert_eq!(
        collect(&s3, "part/x", want, Duration::from_secs(10)),
        want,
        "the outbox copy after the heal"
    );
    let from3 = vec!["from-3".to_string()];
    common::check_for_blocking(SETTLE, "node 3 knows node 2's part2/x route", || {
        let s = c.get(3).status()?;
        let l = s["links"]
            .as_array()?
            .iter()
            .find(|l| l["peer"] == 2)?
            .clone();
        (l["peer_routes"].as_u64() >= Some(2)).then_some(())
    });
    publish_acked(c.get(3), "part-p3", "part2/x", &from3);
    assert_eq!(
        collect(&s2b, "part2/x", &from3, Duration::from_secs(10)),
        from3
    );
    let s3b = Sub::start(c.get(3), "part-s3b", "part/x", &["-q", "1"]);
    common::check_for_blocking(SETTLE, "node 1 has node 3's routes again", || {
        let s = c.get(1).status()?;
        let l = s["links"]
            .as_array()?
            .iter()
            .find(|l| l["peer"] == 3)?
            .clone();
        (l["peer_routes"].as_u64() >= Some(1) && l["up"] == true).then_some(())
    });
    let after: Vec<String> = (0..3).map(|i| format!("after-{i}")).collect();
    publish_acked(c.get(1), "part-p1", "part/x", &after);
    assert_eq!(
        collect(&s3b, "part/x", &after, Duration::from_secs(10)),
        after
    );
    assert_eq!(
        collect(&s1, "part/x", &after, Duration::from_secs(10)),
        after
    );
}
