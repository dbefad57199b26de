#!/usr/bin/env python3
"""Memory with 10,000 idle keep-alive connections: hoptrace (tracing on, as in load.py) and
nginx as a reverse proxy, side by side in one run.

Run: python3 benches/idle.py [--connections 10000]

Each connection sends one request, reads the response, then stays open and idle. Reported:
the proxy's resident memory (VmRSS) with all connections idle, and its peak (VmHWM).
"""
import argparse, asyncio, os, resource, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from load import ROOT, Hoptrace, Nginx, free_port, hwm_kib, rss_kib, ensure_tools, wait_port  # noqa: E402


async def open_idle(port, n):
    conns = []
    request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
    sem = asyncio.Semaphore(500)

    async def one():
        async with sem:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0].split(b":")[1])
            await reader.readexactly(length)
            conns.append((reader, writer))

    await asyncio.gather(*(one() for _ in range(n)))
    return conns


def measure(name, port, pid, n):
    conns = asyncio.run_coroutine_threadsafe(open_idle(port, n), LOOP).result()
    time.sleep(1.0)
    rss, hwm = rss_kib(pid), hwm_kib(pid)
    print(f"| {name} | {len(conns)} | {rss / 1024:.1f} | {hwm / 1024:.1f} |", flush=True)
    for _, w in conns:
        w.close()
    return rss, hwm


LOOP = None


def main():
    global LOOP
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--connections", type=int, default=10_000)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536)
    if want < args.connections + 100:
        sys.exit(f"need {args.connections + 100} file descriptors, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    ensure_tools()
    # HOPTRACE_BIN: measure that binary instead of building this checkout (A/B comparisons).
    binary = os.environ.get("HOPTRACE_BIN")
    if not binary:
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "hoptrace", "--example", "otlp_sink"], cwd=ROOT, check=True)
        binary = os.path.join(ROOT, "target", "release", "hoptrace")
    sink_bin = os.path.join(ROOT, "target", "release", "examples", "otlp_sink")
    import threading
    LOOP = asyncio.new_event_loop()
    threading.Thread(target=LOOP.run_forever, daemon=True).start()

    up = (free_port(), free_port())
    upstream = Nginx("1", *up)
    sink_grpc, sink_count = free_port(), free_port()
    sink = subprocess.Popen(["taskset", "-c", "1", sink_bin, f"127.0.0.1:{sink_grpc}", f"127.0.0.1:{sink_count}"], stdout=subprocess.DEVNULL)
    wait_port(sink_count)
    print(f"\n| proxy | idle connections | RSS MiB | peak RSS MiB |\n|---|---|---|---|")
    try:
        port = free_port()
        hop = Hoptrace(binary, port, up[0], True, sink_grpc)
        measure("hoptrace (tracing on)", port, hop.proc.pid, args.connections)
        hop.stop()
        ports = (free_port(), free_port())
        ngx = Nginx("0", *ports, proxy_to=up[0])
        measure("nginx", ports[0], ngx.worker, args.connections)
        ngx.stop()
    finally:
        upstream.stop()
        sink.terminate()


if __name__ == "__main__":
    main()
