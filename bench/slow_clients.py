"""Slow clients and oversized bodies against the real gunicorn app (issue 10, security).

1. N half-open clients (headers plus half of the declared body, then silence) hold their connections while
   /health and a small /predict are probed: p50/p99 and how many probes miss Label Studio's 1 s timeout.
   Run for the old serving settings (gthread, 4 threads) and the shipped ones (gunicorn.conf.py).
2. Body cap: a Content-Length of 10 GB with a few bytes sent, and a real 200 MB body: status, seconds to the
   answer, and the worker's RSS growth.

    .venv/bin/python bench/slow_clients.py [--clients 64] [--probes 40]

Writes bench/out/slow_clients.json.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchcommon as bc  # noqa: E402  (also puts the repo root on sys.path)

import requests  # noqa: E402

from tests.support import services  # noqa: E402

PREDICT = {"tasks": [{"id": 1, "data": {"text": "the match ended in a late goal"}}], "project": 1}


def half_open(port: int, n: int, declared: int = 200_000) -> list[socket.socket]:
    """n connections that send the headers and half the declared body, then nothing."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % declared + b"{" + b" " * (declared // 2))
        socks.append(s)
    return socks


def probe(url: str, n: int, path: str = "/health", body: dict | None = None) -> dict:
    """n sequential requests with a 1 s timeout (LS's): latencies, and how many missed it."""
    times, missed = [], 0
    for _ in range(n):
        t0 = time.perf_counter()
        try:
            r = requests.request("POST" if body else "GET", url + path, json=body, timeout=1.0)
            ok = r.status_code == 200
        except requests.RequestException:
            ok = False
        dt = time.perf_counter() - t0
        times.append(dt)
        missed += (not ok) or dt > 1.0
        time.sleep(0.05)
    return {"n": n, "missed": missed, "p50_ms": round(bc.percentile(times, 50) * 1000, 1),
            "p99_ms": round(bc.percentile(times, 99) * 1000, 1)}


def rss_kb(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def worker_pid(master: int) -> int:
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = open(f"/proc/{name}/stat").read()
                if int(stat[stat.rindex(")") + 2:].split()[1]) == master:
                    return int(name)
            except (OSError, ValueError):
                continue
    raise RuntimeError("no gunicorn worker")


def body_cap(url: str, port: int, pid: int) -> dict:
    out = {}
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    t0 = time.perf_counter()
    s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: 10737418240\r\n\r\n{\"tasks\": [")
    head = s.recv(200).split(b"\r\n")[0].decode()
    out["declared_10GB"] = {"status_line": head, "seconds": round(time.perf_counter() - t0, 3)}
    s.close()
    before = rss_kb(pid)
    t0 = time.perf_counter()
    try:
        r = requests.post(url + "/predict", data=b"{" + b" " * (200 << 20) + b"}",
                          headers={"Content-Type": "application/json"}, timeout=120)
        status = r.status_code
    except requests.RequestException as exc:  # the server may close before the whole body is sent
        status = f"connection closed: {type(exc).__name__}"
    out["body_200MB"] = {"status": status, "seconds": round(time.perf_counter() - t0, 3),
                         "rss_growth_mb": round((rss_kb(pid) - before) / 1024, 1)}
    out["health_after"] = probe(url, 5)
    return out


def run(label: str, env: dict, args, extra_argv: dict) -> dict:
    root = Path(tempfile.mkdtemp(prefix="slowcli-"))
    web = services.start_gunicorn({**env, "MODEL_DIR": str(root / "models")}, log_dir=root, **extra_argv)
    try:
        res = {"config": label, "idle": {"health": probe(web.url, args.probes)}}
        socks = half_open(web.port, args.clients)
        time.sleep(0.5)
        res["under_slow_clients"] = {"clients": args.clients, "health": probe(web.url, args.probes),
                                     "predict": probe(web.url, args.probes // 2, "/predict", PREDICT)}
        for s in socks:
            s.close()
        if args.body_cap:
            res["body_cap"] = body_cap(web.url, web.port, worker_pid(web.pid))
        return res
    finally:
        web.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--probes", type=int, default=40)
    ap.add_argument("--no-body-cap", dest="body_cap", action="store_false")
    args = ap.parse_args()
    env = {"ACQUISITION_MODEL": "splade-tiny", "OMP_NUM_THREADS": "1"}
    results = [
        run("old: gthread, 4 threads, no read timeout", {**env, "BODY_READ_TIMEOUT_S": "0"}, args,
            {"threads": 4, "workers": 1, "config": "/dev/null"}),
        run("shipped: gunicorn.conf.py", env, args, {"threads": None, "workers": None, "config": "gunicorn.conf.py"}),
    ]
    rows = [(r["config"], r["idle"]["health"]["p99_ms"], r["under_slow_clients"]["health"]["p50_ms"],
             r["under_slow_clients"]["health"]["p99_ms"], r["under_slow_clients"]["health"]["missed"],
             r["under_slow_clients"]["predict"]["p99_ms"], r["under_slow_clients"]["predict"]["missed"])
            for r in results]
    bc.print_table(f"{args.clients} half-open clients (load {os.getloadavg()[0]:.1f})",
                   ["config", "idle p99", "health p50", "health p99", "missed", "predict p99", "missed"], rows)
    for r in results:
        print(r["config"], "body cap:", r.get("body_cap"))
    bc.write_json(Path(__file__).resolve().parent / "out" / "slow_clients.json",
                  {"machine": bc.machine_info(), "load": os.getloadavg(), "results": results})


if __name__ == "__main__":
    main()
