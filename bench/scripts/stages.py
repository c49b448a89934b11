#!/usr/bin/env python3
"""Stages of a fixed-rate message inside the broker (bench/scripts/stages.sh).

Reads `perf script --ns -F comm,tid,cpu,time,event,trace` on stdin; argv: the broker's
thread ids and the generator's, comma-separated. A publish is a data segment
(net:netif_rx, len > 52: more than IP + TCP headers with timestamps) sent by the
generator; a delivery one sent by the broker. Publishes and deliveries are paired in
order of time. Stages:

  (per wake-up of the broker with exactly one publish since it last slept)
  wake    publish segment -> sched_waking of the broker (the kernel's receive path)
  switch  sched_waking -> sched_switch into the broker (idle exit, IPI, switch)
  kernel  switch-in -> the broker's first syscall exit (its wait returning: on
          io_uring the deferred task work, the receive's copy, runs here)
  user    that exit -> the entry of the syscall that sends the delivery (everything
          between, syscalls included: epoll_wait, recv on epoll; none on io_uring)
  send    that entry -> the delivery segment (the send path down to loopback)
  total   publish segment -> delivery segment
  after   delivery segment -> the broker leaves the CPU (its park)
"""
import re
import statistics
import sys
from collections import Counter

broker = {int(t) for t in sys.argv[1].split(",") if t}
gen = {int(t) for t in sys.argv[2].split(",") if t}
NAMES = {426: "io_uring_enter", 232: "epoll_wait", 281: "epoll_pwait", 441: "epoll_pwait2",
         0: "read", 1: "write", 44: "sendto", 45: "recvfrom", 20: "writev", 46: "sendmsg",
         47: "recvmsg", 228: "clock_gettime", 202: "futex", 7: "poll", 271: "ppoll"}

line_re = re.compile(r"^\s*(.+?)\s+(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(\S+):\s*(.*)$")
pubs, dels, ev = [], [], []  # ev: (t, kind, data) of the broker and CPU 0
for line in sys.stdin:
    m = line_re.match(line)
    if not m:
        continue
    comm, tid, cpu, t, name, rest = m.groups()
    tid, cpu, t = int(tid), int(cpu), float(t) * 1e6  # µs
    if name == "net:netif_rx":
        ln = int(re.search(r"len=(\d+)", rest).group(1))
        if ln > 52:
            if tid in gen:
                pubs.append(t)
            elif tid in broker:
                dels.append(t)
    elif name == "sched:sched_waking":
        p = int(re.search(r" pid=(\d+)", rest).group(1))
        if p in broker:
            ev.append((t, "waking", None))
    elif name == "sched:sched_switch":
        n = int(re.search(r"next_pid=(\d+)", rest).group(1))
        pp = int(re.search(r"prev_pid=(\d+)", rest).group(1))
        if n in broker:
            ev.append((t, "in", None))
        elif pp in broker:
            ev.append((t, "out", None))
    elif name == "raw_syscalls:sys_enter" and tid in broker:
        ev.append((t, "enter", int(re.search(r"NR (\d+)", rest).group(1))))
    elif name == "raw_syscalls:sys_exit" and tid in broker:
        ev.append((t, "exit", int(re.search(r"NR (\d+)", rest).group(1))))
    elif name == "power:cpu_idle" and cpu == 0:
        st = int(re.search(r"state=(\d+)", rest).group(1))
        ev.append((t, "idle_exit" if st == 4294967295 else "idle", None))
    elif name == "io_uring:io_uring_local_work_run" and tid in broker:
        ev.append((t, "localwork", None))
ev.sort()

import bisect
times = [e[0] for e in ev]
pubs.sort()
dels.sort()
st = {k: [] for k in ("wake", "switch", "kernel", "user", "send", "total", "after")}
calls, after_calls = Counter(), Counter()
n_in = multi = 0
prev_out = None
for idx, (t, k, _) in enumerate(ev):
    if k == "out":
        prev_out = t
        continue
    if k != "in" or prev_out is None:
        continue
    n_in += 1
    tin = t
    # the wake-up: the last waking since the broker left the CPU
    lo = bisect.bisect_right(times, prev_out)
    twak = next((ev[j][0] for j in range(idx, lo - 1, -1) if ev[j][1] == "waking"), None)
    if twak is None:
        continue
    a_lo, a_hi = bisect.bisect_right(pubs, prev_out), bisect.bisect_right(pubs, twak)
    if a_hi - a_lo != 1:
        multi += a_hi - a_lo > 1
        continue
    a = pubs[a_hi - 1]
    tout = next((ev[j][0] for j in range(idx + 1, len(ev)) if ev[j][1] == "out"), None)
    if tout is None:
        continue
    fi = bisect.bisect_left(dels, tin)
    if fi >= len(dels) or dels[fi] > tout:
        continue
    f = dels[fi]
    hi = bisect.bisect_left(times, f)
    seg = ev[idx:hi]
    texit = next((x for x, kk, _ in seg if kk == "exit"), None)
    tenter = next((x for x, kk, _ in reversed(seg) if kk == "enter"), None)
    if texit is None or tenter is None or tenter < texit:
        continue
    st["wake"].append(twak - a)
    st["switch"].append(tin - twak)
    st["kernel"].append(texit - tin)
    st["user"].append(tenter - texit)
    st["send"].append(f - tenter)
    st["total"].append(f - a)
    st["after"].append(tout - f)
    for x, kk, d in seg:
        if kk == "enter" and x > texit:
            calls[NAMES.get(d, str(d))] += 1
    for x, kk, d in ev[hi:bisect.bisect_left(times, tout)]:
        if kk == "enter":
            after_calls[NAMES.get(d, str(d))] += 1

n = len(st["total"])
print(f"publishes {len(pubs)}, deliveries {len(dels)}, broker switch-ins {n_in}; one-publish wake-ups with a delivery {n} ({multi} with several)")
for k, v in st.items():
    if v:
        print(f"  {k:7s} median {statistics.median(v):7.1f}  mean {statistics.mean(v):7.1f}  p90 {sorted(v)[int(len(v)*0.9)]:7.1f} µs")
if n:
    print("  syscalls from the wake's return to the send (incl.), per wake-up: " + ", ".join(f"{k} {c/n:.2f}" for k, c in calls.most_common()))
    print("  syscalls from the delivery to the switch-out, per wake-up: " + ", ".join(f"{k} {c/n:.2f}" for k, c in after_calls.most_common()))
