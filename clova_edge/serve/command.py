"""`clova-edge serve`: the command's options, validated into ServeSettings, then serve/main.py runs it.

Registered on the CLI's app by clova_edge/cli.py; nothing here imports the serve extra until the command runs,
so `clova-edge --help` stays fast and works without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from clova_edge.options import ModelArg, ModelOpt, Threads, Variant, model_dir, variant_name
from clova_edge.runtime.errors import ClovaEdgeError


def serve(model: Optional[Path] = ModelArg, model_opt: Optional[Path] = ModelOpt,
          variant: Optional[str] = Variant, threads: Optional[int] = Threads,
          host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (loopback by default)"),
          port: int = typer.Option(8000, "--port"),
          api_key: Optional[str] = typer.Option(None, "--api-key", envvar="CLOVA_EDGE_API_KEY",
                                                help="require 'Authorization: Bearer KEY'"),
          slots: int = typer.Option(4, "--slots", help="requests generating at once (decoded batched)"),
          queue: int = typer.Option(16, "--queue", help="requests that may wait for a slot; beyond: 503"),
          context: Optional[int] = typer.Option(None, "--context",
                                                help="positions per slot [default: the model's context]"),
          max_tokens: Optional[int] = typer.Option(None, "--max-tokens",
                                                   help="the largest max_tokens a request may ask for"),
          max_body: int = typer.Option(1 << 20, "--max-body", help="request body limit in bytes")) -> None:
    """Serve the model over an OpenAI-compatible HTTP API (needs the [serve] extra)."""
    from clova_edge.serve.main import run
    try:
        from clova_edge.serve.app import ServeSettings
    except ImportError as e:
        raise ClovaEdgeError(f"serve needs the serve extra ({e.name} missing): "
                             "pip install 'clova-edge[serve]'")
    try:
        settings = ServeSettings(slots=slots, queue=queue, context=context, api_key=api_key,
                                 max_body_bytes=max_body, max_tokens=max_tokens)
    except ValueError as e:
        raise ClovaEdgeError(str(e)) from None
    run(model_dir(model, model_opt), host=host, port=port, variant=variant_name(variant), threads=threads,
        settings=settings)
