#!/usr/bin/env python3
"""Per-request cost of one proxy, for A/B comparisons of builds: CPU, system calls and context
switches per request (perf stat tracepoints on the proxy's pids), peak RSS, throughput.

Run (after `cargo build --release --bin hoptrace --example otlp_sink`):
  python3 benches/per_request.py nginx|off|on [connections=64] [seconds=5] [hoptrace binary]
  RECORD=/tmp/x.data python3 benches/per_request.py on     # also a perf profile (RECORD_EVENT, cpu-clock)
  PERF_EXTRA=probe_libc:malloc python3 benches/per_request.py on   # more events per request
    (a uprobe first: perf probe -x /lib/x86_64-linux-gnu/libc.so.6 malloc)
  SINK_FLAGS=--decode python3 benches/per_request.py on   # the sink decodes every span whole

Besides the proxy's figures it prints, for `on`, the spans the sink received and the sink's
CPU per request, and for every target how busy the other core (load generator, upstream,
sink) was: near 100% the load generator, not the proxy, may be what limits the run.

Same setup as load.py (its classes are reused): nginx upstream, counting OTLP sink and wrk on
core 1, the proxy on core 0. One run, one line; alternate builds yourself and repeat.
"""
import os, subprocess, sys, time, signal, urllib.request
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load as L  # noqa: E402


def core_times(core):
    """(busy, total) jiffies of one core, from /proc/stat."""
    for line in open("/proc/stat"):
        if line.startswith(f"cpu{core} "):
            v = [int(x) for x in line.split()[1:]]
            return sum(v) - v[3] - v[4], sum(v)
    return 0, 1


target = sys.argv[1]; conns = int(sys.argv[2]) if len(sys.argv) > 2 else 64
dur = int(sys.argv[3]) if len(sys.argv) > 3 else 5
binary = sys.argv[4] if len(sys.argv) > 4 else os.path.join(L.ROOT, "target", "release", "hoptrace")
up_h1, up_h2 = L.free_port(), L.free_port()
up = L.Nginx(L.OTHER_CORE, up_h1, up_h2)
sink_grpc, sink_count = L.free_port(), L.free_port()
sink = subprocess.Popen(["taskset", "-c", L.OTHER_CORE, os.path.join(L.ROOT, "target", "release", "examples", "otlp_sink"), f"127.0.0.1:{sink_grpc}", f"127.0.0.1:{sink_count}", *os.environ.get("SINK_FLAGS", "").split()], stdout=subprocess.DEVNULL)
L.wait_port(sink_count)
port = L.free_port()
if target == "nginx":
    p = L.Nginx(L.PROXY_CORE, port, L.free_port(), proxy_to=up_h1); pids = [p.worker]
else:
    p = L.Hoptrace(binary, port, up_h1, target == "on", sink_grpc); pids = p.pids()
try:
    L.run_wrk(port, conns, 1)  # warm
    t0 = L.cpu_ticks(pids)
    s0 = L.cpu_ticks([sink.pid])
    c0 = core_times(L.OTHER_CORE)
    if os.environ.get("RECORD"):
        rec = subprocess.Popen(["perf", "record", "-e", os.environ.get("RECORD_EVENT", "cpu-clock"), *(["-c", os.environ["RECORD_PERIOD"]] if os.environ.get("RECORD_PERIOD") else ["-F", os.environ.get("RECORD_FREQ", "4999")]), "--call-graph", os.environ.get("RECORD_CALLGRAPH", "fp"), "-o", os.environ["RECORD"], "-p", ",".join(map(str, pids))], stderr=subprocess.DEVNULL)
    perf = subprocess.Popen(["perf", "stat", "-x,", "-e", ",".join(["raw_syscalls:sys_enter", "context-switches"] + ([os.environ["PERF_EXTRA"]] if os.environ.get("PERF_EXTRA") else [])), "-p", ",".join(map(str, pids))], stderr=subprocess.PIPE, text=True)
    r = L.run_wrk(port, conns, dur)
    perf.send_signal(signal.SIGINT); err = perf.communicate()[1]
    if os.environ.get("RECORD"):
        rec.send_signal(signal.SIGINT); rec.wait()
    t1 = L.cpu_ticks(pids)
    s1 = L.cpu_ticks([sink.pid])
    c1 = core_times(L.OTHER_CORE)
    counts = {}
    for line in err.splitlines():
        parts = line.split(",")
        if len(parts) > 3 and parts[0].strip().isdigit():
            counts[parts[2]] = int(parts[0])
    hz = os.sysconf("SC_CLK_TCK")
    n = r["requests"]
    print(f"hwm={L.hwm_kib(pids[0])/1024:.1f}MiB ", end="")
    print(f"{target} c={conns} rps={r['rps']:.0f} p99={r['p99_us']:.0f}us cpu/req={(t1-t0)/hz/n*1e6:.1f}us "
          + " ".join(f"{k}/req={v/n:.2f}" for k, v in counts.items())
          + f" other-core-busy={(c1[0]-c0[0])/max(1, c1[1]-c0[1])*100:.0f}%")
    if target == "on":
        time.sleep(0.5)
        print("spans", urllib.request.urlopen(f"http://127.0.0.1:{sink_count}/count").read().decode(),
              f"sink cpu/req={(s1-s0)/hz/n*1e6:.1f}us (on the load generator's core)")
finally:
    p.stop(); up.stop(); sink.terminate()
