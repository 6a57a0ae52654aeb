"""Run one runtime through the protocol in this process and write its figures as JSON.

    python -m clova_edge.benchmarks.peers.runner PEER MODEL_PATH SPEC_JSON OUT_JSON [--what ttft,decode,long]

Started by bench.py with the peer's own interpreter (its virtual environment), one process per measurement, so
that peak RSS belongs to that runtime alone. PEER is a module of this package: clova, clova_json (clova-edge
with a JSON-schema constraint), torch_fp32, ortgenai, llamacpp, optimum; MODEL_PATH is what that adapter
loads (a folder or a .gguf file).
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

from clova_edge.benchmarks.protocol import Spec, measure

PEERS = ("clova", "clova_json", "torch_fp32", "ortgenai", "llamacpp", "optimum")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="clova_edge.benchmarks.peers.runner")
    ap.add_argument("peer", choices=PEERS)
    ap.add_argument("model")
    ap.add_argument("spec")
    ap.add_argument("out")
    ap.add_argument("--what", default="ttft,decode,long")
    ap.add_argument("--variant", default=None, help="clova: fp32/int8/int4")
    a = ap.parse_args(argv)
    spec = Spec.from_dict(json.loads(Path(a.spec).read_text()))
    module = importlib.import_module(f"clova_edge.benchmarks.peers.{a.peer}")
    adapter = module.make_adapter(Path(a.model), variant=a.variant)
    result = measure(adapter, spec, what=tuple(a.what.split(",")))
    result["peer"], result["model_path"], result["variant"] = a.peer, a.model, a.variant
    result["runtime_version"] = getattr(adapter, "version", None)
    result.update(adapter.report(spec) if hasattr(adapter, "report") else {})   # an adapter's own figures
    Path(a.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
