"""Render the serving section of the benchmark (results["serving"], written by servers.py): one table row per
server and stream count, and the targets of the serve issue.

Ratios: "x own 1 stream" divides a row's aggregate tok/s by the same server's at 1 stream (how it scales with
concurrency); "x llama-server" by the fastest llama-server row at the same stream count (the strongest peer
figure of the run, so a target met against it is met against every GGUF served).
"""

from __future__ import annotations

from typing import Any

TARGET_STREAMS = "4"
TARGET_SCALING = 2.5      # clova-edge at 4 streams vs its own single stream
TARGET_VS_PEER = 1.3      # clova-edge at 4 streams vs llama-server at 4


def _f(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _ok_rows(section: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in section.get("rows", {}).items() if "streams" in v}


def best_peer(section: dict[str, Any], n: str) -> float | None:
    """The fastest llama-server aggregate tok/s at n streams."""
    xs = [v["streams"].get(n, {}).get("aggregate_tok_s") for v in _ok_rows(section).values()
          if v["runtime"] == "llama-server"]
    xs = [x for x in xs if x]
    return max(xs) if xs else None


def ratios(section: dict[str, Any], label: str, n: str) -> tuple[float | None, float | None]:
    """(x own 1 stream, x best llama-server) of row `label` at n streams."""
    streams = section["rows"][label]["streams"]
    agg = streams.get(n, {}).get("aggregate_tok_s")
    one = streams.get("1", {}).get("aggregate_tok_s")
    peer = best_peer(section, n)
    return (agg / one if agg and one else None), (agg / peer if agg and peer else None)


def serving_table(section: dict[str, Any]) -> str:
    head = ["server", "streams", "aggregate tok/s", "x own 1 stream", "x llama-server", "per-stream tok/s",
            "latency p50 / p95 s", "TTFT p50 / p95 s", "errors", "other CPU (cores)", "load avg start/end"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, rec in section.get("rows", {}).items():
        if "streams" not in rec:
            lines.append(f"| {label} | failed | " + " | ".join(["-"] * (len(head) - 2)) + " |")
            continue
        for n, s in rec["streams"].items():
            own, peer = ratios(section, label, n)
            lat, ttft = s.get("latency_s", {}), s.get("ttft_s", {})
            load = s.get("load_avg_start"), s.get("load_avg_end")
            cells = [label, n, _f(s.get("aggregate_tok_s")), _f(own, 2), _f(peer, 2),
                     _f(s.get("stream_tok_s_median")),
                     f"{_f(lat.get('p50'), 2)} / {_f(lat.get('p95'), 2)}",
                     f"{_f(ttft.get('p50'), 2)} / {_f(ttft.get('p95'), 2)}",
                     f"{s.get('errors', 0)}/{s.get('requests', 0)}"
                     + (f" ({s['short_answers']} short)" if s.get("short_answers") else ""),
                     _f(s.get("other_cpu_cores"), 2),
                     f"{load[0][0]:.1f}/{load[1][0]:.1f}" if all(load) else "-"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(section: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(target, measured, met) for each clova-edge row that has a 4-stream figure."""
    out = []
    for label, rec in _ok_rows(section).items():
        if rec["runtime"] != "clova-edge" or TARGET_STREAMS not in rec["streams"]:
            continue
        own, peer = ratios(section, label, TARGET_STREAMS)
        out.append((f"{label}: aggregate at {TARGET_STREAMS} streams >= {TARGET_SCALING}x its 1 stream",
                    f"{_f(own, 2)}x", bool(own and own >= TARGET_SCALING)))
        out.append((f"{label}: aggregate at {TARGET_STREAMS} streams >= {TARGET_VS_PEER}x llama-server's",
                    f"{_f(peer, 2)}x", bool(peer and peer >= TARGET_VS_PEER)))
    return out


def markdown(section: dict[str, Any]) -> list[str]:
    """The lines bench.md gets for the section ([] when there is none)."""
    if not section or not section.get("rows"):
        return []
    sp = section["spec"]
    out = [f"### Serving: OpenAI-compatible servers, {sp['prompts']} chat prompts per client, streamed, "
           f"greedy, {sp['max_tokens']} tokens each (ignore_eos); {sp['slots']} slots, "
           f"{sp['threads']} threads",
           "", "Aggregate = completion tokens of all clients / wall time (prefills included). "
           "x llama-server: against the fastest llama-server row at the same stream count. Other CPU: "
           "what the rest of the machine used meanwhile (above ~0.1 cores the figure was shared).", "",
           serving_table(section), ""]
    goals = targets(section)
    if goals:
        out += ["| target (serve issue) | measured (same run) | met |", "|---|---|---|"]
        out += [f"| {t} | {m} | {'yes' if ok else 'no'} |" for t, m, ok in goals]
        out.append("")
    return out
