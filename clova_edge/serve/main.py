"""Start the server: load the model folder, name it, check the address is safe, run uvicorn.

Served under the model's Hugging Face id when it was exported from the Hub (what vLLM serves it as, so a
client moving to vLLM changes only the base URL), also accepting the id's last part and the folder's name.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import sys
from pathlib import Path
from typing import Any

from clova_edge.runtime.errors import ClovaEdgeError

log = logging.getLogger("clova_edge.serve")


def served_names(manifest: Any) -> tuple[str, ...]:
    """The names a request's `model` may use; the first is the one /v1/models lists."""
    source = str((manifest.raw.get("source") or {}).get("id") or "")
    hub = source.count("/") == 1 and not source.startswith((".", "/", "~")) and not Path(source).exists()
    names = [source, source.split("/")[-1]] if hub else []
    names.append(Path(manifest.folder).resolve().name)
    return tuple(dict.fromkeys(names))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build(folder: Path, *, variant: str | None, threads: int | None, settings: Any):
    """The app for `folder` (the model is loaded here, before the socket opens)."""
    try:
        from clova_edge.serve.app import create_app
    except ImportError as e:
        raise ClovaEdgeError(f"serve needs the serve extra ({e.name} missing): "
                             "pip install 'clova-edge[serve]'") from None
    from clova_edge.runtime.engine import Engine
    engine = Engine.load(folder, variant=variant, threads=threads)
    return create_app(engine, settings, names=served_names(engine.manifest)), engine


def run(folder: Path, *, host: str, port: int, variant: str | None, threads: int | None,
        settings: Any) -> None:
    if not 0 < port < 65536:
        raise ClovaEdgeError(f"--port {port} is not a TCP port (1-65535)")
    sock = _listen(host, port)          # before the model loads: a busy port fails at once
    app, engine = build(folder, variant=variant, threads=threads, settings=settings)
    import uvicorn
    if not is_loopback(host) and settings.api_key is None:
        print(f"warning: serving on {host} without an API key: anyone who can reach this port can use the "
              "model; give --api-key KEY (or $CLOVA_EDGE_API_KEY)", file=sys.stderr)
    names = served_names(engine.manifest)
    print(f"clova-edge serve: {names[0]} ({engine.model.variant.name}, {settings.slots} slots) on "
          f"http://{host}:{port}/v1", file=sys.stderr)
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])


def _listen(host: str, port: int) -> socket.socket:
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as e:
        raise ClovaEdgeError(f"cannot listen on {host}:{port} ({e.strerror or e}); give another --port "
                             "or --host") from None
    return sock
