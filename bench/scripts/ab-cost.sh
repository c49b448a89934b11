#!/usr/bin/env bash
# A/B of the generator's own cost: runs the same scenario with two ringmq-bench binaries
# back to back (A, B, A, B, ...) and prints, per run, the whole process's CPU time
# (perf stat task-clock: user + system, setup included), messages moved (sent +
# received) and CPU nanoseconds per message. CPU per message, not wall throughput, is
# what stays comparable on a shared machine.
#
#   bench/scripts/ab-cost.sh OLD_BIN NEW_BIN ROUNDS -- fanout -s 1000 --mqtt 3.1.1 -p 1883 --window 100
set -euo pipefail
a=$1 b=$2 rounds=$3
shift 3
[[ "${1:-}" == -- ]] && shift
for ((r = 1; r <= rounds; r++)); do
  for bin in "$a" "$b"; do
    out=$(perf stat -x, -e task-clock -o /dev/stderr "$bin" "$@" --json -q 2>&1 >/tmp/ab-cost.$$.json | grep task-clock || true)
    ms=${out%%,*}
    python3 - "$bin" "$ms" /tmp/ab-cost.$$.json <<'PY'
import json, sys
bin_, ms, path = sys.argv[1], float(sys.argv[2]), sys.argv[3]
s = json.load(open(path))
moved = s["sent"] + s["received"]
print(f"{bin_:50s} cpu {ms:8.0f} ms  moved {moved:10d}  {ms*1e6/max(moved,1):6.0f} ns/msg  "
      f"deliveries/s {s['delivered_per_sec']/1e6:.2f}M  busy {s['generator_busy_percent']:.0f}%  lost {s['lost']}")
PY
  done
done
rm -f /tmp/ab-cost.$$.json
