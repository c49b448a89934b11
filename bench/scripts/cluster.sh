#!/usr/bin/env bash
# Cross-node vs same-node delivery on a three-node ringmq cluster (issue 14): three `ringmq`
# processes on 127.0.0.1, `--cores 1` each; node 1 pinned to CPU 0, node 2 to CPU 1 (node 3,
# idle, also on CPU 1: it is a member with no clients); the publishers always on node 1, the
# subscribers on node 1 (same node) or node 2 (`--sub-port`, cross node). Per row: the
# generator's throughput and end-to-end latency, the CPU seconds each node spent during the
# run (from /proc/PID/stat), and deliveries per CPU-second of node 1 and node 2 (what one
# node core does, the figure the sizing plan in docs/cluster.md is built on). Then the node
# link's throughput during the cross-node QoS 0 row (from `ctl cluster status`), and,
# with TAKEOVER=1, `ringmq-bench takeover`: a persistent session moved between the three
# nodes while a publisher on node 1 keeps publishing to it.
# Writes bench/results/<date>-cluster-<durability>.md (RESULTS= to override, RESULTS=- for
# stdout only).
#
#   DURABILITY=sync NOTE="shared machine" bench/scripts/cluster.sh
#   DURABILITY=none TAKEOVER=1 bench/scripts/cluster.sh
#
# Environment: CARGO_TARGET_DIR (default target), DURATION (5 s measured), WARMUP (1 s),
# PAIRS (50), PAYLOAD (64), BASE (a free port range start, default 26100), NOTE, BUILD (0:
# binaries built), DURABILITY (sync or none; data dirs on disk under /tmp either way), RT
# (1, default: nodes SCHED_FIFO `chrt -f 50`, ahead of compilers on a shared machine), RT_GEN
# (0; 1: the generator `chrt -f 40` too), PIN (1, default: node 1 on CPU 0, nodes 2 and 3 on CPU 1; 0: unpinned), ROWS
# (all, or `load`, `latency` to run a part), TAKEOVER (0; 1 adds the takeover run; MOVES
# 60, TAKEOVER_RATE 1000 msg/s, TAKEOVER_QOS 1), RINGMQ / BENCH (other binaries, for an A/B),
# GEN_ARGS (more generator flags, e.g. `--no-clean-start --mqtt 3.1.1`).
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${CARGO_TARGET_DIR:-target}"
RINGMQ="${RINGMQ:-$target/release/ringmq}"
BENCH="${BENCH:-$target/release/ringmq-bench}"
DURATION="${DURATION:-5}"
WARMUP="${WARMUP:-1}"
PAIRS="${PAIRS:-50}"
PAYLOAD="${PAYLOAD:-64}"
BASE="${BASE:-26100}"
DURABILITY="${DURABILITY:-sync}"
ROWS="${ROWS:-all}"
rt=() rt_gen=()
# The generator stays SCHED_OTHER unless RT_GEN=1. It shares both CPUs with the nodes, and in
# a saturating row a FIFO generator (even at 40, below the nodes) takes every moment a node
# leaves its CPU, so nothing SCHED_OTHER runs there for the whole row: ksoftirqd/0 stayed
# runnable with under 1 ms of CPU through a 6 s same-node row (SCHEDMON, 2026-12-05
# cluster-sync-fifo). Softirq work the kernel defers to ksoftirqd (loopback packets past the
# inline budget) then waits for the row to end: with the earlier glommio generator, which
# made fewer syscalls to run softirqs inline, node 1 went silent for 5-6 s (= the row) twice.
# With the per-core epoll generator the same run kept going. SCHEDMON=FILE records it.
if [[ "${RT:-1}" == 1 ]]; then rt=(chrt -f 50); fi
if [[ "${RT_GEN:-0}" == 1 ]]; then rt_gen=(chrt -f 40); fi
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
load_start="$(cut -d' ' -f1-3 /proc/loadavg)"
peers="1@127.0.0.1:$((BASE + 10)),2@127.0.0.1:$((BASE + 20)),3@127.0.0.1:$((BASE + 30))"
for n in 1 2 3; do
    mkdir -p "$work/d$n"
    place=(--pin false)
    if [[ "${PIN:-1}" == 1 ]]; then
        place=(--cpu-list "$((n == 1 ? 0 : 1))")
    fi
    "${rt[@]}" "$RINGMQ" --node-id "$n" --cluster-peers "$peers" --listen "mqtt://127.0.0.1:$((BASE + n))" \
        --allow-anonymous true --cores 1 "${place[@]}" --durability "$DURABILITY" --sys-interval-secs 0 \
        --max-queued-messages 100000 --data-dir "$work/d$n" --log-level warn \
        >"$work/n$n.log" 2>&1 &
    pids+=($!)
done
ctl() { "$RINGMQ" ctl --data-dir "$work/d$1" "${@:2}"; }
if [[ -n "${SCHEDMON:-}" ]]; then
    # What the scheduler gave each node and the softirq threads, every 0.1 s, to this file
    # (bench/scripts/schedmon.py); itself FIFO above everything so that it keeps sampling.
    chrt -f 60 python3 bench/scripts/schedmon.py --secs 900 n1="${pids[0]}" n2="${pids[1]}" n3="${pids[2]}" \
        >"$SCHEDMON" &
    pids+=($!)
fi
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
link_note=""
run() { # label scenario-args...
    local label=$1
    shift
    local before=() after=()
    for p in "${pids[@]}"; do before+=("$(cpu "$p")"); done
    "${rt_gen[@]}" "$BENCH" "$@" --payload "$PAYLOAD" --duration "$DURATION" --warmup "$WARMUP" \
        --no-pin ${GEN_ARGS:-} --json -q >"$work/out.json"
    for p in "${pids[@]}"; do after+=("$(cpu "$p")"); done
    local secs=()
    for i in 0 1 2; do secs+=("$(((${after[$i]} - ${before[$i]})))"); done
    rows+=("$(python3 - "$label" "$work/out.json" "$tck" "${secs[@]}" <<'PY'
import json, sys
label, path, tck = sys.argv[1], sys.argv[2], int(sys.argv[3])
secs = [int(t) / tck for t in sys.argv[4:7]]
s = json.load(open(path))
lat = s["latency"]
def ms(k):
    v = lat.get(k)
    return f"{v / 1e3:.2f}" if isinstance(v, (int, float)) else "-"
def per(c):
    return f"{s['received'] / c / 1e3:,.0f}k" if c >= 0.2 else "-"
cpus = " / ".join(f"{c:.2f}" for c in secs)
print(f"| {label} | {s['delivered_per_sec']:,.0f} | {ms('p50_us')} | {ms('p99_us')} | "
      f"{s['lost']} | {s['duplicated']} | {s['out_of_order']} | {cpus} | {per(secs[0])} | {per(secs[1])} |")
PY
)")
}
link_row() { # label json-before json-after (link 1 -> 2 during one row)
    python3 - "$1" "$2" "$3" "$DURATION" "$WARMUP" <<'PY'
import json, sys
label, a, b = sys.argv[1], json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
secs = float(sys.argv[4]) + float(sys.argv[5])
la = next(l for l in a["links"] if l["peer"] == 2)
lb = next(l for l in b["links"] if l["peer"] == 2)
d = {k: lb[k] - la[k] for k in ("msgs_out", "bytes_out", "batches_out")}
per = d["msgs_out"] / max(d["batches_out"], 1)
print(f"| {label} | {d['msgs_out']:,} | {d['msgs_out'] / secs:,.0f} | {d['bytes_out'] / secs / 1e6:,.1f} | "
      f"{d['batches_out']:,} | {per:,.0f} | {lb['rtt_us']} |")
PY
}
p1=$((BASE + 1)) p2=$((BASE + 2))
links=()
cross() { # label qos: a cross-node pairs row with the link's throughput during it
    ctl 1 --json cluster status >"$work/l0.json"
    run "$1" pairs --pairs "$PAIRS" --qos "$2" -p "$p1" --sub-port "$p2"
    ctl 1 --json cluster status >"$work/l1.json"
    links+=("$(link_row "$1" "$work/l0.json" "$work/l1.json")")
}
if [[ "$ROWS" == all || "$ROWS" == load ]]; then
    if [[ "$DURABILITY" == none ]]; then
        run "QoS 0, $PAIRS pairs, same node (1 -> 1)" pairs --pairs "$PAIRS" --qos 0 -p "$p1"
        cross "QoS 0, $PAIRS pairs, cross node (1 -> 2)" 0
    fi
    run "QoS 1, $PAIRS pairs, same node (1 -> 1)" pairs --pairs "$PAIRS" --qos 1 -p "$p1"
    cross "QoS 1, $PAIRS pairs, cross node (1 -> 2)" 1
fi
if [[ "$ROWS" == all || "$ROWS" == latency ]]; then
    qs=(1)
    if [[ "$DURABILITY" == none ]]; then qs=(0 1); fi
    for q in "${qs[@]}"; do
        for n in 1 10; do
            run "QoS $q, $n x 1000/s, same node" pairs --pairs "$n" --qos "$q" -p "$p1" --rate 1000
            run "QoS $q, $n x 1000/s, cross node" pairs --pairs "$n" --qos "$q" -p "$p1" --sub-port "$p2" --rate 1000
        done
    done
fi
takeover=""
if [[ "${TAKEOVER:-0}" == 1 ]]; then
    # One run per rate in TAKEOVER_RATES (0: no publisher, an idle cluster); with
    # TAKEOVER_BG=1 one more at the last rate while BG_PAIRS pairs at 1000/s each (QoS 1,
    # publishers on node 1, subscribers on node 2) load both nodes' cores.
    tk() { # label extra-args...
        local label=$1
        shift
        "${rt_gen[@]}" "$BENCH" takeover --nodes "127.0.0.1:$p1,127.0.0.1:$p2,127.0.0.1:$((BASE + 3))" \
            --moves "${MOVES:-60}" --qos "${TAKEOVER_QOS:-1}" --payload "$PAYLOAD" "$@" \
            >"$work/takeover.txt" 2>&1 || echo "takeover failed" >>"$work/takeover.txt"
        takeover+="$label"$'\n'"$(cat "$work/takeover.txt")"$'\n\n'
    }
    rates=(${TAKEOVER_RATES:-${TAKEOVER_RATE:-1000}})
    for r in "${rates[@]}"; do
        tk "# publisher on node 1 at $r msg/s to the session" --rate "$r"
    done
    if [[ "${TAKEOVER_BG:-0}" == 1 ]]; then
        bg_secs=$(python3 -c "print(int(${MOVES:-60} * 0.25 + 8))")
        "${rt_gen[@]}" "$BENCH" pairs --pairs "${BG_PAIRS:-10}" --qos 1 --rate 1000 -p "$p1" --sub-port "$p2" \
            --payload "$PAYLOAD" --duration "$bg_secs" --warmup 1 --no-pin --json -q >"$work/bg.json" 2>&1 &
        bg=$!
        sleep 2
        tk "# publisher on node 1 at ${rates[-1]} msg/s to the session, and ${BG_PAIRS:-10} x 1000/s QoS 1 pairs node 1 -> node 2 besides" --rate "${rates[-1]}"
        wait "$bg" || true
        takeover+="background pairs: $(python3 -c "
import json, sys
s = json.load(open(sys.argv[1]))
l = s['latency']
print(f\"{s['delivered_per_sec']:,.0f} deliveries/s, p50 {l['p50_us'] / 1e3:.2f} ms, p99 {l['p99_us'] / 1e3:.2f} ms, lost {s['lost']}\")" "$work/bg.json" 2>&1 || true)"$'\n'
    fi
fi
commit="$(git rev-parse --short HEAD)"
if ! git diff --quiet HEAD -- shard broker codec bench 2>/dev/null; then commit="$commit (+ uncommitted changes)"; fi
place="node 1 pinned to CPU 0 (\`--cpu-list 0\`), nodes 2 and 3 to CPU 1 (node 3 idle: a member with no clients); generator unpinned"
if [[ "${PIN:-1}" != 1 ]]; then place="nodes and generator unpinned (\`--pin false\`)"; fi
report=$(
    echo "# Cluster: cross-node vs same-node delivery, durability $DURABILITY (three ringmq processes)"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit, release build"
    echo "- CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; kernel $(uname -r)"
    echo "- load average: $load_start at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
    echo "- nodes: \`ringmq --node-id N --cluster-peers ... --cores 1 --durability $DURABILITY --sys-interval-secs 0\`, data dirs under /tmp; $place"
    if [[ ${#rt[@]} -gt 0 ]]; then echo "- nodes SCHED_FIFO (\`chrt -f 50\`): FIFO, shared machine; generator ${rt_gen[*]:-SCHED_OTHER (a FIFO generator sharing their CPUs starved them for seconds in trial runs)}"; fi
    echo "- load: \`ringmq-bench pairs --payload $PAYLOAD --duration $DURATION --warmup $WARMUP\`, publishers on node 1, subscribers on node 1 or node 2 (\`--sub-port\`)"
    if [[ -n "${NOTE:-}" ]]; then echo "- note: $NOTE"; fi
    if [[ -n "${SCHEDMON:-}" ]]; then
        echo "- softirq threads (\`bench/scripts/schedmon.py\`, 0.1 s samples): $(python3 bench/scripts/schedmon.py --report "$SCHEDMON" | paste -sd';' | sed 's/;/; /g')"
    fi
    if [[ ${#rows[@]} -gt 0 ]]; then
    echo
    echo "Deliveries per CPU-second: messages the subscribers received during the run (warm-up included) over the CPU seconds the node spent in it (\`/proc/PID/stat\` utime + stime)."
    echo
    echo "| scenario | deliveries/s | p50 ms | p99 ms | lost | dup | out of order | CPU s node 1 / 2 / 3 | per CPU-s node 1 | per CPU-s node 2 |"
    echo "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|"
    printf '%s\n' "${rows[@]}"
    fi
    if [[ ${#links[@]} -gt 0 ]]; then
        echo
        echo "Node link 1 -> 2 during the cross-node rows (\`ringmq ctl cluster status --json\` before and after, over warm-up + duration):"
        echo
        echo "| row | publishes | publishes/s | MB/s | writes | publishes per write | rtt us (after) |"
        echo "|---|---:|---:|---:|---:|---:|---:|"
        printf '%s\n' "${links[@]}"
    fi
    if [[ -n "$takeover" ]]; then
        echo
        echo "Takeover (\`ringmq-bench takeover --nodes <node 1>,<node 2>,<node 3> --moves ${MOVES:-60} --rate R --qos ${TAKEOVER_QOS:-1}\`, publisher on node 1):"
        echo
        echo '```'
        echo "$takeover"
        echo '```'
    fi
)
echo "$report"
out="${RESULTS:-bench/results/$(date -u +%Y-%m-%d)-cluster-$DURABILITY.md}"
if [[ "$out" != - ]]; then echo "$report" >"$out"; echo "wrote $out" >&2; fi
