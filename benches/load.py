#!/usr/bin/env python3
"""Side-by-side load benchmark: direct vs nginx vs hoptrace (tracing off / 100% + OTLP export).

Run: python3 benches/load.py [--duration 5] [--reps 3] [--loads h1:1,h1:64,h1:512,h2:64]

Builds release, installs nginx, wrk and h2load from Debian if missing, then in one run, with
the order of targets alternating between repetitions:
  upstream  nginx, 1 worker, returns a fixed small body          (core 1)
  direct    the load generator talks to the upstream itself
  nginx     nginx 1 worker as a reverse proxy with an upstream keep-alive pool (core 0)
  hoptrace-off   hoptrace --threads 1, route tracing = false      (core 0)
  hoptrace-on    hoptrace --threads 1, 100% sampling, OTLP/gRPC export to a counting sink
                 (examples/otlp_sink, core 1)                       (core 0)
  load      wrk -t1 (HTTP/1.1 keep-alive) or h2load (h2c, 1 connection, N streams) (core 1)
Access logs are off for both proxies. Reports median and min-max of each figure.
"""
import argparse, json, os, re, shutil, signal, socket, statistics, subprocess, sys, tempfile, time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BODY = "hello from the upstream: a small fixed body\n"
PROXY_CORE, OTHER_CORE = "0", "1"


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def ensure_tools(extra=()):
    missing = [p for p, b in [("nginx-light", "nginx"), ("wrk", "wrk"), ("nghttp2-client", "h2load"), *extra] if not shutil.which(b) and not os.path.exists(f"/usr/sbin/{b}")]
    if missing:
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        sh(*sudo, "apt-get", "update", "-qq")
        sh(*sudo, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-qq", *missing)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} never opened")


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total


def hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


class Nginx:
    """An nginx with one worker. `proxy_to` set: reverse proxy with a keep-alive pool."""

    def __init__(self, core, h1, h2, proxy_to=None):
        self.dir = tempfile.mkdtemp(prefix="hoptrace-bench-nginx-")
        if proxy_to:
            server = f"""
    upstream app {{ server 127.0.0.1:{proxy_to}; keepalive 64; }}
    server {{ listen 127.0.0.1:{h1}; listen 127.0.0.1:{h2} http2;
        location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}"""
        else:
            server = f"""
    server {{ listen 127.0.0.1:{h1}; listen 127.0.0.1:{h2} http2;
        location / {{ default_type text/plain; return 200 "{BODY.strip()}\\n"; }} }}"""
        conf = f"""
daemon off; master_process on; worker_processes 1; pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn; worker_rlimit_nofile 20000;
events {{ worker_connections 20000; }}
http {{ access_log off; keepalive_requests 1000000; keepalive_timeout 120s; {server} }}
"""
        path = os.path.join(self.dir, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf)
        self.proc = subprocess.Popen(["taskset", "-c", core, "nginx", "-c", path, "-p", self.dir],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(h1)
        time.sleep(0.2)
        self.worker = children(self.proc.pid)[0]

    def pids(self):
        return [self.proc.pid, self.worker]

    def stop(self):
        self.proc.send_signal(signal.SIGQUIT)
        self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


class Hoptrace:
    def __init__(self, binary, port, upstream, tracing, sink=None):
        self.dir = tempfile.mkdtemp(prefix="hoptrace-bench-")
        self.admin = free_port()
        if tracing:
            tracing_toml = f"""
[tracing]
sampling_ratio = 1.0
queue_size = 65536
batch_size = 512
batch_delay = "200ms"
[tracing.otlp]
protocol = "grpc"
endpoint = "http://127.0.0.1:{sink}"
"""
            route_extra = ""
        else:
            tracing_toml = "[tracing]\nexporter = \"none\"\n"
            route_extra = "tracing = false\n"
        conf = f"""
[service]
name = "bench"
[admin]
bind = "127.0.0.1:{self.admin}"
[access_log]
enabled = false
{tracing_toml}
[[listeners]]
name = "main"
bind = "127.0.0.1:{port}"
role = "inbound"
[[routes]]
listener = "main"
upstream = "app"
{route_extra}
[upstreams.app]
endpoints = ["127.0.0.1:{upstream}"]
max_idle_per_endpoint = 1024
"""
        # A/B experiments: more TOML appended (e.g. "[stitching]\nenabled = false").
        conf += os.environ.get("HOPTRACE_BENCH_EXTRA_TOML", "")
        path = os.path.join(self.dir, "config.toml")
        with open(path, "w") as f:
            f.write(conf)
        env = dict(os.environ, RUST_LOG="warn")
        self.proc = subprocess.Popen(["taskset", "-c", PROXY_CORE, binary, "run", "--config", path,
                                      "--threads", "1", "--no-watch"],
                                     env=env, stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, "log"), "w"))
        wait_port(port)

    def pids(self):
        return [self.proc.pid]

    def metric(self, name):
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/metrics").read().decode()
        return sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith(name + " ") or l.startswith(name + "{"))

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)


def run_wrk(port, conns, duration):
    out = subprocess.run(["taskset", "-c", OTHER_CORE, "wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency",
                          f"http://127.0.0.1:{port}/"], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    def lat(p):
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        v, unit = float(m.group(1)), m.group(2)
        return v * {"us": 1, "ms": 1000, "s": 1e6}[unit]
    return {"rps": rps, "requests": total, "p50_us": lat(50), "p99_us": lat(99),
            "errors": int(errors.group(1)) if errors else 0, "socket_errors": socket_errors.group(1) if socket_errors else ""}


def run_h2load(port, streams, duration):
    log = tempfile.mktemp(prefix="h2load-")
    out = subprocess.run(["taskset", "-c", OTHER_CORE, "h2load", "-c1", f"-m{streams}", "-D", str(duration),
                          "--log-file", log, f"http://127.0.0.1:{port}/"], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
    done = int(re.search(r"requests: \d+ total, \d+ started, (\d+) done", out).group(1))
    failed = int(re.search(r"(\d+) failed", out).group(1))
    times = sorted(int(l.split("\t")[2]) for l in open(log) if l.strip())
    os.unlink(log)
    pct = lambda p: times[min(len(times) - 1, int(len(times) * p / 100))]
    return {"rps": rps, "requests": done, "p50_us": pct(50), "p99_us": pct(99), "errors": failed, "socket_errors": ""}


def measure(target, load, duration, state):
    kind, n = load.split(":")
    port = state["ports"][target][0 if kind == "h1" else 1]
    pids = state["pids"].get(target, [])
    before = cpu_ticks(pids) if pids else 0
    hop = state["hoptrace"].get(target)
    spans_before = state["sink_count"]() if target == "hoptrace-on" else 0
    proxied_before = hop.metric("hoptrace_requests_total") if hop else 0
    started_before = hop.metric("hoptrace_spans_started_total") if hop else 0
    result = run_wrk(port, int(n), duration) if kind == "h1" else run_h2load(port, int(n), duration)
    if pids:
        ticks = cpu_ticks(pids) - before
        result["cpu_us_per_req"] = ticks * 1e6 / os.sysconf("SC_CLK_TCK") / max(result["requests"], 1)
    if target == "hoptrace-on":
        # Wait for the export to catch up: every span the proxy finished is exported or lost.
        end = time.time() + 30
        while time.time() < end:
            started, exported, dropped, failed = (hop.metric(f"hoptrace_spans_{k}_total") for k in ("started", "exported", "dropped", "failed"))
            if exported + dropped + failed >= started:
                break
            time.sleep(0.2)
        result["spans_received"] = state["sink_count"]() - spans_before
        result["spans_dropped_total"] = hop.metric("hoptrace_spans_dropped_total")
        result["proxied"] = hop.metric("hoptrace_requests_total") - proxied_before
        # One SERVER span per request received (inbound listener), answered or not: requests
        # still in flight when the load generator closes its connections at the end of the
        # run have a span (`client_closed`) but no status, so no `hoptrace_requests_total`.
        result["spans_started"] = hop.metric("hoptrace_spans_started_total") - started_before
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--loads", default="h1:1,h1:64,h1:512,h2:64")
    ap.add_argument("--targets", default="direct,nginx,hoptrace-off,hoptrace-on")
    ap.add_argument("--json", default=os.path.join(ROOT, "target", "bench", "load.json"))
    args = ap.parse_args()
    ensure_tools()
    # HOPTRACE_BIN: measure that binary instead of building this checkout (A/B comparisons).
    binary = os.environ.get("HOPTRACE_BIN")
    if not binary:
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "hoptrace", "--example", "otlp_sink"], cwd=ROOT, check=True)
        binary = os.path.join(ROOT, "target", "release", "hoptrace")
    sink_bin = os.path.join(ROOT, "target", "release", "examples", "otlp_sink")
    os.makedirs(os.path.dirname(args.json), exist_ok=True)

    up = (free_port(), free_port())
    upstream = Nginx(OTHER_CORE, *up)
    sink_grpc, sink_count = free_port(), free_port()
    sink = subprocess.Popen(["taskset", "-c", OTHER_CORE, sink_bin, f"127.0.0.1:{sink_grpc}", f"127.0.0.1:{sink_count}", *os.environ.get("SINK_FLAGS", "").split()], stdout=subprocess.DEVNULL)
    wait_port(sink_count)
    targets = args.targets.split(",")
    procs, state = [], {"ports": {"direct": up}, "pids": {}, "hoptrace": {},
                        "sink_count": lambda: int(urllib.request.urlopen(f"http://127.0.0.1:{sink_count}/count").read())}
    try:
        if "nginx" in targets:
            ports = (free_port(), free_port())
            n = Nginx(PROXY_CORE, *ports, proxy_to=up[0])
            procs.append(n); state["ports"]["nginx"] = ports; state["pids"]["nginx"] = n.pids()
        for name, tracing in [("hoptrace-off", False), ("hoptrace-on", True)]:
            if name in targets:
                port = free_port()
                h = Hoptrace(binary, port, up[0], tracing, sink_grpc)
                procs.append(h); state["ports"][name] = (port, port); state["pids"][name] = h.pids(); state["hoptrace"][name] = h
        results = {t: {l: [] for l in args.loads.split(",")} for t in targets}
        for rep in range(args.reps):
            for load in args.loads.split(","):
                order = targets[rep % len(targets):] + targets[:rep % len(targets)]
                for target in order:
                    r = measure(target, load, args.duration, state)
                    results[target][load].append(r)
                    print(f"rep {rep + 1} {load:7} {target:13} {r['rps']:>9.0f} req/s  p50 {r['p50_us']:>7.0f} us  p99 {r['p99_us']:>7.0f} us"
                          + (f"  cpu {r['cpu_us_per_req']:.1f} us/req" if 'cpu_us_per_req' in r else "")
                          + (f"  spans {r['spans_received']:.0f}/{r['spans_started']:.0f} started, {r['proxied']:.0f} answered" if 'spans_received' in r else ""), flush=True)
        peak = {t: hwm_kib(state["pids"][t][-1]) for t in state["pids"]}
        report(results, peak, args)
        with open(args.json, "w") as f:
            json.dump({"results": results, "peak_rss_kib": peak}, f, indent=1)
    finally:
        for p in procs:
            p.stop()
        upstream.stop()
        sink.terminate()


def med(rs, key):
    vals = [r[key] for r in rs if key in r]
    return (statistics.median(vals), min(vals), max(vals)) if vals else None


def report(results, peak, args):
    print(f"\n## Load benchmark ({args.reps} repetitions x {args.duration}s, median [min-max])\n")
    for load in args.loads.split(","):
        print(f"### {load.replace('h1:', 'HTTP/1.1, wrk, ').replace('h2:', 'h2c, h2load, 1 connection, ')} {'connections' if load.startswith('h1') else 'streams'}\n")
        print("| target | req/s | p50 µs | p99 µs | added p50 µs vs direct | req/s vs nginx | proxy CPU µs/req | spans received / requests received (of them answered; spans dropped) |")
        print("|---|---|---|---|---|---|---|---|")
        direct = med(results.get("direct", {}).get(load, []), "p50_us")
        nginx = med(results.get("nginx", {}).get(load, []), "rps")
        for target, by_load in results.items():
            rs = by_load[load]
            f = lambda k, fmt="{:.0f}": (lambda m: f"{fmt.format(m[0])} [{fmt.format(m[1])}-{fmt.format(m[2])}]" if m else "-")(med(rs, k))
            rps = med(rs, "rps")
            added = f"{med(rs, 'p50_us')[0] - direct[0]:.0f}" if direct and target != "direct" else "-"
            ratio = f"{rps[0] / nginx[0]:.2f}" if nginx and target != "direct" else "-"
            spans = "-"
            if any("spans_received" in r for r in rs):
                spans = ", ".join(f"{r['spans_received']:.0f}/{r['spans_started']:.0f} ({r['proxied']:.0f}; {r['spans_dropped_total']:.0f})" for r in rs)
            print(f"| {target} | {f('rps')} | {f('p50_us')} | {f('p99_us')} | {added} | {ratio} | {f('cpu_us_per_req', '{:.1f}')} | {spans} |")
        print()
    print("Peak RSS (VmHWM) over the whole run: " + ", ".join(f"{t} {k / 1024:.1f} MiB" for t, k in peak.items()))


if __name__ == "__main__":
    main()
