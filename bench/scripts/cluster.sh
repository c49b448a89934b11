#!/usr/bin/env bash
# Cross-node vs same-node delivery on a three-node ringmq cluster (issue 14): three `ringmq`
# processes on 127.0.0.1, `--cores 1` each, durability none; the publishers always on node 1,
# the subscribers on node 1 (same node) or node 2 (`--sub-port`, cross node). Per row: the
# generator's throughput and end-to-end latency, and the CPU seconds each node spent during
# the run (from /proc/PID/stat), so the cost of the node link shows even on a shared machine.
# Writes bench/results/<date>-cluster.md (RESULTS= to override, RESULTS=- for stdout only).
#
#   bench/scripts/cluster.sh
#   NOTE="machine shared with other jobs" DURATION=5 bench/scripts/cluster.sh
#
# Environment: CARGO_TARGET_DIR (default target), DURATION (5 s measured), WARMUP (1 s),
# PAIRS (50), PAYLOAD (64), RATE ("" = closed loop; e.g. 2000 per publisher for latency at a
# fixed load), BASE (a free port range start, default 26100), NOTE, BUILD (0: binaries built),
# DURABILITY (none; `sync` runs the QoS 1 rows only, with data dirs on disk: the cross-node
# PUBACK then waits for node 2's durable copy; results in <date>-cluster-sync.md).
#
#   DURABILITY=sync NOTE="shared machine" bench/scripts/cluster.sh
#
# Under `sync`, QOS (1) picks the QoS of its rows and GEN_ARGS adds generator flags: QoS 2 from
# persistent sessions (`QOS=2 GEN_ARGS=--no-clean-start`) takes the prepare path across nodes
# (docs/cluster-data-plane.md, "Exactly once across a crash of the publisher's node").
# RINGMQ / BENCH name other binaries (an A/B against another build), RT=1 runs nodes and
# generator SCHED_FIFO (`chrt -f 50`), ROWS (a regex) runs only the rows whose label matches.
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${CARGO_TARGET_DIR:-target}"
RINGMQ="${RINGMQ:-$target/release/ringmq}"
BENCH="${BENCH:-$target/release/ringmq-bench}"
QOS="${QOS:-1}"
rt=()
if [[ "${RT:-0}" == 1 ]]; then rt=(chrt -f 50); fi
DURATION="${DURATION:-5}"
WARMUP="${WARMUP:-1}"
PAIRS="${PAIRS:-50}"
PAYLOAD="${PAYLOAD:-64}"
BASE="${BASE:-26100}"
DURABILITY="${DURABILITY:-none}"
if [[ "${BUILD:-1}" == 1 ]]; then
    cargo build --release -q -p ringmq-broker -p ringmq-bench
fi
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    cp "$work"/n*.log /tmp/ 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
peers="1@127.0.0.1:$((BASE + 10)),2@127.0.0.1:$((BASE + 20)),3@127.0.0.1:$((BASE + 30))"
for n in 1 2 3; do
    mkdir -p "$work/d$n"
    "${rt[@]}" "$RINGMQ" --node-id "$n" --cluster-peers "$peers" --listen "mqtt://127.0.0.1:$((BASE + n))" \
        --allow-anonymous true --cores 1 --durability "$DURABILITY" --sys-interval-secs 0 \
        --max-queued-messages 100000 --data-dir "$work/d$n" --log-level warn \
        >"$work/n$n.log" 2>&1 &
    pids+=($!)
done
ctl() { "$RINGMQ" ctl --data-dir "$work/d$1" "${@:2}"; }
for n in 1 2 3; do
    for _ in $(seq 1 300); do
        if ctl "$n" --json cluster status 2>/dev/null | python3 -c '
import json, sys
s = json.load(sys.stdin)
links = s.get("links", [])
sys.exit(0 if s.get("leader") and len(links) == 2 and all(l["up"] for l in links) else 1)' 2>/dev/null; then
            break
        fi
        sleep 0.1
    done
done
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tck=$(getconf CLK_TCK)
rows=()
run() { # label scenario-args...
    local label=$1
    shift
    # ROWS (a regex on the label): only those rows, e.g. one per fresh cluster when the
    # sessions persist (GEN_ARGS=--no-clean-start) and would carry over to the next row.
    if [[ -n "${ROWS:-}" && ! "$label" =~ $ROWS ]]; then return 0; fi
    local before=() after=()
    for p in "${pids[@]}"; do before+=("$(cpu "$p")"); done
    "${rt[@]}" "$BENCH" "$@" --payload "$PAYLOAD" --duration "$DURATION" --warmup "$WARMUP" \
        ${RATE:+--rate "$RATE"} ${GEN_ARGS:-} --json -q >"$work/out.json"
    for p in "${pids[@]}"; do after+=("$(cpu "$p")"); done
    local cpus=""
    for i in 0 1 2; do
        cpus+=$(python3 -c "print(f'{(${after[$i]} - ${before[$i]}) / $tck:.2f}')")" / "
    done
    rows+=("$(python3 - "$label" "$work/out.json" "${cpus% / }" <<'PY'
import json, sys
label, path, cpus = sys.argv[1], sys.argv[2], sys.argv[3]
s = json.load(open(path))
lat = s["latency"]
def ms(k):
    v = lat.get(k)
    return f"{v / 1e3:.2f}" if isinstance(v, (int, float)) else "-"
print(f"| {label} | {s['delivered_per_sec']:,.0f} | {ms('p50_us')} | {ms('p99_us')} | "
      f"{s['lost']} | {s['duplicated']} | {s['out_of_order']} | {cpus} |")
PY
)")
}
p1=$((BASE + 1)) p2=$((BASE + 2))
if [[ "$DURABILITY" == none ]]; then
    run "QoS 0 pairs, same node (1 -> 1)" pairs --pairs "$PAIRS" --qos 0 -p "$p1"
    run "QoS 0 pairs, cross node (1 -> 2)" pairs --pairs "$PAIRS" --qos 0 -p "$p1" --sub-port "$p2"
fi
run "QoS $QOS pairs, same node (1 -> 1)" pairs --pairs "$PAIRS" --qos "$QOS" -p "$p1"
run "QoS $QOS pairs, cross node (1 -> 2)" pairs --pairs "$PAIRS" --qos "$QOS" -p "$p1" --sub-port "$p2"
if [[ "$DURABILITY" == none ]]; then
    run "QoS 0 1 pair, same node" pairs --pairs 1 --qos 0 -p "$p1" --rate 1000
    run "QoS 0 1 pair, cross node" pairs --pairs 1 --qos 0 -p "$p1" --sub-port "$p2" --rate 1000
else
    run "QoS $QOS 1 pair at 1000/s, same node" pairs --pairs 1 --qos "$QOS" -p "$p1" --rate 1000
    run "QoS $QOS 1 pair at 1000/s, cross node" pairs --pairs 1 --qos "$QOS" -p "$p1" --sub-port "$p2" --rate 1000
fi
ctl 1 --json cluster status >"$work/status.json"
links=$(python3 - "$work/status.json" <<'PY'
import json, sys
for l in json.load(open(sys.argv[1]))["links"]:
    b = max(l["batches_out"], 1)
    print(f"- node 1 -> node {l['peer']}: {l['msgs_out']:,} publishes, {l['bytes_out']:,} bytes in "
          f"{l['batches_out']:,} writes ({l['msgs_out'] / b:.1f} publishes per write), "
          f"dropped {l['dropped']}, rtt {l['rtt_us']} us, acked copies {l.get('acked_out', 0):,}, "
          f"ack timeouts {l.get('ack_timeouts', 0)}")
PY
)
commit="$(git rev-parse --short HEAD)"
if ! git diff --quiet HEAD -- shard broker codec bench 2>/dev/null; then commit="$commit (+ uncommitted changes)"; fi
report=$(
    echo "# Cluster: cross-node vs same-node delivery (three ringmq processes)"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit"
    echo "- CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; kernel $(uname -r)"
    echo "- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- nodes: \`ringmq --node-id N --cluster-peers ... --cores 1 --durability $DURABILITY --sys-interval-secs 0\`, unpinned, all on this machine with the generator"
    echo "- load: \`ringmq-bench pairs --payload $PAYLOAD --duration $DURATION --warmup $WARMUP${RATE:+ --rate $RATE}${GEN_ARGS:+ $GEN_ARGS}\`, publishers on node 1, subscribers on node 1 or node 2 (\`--sub-port\`)"
    echo "- binaries: \`$RINGMQ\`, \`$BENCH\`"
    if [[ ${#rt[@]} -gt 0 ]]; then echo "- nodes and generator run SCHED_FIFO (\`chrt -f 50\`)"; fi
    if [[ -n "${NOTE:-}" ]]; then echo "- note: $NOTE"; fi
    echo
    echo "| scenario | deliveries/s | p50 ms | p99 ms | lost | dup | out of order | CPU s node 1 / 2 / 3 |"
    echo "|---|---:|---:|---:|---:|---:|---:|---|"
    printf '%s\n' "${rows[@]}"
    echo
    echo "Node links after the runs (\`ringmq ctl cluster status --json\`):"
    echo
    echo "$links"
)
echo "$report"
suffix=""
if [[ "$DURABILITY" != none ]]; then suffix="-$DURABILITY"; fi
out="${RESULTS:-bench/results/$(date -u +%Y-%m-%d)-cluster$suffix.md}"
if [[ "$out" != - ]]; then echo "$report" >"$out"; echo "wrote $out" >&2; fi
