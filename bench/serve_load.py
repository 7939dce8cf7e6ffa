"""Load test of ``deployzoo serve``: concurrency sweep with perf_analyzer's stability rule, then a soak.

    python bench/serve_load.py --engine eng/crnn_int8 [--data words_folder] [--threads N] [--instances N] \
        [--levels 1 4 16 64] [--images-per-request 1 8] [--window-s 5] [--soak-s 600] [--client threads|httpx] \
        [--decode words|greedy] [--json out.json]
    python bench/serve_load.py --engine eng/crnn_int8 --compare 1x2 2x1 [--rounds 3] [--window-s 10]

The server runs in its own process on loopback; clients are threads in this process, each on its own keep-alive
``http.client`` connection sending multipart requests (``--client httpx``: asyncio tasks with httpx, heavier). Per level:
5-second windows until the last 3 are within 10 % of their mean (at most 10 windows); then requests/s, images/s,
p50/p90/p95/p99 latency, average batch size (the server's inference / execution counters), rejected (503) and
failed counts, and every answer checked against the same engine reading the image alone: lost and wrong counts.
Beside it: the same engine in this process at batch 64 (images/s) on every usable core (``--reference-threads``),
whatever the server's threads and instances. The soak runs 32 one-image clients for ``--soak-s`` seconds and
reports the server's RSS at its start, every ``--rss-every`` seconds, and at its end. ``--decode`` sets the CRNN
decoding of both the server and the in-process reference (default ``words``, the server's default).
``--compare 1x2 2x1`` instead times server configurations (instances x threads) side by side at ``--soak-clients``
one-image clients, interleaved.
"""

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from deployzoo.host import host_info


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RssSampler:
    """``with RssSampler(pid, every_s) as series:`` appends (seconds since start, RSS MiB) every ``every_s`` seconds
    from a background thread, so a soak's memory is a series (warm-up, then level or growth), not two numbers."""

    def __init__(self, pid: int, every_s: float) -> None:
        self.pid, self.every = pid, every_s
        self.series: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        t0 = time.perf_counter()
        while not self._stop.wait(self.every):
            self.series.append((round(time.perf_counter() - t0, 1), rss_mib(self.pid)))

    def __enter__(self) -> list[tuple[float, float]]:
        if self.every > 0:
            self._thread.start()
        return self.series

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def word_images(data: str | None, count: int) -> list[bytes]:
    """Encoded word images: from a word set, or rendered by the synthetic renderer (seed 4242)."""
    if data:
        from deployzoo.data.words import iter_raw_bytes, open_word_set

        out = [b for _, b in iter_raw_bytes(open_word_set(data)) if b]
        return out[:count]
    import io

    from PIL import Image

    from deployzoo.data.synth import SynthWordDataset

    ds = SynthWordDataset(count, seed=4242)
    out = []
    for i in range(count):
        gray, _ = ds[i]
        buf = io.BytesIO()
        Image.fromarray(gray).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def metric_totals(text: str) -> dict[str, float]:
    tot: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("deployzoo_") and "_total{" in line:
            name = line.split("{", 1)[0]
            tot[name] = tot.get(name, 0.0) + float(line.split()[-1])
    return tot


async def run_window(client, url: str, images: list[bytes], expected: list[str], clients: int, per_req: int,
                     seconds: float, state: dict) -> dict:
    lat, ok_imgs, rejected, failed, wrong, lost = [], 0, 0, 0, 0, 0
    stop = time.perf_counter() + seconds

    async def worker(w: int):
        nonlocal ok_imgs, rejected, failed, wrong, lost
        while time.perf_counter() < stop:
            k = state["next"]
            state["next"] += per_req
            idx = [(k + j) % len(images) for j in range(per_req)]
            files = [("files", (f"{i}.png", images[i], "image/png")) for i in idx]
            t0 = time.perf_counter()
            try:
                r = await client.post(url, files=files, timeout=60)
            except Exception:
                failed += 1
                continue
            dt = time.perf_counter() - t0
            if r.status_code == 503:
                rejected += 1
                await asyncio.sleep(0.01)
                continue
            if r.status_code != 200:
                failed += 1
                continue
            res = r.json()["results"]
            if len(res) != per_req:
                lost += per_req - len(res)
            for i, x in zip(idx, res):
                if x.get("error") or x.get("text") != expected[i]:
                    wrong += 1
            lat.append(dt)
            ok_imgs += len(res)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(clients)))
    wall = time.perf_counter() - t0
    return {"requests": len(lat), "images": ok_imgs, "seconds": wall, "lat": lat, "rejected": rejected,
            "failed": failed, "wrong": wrong, "lost": lost}


def multipart(images: list[bytes], idx: list[int]) -> tuple[bytes, str]:
    """A multipart/form-data body with one ``files`` field per image (what the httpx client sends)."""
    b = "deployzoo-load-boundary"
    parts = [(f'--{b}\r\nContent-Disposition: form-data; name="files"; filename="{i}.png"\r\n'
              "Content-Type: image/png\r\n\r\n").encode() + images[i] + b"\r\n" for i in idx]
    return b"".join(parts) + f"--{b}--\r\n".encode(), f"multipart/form-data; boundary={b}"


def run_window_threads(base: str, images: list[bytes], expected: list[str], clients: int, per_req: int,
                       seconds: float, state: dict) -> dict:
    """One window with ``clients`` threads, each on its own keep-alive ``http.client`` connection: a lighter load
    generator than asyncio + httpx, whose own CPU cost at 64 connections starved the server on 2 shared cores."""
    import http.client
    from urllib.parse import urlsplit

    u = urlsplit(base)
    lock = threading.Lock()
    out = {"lat": [], "images": 0, "rejected": 0, "failed": 0, "wrong": 0, "lost": 0}
    stop = time.perf_counter() + seconds

    def worker() -> None:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        while time.perf_counter() < stop:
            with lock:
                k = state["next"]
                state["next"] += per_req
            idx = [(k + j) % len(images) for j in range(per_req)]
            body, ctype = multipart(images, idx)
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/v1/recognize", body=body, headers={"content-type": ctype})
                r = conn.getresponse()
                data = r.read()
            except Exception:
                with lock:
                    out["failed"] += 1
                conn.close()
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
                continue
            dt = time.perf_counter() - t0
            if r.status == 503:
                with lock:
                    out["rejected"] += 1
                time.sleep(0.01)
                continue
            if r.status != 200:
                with lock:
                    out["failed"] += 1
                continue
            res = json.loads(data)["results"]
            bad = sum(1 for i, x in zip(idx, res) if x.get("error") or x.get("text") != expected[i])
            with lock:
                out["lost"] += max(0, per_req - len(res))
                out["wrong"] += bad
                out["lat"].append(dt)
                out["images"] += len(res)
        conn.close()

    ts = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return {"requests": len(out["lat"]), "seconds": time.perf_counter() - t0, **out}


async def level(base: str, images, expected, clients: int, per_req: int, window_s: float, max_windows: int,
                client_kind: str = "threads") -> dict:
    import httpx

    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(limits=limits) as client:
        m0 = metric_totals((await client.get(base + "/metrics")).text)
        state = {"next": 0}
        wins = []
        for _ in range(max_windows):
            if client_kind == "threads":
                w = await asyncio.to_thread(run_window_threads, base, images, expected, clients, per_req, window_s,
                                            state)
            else:
                w = await run_window(client, base + "/v1/recognize", images, expected, clients, per_req, window_s,
                                     state)
            wins.append(w)
            if len(wins) >= 3:
                rates = [w["images"] / w["seconds"] for w in wins[-3:]]
                if max(rates) - min(rates) <= 0.1 * np.mean(rates):
                    break
        m1 = metric_totals((await client.get(base + "/metrics")).text)
    last = wins[-3:] if len(wins) >= 3 else wins
    lat = np.array([x for w in last for x in w["lat"]]) * 1000
    secs = sum(w["seconds"] for w in last)
    inf = m1.get("deployzoo_inference_count_total", 0) - m0.get("deployzoo_inference_count_total", 0)
    exe = m1.get("deployzoo_execution_count_total", 0) - m0.get("deployzoo_execution_count_total", 0)
    pct = np.percentile(lat, [50, 90, 95, 99]) if len(lat) else [float("nan")] * 4
    return {"clients": clients, "images_per_request": per_req, "windows": len(wins),
            "stable": len(wins) < max_windows or len(wins) == 3,
            "requests_per_s": sum(w["requests"] for w in last) / secs,
            "images_per_s": sum(w["images"] for w in last) / secs,
            "p50_ms": pct[0], "p90_ms": pct[1], "p95_ms": pct[2], "p99_ms": pct[3],
            "avg_batch": inf / exe if exe else float("nan"),
            "rejected": sum(w["rejected"] for w in wins), "failed": sum(w["failed"] for w in wins),
            "wrong": sum(w["wrong"] for w in wins), "lost": sum(w["lost"] for w in wins)}


def start_server(args, threads: int | None, instances: int | None) -> tuple[subprocess.Popen, str]:
    """``deployzoo serve`` in its own process on a free loopback port, once it answers ready."""
    import httpx

    port = free_port()
    cmd = [sys.executable, "-m", "deployzoo.cli", "serve", args.engine, "--port", str(port), "--max-batch-size",
           str(args.max_batch_size), "--max-queue-delay-ms", str(args.max_queue_delay_ms), "--max-queue-size",
           "100000", "--decode", args.decode]
    cmd += ["--threads", str(threads)] if threads else []
    cmd += ["--instances", str(instances)] if instances else []
    srv = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    t0 = time.time()
    while True:
        try:
            if httpx.get(base + "/v2/health/ready").status_code == 200:
                return srv, base
        except httpx.HTTPError:
            pass
        if srv.poll() is not None or time.time() - t0 > 120:
            srv.kill()
            raise SystemExit(f"server did not become ready: {srv.stderr.read().decode()[-2000:]}")
        time.sleep(0.1)


def compare(args, images, expected, direct: float, ref_threads: int) -> None:
    """Server configurations (INSTANCESxTHREADS) side by side: one window of --soak-clients one-image clients each,
    interleaved for --rounds rounds (A B A B: this machine's noise hits them alike), medians against the
    in-process batch-64 reference."""
    rows: dict[str, list[tuple[float, float, int]]] = {c: [] for c in args.compare}
    for r in range(args.rounds):
        for c in args.compare:
            inst, thr = (int(v) for v in c.lower().split("x"))
            srv, base = start_server(args, thr, inst)
            try:
                state = {"next": 0}
                run_window_threads(base, images, expected, args.soak_clients, 1, 2.0, state)  # warm the batcher
                w = run_window_threads(base, images, expected, args.soak_clients, 1, args.window_s, state)
            finally:
                srv.terminate()
                srv.wait(10)
            ips = w["images"] / w["seconds"]
            rows[c].append((ips, float(np.percentile(w["lat"], 99)) * 1000, w["wrong"] + w["lost"] + w["failed"]))
            print(f"round {r + 1}: {c}: {ips:.0f} images/s", flush=True)
    print(f"\nEngine {args.engine}, {host_info()['cpu']}, {os.cpu_count()} cores, decoding "
          f"{args.decode}, {args.soak_clients} one-image clients, {args.window_s:.0f}-second windows x {args.rounds} "
          f"interleaved rounds; in-process batch 64 at {ref_threads} threads: {direct:.0f} images/s\n")
    print("| instances x threads | images/s (median) | min | max | vs in-process b64 | p99 ms (median) | wrong/lost/failed |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for c, v in rows.items():
        ips = [x[0] for x in v]
        med = float(np.median(ips))
        print(f"| {c} | {med:.0f} | {min(ips):.0f} | {max(ips):.0f} | {med / direct * 100:.0f} % | "
              f"{np.median([x[1] for x in v]):.0f} | {sum(x[2] for x in v)} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"decode": args.decode, "direct_batch64_images_per_s": direct,
                                               "reference_threads": ref_threads, "compare": rows}, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", required=True)
    ap.add_argument("--data", help="word set (LMDB / gt.txt folder); default: 256 rendered words")
    ap.add_argument("--count", type=int, default=256)
    ap.add_argument("--threads", type=int, help="server: intra-op threads per instance (default: deployzoo serve's)")
    ap.add_argument("--instances", type=int, help="server: engine instances (default: deployzoo serve's, 2)")
    ap.add_argument("--reference-threads", type=int,
                    help="the in-process batch-64 reference's threads (default: every usable core)")
    ap.add_argument("--max-batch-size", type=int, default=64)
    ap.add_argument("--max-queue-delay-ms", type=float, default=4.0)
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--images-per-request", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--window-s", type=float, default=5.0)
    ap.add_argument("--max-windows", type=int, default=10)
    ap.add_argument("--soak-s", type=float, default=600.0)
    ap.add_argument("--soak-clients", type=int, default=32)
    ap.add_argument("--rss-every", type=float, default=60.0,
                    help="sample the server's RSS every this many seconds of the soak (0: start and end only)")
    ap.add_argument("--client", choices=["threads", "httpx"], default="threads",
                    help="load generator: threads with http.client keep-alive connections (default), or asyncio + "
                         "httpx (heavier: at 64 connections it starved the server on 2 shared cores)")
    ap.add_argument("--decode", choices=["words", "greedy"], default="words",
                    help="CRNN decoding of the server and of the in-process reference (default: words, the default "
                         "of deployzoo serve)")
    ap.add_argument("--compare", nargs="+", metavar="IxT",
                    help="instead of the sweep: server configurations INSTANCESxTHREADS (e.g. 1x2 2x1) side by side")
    ap.add_argument("--rounds", type=int, default=3, help="--compare: interleaved rounds")
    ap.add_argument("--json")
    args = ap.parse_args()

    import deployzoo

    images = word_images(args.data, args.count)
    from deployzoo.host import usable_cores

    ref_threads = args.reference_threads or usable_cores()  # the engine's best in-process speed, whatever the server's
    rec = deployzoo.load("crnn", engine=args.engine, threads=ref_threads, batch_size=64, decode=args.decode)
    expected = [rec(img).text for img in images]  # each image alone
    xs = [rec.prepare(img) for img in images]
    rec.infer(xs)
    t0 = time.perf_counter()
    rounds = 0
    while time.perf_counter() - t0 < 5:
        rec.infer(xs)
        rounds += 1
    direct = rounds * len(xs) / (time.perf_counter() - t0)
    del rec

    if args.compare:
        compare(args, images, expected, direct, ref_threads)
        return
    srv, base = start_server(args, args.threads, args.instances)
    try:
        rss0 = rss_mib(srv.pid)
        rows = []
        for per_req in args.images_per_request:
            for c in args.levels:
                r = asyncio.run(level(base, images, expected, c, per_req, args.window_s, args.max_windows,
                                      args.client))
                r["rss_mib"] = rss_mib(srv.pid)
                rows.append(r)
                print(f"clients {c:>3} x {per_req} img: {r['images_per_s']:.0f} img/s, p99 {r['p99_ms']:.1f} ms, "
                      f"batch {r['avg_batch']:.1f}, wrong {r['wrong']}", flush=True)
        soak = None
        if args.soak_s > 0:
            s_rss0 = rss_mib(srv.pid)
            with RssSampler(srv.pid, args.rss_every) as series:
                soak = asyncio.run(level(base, images, expected, args.soak_clients, 1, args.soak_s, 1, args.client))
            soak.update({"rss_start_mib": s_rss0, "rss_end_mib": rss_mib(srv.pid), "seconds": args.soak_s,
                         "rss_series_mib": series})
    finally:
        srv.terminate()
        srv.wait(10)

    print(f"\nEngine {args.engine}, {host_info()['cpu']}, {os.cpu_count()} cores, client "
          f"{args.client}, decoding {args.decode}, server threads {args.threads or 'default'}, instances "
          f"{args.instances or 'default'}, max batch {args.max_batch_size}, delay {args.max_queue_delay_ms} ms; "
          f"in-process batch 64 at {ref_threads} threads: {direct:.0f} images/s; server RSS at start "
          f"{rss0:.0f} MiB\n")
    print("| clients | img/req | req/s | img/s | vs in-process b64 | p50 ms | p90 ms | p95 ms | p99 ms | avg batch "
          "| rejected | failed | lost | wrong |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows + ([dict(soak, clients=f"soak {args.soak_clients}")] if soak else []):
        print(f"| {r['clients']} | {r['images_per_request']} | {r['requests_per_s']:.0f} | {r['images_per_s']:.0f} | "
              f"{r['images_per_s'] / direct * 100:.0f} % | {r['p50_ms']:.1f} | {r['p90_ms']:.1f} | {r['p95_ms']:.1f} | "
              f"{r['p99_ms']:.1f} | {r['avg_batch']:.1f} | {r['rejected']} | {r['failed']} | {r['lost']} | "
              f"{r['wrong']} |")
    if soak:
        growth = (soak["rss_end_mib"] - soak["rss_start_mib"]) / soak["rss_start_mib"] * 100
        print(f"\nsoak {args.soak_s:.0f} s at {args.soak_clients} clients: RSS {soak['rss_start_mib']:.0f} -> "
              f"{soak['rss_end_mib']:.0f} MiB ({growth:+.1f} %)")
        series = soak["rss_series_mib"]
        if series:
            half = [m for t, m in series if t >= args.soak_s / 2]
            print(f"RSS every {args.rss_every:.0f} s: " + ", ".join(f"{m:.0f}" for _, m in series) + " MiB"
                  + (f"; second half of the soak: {min(half):.0f}-{max(half):.0f} MiB" if half else ""))
    if args.json:
        Path(args.json).write_text(json.dumps({"decode": args.decode, "direct_batch64_images_per_s": direct,
                                               "reference_threads": ref_threads, "server_threads": args.threads,
                                               "server_instances": args.instances,
                                               "rss_start_mib": rss0,
                                               "levels": rows, "soak": soak}, indent=2, default=float))


if __name__ == "__main__":
    main()
