"""Start the servers the serving benchmark (serving.py) measures, and the serving section of `make bench`.

  llama-server     llama.cpp's server from our own build (envs.py), on the speed rows' GGUFs:
                   `llama-server -m X.gguf --parallel SLOTS -c SLOTS*SLOT_CTX -t THREADS`
  clova-edge serve `clova-edge serve FOLDER --variant int4 --slots SLOTS --context SLOT_CTX --threads THREADS`
Each command is a plain list of arguments (a runtime whose options change is one function to edit). A server
listens on 127.0.0.1 at a free port, is ready when GET /health answers 200 (bounded wait; a server that exits
first is reported with its log's tail) and is stopped at the end: SIGTERM to its own process group, SIGKILL
when it has not gone in time. Logs go to .cache/bench/logs/serving/.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import httpx

from . import serving
from .prepare import selected

SLOTS = 4
SLOT_CTX = 512          # per slot: the prompts (~60 tokens with the template) + MAX_TOKENS fit with room
SERVED_GGUF = ("Q4_0", "Q4_K_M")
STARTUP_TIMEOUT = 300.0


def free_port() -> int:
    """A loopback port nobody listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def llama_server_args(tool: Path, gguf: Path, port: int, *, slots: int = SLOTS, slot_ctx: int = SLOT_CTX,
                      threads: int = 2) -> list[str]:
    return [str(tool), "-m", str(gguf), "--parallel", str(slots), "-c", str(slots * slot_ctx),
            "--host", "127.0.0.1", "--port", str(port), "-t", str(threads)]


def clova_serve_args(folder: Path, variant: str, port: int, *, slots: int = SLOTS, slot_ctx: int = SLOT_CTX,
                     threads: int = 2, cli: Path | None = None) -> list[str]:
    # --context: positions per slot, as llama-server's -c / --parallel (the same KV room for both)
    cli = cli or Path(sys.executable).with_name("clova-edge")
    return [str(cli), "serve", str(folder), "--variant", variant, "--host", "127.0.0.1", "--port", str(port),
            "--slots", str(slots), "--context", str(slot_ctx), "--threads", str(threads)]


class ServerError(RuntimeError):
    """A server did not start or did not become ready; the message carries its log's tail."""


class Server:
    """`with Server(args, port, log) as url:` a started, ready server at url; stopped on exit."""

    def __init__(self, args: Sequence[str], port: int, log: Path, *, env: dict | None = None,
                 timeout: float = STARTUP_TIMEOUT):
        self.args, self.port, self.log, self.env, self.timeout = list(args), port, log, env, timeout
        self.proc: subprocess.Popen | None = None
        self.startup_s: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _tail(self) -> str:
        return self.log.read_text(errors="replace")[-1500:] if self.log.is_file() else ""

    def __enter__(self) -> str:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        with self.log.open("w") as f:
            f.write(f"$ {' '.join(self.args)}\n")
            f.flush()
            # its own session: stop() signals the server and whatever it started, nothing else
            self.proc = subprocess.Popen(self.args, stdout=f, stderr=subprocess.STDOUT, env=self.env,
                                         start_new_session=True)
        try:
            self._wait_ready(t0)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.perf_counter() - t0
        return self.url

    def _wait_ready(self, t0: float) -> None:
        while time.perf_counter() - t0 < self.timeout:
            if self.proc.poll() is not None:
                raise ServerError(f"exited with {self.proc.returncode} before it was ready:\n{self._tail()}")
            try:
                if httpx.get(self.url + "/health", timeout=5.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass                    # not listening yet (or 503 while it loads the model)
            time.sleep(0.5)
        raise ServerError(f"not ready after {self.timeout:.0f} s:\n{self._tail()}")

    def stop(self, grace: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def __exit__(self, *exc: Any) -> None:
        self.stop()


@dataclass(frozen=True)
class ServedRow:
    """One server to measure: `args(port)` is its command line."""

    label: str
    runtime: str                          # "llama-server" or "clova-edge"
    model: Path
    args: Callable[[int], list[str]]
    env: dict | None = None


def served_rows(rows: Sequence[Any], threads: int) -> list[ServedRow]:
    """The servers for bench.py's rows of the full-size model: llama-server on SERVED_GGUF, clova-edge serve
    on the default INT4 variant (the rows of the other recipes are left out)."""
    out = []
    for row in rows:
        if row.peer == "llamacpp" and row.label.split()[-1] in SERVED_GGUF:
            tool = Path(row.env["LLAMA_CPP_LIB_PATH"]) / "llama-server"
            out.append(ServedRow(f"llama-server {row.label.split()[-1]}", "llama-server", row.path,
                                 lambda p, t=tool, g=row.path: llama_server_args(t, g, p, threads=threads),
                                 row.env))
        elif row.peer == "clova" and row.label == f"clova-edge {row.variant}" and row.variant == "int4":
            out.append(ServedRow("clova-edge serve int4", "clova-edge", row.path,
                                 lambda p, d=row.path: clova_serve_args(d, "int4", p, threads=threads)))
    return sorted(out, key=lambda r: r.runtime != "llama-server")     # the peer first, as the reference


def measure_row(row: ServedRow, logs: Path, streams: tuple[int, ...], max_tokens: int) -> dict[str, Any]:
    port = free_port()
    args = row.args(port)
    rec: dict[str, Any] = {"runtime": row.runtime, "model": str(row.model), "command": args,
                           "load_avg_start": os.getloadavg()}
    server = Server(args, port, logs / f"{row.label.replace(' ', '-')}.log", env=row.env)
    try:
        with server as url:
            rec["startup_s"] = server.startup_s
            rec["streams"] = serving.measure(url, streams, max_tokens=max_tokens, server_pid=server.proc.pid)
    except Exception as e:  # a server that fails is reported, the others still run
        rec["error"] = f"{type(e).__name__}: {e}"[-1500:]
    rec["load_avg_end"] = os.getloadavg()
    return rec


def run_section(rows: Sequence[ServedRow], logs: Path, say: Callable[[str], None], *,
                results: dict[str, Any], resume: bool = False, only: Sequence[str] = (),
                streams: tuple[int, ...] = serving.STREAMS, max_tokens: int = serving.MAX_TOKENS,
                threads: int = 2, save: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """Measure `rows` into results["serving"] (the spec and one record per server), calling save() after
    each. resume: rows already there without an error are kept, not measured again, unless `only` names
    them (bench.py --resume); only: substrings of the labels to run."""
    old = results.get("serving", {}).get("rows", {}) if resume else {}
    section = results["serving"] = {
        "spec": {"streams": list(streams), "max_tokens": max_tokens, "prompts": len(serving.PROMPTS),
                 "slots": SLOTS, "slot_ctx": SLOT_CTX, "threads": threads}, "rows": dict(old)}
    for row in rows:
        if not selected(row.label, only):
            continue
        if not only and "error" not in section["rows"].get(row.label, {"error": "not run"}):
            continue
        say(f"[serving] {row.label} at {', '.join(map(str, streams))} streams ...")
        rec = section["rows"][row.label] = measure_row(row, logs, streams, max_tokens)
        if "error" in rec:
            say(f"  failed: {rec['error'][-300:]}")
        save()
    return section
