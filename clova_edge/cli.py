"""`clova-edge`: chat, generate, info, export, quantize, bench. The face of the product; logic lives below.

Errors that clova-edge raises on purpose (ClovaEdgeError) are printed as one line with what to do, exit 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from clova_edge.options import (Load, MaxNew, MinP, ModelArg, ModelOpt, PromptCache, RepPen, Seed, Stop, Temp,
                                 Threads, TopK, TopP, Variant, load_engine as _load, model_dir, read_stdin,
                                 variant_name)
from clova_edge.progress import StepProgress
from clova_edge.runtime.errors import ClovaEdgeError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Run HyperCLOVAX-SEED-Text-Instruct-0.5B (and other small Llama-style models) "
                       "on CPU/ARM.")

def _settings(engine, max_new_tokens, temperature, top_k, top_p, min_p, repetition_penalty, seed, stop):
    return engine.default_settings(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                                   top_p=top_p, min_p=min_p, repetition_penalty=repetition_penalty, seed=seed,
                                   stop=tuple(stop) if stop else None)


@app.command()
def chat(model: Optional[Path] = ModelArg, model_opt: Optional[Path] = ModelOpt,
         variant: Optional[str] = Variant, threads: Optional[int] = Threads,
         system: Optional[str] = typer.Option(None, "--system",
                                              help="system prompt [default: the model's own]"),
         tools: Optional[Path] = typer.Option(None, "--tools",
                                              help="JSON file of tool definitions (HyperCLOVAX)"),
         json_out: bool = typer.Option(False, "--json", help="not a terminal: print one JSON object"),
         load: Optional[Path] = Load, prompt_cache: bool = PromptCache,
         max_new_tokens: Optional[int] = MaxNew, temperature: Optional[float] = Temp,
         top_k: Optional[int] = TopK, top_p: Optional[float] = TopP, min_p: Optional[float] = MinP,
         repetition_penalty: Optional[float] = RepPen,
         seed: Optional[int] = Seed, stop: Optional[list[str]] = Stop) -> None:
    """Chat interactively (in a terminal), or answer what stdin holds (in a pipe)."""
    from clova_edge.repl import answer_once, run_repl
    engine = _load(model, model_opt, variant, threads, prompt_cache)
    settings = _settings(engine, max_new_tokens, temperature, top_k, top_p, min_p, repetition_penalty, seed,
                         stop)
    from clova_edge.runtime.tools import load_tools
    tool_defs = load_tools(tools) if tools else None
    if sys.stdin.isatty() and not json_out:
        run_repl(engine, settings, system, tools=tool_defs, load=load)
    else:
        answer_once(engine, settings, read_stdin(), system=system, json_out=json_out, tools=tool_defs,
                    load=load)


@app.command()
def generate(prompt: str = typer.Argument(..., help="the prompt (a user message; '-' reads stdin)"),
             model: Optional[Path] = ModelArg, model_opt: Optional[Path] = ModelOpt,
             variant: Optional[str] = Variant, threads: Optional[int] = Threads,
             system: Optional[str] = typer.Option(None, "--system", help="system prompt"),
             raw: bool = typer.Option(False, "--raw", help="no chat template: continue the text as given"),
             json_out: bool = typer.Option(False, "--json", help="print one JSON object with text and stats"),
             json_schema: Optional[Path] = typer.Option(
                 None, "--json-schema",
                 help="JSON schema file: the answer is JSON valid against it (llguidance)"),
             max_new_tokens: Optional[int] = MaxNew, temperature: Optional[float] = Temp,
             top_k: Optional[int] = TopK, top_p: Optional[float] = TopP, min_p: Optional[float] = MinP,
             repetition_penalty: Optional[float] = RepPen,
             seed: Optional[int] = Seed, stop: Optional[list[str]] = Stop,
             prompt_cache: bool = PromptCache) -> None:
    """Answer one prompt and print only the answer (pipe-friendly)."""
    from clova_edge.repl import answer_once
    engine = _load(model, model_opt, variant, threads, prompt_cache)
    settings = _settings(engine, max_new_tokens, temperature, top_k, top_p, min_p, repetition_penalty, seed,
                         stop)
    text = read_stdin() if prompt == "-" else prompt
    from clova_edge.runtime.constrain import load_json_schema
    schema = load_json_schema(json_schema) if json_schema else None
    answer_once(engine, settings, text, system=system, json_out=json_out, raw=raw, json_schema=schema)


@app.command()
def info(model: Optional[Path] = ModelArg, model_opt: Optional[Path] = ModelOpt) -> None:
    """The model folder's manifest in human form: variants, sizes, quality, memory, verification."""
    from clova_edge.runtime.manifest import load_manifest
    from clova_edge.report import describe
    typer.echo(describe(load_manifest(model_dir(model, model_opt))))


@app.command()
def export(source: str = typer.Argument(..., help="Hugging Face id, local HF folder, or .gguf file"),
           out: Path = typer.Argument(..., help="output model folder"),
           force: bool = typer.Option(False, "--force", help="replace an existing output folder"),
           quantize: str = typer.Option("int8,int4", "--quantize",
                                        help="variants besides fp32 ('' for none)"),
           context_length: Optional[int] = typer.Option(None, "--context-length",
                                                        help="override the context")) -> None:
    """Trace a Hugging Face model to a verified ONNX model folder (needs the [export] extra)."""
    try:
        from clova_edge.export.pipeline import export_model
        from clova_edge.export.quiet import quiet_exporter
    except ImportError as e:
        raise ClovaEdgeError(f"export needs the export extra ({e.name} missing): "
                             "pip install 'clova-edge[export]'")
    variants = tuple(v.strip() for v in quantize.split(",") if v.strip())
    with quiet_exporter(), StepProgress() as progress:
        export_model(source, out, force=force, quantize=variants, context_length=context_length,
                     progress=progress)


@app.command()
def quantize(model: Optional[Path] = typer.Argument(None,
                                                    help="exported model folder (with its fp32 variant)"),
             bits: Optional[int] = typer.Option(None, "--bits", help="4 or 8: that width's default recipe"),
             recipe: Optional[str] = typer.Option(
                 None, "--recipe",
                 help="a named recipe (`clova-edge quantize --list`) [default: int4 for 4 bits]"),
             block_size: Optional[int] = typer.Option(
                 None, "--block-size", help="weights per block, for every tensor of the recipe"),
             kv_cache: Optional[str] = typer.Option(
                 None, "--kv-cache", help="int8 | fp32: override the recipe's KV cache"),
             list_recipes: bool = typer.Option(False, "--list", help="list the recipes and exit"),
             ) -> None:
    """(Re-)quantize an exported folder to INT4 or INT8, with a quality report on held-out text."""
    try:
        from clova_edge.quant import DEFAULT_RECIPE, RECIPES, QuantSettings, quantize_model_folder
    except ImportError as e:
        raise ClovaEdgeError(f"quantize needs the export extra ({e.name} missing): "
                             "pip install 'clova-edge[export]'")
    if list_recipes:
        for name, r in RECIPES.items():
            default = " (default for --bits %d)" % r.bits if DEFAULT_RECIPE.get(r.bits) == name else ""
            typer.echo(f"{name}{default}: {r.summary}")
        return
    if model is None:
        raise ClovaEdgeError("quantize needs the exported model folder: "
                             "clova-edge quantize MODEL_DIR [--bits 4]")
    settings = QuantSettings.make(bits=bits if bits is not None or recipe else 4, recipe=recipe,
                                  block_size=block_size, kv_cache=kv_cache)
    with StepProgress() as progress:
        quantize_model_folder(model, settings, progress=progress)


@app.command()
def bench(model: Optional[Path] = ModelArg, model_opt: Optional[Path] = ModelOpt,
          variant: Optional[str] = Variant, threads: Optional[int] = Threads,
          prompt_tokens: int = typer.Option(512, "--prompt-tokens"),
          new_tokens: int = typer.Option(64, "--new-tokens"),
          json_out: bool = typer.Option(False, "--json")) -> None:
    """Time to first token, prefill and decode speed, memory and bandwidth of one model on this machine."""
    from clova_edge.quickbench import run_quick_bench
    with StepProgress() as progress:
        result = run_quick_bench(model_dir(model, model_opt), variant=variant_name(variant), threads=threads,
                                 prompt_tokens=prompt_tokens, new_tokens=new_tokens, progress=progress)
    lines = (f"{k:>22}: {v}" for k, v in result.items())
    typer.echo(json.dumps(result, indent=1) if json_out else "\n".join(lines))


# `clova-edge serve` lives with the server (clova_edge/serve/command.py); starlette loads only when it runs.
from clova_edge.serve.command import serve  # noqa: E402

app.command()(serve)


def main() -> None:
    try:
        app()
    except ClovaEdgeError as e:
        typer.echo(f"error: {e}", err=True)
        raise SystemExit(2)
