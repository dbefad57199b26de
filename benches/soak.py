#!/usr/bin/env python3
"""Soak run: bounded load through hoptrace for a long time; RSS must stay flat and no file
descriptor may leak.

Run: python3 benches/soak.py [--minutes 10] [--connections 8] [--delay-ms 5] [--release]

Installs nginx and wrk from Debian if missing, builds hoptrace and examples/otlp_sink (debug
unless --release; CARGO_TARGET_DIR is honoured), then starts:
  upstream  nginx, 1 worker, a fixed small body
  sink      examples/otlp_sink, counting the spans it receives over OTLP/gRPC
  hoptrace  inbound listener, 100% sampling, OTLP/gRPC export to the sink
  load      wrk, 1 thread, --connections keep-alive connections, each waiting --delay-ms
            between requests (a bounded rate, not a flood), under `nice`
After a 20 s warm-up it records hoptrace's RSS and open file descriptors (/proc/PID/fd),
samples RSS every 30 s during the run, and counts the descriptors again once the load has
stopped and its connections are closed. Prints one JSON object with the figures.
"""
import argparse, json, os, shutil, signal, socket, subprocess, sys, tempfile, time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def ensure_tools():
    missing = [p for p, b in [("nginx-light", "nginx"), ("wrk", "wrk")]
               if not shutil.which(b) and not os.path.exists(f"/usr/sbin/{b}")]
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


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def metric(admin, name):
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--delay-ms", type=int, default=5)
    ap.add_argument("--release", action="store_true")
    args = ap.parse_args()
    ensure_tools()
    profile = ["--release"] if args.release else []
    sh("cargo", "build", "--quiet", *profile, "--bin", "hoptrace", "--example", "otlp_sink", cwd=ROOT)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    out = os.path.join(target, "release" if args.release else "debug")
    work = tempfile.mkdtemp(prefix="hoptrace-soak-")
    procs = []
    try:
        up = free_port()
        conf = os.path.join(work, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""
daemon off; master_process on; worker_processes 1; pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{up}; location / {{ default_type text/plain; return 200 "soak\\n"; }} }} }}
""")
        procs.append(subprocess.Popen(["nginx", "-c", conf, "-p", work],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(up)
        sink, count = free_port(), free_port()
        procs.append(subprocess.Popen([os.path.join(out, "examples", "otlp_sink"),
                                       f"127.0.0.1:{sink}", f"127.0.0.1:{count}"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(sink)
        port, admin = free_port(), free_port()
        config = os.path.join(work, "hoptrace.toml")
        with open(config, "w") as f:
            f.write(f"""
[service]
name = "soak"
[admin]
bind = "127.0.0.1:{admin}"
[access_log]
enabled = false
[tracing]
sampling_ratio = 1.0
batch_delay = "200ms"
[tracing.otlp]
protocol = "grpc"
endpoint = "http://127.0.0.1:{sink}"
[[listeners]]
name = "main"
bind = "127.0.0.1:{port}"
role = "inbound"
[[routes]]
listener = "main"
upstream = "app"
[upstreams.app]
endpoints = ["127.0.0.1:{up}"]
""")
        proxy = subprocess.Popen([os.path.join(out, "hoptrace"), "run", "--config", config],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(proxy)
        wait_port(port)
        script = os.path.join(work, "delay.lua")
        with open(script, "w") as f:
            f.write(f"function delay() return {args.delay_ms} end\n")

        def wrk(seconds):
            return subprocess.Popen(["nice", "-n", "10", "wrk", "-t1", f"-c{args.connections}",
                                     f"-d{int(seconds)}s", "-s", script, f"http://127.0.0.1:{port}/"],
                                    stdout=subprocess.PIPE, text=True)

        fds_idle = fds(proxy.pid)
        warm = wrk(20)
        warm.communicate()
        time.sleep(2)
        start_rss, start_fds = rss_kib(proxy.pid), fds(proxy.pid)
        seconds = args.minutes * 60
        load = wrk(seconds)
        samples = []
        began = time.time()
        while load.poll() is None:
            time.sleep(min(30, max(1, seconds - (time.time() - began) + 1)))
            if load.poll() is None:
                samples.append((round(time.time() - began), rss_kib(proxy.pid)))
        report = load.stdout.read()
        time.sleep(3)  # wrk's connections closed, last batches exported
        end_rss, end_fds = rss_kib(proxy.pid), fds(proxy.pid)
        requests = [l for l in report.splitlines() if "requests in" in l]
        errors = [l.strip() for l in report.splitlines() if "errors" in l or "Non-2xx" in l]
        spans = int(urllib.request.urlopen(f"http://127.0.0.1:{count}/count", timeout=5).read())
        print(json.dumps({
            "minutes": args.minutes, "connections": args.connections, "delay_ms": args.delay_ms,
            "build": "release" if args.release else "debug",
            "wrk": requests[0].strip() if requests else report,
            "wrk_errors": errors,
            "rss_kib": {"after_warmup": start_rss, "samples": samples, "after_load": end_rss},
            "fds": {"idle_before_load": fds_idle, "after_warmup": start_fds, "after_load": end_fds},
            "spans_received_by_sink": spans,
            "spans_dropped": metric(admin, "hoptrace_spans_dropped_total"),
            "spans_failed": metric(admin, "hoptrace_spans_failed_total"),
        }, indent=1))
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    sys.exit(main())
