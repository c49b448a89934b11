#!/bin/bash
# The shard's wake-ups at a fixed rate: a one-shard broker pinned to CPU 0 and ringmq-bench on
# CPU 1, both under `chrt -f 50`; over 2 s of steady load the broker's CPU (/proc/PID/stat),
# syscalls and context switches per delivered message (`perf stat`), then 1 s of
# `perf sched record -C 0`: the shard's switches-in, mean wait, scheduling delay and run time
# per wake-up (`perf sched timehist`). Wrap it in `flock /work/helpers/bench.lock` on a shared
# machine.
#
#   bench/scripts/wakeups.sh BIN_DIR IDLE_SPIN_US [BACKEND] [RATE_PER_PUBLISHER] [PAIRS]
#   bench/scripts/wakeups.sh target/release 0 io_uring 1000 10
#
# BACKEND `mosquitto` runs Debian's Mosquitto with `set_tcp_nodelay true` (the `compare`
# config of mosquitto-nodelay) instead, under the same load, for an A/B of the wake-up path.
set -u
B=$1; spin=$2; backend=${3:-io_uring}; rate=${4:-1000}; pairs=${5:-10}
tmp=$(mktemp -d); port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
if [ "$backend" = mosquitto ]; then
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\nmax_queued_messages 10000\nmax_inflight_messages 256\nset_tcp_nodelay true\n' $port >$tmp/m.conf
chrt -f 50 taskset -c 0 mosquitto -c $tmp/m.conf >$tmp/b.log 2>&1 &
else
chrt -f 50 taskset -c 0 $B/ringmq --listen mqtt://127.0.0.1:$port --cores 1 --allow-anonymous true --io-backend $backend --idle-spin-us $spin --data-dir $tmp/data >$tmp/b.log 2>&1 &
fi
pid=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
chrt -f 50 $B/ringmq-bench pairs --pairs $pairs --rate $rate --qos 0 --payload 64 -p $port --mqtt 3.1.1 --duration 7 --warmup 1 --cpus 1 --json -q >$tmp/bench.json 2>$tmp/bench.err &
bpid=$!
sleep 2.5
t0=$(awk '{print $14+$15}' /proc/$pid/stat)
perf stat -x, -e raw_syscalls:sys_enter,context-switches -p $pid -o $tmp/perf.csv -- sleep 2 >/dev/null 2>&1
t1=$(awk '{print $14+$15}' /proc/$pid/stat)
perf sched record -C 0 -o $tmp/sched.data -- sleep 1 >/dev/null 2>&1
wait $bpid; kill $pid; wait $pid 2>/dev/null
python3 - $tmp/perf.csv $tmp/bench.json $t0 $t1 <<'PY'
import json,sys
c={}
for l in open(sys.argv[1]):
    f=l.strip().split(',')
    if len(f)>2 and f[0].replace('.','').isdigit(): c[f[2]]=float(f[0])
b=json.load(open(sys.argv[2])); d=b["delivered_per_sec"]*2
lat=b.get("latency") or {}
cpu=(int(sys.argv[4])-int(sys.argv[3]))/100/2
print(f"deliv/s {b['delivered_per_sec']:.0f} sys/msg {c.get('raw_syscalls:sys_enter',0)/d:.2f} cs/msg {c.get('context-switches',0)/d:.2f} cpu {cpu*100:.0f}% us/msg {cpu*1e6/(d/2):.1f} p50 {lat.get('p50_us',0):.0f} p90 {lat.get('p90_us',0):.0f} p99 {lat.get('p99_us',0):.0f} p99.9 {lat.get('p999_us',lat.get('p99_9_us',0)):.0f}")
PY
perf sched timehist -i $tmp/sched.data 2>/dev/null | awk -v p="/$pid]" -v q="[$pid]" 'index($0,p) || index($0,q) {n++; w+=$4; s+=$5; r+=$6; if ($5>0.05) big++} END {printf "sched: switches-in %d  mean wait %.1f us  mean sch-delay %.1f us  mean run %.1f us  delay>50us %d\n", n, w*1e3/n, s*1e3/n, r*1e3/n, big}'
perf sched timehist -i $tmp/sched.data 2>/dev/null | awk '{print $3}' | sort | uniq -c | sort -rn | head -4 | tr '\n' ' '; echo
rm -rf $tmp
