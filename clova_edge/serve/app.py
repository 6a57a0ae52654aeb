"""The Starlette app: OpenAI's routes over one Engine, with the API key, body limits and OpenAI-shaped errors.

    GET  /health                 liveness and free slots (no key needed)
    GET  /v1/models              the one model served, under its name (the Hub id when it came from the Hub)
    POST /v1/chat/completions    messages -> the model's chat format (HyperCLOVAX: tool_list and system
                                 blocks, the card's system prompt unless the messages have one); stream,
                                 tools, response_format json_object / json_schema
    POST /v1/completions         raw text continued

Errors are {"error": {"message", "type", "param", "code"}} with 400 (bad input), 401 (no or wrong key), 404
(unknown model or route), 413 (body too large), 503 with Retry-After (every slot busy, queue full); bad
input is never a 500. Special-token text in any message stays plain text (conversation.py).
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from clova_edge.runtime.errors import ClovaEdgeError
from clova_edge.runtime.tools import normalize_tools
from clova_edge.serve import replies
from clova_edge.serve.requests import ChatRequest, CompletionRequest
from clova_edge.serve.worker import Busy, Work, Worker

log = logging.getLogger("clova_edge.serve")


@dataclass(frozen=True)
class ServeSettings:
    """How the server runs; validated on creation."""

    slots: int = 4                  # generations in flight (their decode steps run batched)
    queue: int = 16                 # requests that may wait for a slot; beyond: 503
    context: int | None = None      # positions per slot (prompt + answer); default: the model's context
    api_key: str | None = None
    max_body_bytes: int = 1 << 20
    max_tokens: int | None = None   # the largest max_tokens a request may ask for (default: the context)

    def __post_init__(self) -> None:
        for name in ("slots", "max_body_bytes"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an int >= 1, got {getattr(self, name)!r}")
        if not isinstance(self.queue, int) or self.queue < 0:
            raise ValueError(f"queue must be an int >= 0, got {self.queue!r}")
        for name in ("context", "max_tokens"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 2):
                raise ValueError(f"{name} must be an int >= 2, got {value!r}")


class HttpError(Exception):
    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.type, self.code, self.param, self.headers = status, type_, code, param, headers


def error_response(status: int, message: str, *, type_: str = "invalid_request_error",
                   code: str | None = None, param: str | None = None,
                   headers: dict | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def create_app(engine: Any, settings: ServeSettings, *, names: tuple[str, ...]) -> Starlette:
    """The app serving `engine` under `names` (the first is the one /v1/models lists)."""
    ctx = engine.model.config.context_length
    worker_box: dict[str, Worker] = {}

    @asynccontextmanager
    async def lifespan(app):
        worker_box["w"] = Worker(engine, slots=settings.slots, capacity=settings.context or ctx,
                                 queue=settings.queue)
        try:
            yield
        finally:
            worker_box.pop("w").close()

    async def health(request: Request) -> JSONResponse:
        w = worker_box["w"]
        return JSONResponse({"status": "ok", "model": names[0], "slots": w.slots,
                             "slots_idle": w.slots - w.running, "queued": w.waiting})

    async def models(request: Request) -> JSONResponse:
        _check_key(request, settings)
        return JSONResponse({"object": "list", "data": [
            {"id": names[0], "object": "model", "created": int(time.time()), "owned_by": "clova-edge"}]})

    async def chat(request: Request):
        body = ChatRequest.model_validate(await _json_body(request, settings))
        _check_model(body.model, names)
        declared, use_tools = normalize_tools(body.tools), body.use_tools()
        schema = body.json_schema()
        if use_tools and schema is not None:
            raise HttpError(400, "response_format and tools cannot be combined in one request",
                            param="response_format")
        ids = engine.encode(body.chat_messages(), tools=declared)
        constraint = (engine.constraint(json_schema=schema) if schema is not None
                      else engine.tool_constraint(declared) if use_tools else None)
        work = _work(body, ids, worker_box["w"], engine, settings, tools=use_tools, constraint=constraint)
        reply = replies.Chat(names[0], len(ids), body)
        return await _answer(request, worker_box["w"], work, reply, body.stream)

    async def completions(request: Request):
        body = CompletionRequest.model_validate(await _json_body(request, settings))
        _check_model(body.model, names)
        text = body.text()
        ids = engine.encode(text, chat_template=False)
        work = _work(body, ids, worker_box["w"], engine, settings)
        reply = replies.Completion(names[0], len(ids), body, echo=text if body.echo else "")
        return await _answer(request, worker_box["w"], work, reply, body.stream)

    routes = [Route("/health", health, methods=["GET"]), Route("/v1/models", _guard(models), methods=["GET"]),
              Route("/v1/chat/completions", _guard(chat), methods=["POST"]),
              Route("/v1/completions", _guard(completions), methods=["POST"])]
    handlers = {404: lambda r, e: error_response(404, f"no route {r.method} {r.url.path}", code="not_found"),
                405: lambda r, e: error_response(405, f"{r.method} is not allowed on {r.url.path}")}
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)


def _guard(handler):
    """Every error of a request as an OpenAI error object; a bug is the only 500."""
    async def guarded(request: Request):
        try:
            return await handler(request)
        except HttpError as e:
            return error_response(e.status, str(e), type_=e.type, code=e.code, param=e.param,
                                  headers=e.headers)
        except ValidationError as e:
            err = e.errors()[0]
            param = ".".join(str(p) for p in err["loc"])
            return error_response(400, f"{param}: {err['msg']}", param=param, code="invalid_value")
        except Busy as e:
            return error_response(503, str(e), type_="server_busy", code="server_busy",
                                  headers={"Retry-After": str(e.retry_after)})
        except ClovaEdgeError as e:
            return error_response(400, str(e), code=type(e).__name__)
        except Exception:
            log.exception("internal error on %s", request.url.path)
            return error_response(500, "internal server error (a bug: please report it)",
                                  type_="server_error")
    return guarded


def _check_key(request: Request, settings: ServeSettings) -> None:
    if settings.api_key is None:
        return
    given = request.headers.get("authorization", "")
    token = given[7:] if given[:7].lower() == "bearer " else ""
    # constant time: the comparison does not tell how much of a guessed key was right
    if not hmac.compare_digest(token.encode(), settings.api_key.encode()):
        raise HttpError(401, "no or wrong API key: send 'Authorization: Bearer KEY'", code="invalid_api_key")


async def _json_body(request: Request, settings: ServeSettings) -> Any:
    _check_key(request, settings)
    limit = settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HttpError(413, f"the request body is {declared} bytes; the limit is {limit}", code="too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpError(413, f"the request body is over the limit of {limit} bytes", code="too_large")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HttpError(400, f"the request body is not JSON ({e})", code="invalid_json") from None


def _check_model(name: str, names: tuple[str, ...]) -> None:
    if name not in names:
        raise HttpError(404, f"model {name!r} is not served here; GET /v1/models lists {names[0]!r}",
                        code="model_not_found", param="model")


def _work(body: Any, ids: list[int], worker: Worker, engine: Any, settings: ServeSettings, *,
          tools: bool = False, constraint: Any = None) -> Work:
    room = worker.capacity - len(ids)
    if room < 1:
        raise HttpError(400, f"the prompt is {len(ids)} tokens; a request holds at most "
                             f"{worker.capacity - 1}",
                        code="context_length_exceeded", param="messages")
    asked = body.requested_tokens()
    if asked is not None and settings.max_tokens is not None and asked > settings.max_tokens:
        raise HttpError(400, f"max_tokens {asked} is over this server's limit of {settings.max_tokens}",
                        param="max_tokens")
    limit = min(room, asked or settings.max_tokens or room)   # the answer stops at the context: "length"
    gen = engine.default_settings(**body.settings_overrides(limit))
    return Work(ids, gen, tools=tools, constraint=constraint, ignore_eos=body.ignore_eos)


async def _answer(request: Request, worker: Worker, work: Work, reply: Any, stream: bool):
    events = worker.stream(work)
    if not stream:
        async for event in events:
            reply.add(event)
            if event.n_generated % 16 == 0 and await request.is_disconnected():
                await events.aclose()      # nobody is waiting for this answer: free the slot
                return JSONResponse({}, status_code=499)
        return JSONResponse(reply.whole(work.reused))
    first = await anext(events)       # admitted and started: errors so far are still a status code

    async def sse():
        try:
            for chunk in reply.chunks(first, work.reused):
                yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
            async for event in events:
                for chunk in reply.chunks(event, work.reused):
                    yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            await events.aclose()     # the client went away: the generation stops, its slot is freed

    return StreamingResponse(sse(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
