"""What the HTTP server costs per request: uvicorn as the vault runs it, against granian, on one ASGI app.

The app (``bench.asgi_servers:app``) is the least an HTTP server can serve: it reads a POST body and answers
a 200 with a ~240-byte JSON body, with no framework. It runs under

* ``uvicorn``: :func:`vault._server.server_config` (the vault's listener: httptools with the vault's header
  and body deadlines, uvloop, no access log), one process;
* ``granian``: ``granian --interface asgi --loop uvloop --workers 1`` (Rust HTTP server, one worker).

Both are driven by the same client (bench/_http1.py on uvloop, ``--connections`` keep-alive connections),
``--seconds`` per run, runs alternating, ``--runs`` each; the table gives medians: requests/s and the server
processes' CPU per request (their process tree's utime + stime). The vault's own lease cycle costs ~2 ms of
vault CPU for two requests (bench/results/lane.md), and uvicorn's share of it is in
bench/results/profile-lease.md: this says how much of that a faster server could save. Needs granian
(``pip install -e '.[bench]'``). Run from the repository root::

    .venv/bin/python -m bench.asgi_servers --connections 32 --seconds 5 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvloop

from bench._harness import markdown_table, say, utc_now, write_report
from bench._http1 import Http1
from bench._openbao_vault import process_tree
from bench._setup import free_port

ANSWER = json.dumps({"lease_id": "0" * 36, "session_id": "1" * 36, "user_id": "u" * 36, "padding": "x" * 80})
BODY = json.dumps({"purpose": "bench", "ttl_seconds": 30}).encode()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The least an HTTP server can serve: read the body, answer 200 JSON."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    body = ANSWER.encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _uvicorn_main(port: int) -> None:
    """Run :data:`app` under the vault's uvicorn configuration (called in the server subprocess)."""
    import uvicorn

    from vault._server import server_config
    from vault.settings import Settings

    settings = Settings.model_validate({})
    config = server_config(app, settings, host="127.0.0.1", port=port, log_level="warning")  # type: ignore[arg-type]
    uvloop.run(uvicorn.Server(config).serve())


def start(server: str, port: int) -> subprocess.Popen[bytes]:
    if server == "uvicorn":
        command = [sys.executable, "-m", "bench.asgi_servers", "--serve-uvicorn", str(port)]
    else:
        granian = shutil.which("granian") or str(Path(sys.executable).with_name("granian"))
        command = [
            granian, "--interface", "asgi", "--loop", "uvloop", "--workers", "1", "--host", "127.0.0.1",
            "--port", str(port), "--no-ws", "--log-level", "warning", "bench.asgi_servers:app",
        ]  # fmt: skip
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            status, _ = uvloop.run(Http1("127.0.0.1", port).post("/", BODY))
            if status == 200:
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{server} did not answer on port {port}")


def tree_cpu(root: int) -> float:
    total = 0.0
    for pid in process_tree(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


async def load(port: int, connections: int, seconds: float) -> int:
    done = 0
    stop_at = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done
        conn = Http1("127.0.0.1", port)
        while time.monotonic() < stop_at:
            status, _ = await conn.post("/", BODY)
            if status != 200:
                raise RuntimeError(f"HTTP {status}")
            done += 1
        await conn.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return done


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--serve-uvicorn"]:
        _uvicorn_main(int(argv[1]))
        return
    parser = argparse.ArgumentParser(
        prog="python -m bench.asgi_servers", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results/asgi-servers.md"))
    args = parser.parse_args(argv)
    servers = ("uvicorn", "granian")
    ports = {name: free_port() for name in servers}
    procs = {name: start(name, ports[name]) for name in servers}
    rows: dict[str, list[tuple[float, float]]] = {name: [] for name in servers}
    try:
        for run in range(1, args.runs + 1):
            for name in servers:
                uvloop.run(load(ports[name], args.connections, 1.0))  # warm-up
                cpu0, t0 = tree_cpu(procs[name].pid), time.monotonic()
                n = uvloop.run(load(ports[name], args.connections, args.seconds))
                cpu, elapsed = tree_cpu(procs[name].pid) - cpu0, time.monotonic() - t0
                rows[name].append((n / elapsed, cpu / n * 1e6))
                say(f"run {run} {name:8} {n / elapsed:8,.0f} req/s  server CPU {cpu / n * 1e6:6.1f} µs/req")
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(10)
    med = {name: (sorted(r[0] for r in rows[name])[len(rows[name]) // 2],
                  sorted(r[1] for r in rows[name])[len(rows[name]) // 2]) for name in servers}  # fmt: skip
    table = markdown_table(
        ["server", "requests/s (median)", "server CPU µs/request (median)", "CPU vs. uvicorn"],
        [
            [n, f"{med[n][0]:,.0f}", f"{med[n][1]:.1f}", f"{med[n][1] / med['uvicorn'][1]:.2f}"]
            for n in servers
        ],
    )
    runs = markdown_table(
        ["server", "run", "requests/s", "server CPU µs/request"],
        [[n, i + 1, f"{r[0]:,.0f}", f"{r[1]:.1f}"] for n in servers for i, r in enumerate(rows[n])],
    )
    text = f"""# HTTP server cost per request: uvicorn (as the vault runs it) vs. granian

- date: {utc_now()}; {args.connections} connections, {args.seconds:g} s per run after a 1 s warm-up, \
{args.runs} runs each, alternating; app: bench/asgi_servers.py's bare ASGI app (read body, answer 200 JSON)

{table}

{runs}

Command: `.venv/bin/python -m bench.asgi_servers {" ".join(argv)}`
"""
    write_report(text, args.out)


if __name__ == "__main__":
    main()
