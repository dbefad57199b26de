#!/usr/bin/env python3
"""Instructions per request, counted by valgrind's callgrind: an A/B measure that a noisy
machine does not blur (CPU time per request varies by ±25% from run to run here; this varies
by about 1%).

Run (after `cargo build --release --bin hoptrace --example otlp_sink`):
  python3 benches/instructions.py nginx|off|on [requests=10000] [hoptrace binary]

The proxy runs under callgrind with instrumentation off; h2load (HTTP/1.1, 64 connections)
warms it up with 2,000 requests; instrumentation goes on, `requests` more are sent, and the
counters are dumped. Every thread of the proxy is counted (for `on`, the span export too).
nginx runs as one process (`master_process off`), as its worker would. User-space
instructions only: the kernel's share (about 60% of the CPU time, see per_request.py) is not
in it.
"""
import glob, os, re, subprocess, sys, tempfile, time, urllib.request
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load as L  # noqa: E402

target = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
binary = sys.argv[3] if len(sys.argv) > 3 else os.path.join(L.ROOT, "target", "release", "hoptrace")
L.ensure_tools(extra=[("valgrind", "valgrind")])
work = tempfile.mkdtemp(prefix="hoptrace-instr-")
grind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={work}/cg.out"]

up_h1, up_h2 = L.free_port(), L.free_port()
up = L.Nginx(L.OTHER_CORE, up_h1, up_h2)
sink = None
port = L.free_port()
admin = L.free_port()
if target == "nginx":
    conf = f"""
daemon off; master_process off; worker_processes 1; pid {work}/nginx.pid;
error_log {work}/error.log warn; worker_rlimit_nofile 20000;
events {{ worker_connections 20000; }}
http {{ access_log off; keepalive_requests 1000000; keepalive_timeout 120s;
    upstream app {{ server 127.0.0.1:{up_h1}; keepalive 64; }}
    server {{ listen 127.0.0.1:{port};
        location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }} }} }}
"""
    with open(f"{work}/nginx.conf", "w") as f:
        f.write(conf)
    cmd = ["nginx", "-c", f"{work}/nginx.conf", "-p", work]
else:
    tracing = ""
    route_extra = ""
    if target == "on":
        sink_grpc, sink_count = L.free_port(), L.free_port()
        sink = subprocess.Popen(["taskset", "-c", L.OTHER_CORE, os.path.join(L.ROOT, "target", "release", "examples", "otlp_sink"),
                                 f"127.0.0.1:{sink_grpc}", f"127.0.0.1:{sink_count}"], stdout=subprocess.DEVNULL)
        L.wait_port(sink_count)
        tracing = f"""[tracing]
sampling_ratio = 1.0
queue_size = 65536
[tracing.otlp]
protocol = "grpc"
endpoint = "http://127.0.0.1:{sink_grpc}"
"""
    else:
        tracing = "[tracing]\nexporter = \"none\"\n"
        route_extra = "tracing = false\n"
    conf = f"""[service]
name = "bench"
[admin]
bind = "127.0.0.1:{admin}"
[access_log]
enabled = false
{tracing}
[[listeners]]
name = "main"
bind = "127.0.0.1:{port}"
role = "inbound"
[[routes]]
listener = "main"
upstream = "app"
{route_extra}
[upstreams.app]
endpoints = ["127.0.0.1:{up_h1}"]
max_idle_per_endpoint = 1024
""" + os.environ.get("HOPTRACE_BENCH_EXTRA_TOML", "")
    with open(f"{work}/config.toml", "w") as f:
        f.write(conf)
    cmd = [binary, "run", "--config", f"{work}/config.toml", "--threads", "1", "--no-watch"]

proc = subprocess.Popen(["taskset", "-c", L.PROXY_CORE] + grind + cmd, stdout=subprocess.DEVNULL,
                        stderr=open(f"{work}/log", "w"), env=dict(os.environ, RUST_LOG="warn"))


def h2load(count):
    out = subprocess.run(["taskset", "-c", L.OTHER_CORE, "h2load", "--h1", "-n", str(count), "-c", "64",
                          f"http://127.0.0.1:{port}/"], capture_output=True, text=True, check=True).stdout
    done = int(re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out).group(2))
    if done != count:
        sys.exit(f"h2load: {done} of {count} requests succeeded:\n{out}")


try:
    L.wait_port(port, timeout=120)
    h2load(2000)
    subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True, capture_output=True)
    h2load(n)
    if sink:
        # Every span exported (the last batch waits for batch_delay) and counted too.
        end = time.time() + 60
        while int(urllib.request.urlopen(f"http://127.0.0.1:{sink_count}/count").read().decode().split()[0]) < n + 2000:
            if time.time() > end:
                sys.exit("the sink did not receive a span per request within 60 s")
            time.sleep(0.2)
    subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True)
    total = 0
    for path in glob.glob(f"{work}/cg.out*"):
        for line in open(path):
            if line.startswith("totals:") or line.startswith("summary:"):
                total += int(line.split()[1])
                break
    print(f"{target} requests={n} instructions/req={total / n:.0f}")
    if os.environ.get("KEEP"):
        print("callgrind output:", work)
finally:
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
    up.stop()
    if sink:
        sink.terminate()
    if not os.environ.get("KEEP"):
        import shutil
        shutil.rmtree(work, ignore_errors=True)
