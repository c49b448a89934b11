//! Human output of `ringmq ctl`: objects as `key: value` lines, lists of
//! objects as aligned tables (columns in the order the broker sends them),
//! anything else as indented JSON. `--json` bypasses this.

use serde_json::Value;

/// Renders a command's result for a terminal.
pub fn human(v: &Value) -> String {
    match v {
        Value::Array(rows) if rows.is_empty() => "(none)\n".to_string(),
        Value::Array(rows) if rows.iter().all(flat_object) => table(rows),
        Value::Object(map) if flat_object(v) => {
            let width = map.keys().map(String::len).max().unwrap_or(0);
            map.iter()
                .map(|(k, v)| format!("{k:<width$}  {}\n", cell(v)))
                .collect()
        }
        _ => serde_json::to_string_pretty(v).unwrap_or_default() + "\n",
    }
}

/// An object whose values are all scalars.
fn flat_object(v: &Value) -> bool {
    v.as_object()
        .is_some_and(|m| m.values().all(|x| !x.is_object() && !x.is_array()))
}

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.1}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// Columns shown first when present; the rest follow alphabetically.
const FIRST: &[&str] = &[
    "client_id",
    "topic",
    "filter",
    "node",
    "shard",
    "connected",
    "protocol",
    "peer",
];

fn table(rows: &[Value]) -> String {
    let mut cols: Vec<String> = Vec::new();
    for r in rows.iter().filter_map(Value::as_object) {
        for k in r.keys() {
            if !cols.contains(k) {
                cols.push(k.clone());
            }
        }
    }
    let rank = |c: &String| FIRST.iter().position(|f| f == c).unwrap_or(FIRST.len());
    cols.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.cmp(b)));
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            cols.iter()
                .map(|c| cell(r.get(c).unwrap_or(&Value::Null)))
                .collect()
        })
        .collect();
    let widths: Vec<usize> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].len())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |vals: &[String]| {
        let mut s = vals
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        s.truncate(s.trim_end().len());
        s + "\n"
    };
    let mut out = line(&cols.iter().map(|c| c.to_uppercase()).collect::<Vec<_>>());
    for r in &cells {
        out += &line(r);
    }
    out
}

/// After a cluster-wide `clients` table: one line per node, a node that did
/// not answer marked `NO ANSWER` with the reason (its clients are not listed).
pub fn node_answers(nodes: &Value) -> String {
    let mut out = String::new();
    for n in nodes.as_array().into_iter().flatten() {
        let id = n.get("node").map(cell).unwrap_or_default();
        if n.get("answered") == Some(&Value::Bool(true)) {
            let (all, shown) = (
                n.get("clients").and_then(Value::as_u64).unwrap_or(0),
                n.get("shown").and_then(Value::as_u64).unwrap_or(0),
            );
            if shown < all {
                out += &format!("node {id}: {all} clients, {shown} shown (--limit)\n");
            } else {
                out += &format!("node {id}: {all} clients\n");
            }
        } else {
            let why = n.get("error").map(cell).unwrap_or_else(|| "-".into());
            out += &format!("node {id}: NO ANSWER ({why}): its clients are not listed\n");
        }
    }
    out
}

/// `ringmq ctl cluster status`: this node's view, then one row per member.
pub fn cluster_status(v: &Value) -> String {
    let g = |k: &str| v.get(k).map(cell).unwrap_or_else(|| "-".into());
    let mut out = format!(
        "node {}  state {}  leader {}  term {}\nlog: last {}  committed {}  applied {}  snapshot {}  purged {}{}\n",
        g("id"),
        g("state"),
        g("leader"),
        g("term"),
        g("last_log_index"),
        g("committed"),
        g("applied"),
        g("snapshot"),
        g("purged"),
        if v.get("joint") == Some(&Value::Bool(true)) {
            "  (joint consensus in progress)"
        } else {
            ""
        },
    );
    let cols = [
        "id",
        "addr",
        "role",
        "up",
        "liveness",
        "matched",
        "lag",
        "last_ack_ms",
    ];
    let rows: Vec<Value> = v
        .get("nodes")
        .and_then(Value::as_array)
        .map(|nodes| {
            nodes
                .iter()
                .map(|n| {
                    let m: serde_json::Map<String, Value> = cols
                        .iter()
                        .map(|c| (c.to_string(), n.get(*c).cloned().unwrap_or(Value::Null)))
                        .collect();
                    Value::Object(m)
                })
                .collect()
        })
        .unwrap_or_default();
    out.push_str(&human(&Value::Array(rows)));
    if let Some(links) = v.get("links").and_then(Value::as_array) {
        if !links.is_empty() {
            let cols = [
                "peer",
                "up",
                "msgs_out",
                "msgs_in",
                "bytes_out",
                "bytes_in",
                "batches_out",
                "queue_bytes",
                "dropped",
                "rtt_us",
                "peer_routes",
            ];
            let rows: Vec<Value> = links
                .iter()
                .map(|l| {
                    let m: serde_json::Map<String, Value> = cols
                        .iter()
                        .map(|c| (c.to_string(), l.get(*c).cloned().unwrap_or(Value::Null)))
                        .collect();
                    Value::Object(m)
                })
                .collect();
            out.push_str("node links:\n");
            out.push_str(&human(&Value::Array(rows)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::human;
    use serde_json::json;

    #[test]
    fn tables_and_key_values() {
        let t = human(&json!([{"client_id": "a", "shard": 0}, {"client_id": "bbb", "shard": 1}]));
        assert_eq!(t, "CLIENT_ID  SHARD\na          0\nbbb        1\n");
        let kv = human(&json!({"shards": 2, "version": "0.1.0", "rate": 1.25}));
        assert!(
            kv.contains("shards   2\n") && kv.contains("rate     1.2"),
            "{kv}"
        );
        assert_eq!(human(&json!([])), "(none)\n");
        assert!(human(&json!({"shards": [{"x": 1}]})).contains("\"shards\""));
    }

    #[test]
    fn cluster_status_is_a_header_and_a_member_table() {
        let s = super::cluster_status(&json!({
            "id": 2, "leader": 1, "state": "follower", "term": 3, "last_log_index": 9,
            "committed": 9, "applied": 9, "snapshot": null, "purged": null, "joint": false,
            "nodes": [{"id": 1, "addr": "10.0.0.1:7101", "role": "leader", "up": true},
                      {"id": 2, "addr": "10.0.0.2:7101", "role": "voter", "up": false}]
        }));
        assert!(
            s.starts_with("node 2  state follower  leader 1  term 3\n"),
            "{s}"
        );
        assert!(s.contains("10.0.0.2:7101") && s.lines().count() == 5, "{s}");
    }
}
