"""HTTP range-GET clients compared on a loopback server (the figures of docs/s3.md).

Usage: python benchmarks/bench_s3_clients.py [--n 2000] [--size 100000] [--latency 0.05] [--conc 32]

A static Range server (``ThreadingHTTPServer``, HTTP/1.1 keep-alive, 206 + Content-Range)
runs in a child process, so the client's CPU time (``time.process_time`` of this process, all
its threads) is the client's alone. For each client: CPU per range GET and requests/s,
sequential without latency and at concurrency ``--conc`` with ``--latency`` s added by the
server to every request. Clients whose library is not installed are skipped (httpx and
obstore are not dependencies of spxflow; aiohttp is, under RangeClient). Prints figures only;
nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

OBJECT_BYTES = 8 << 20
KEY = "qr2/level2/bench.fits"


def _serve(port_q, latency: float) -> None:
    blob = os.urandom(OBJECT_BYTES)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):  # noqa: N802
            if latency:
                time.sleep(latency)
            m = re.match(r"bytes=(\d+)-(\d+)$", self.headers.get("Range", ""))
            a, b = (int(m[1]), min(int(m[2]), OBJECT_BYTES - 1)) if m else (0, OBJECT_BYTES - 1)
            self.send_response(206 if m else 200)
            self.send_header("Content-Length", str(b - a + 1))
            self.send_header("Content-Range", f"bytes {a}-{b}/{OBJECT_BYTES}")
            self.send_header("ETag", '"bench"')
            self.end_headers()
            self.wfile.write(memoryview(blob)[a : b + 1])

        def log_message(self, *args):
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 512

    server = Server(("127.0.0.1", 0), Handler)
    port_q.put(server.server_address[1])
    server.serve_forever()


def _spans(n: int, size: int) -> list[tuple[int, int]]:
    step = (OBJECT_BYTES - size) // max(n, 1)
    return [(i * step, i * step + size) for i in range(n)]


def _threaded(fetch, spans, conc: int) -> None:
    if conc == 1:
        for s in spans:
            fetch(s)
        return
    with ThreadPoolExecutor(conc) as pool:
        list(pool.map(fetch, spans))


def bench_spxflow(base, spans, conc, size):
    from spxflow.ranges.client import RangeClient

    client = RangeClient(base, max_concurrency=max(conc, 1))

    def fetch(s):
        assert len(client.get(KEY, *s).data) == size

    return lambda: _threaded(fetch, spans, conc)


def bench_spxflow_rounds(base, spans, conc, size):
    """RangeClient.get_round: rounds of 4 GETs (a window read's round 2), conc / 4 threads."""
    from spxflow.ranges.client import RangeClient

    client = RangeClient(base, max_concurrency=max(conc, 1))
    rounds = [spans[i : i + 4] for i in range(0, len(spans), 4)]

    def fetch(group):
        got = client.get_round(KEY, {str(i): s for i, s in enumerate(group)})
        assert all(len(r.data) == size for r in got.values())

    def job():
        if conc == 1:
            for g in rounds:
                fetch(g)
            return
        with ThreadPoolExecutor(max(1, conc // 4)) as pool:
            list(pool.map(fetch, rounds))

    return job


def bench_urllib3(base, spans, conc, size):
    import urllib3

    pool = urllib3.PoolManager(maxsize=max(conc, 1), retries=False)
    url = f"{base}/{KEY}"

    def fetch(s):
        r = pool.request("GET", url, headers={"Range": f"bytes={s[0]}-{s[1] - 1}"})
        assert r.status == 206 and len(r.data) == size

    return lambda: _threaded(fetch, spans, conc)


def bench_httpx(base, spans, conc, size):
    import httpx

    client = httpx.Client(limits=httpx.Limits(max_connections=max(conc, 1)))
    url = f"{base}/{KEY}"

    def fetch(s):
        r = client.get(url, headers={"Range": f"bytes={s[0]}-{s[1] - 1}"})
        assert r.status_code == 206 and len(r.content) == size

    return lambda: _threaded(fetch, spans, conc)


def bench_httpx_async(base, spans, conc, size):
    import httpx

    url = f"{base}/{KEY}"

    async def main():
        limits = httpx.Limits(max_connections=max(conc, 1))
        async with httpx.AsyncClient(limits=limits) as client:
            sem = asyncio.Semaphore(max(conc, 1))

            async def fetch(s):
                async with sem:
                    r = await client.get(url, headers={"Range": f"bytes={s[0]}-{s[1] - 1}"})
                    assert r.status_code == 206 and len(r.content) == size

            await asyncio.gather(*(fetch(s) for s in spans))

    return lambda: asyncio.run(main())


def bench_aiohttp(base, spans, conc, size):
    import aiohttp

    url = f"{base}/{KEY}"

    async def main():
        connector = aiohttp.TCPConnector(limit=max(conc, 1))
        async with aiohttp.ClientSession(connector=connector) as session:

            async def fetch(s):
                headers = {"Range": f"bytes={s[0]}-{s[1] - 1}"}
                async with session.get(url, headers=headers) as r:
                    assert r.status == 206 and len(await r.read()) == size

            await asyncio.gather(*(fetch(s) for s in spans))

    return lambda: asyncio.run(main())


def bench_obstore(base, spans, conc, size):
    import obstore
    from obstore.store import HTTPStore

    store = HTTPStore.from_url(base, client_options={"allow_http": True})

    async def main():
        sem = asyncio.Semaphore(max(conc, 1))

        async def fetch(s):
            async with sem:
                got = await obstore.get_range_async(store, KEY, start=s[0], end=s[1])
                assert len(got) == size

        await asyncio.gather(*(fetch(s) for s in spans))

    return lambda: asyncio.run(main())


CLIENTS = {
    "spxflow RangeClient.get (threads)": bench_spxflow,
    "spxflow RangeClient.get_round (4/round)": bench_spxflow_rounds,
    "urllib3 PoolManager (threads)": bench_urllib3,
    "httpx.Client (threads)": bench_httpx,
    "httpx.AsyncClient (asyncio)": bench_httpx_async,
    "aiohttp (asyncio)": bench_aiohttp,
    "obstore HTTPStore (Rust, asyncio)": bench_obstore,
}


def _run(name, make, base, n, size, conc):
    try:
        job = make(base, _spans(n, size), conc, size)
    except ImportError as exc:
        return f"{name:40s} skipped ({exc.name} not installed)"
    make(base, _spans(min(n, 64), size), conc, size)()  # warm up: connections, imports
    cpu0, t0 = time.process_time(), time.perf_counter()
    job()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    return f"{name:40s} {1e3 * cpu / n:8.3f} ms CPU/GET {n / wall:9.0f} GET/s"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000, help="GETs per measurement")
    p.add_argument("--size", type=int, default=100_000, help="bytes per range")
    p.add_argument("--latency", type=float, default=0.05, help="server latency (s)")
    p.add_argument("--conc", type=int, default=32, help="concurrency of the latency run")
    p.add_argument("--only", default="", help="regex on the client names")
    a = p.parse_args(argv)
    ctx = mp.get_context("spawn")
    for latency, conc in ((0.0, 1), (a.latency, a.conc)):
        q = ctx.Queue()
        proc = ctx.Process(target=_serve, args=(q, latency), daemon=True)
        proc.start()
        base = f"http://127.0.0.1:{q.get(timeout=30)}"
        print(f"\n{a.size} B ranges, concurrency {conc}, server latency {latency * 1e3:.0f} ms")
        try:
            for name, make in CLIENTS.items():
                if re.search(a.only, name):
                    print(_run(name, make, base, a.n, a.size, conc), flush=True)
        finally:
            proc.terminate()
            proc.join()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
