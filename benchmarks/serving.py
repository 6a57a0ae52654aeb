"""Serving benchmark client: N concurrent streaming chat clients against any OpenAI-compatible server.

    python -m clova_edge.benchmarks.serving --url http://127.0.0.1:8080 [--streams 1,2,4] [--max-tokens 128]

The same code measures llama-server and `clova-edge serve` (servers.py starts either). Each of the N clients
sends every prompt of PROMPTS once, one after another (a closed loop: a client's next request leaves when its
previous answer has ended), client i starting at prompt i so that concurrent requests differ. Every request is
`POST /v1/chat/completions` with stream=true, temperature 0, a fixed max_tokens and `ignore_eos` (llama-server
honours it; clova-edge serve accepts it too) so that every answer has the same length whatever the weights.
Figures per stream count:
  aggregate_tok_s   completion tokens of all requests / wall time from the first request sent to the last
                    answer ended (prefills included: what a server delivers under that load)
  ttft_s            request sent -> first chunk carrying content; latency_s: request sent -> stream ended
  stream_tok_s      per request, (tokens - 1) / (end - first token): the decode rate one client sees
Tokens are the `usage.completion_tokens` of the final chunk (stream_options.include_usage), else the number of
content chunks. Every wait is bounded (httpx timeouts, plus one deadline per stream count). The load average
says little here (the server itself keeps its threads busy), so each figure also has the CPU the rest of the
machine used meanwhile: other_cpu_cores = (busy CPU of the machine - the server's - this client's) / wall,
from /proc (Linux); above ~0.1 another job shared the cores and the figure is not clean.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

SYSTEM = "You are a helpful assistant. Answer briefly and clearly."
PROMPTS = ("대한민국의 수도는 어디인가요?",
           "Explain in two sentences what photosynthesis is.",
           "라면을 맛있게 끓이는 방법을 간단히 알려 줘.",
           "Write a short Python function that reverses a string.")
MAX_TOKENS = 128
STREAMS = (1, 2, 4)


def chat_body(model: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "system", "content": SYSTEM},
                                         {"role": "user", "content": prompt}],
            "stream": True, "stream_options": {"include_usage": True}, "temperature": 0,
            "max_tokens": max_tokens, "ignore_eos": True}


async def model_id(client: httpx.AsyncClient) -> str:
    """The first model GET /v1/models lists (a server may answer 404 to a model name it does not serve)."""
    r = await client.get("/v1/models")
    r.raise_for_status()
    return r.json()["data"][0]["id"]


def _has_content(chunk: dict[str, Any]) -> bool:
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        if delta.get("content") or delta.get("reasoning_content") or delta.get("tool_calls"):
            return True
    return False


async def one_request(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    """One streamed chat completion: its timings, its token count, or the error that ended it."""
    t0 = time.perf_counter()
    first = last = None
    chunks, usage = 0, None
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                text = (await r.aread()).decode(errors="replace")
                return {"error": f"HTTP {r.status_code}: {text[:300]}"}
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue                     # SSE comments, blank separators
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if chunk.get("error"):
                    return {"error": f"stream error: {json.dumps(chunk['error'])[:300]}"}
                usage = chunk.get("usage") or usage
                if _has_content(chunk):
                    last = time.perf_counter()
                    first = first or last
                    chunks += 1
    except (httpx.HTTPError, json.JSONDecodeError) as e:
        return {"error": f"{type(e).__name__}: {e}"}
    end = time.perf_counter()
    if first is None:
        return {"error": "the stream ended without content"}
    tokens = int(usage["completion_tokens"]) if usage and "completion_tokens" in usage else chunks
    out = {"ttft_s": first - t0, "latency_s": end - t0, "tokens": tokens, "chunks": chunks,
           "tokens_from": "usage" if usage else "chunks"}
    if tokens > 1 and last > first:
        out["stream_tok_s"] = (tokens - 1) / (last - first)
    return out


async def _client_loop(client: httpx.AsyncClient, model: str, index: int, prompts: tuple[str, ...],
                       max_tokens: int) -> list[dict[str, Any]]:
    order = prompts[index % len(prompts):] + prompts[:index % len(prompts)]
    return [await one_request(client, chat_body(model, p, max_tokens)) for p in order]


def cpu_seconds(pid: int | None = None) -> float | None:
    """Busy CPU seconds since boot: of the whole machine (/proc/stat: all but idle and iowait), or of
    process `pid` with its reaped children (/proc/PID/stat); None where /proc has no answer."""
    try:
        if pid is None:
            v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
            ticks = sum(v) - v[3] - v[4]
        else:   # the fields after "(comm)": utime, stime, cutime, cstime are the 12th-15th
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks = sum(int(x) for x in f[11:15])
    except (OSError, ValueError, IndexError):
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


def _pct(xs: list[float], q: float) -> float | None:
    return float(np.percentile(xs, q)) if xs else None


def summarize(requests: list[dict[str, Any]], wall_s: float, streams: int, max_tokens: int) -> dict[str, Any]:
    ok = [r for r in requests if "error" not in r]
    tokens = sum(r["tokens"] for r in ok)
    ttft, lat = [r["ttft_s"] for r in ok], [r["latency_s"] for r in ok]
    rates = [r["stream_tok_s"] for r in ok if "stream_tok_s" in r]
    return {"streams": streams, "requests": len(requests), "errors": len(requests) - len(ok),
            "first_errors": [r["error"] for r in requests if "error" in r][:3],
            # answers shorter than max_tokens: the server stopped early (ignore_eos not honoured?)
            "short_answers": sum(r["tokens"] < max_tokens for r in ok),
            "completion_tokens": tokens, "wall_s": wall_s,
            "aggregate_tok_s": tokens / wall_s if ok and wall_s > 0 else None,
            "ttft_s": {"p50": _pct(ttft, 50), "p95": _pct(ttft, 95)},
            "latency_s": {"p50": _pct(lat, 50), "p95": _pct(lat, 95)},
            "stream_tok_s_median": _pct(rates, 50),
            "tokens_from": sorted({r["tokens_from"] for r in ok})}


async def run_streams(base_url: str, streams: int, *, prompts: tuple[str, ...] = PROMPTS,
                      max_tokens: int = MAX_TOKENS, request_timeout: float = 300.0,
                      deadline_s: float = 1800.0, api_key: str | None = None,
                      server_pid: int | None = None) -> dict[str, Any]:
    """`streams` concurrent clients, each through every prompt; the summary of all their requests.
    server_pid: the server's process, whose CPU is not counted as the others' (module doc)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    # read= bounds the wait for each next chunk, not the whole answer
    timeout = httpx.Timeout(request_timeout, connect=10.0)
    limits = httpx.Limits(max_connections=streams + 1, max_keepalive_connections=streams + 1)
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout, limits=limits,
                                 headers=headers) as client:
        model = await model_id(client)
        load_start = os.getloadavg()
        cpu0 = cpu_seconds(), cpu_seconds(server_pid), sum(os.times()[:2])
        t0 = time.perf_counter()
        jobs = [_client_loop(client, model, i, prompts, max_tokens) for i in range(streams)]
        try:
            per_client = await asyncio.wait_for(asyncio.gather(*jobs), deadline_s)
        except asyncio.TimeoutError:
            n = streams * len(prompts)
            return {"streams": streams, "requests": n, "errors": n, "aggregate_tok_s": None,
                    "first_errors": [f"not done after {deadline_s:.0f} s"]}
        wall = time.perf_counter() - t0
        cpu1 = cpu_seconds(), cpu_seconds(server_pid), sum(os.times()[:2])
    out = summarize([r for rs in per_client for r in rs], wall, streams, max_tokens)
    if server_pid and None not in cpu0 + cpu1:
        (m0, s0, c0), (m1, s1, c1) = cpu0, cpu1
        out["server_cpu_cores"] = (s1 - s0) / wall
        out["other_cpu_cores"] = max(0.0, (m1 - m0) - (s1 - s0) - (c1 - c0)) / wall
    return {**out, "model": model, "max_tokens": max_tokens, "prompts": len(prompts),
            "load_avg_start": load_start, "load_avg_end": os.getloadavg()}


async def warm_up(base_url: str, api_key: str | None = None, timeout: float = 300.0) -> dict[str, Any]:
    """One short request, so that a server's first-request work is not in the first figure."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(timeout, connect=10.0),
                                 headers=headers) as client:
        return await one_request(client, chat_body(await model_id(client), PROMPTS[0], 8))


def measure(base_url: str, streams: tuple[int, ...] = STREAMS, **kw: Any) -> dict[str, Any]:
    """Warm up, then run each stream count in turn: {str(n): summary}."""
    warm = asyncio.run(warm_up(base_url, kw.get("api_key")))
    if "error" in warm:
        raise RuntimeError(f"warm-up request failed: {warm['error']}")
    return {str(n): asyncio.run(run_streams(base_url, n, **kw)) for n in streams}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="clova_edge.benchmarks.serving", description=__doc__.split("\n")[0])
    ap.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8080")
    ap.add_argument("--streams", default=",".join(map(str, STREAMS)))
    ap.add_argument("--max-tokens", type=int, default=MAX_TOKENS)
    ap.add_argument("--api-key", default=None)
    a = ap.parse_args(argv)
    res = measure(a.url.rstrip("/"), tuple(int(s) for s in a.streams.split(",") if s),
                  max_tokens=a.max_tokens, api_key=a.api_key)
    json.dump(res, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
