#!/usr/bin/env bash
# What the durable outbox (hinted handoff, shard/src/cluster/outbox.rs) costs a publisher's
# node while a subscriber node is down, and how fast it resends when that node returns
# (issue 14). Three `ringmq --cores 1 --durability sync` processes on 127.0.0.1: node 1
# pinned to CPU 0, nodes 2 and 3 to CPU 1. Node 3 holds a persistent session (v5, session
# expiry 1 h, `mosquitto_sub -c`) subscribed to `bench/pairs/#` at QoS 1, so every QoS 1
# publish of the generator's pairs on node 1 (publishers and subscribers on node 1) also
# makes an acked copy for node 3: with node 3 up the publisher's PUBACK waits for node 3's
# `Durable`; with node 3 killed (kill -9) the copy is written to node 1's outbox (LMDB,
# shard 0) and the PUBACK waits for that commit instead.
#
# Rows: the same loads with all nodes up, then with node 3 killed; per row the generator's
# deliveries/s and end-to-end p50/p99 (node 1 -> node 1), node 1's CPU seconds and what
# its outbox stored. Then node 3 is restarted and node 1's outbox drain is timed from
# `ctl cluster status` every 0.1 s: rows sent per second until the outbox is empty.
# Writes bench/results/<date>-cluster-outbox.md (RESULTS= to override, RESULTS=- stdout).
#
# Environment: CARGO_TARGET_DIR, BUILD (1), BASE (26300), DURATION (5), WARMUP (1),
# PAYLOAD (64), RATE_PAIRS (10: the fixed-rate row's pairs at 1000/s), PAIRS (20: the
# unlimited row's pairs), RT (1: nodes and generator SCHED_FIFO: nodes `chrt -f 50`,
# generator `chrt -f 40`, see cluster.sh for placement), OUTBOX_BYTES (2 GiB), NOTE.
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${CARGO_TARGET_DIR:-target}"
RINGMQ="${RINGMQ:-$target/release/ringmq}"
BENCH="${BENCH:-$target/release/ringmq-bench}"
DURATION="${DURATION:-5}"
WARMUP="${WARMUP:-1}"
PAYLOAD="${PAYLOAD:-64}"
BASE="${BASE:-26300}"
RATE_PAIRS="${RATE_PAIRS:-10}"
PAIRS="${PAIRS:-20}"
OUTBOX_BYTES="${OUTBOX_BYTES:-2147483648}"
rt=() rt_gen=()
if [[ "${RT:-1}" == 1 ]]; then rt=(chrt -f 50) rt_gen=(chrt -f 40); fi
if [[ "${BUILD:-1}" == 1 ]]; then
    cargo build --release -q -p ringmq-broker -p ringmq-bench
fi
work=$(mktemp -d)
pids=()
declare -A node
cleanup() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    for p in "${node[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}" "${node[@]}"; do wait "$p" 2>/dev/null || true; done
    cp "$work"/n*.log /tmp/ 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
load_start="$(cut -d' ' -f1-3 /proc/loadavg)"
peers="1@127.0.0.1:$((BASE + 10)),2@127.0.0.1:$((BASE + 20)),3@127.0.0.1:$((BASE + 30))"
start() { # node
    local n=$1
    mkdir -p "$work/d$n"
    "${rt[@]}" "$RINGMQ" --node-id "$n" --cluster-peers "$peers" --listen "mqtt://127.0.0.1:$((BASE + n))" \
        --allow-anonymous true --cores 1 --cpu-list "$((n == 1 ? 0 : 1))" --durability sync \
        --sys-interval-secs 0 --max-queued-messages 10000000 --max-queued-bytes 4294967295 --cluster-outbox-max-bytes "$OUTBOX_BYTES" \
        --data-dir "$work/d$n" --log-level warn >>"$work/n$n.log" 2>&1 &
    node[$n]=$!
}
ctl() { "$RINGMQ" ctl --data-dir "$work/d$1" "${@:2}"; }
link3() { # prints node 1's link to node 3 as JSON
    ctl 1 --json cluster status | python3 -c '
import json, sys
print(json.dumps(next(l for l in json.load(sys.stdin)["links"] if l["peer"] == 3)))'
}
wait_links() { # node want(up|down-3): node's links all up, or its link to 3 down
    for _ in $(seq 1 300); do
        if ctl "$1" --json cluster status 2>/dev/null | python3 -c '
import json, sys
s, want = json.load(sys.stdin), sys.argv[1]
links = s.get("links", [])
if want == "up":
    ok = s.get("leader") and len(links) == 2 and all(l["up"] for l in links)
else:
    ok = any(l["peer"] == 3 and not l["up"] for l in links)
sys.exit(0 if ok else 1)' "$2" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "node $1: links not $2 after 30 s" >&2
    return 1
}
for n in 1 2 3; do start "$n"; done
for n in 1 2 3; do wait_links "$n" up; done
# The persistent session on node 3, connected while node 3 is up.
mosquitto_sub -h 127.0.0.1 -p $((BASE + 3)) -V mqttv5 -x 3600 -c -i clb-outbox-sub -q 1 \
    -t 'bench/pairs/#' >/dev/null 2>"$work/sub.err" &
sub=$!
pids+=("$sub")
sleep 1 # node 1 has node 3's route once node 3's route sync reached it (one link round trip)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tck=$(getconf CLK_TCK)
rows=()
run() { # label scenario-args...
    local label=$1
    shift
    local c0 c1 l0 l1
    c0=$(cpu "${node[1]}")
    l0=$(link3)
    ctl 1 --json metrics >"/tmp/clb-outbox-m${#rows[@]}a.json" 2>&1 || true
    "${rt_gen[@]}" "$BENCH" "$@" --payload "$PAYLOAD" --duration "$DURATION" --warmup "$WARMUP" \
        --no-pin --json -q >"$work/out.json"
    cp "$work/out.json" "/tmp/clb-outbox-row${#rows[@]}.json"
    c1=$(cpu "${node[1]}")
    l1=$(link3)
    ctl 1 --json metrics >"/tmp/clb-outbox-m${#rows[@]}b.json" 2>&1 || true
    rows+=("$(python3 - "$label" "$work/out.json" "$tck" "$c0" "$c1" "$l0" "$l1" <<'PY'
import json, sys
label, path, tck, c0, c1 = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
a, b = json.loads(sys.argv[6]), json.loads(sys.argv[7])
s = json.load(open(path))
lat = s["latency"]
secs = (c1 - c0) / tck
per = f"{secs * 1e9 / s['received']:,.0f}" if s["received"] else "-"
d = lambda k: b.get(k, 0) - a.get(k, 0)
print(f"| {label} | {s['sent_per_sec']:,.0f} | {s['delivered_per_sec']:,.0f} | {lat['p50_us'] / 1e3:.2f} | {lat['p99_us'] / 1e3:.2f} | {lat['max_us'] / 1e3:,.0f} | "
      f"{s['lost']} | {secs:.2f} | {per} | {d('acked_out'):,} | {d('outbox_stored'):,} | {d('outbox_refused'):,} | "
      f"{b.get('outbox_rows', 0):,} | {b.get('outbox_bytes', 0) / 1e6:,.1f} |")
PY
)")
}
rows_all() { # state
    run "$1: QoS 1, $RATE_PAIRS x 1000/s" pairs --pairs "$RATE_PAIRS" --qos 1 -p $((BASE + 1)) --rate 1000
    run "$1: QoS 1, $PAIRS pairs, unlimited" pairs --pairs "$PAIRS" --qos 1 -p $((BASE + 1))
}
rows_all "all up"
kill -9 "$sub" 2>/dev/null || true # mosquitto_sub blocks SIGTERM while it runs its loop
wait "$sub" 2>/dev/null || true
kill -9 "${node[3]}"
wait "${node[3]}" 2>/dev/null || true
down_at=$(date +%s.%N)
wait_links 1 down-3
sleep "${SETTLE:-4}" # past --node-down-after (3 s): node 3 is marked down in the metadata
rows_all "node 3 down"
run "node 3 down: QoS 1, $RATE_PAIRS x 1000/s, again" pairs --pairs "$RATE_PAIRS" --qos 1 -p $((BASE + 1)) --rate 1000
held=$(link3)
# Node 3 returns: time node 1's outbox drain.
start 3
drain=$(python3 - "$RINGMQ" "$work/d1" "$held" <<'PY'
import json, subprocess, sys, time
ringmq, d1, held = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
t0 = time.monotonic()
s = []  # (seconds since node 3's start, link)
while time.monotonic() - t0 < 120:
    out = subprocess.run([ringmq, "ctl", "--data-dir", d1, "--json", "cluster", "status"],
                         capture_output=True, text=True).stdout
    try:
        l = next(l for l in json.loads(out)["links"] if l["peer"] == 3)
    except (ValueError, StopIteration, KeyError):
        continue
    s.append((time.monotonic() - t0, l))
    if l["up"] and l["outbox_rows"] == 0:
        break
    time.sleep(0.02)
print(f"- node 3 restarted with {held['outbox_rows']:,} rows ({held['outbox_bytes'] / 1e6:,.1f} MB) in node 1's outbox for it; node 1's link polled {len(s)} times (`ctl cluster status`, every {s[-1][0] / max(len(s), 1) * 1000:.0f} ms on average)")
up = next((i for i, (_, l) in enumerate(s) if l["up"]), None)
if up is None:
    print("- the link did not come up within 120 s"); sys.exit()
end_t, end = s[-1]
sent = end["outbox_sent"] - held["outbox_sent"]
before = s[up - 1][0] if up > 0 else 0.0
print(f"- link seen up {s[up][0]:.2f} s after node 3's start (down at {before:.2f} s); outbox empty at {end_t:.2f} s; {end['outbox_rows']:,} left, dropped {end['outbox_dropped'] - held['outbox_dropped']}")
for t, l in s[max(up - 1, 0):]:
    print(f"  - {t:6.2f} s: up {l['up']}, rows {l['outbox_rows']:,}, sent {l['outbox_sent'] - held['outbox_sent']:,}")
span = end_t - before
print(f"- {sent:,} rows resent and answered `Durable` (deleted) within {span:.2f} s of the last sample with the link down: at least {sent / max(span, 1e-9):,.0f} rows/s")
PY
)
ctl 3 --json sessions >/tmp/clb-outbox-n3-sessions.json 2>&1 || true
n3=$(python3 -c '
import json, sys
t = open(sys.argv[1]).read()
try:
    j = json.loads(t)
except ValueError:
    print(t[:200]); sys.exit()
ss = j if isinstance(j, list) else j.get("sessions", j)
for x in (ss if isinstance(ss, list) else [ss]):
    if "clb-outbox-sub" in json.dumps(x):
        print(json.dumps(x)[:400])' /tmp/clb-outbox-n3-sessions.json)
drain+=$'\n'"- node 3's session afterwards (\`ctl sessions\`): $n3"
commit="$(git rev-parse --short HEAD)"
if ! git diff --quiet HEAD -- shard broker codec bench 2>/dev/null; then commit="$commit (+ uncommitted changes)"; fi
report=$(
    echo "# Cluster: the durable outbox's cost while a subscriber node is down (three ringmq processes)"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit, release build"
    echo "- CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; kernel $(uname -r)"
    echo "- load average: $load_start at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
    echo "- nodes: \`ringmq --node-id N --cluster-peers ... --cores 1 --durability sync --cluster-outbox-max-bytes $OUTBOX_BYTES --max-queued-messages 10000000 --max-queued-bytes 4294967295\`, data dirs under /tmp; node 1 on CPU 0, nodes 2 and 3 on CPU 1 (\`--cpu-list\`); generator unpinned"
    if [[ ${#rt[@]} -gt 0 ]]; then echo "- nodes \`chrt -f 50\`, generator \`chrt -f 40\`: FIFO, shared machine"; fi
    echo "- load: \`ringmq-bench pairs --qos 1 --payload $PAYLOAD --duration $DURATION --warmup $WARMUP\`, publishers and subscribers on node 1; node 3 holds a persistent v5 session subscribed to \`bench/pairs/#\` at QoS 1 (\`mosquitto_sub -c -x 3600\`, connected while node 3 is up), so every publish also makes an acked copy for node 3; then node 3 (and its subscriber) killed, kill -9"
    if [[ -n "${NOTE:-}" ]]; then echo "- note: $NOTE"; fi
    echo
    echo "p50/p99: publish to delivery on node 1 (the generator's subscribers); the PUBACK waits for node 3's \`Durable\` (up) or for node 1's commit of the outbox row (down). CPU ns per delivery: node 1's CPU time over the messages delivered (warm-up included). Link columns: node 1's link to node 3 (\`ctl cluster status\`), during the row; rows and MB held after it."
    echo
    echo "| state: load | publishes/s | deliveries/s | p50 ms | p99 ms | max ms | lost | CPU s node 1 | CPU ns per delivery node 1 | acked copies sent to node 3 | stored in outbox | refused | outbox rows | outbox MB |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    printf '%s\n' "${rows[@]}"
    echo
    echo "Node 3 returns (same data dir), node 1 idle; node 1's link to node 3 polled every 0.1 s:"
    echo
    echo "$drain"
)
echo "$report"
out="${RESULTS:-bench/results/$(date -u +%Y-%m-%d)-cluster-outbox.md}"
if [[ "$out" != - ]]; then echo "$report" >"$out"; echo "wrote $out" >&2; fi
