"""HTTP API of the stand-in: node 0 serves SGLang's endpoints (OpenAI-compatible chat and
completions included); nodes >= 1 serve only the dummy /health and /health_generate,
as SGLang's multi-node mode does. Standard library only (ThreadingHTTPServer)."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# The fork's server module imports its web stack at module top (cboss6/sglang@
# deepseek-xpu-distribute python/sglang/srt/entrypoints/http_server.py, lines 33-39):
# a node without them dies at `import`, before any rank starts. So does the stand-in.
import fastapi  # noqa: F401
import orjson  # noqa: F401
import uvicorn  # noqa: F401
import uvloop  # noqa: F401

from ..version import __version__
from .engine import Frontend, context_length, max_total_num_tokens
from .model import apply_chat_template, decode, encode
from .server_args import ServerArgs

logger = logging.getLogger("sglang.srt.http_server")

HEALTH_GENERATE_TIMEOUT_S = 20.0
DEFAULT_MAX_NEW_TOKENS = 128
COMPLETIONS_DEFAULT_MAX_TOKENS = 16


class BadRequest(Exception):
    pass


@dataclasses.dataclass
class ServerState:
    args: ServerArgs
    frontend: Frontend | None  # None on nodes >= 1

    @property
    def model_id(self) -> str:
        return str(self.args.served_model_name)


def _stops(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(s) for s in value]


def _apply_stop(text: str, stops: list[str]) -> tuple[str, str | None]:
    cut, matched = len(text), None
    for stop in stops:
        at = text.find(stop) if stop else -1
        if 0 <= at < cut:
            cut, matched = at, stop
    return text[:cut], matched


@dataclasses.dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    matched_stop: str | None


def complete(
    state: ServerState,
    prompts: list[list[int]],
    max_new: int,
    stops: list[str],
    ignore_eos: bool = False,
) -> list[Completion]:
    """Run prompts through every rank and shape the answers."""
    assert state.frontend is not None
    limit = context_length(state.args)
    for ids in prompts:
        if len(ids) + max_new > limit:
            raise BadRequest(
                f"Requested token count exceeds the model's maximum context length of "
                f"{limit} tokens. You requested a total of {len(ids) + max_new} tokens: "
                f"{len(ids)} tokens from the input messages and {max_new} tokens for the "
                f"completion. Please reduce the number of tokens in the input messages or "
                f"the completion to fit within the limit."
            )
        if not ids:
            raise BadRequest("The input is empty.")
    outputs = state.frontend.generate(prompts, max_new, ignore_eos=ignore_eos)
    results = []
    for ids, out in zip(prompts, outputs, strict=True):
        text, matched = _apply_stop(decode(out), stops)
        reason = "stop" if matched is not None or len(out) < max_new else "length"
        # the fork counts output ids (an EOS kept under ignore_eos included), not text
        count = len(out) if matched is None else len(encode(text))
        results.append(Completion(text, len(ids), count, reason, matched))
    return results


class Handler(BaseHTTPRequestHandler):
    state: ServerState
    protocol_version = "HTTP/1.1"
    server_version = "uvicorn"
    sys_version = ""

    # -- plumbing ---------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        try:
            phrase = HTTPStatus(int(code)).phrase
        except ValueError:
            phrase = ""
        host, port = self.client_address[:2]
        logger.info(f'INFO:     {host}:{port} - "{self.requestline}" {code} {phrase}')

    def _send(self, code: int, body: Any, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, code: int, message: str) -> None:
        self._send(
            code,
            {"object": "error", "message": message, "type": "BadRequestError", "code": code},
        )

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        try:
            doc = json.loads(raw or b"{}")
        except json.JSONDecodeError as exc:
            raise BadRequest(f"invalid JSON body: {exc}") from exc
        if not isinstance(doc, dict):
            raise BadRequest("the body must be a JSON object")
        return doc

    def _authorized(self) -> bool:
        key = self.state.args.api_key
        if not key or self.path.split("?")[0] in ("/health", "/health_generate"):
            return True
        return self.headers.get("authorization", "") == f"Bearer {key}"

    def _route(self, method: str) -> None:
        path = self.path.split("?")[0]
        if not self._authorized():
            self._send(401, {"error": "Unauthorized"})
            return
        routes = NODE0_ROUTES if self.state.frontend is not None else DUMMY_ROUTES
        handler = routes.get((method, path))
        if handler is None:
            self._send(404, {"detail": "Not Found"})
            return
        try:
            handler(self)
        except BadRequest as exc:
            self._error(400, str(exc))
        except (RuntimeError, TimeoutError) as exc:
            self._error(503, str(exc))

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self._route("GET")

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        self._route("POST")

    # -- endpoints --------------------------------------------------------
    def health(self) -> None:
        self._send(200, b"", "text/plain")

    def health_generate(self) -> None:
        frontend = self.state.frontend
        if frontend is None:  # nodes >= 1: the dummy health check
            self._send(200, b"", "text/plain")
            return
        try:
            frontend.generate([encode("health")], 1, timeout=HEALTH_GENERATE_TIMEOUT_S)
        except (RuntimeError, TimeoutError) as exc:
            logger.error(f"Health check failed: {exc}")
            self._send(503, b"", "text/plain")
            return
        self._send(200, b"", "text/plain")

    def get_model_info(self) -> None:
        args = self.state.args
        self._send(
            200,
            {
                "model_path": args.model_path,
                "tokenizer_path": args.tokenizer_path,
                "is_generation": True,
            },
        )

    def get_server_info(self) -> None:
        args = dataclasses.asdict(self.state.args)
        args.pop("extra", None)
        args.pop("api_key", None)
        self._send(
            200,
            {
                **args,
                "max_total_num_tokens": max_total_num_tokens(self.state.args),
                "version": __version__,
            },
        )

    def models(self) -> None:
        model = {
            "id": self.state.model_id,
            "object": "model",
            "created": int(time.time()),
            "owned_by": "sglang",
            "root": self.state.model_id,
        }
        self._send(200, {"object": "list", "data": [model]})

    def flush_cache(self) -> None:
        self._send(
            200, b"Cache flushed.\nPlease check backend logs for more details.", "text/plain"
        )

    def profile(self) -> None:
        self._send(200, b"Start/stop profiling. This will take some time.\n", "text/plain")

    def generate(self) -> None:
        body = self._body()
        params = body.get("sampling_params") or {}
        if isinstance(params, list):
            params = params[0] if params else {}
        max_new = int(params.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS))
        if body.get("input_ids") is not None:
            ids = body["input_ids"]
            single = bool(ids) and isinstance(ids[0], int)
            prompts = [list(ids)] if single else [list(x) for x in ids]
        else:
            text = body.get("text")
            if text is None:
                raise BadRequest("Either text or input_ids should be provided.")
            single = isinstance(text, str)
            prompts = [encode(t) for t in ([text] if single else text)]
        stops = _stops(params.get("stop"))
        results = complete(self.state, prompts, max_new, stops, bool(params.get("ignore_eos")))
        if body.get("stream") and single:
            self._stream_generate(results[0], max_new)
            return
        docs = []
        for result in results:
            reason: dict[str, Any] = (
                {"type": "length", "length": max_new}
                if result.finish_reason == "length"
                else {"type": "stop", "matched": result.matched_stop}
            )
            docs.append(
                {
                    "text": result.text,
                    "meta_info": {
                        "id": uuid.uuid4().hex,
                        "finish_reason": reason,
                        "prompt_tokens": result.prompt_tokens,
                        "completion_tokens": result.completion_tokens,
                        "cached_tokens": 0,
                    },
                }
            )
        self._send(200, docs[0] if single else docs)

    def _start_event_stream(self) -> None:
        """Headers of a server-sent-event response; the connection closes after it."""
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True

    def _stream_generate(self, result: Completion, max_new: int) -> None:
        """/generate with "stream": true, as SGLang sends it (and bench_serving reads it):
        one event per token with the text so far and its meta_info, then [DONE]. The
        stand-in generates first and streams afterwards, so time to first token is not
        a measure of anything here."""
        self._start_event_stream()
        ident = uuid.uuid4().hex
        pieces = list(result.text) or [""]
        for count in range(1, len(pieces) + 1):
            last = count == len(pieces)
            reason: dict[str, Any] | None = None
            if last:
                reason = (
                    {"type": "length", "length": max_new}
                    if result.finish_reason == "length"
                    else {"type": "stop", "matched": result.matched_stop}
                )
            doc = {
                "text": "".join(pieces[:count]),
                "meta_info": {
                    "id": ident,
                    "finish_reason": reason,
                    "prompt_tokens": result.prompt_tokens,
                    "completion_tokens": count if result.text else 0,
                    "cached_tokens": 0,
                },
                "index": 0,
            }
            self.wfile.write(f"data: {json.dumps(doc)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def _openai(self, chat: bool) -> None:
        body = self._body()
        if chat:
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                raise BadRequest("messages must be a non-empty list")
            prompt = apply_chat_template(messages)
            default_max = DEFAULT_MAX_NEW_TOKENS
        else:
            prompt = body.get("prompt")
            if isinstance(prompt, list):
                prompt = prompt[0] if prompt else ""
            if not isinstance(prompt, str):
                raise BadRequest("prompt must be a string")
            default_max = COMPLETIONS_DEFAULT_MAX_TOKENS
        max_new = body.get("max_completion_tokens") or body.get("max_tokens") or default_max
        # ignore_eos: an extension SGLang's OpenAI adapter passes on (sglang 0.4.3.post2
        # srt/openai_api/protocol.py CompletionRequest.ignore_eos, adapter.py)
        stops, ignore_eos = _stops(body.get("stop")), bool(body.get("ignore_eos"))
        result = complete(self.state, [encode(prompt)], int(max_new), stops, ignore_eos)[0]
        created = int(time.time())
        ident = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        usage = {
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens,
        }
        if body.get("stream"):
            self._stream(ident, created, chat, result, usage)
            return
        if chat:
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": result.text, "tool_calls": None},
                "logprobs": None,
                "finish_reason": result.finish_reason,
                "matched_stop": result.matched_stop,
            }
        else:
            choice = {
                "index": 0,
                "text": result.text,
                "logprobs": None,
                "finish_reason": result.finish_reason,
                "matched_stop": result.matched_stop,
            }
        self._send(
            200,
            {
                "id": ident,
                "object": "chat.completion" if chat else "text_completion",
                "created": created,
                "model": self.state.model_id,
                "choices": [choice],
                "usage": usage,
            },
        )

    def _stream(
        self, ident: str, created: int, chat: bool, result: Completion, usage: dict[str, int]
    ) -> None:
        """Server-sent events, one character (= one token) per chunk, then [DONE]."""
        self._start_event_stream()
        kind = "chat.completion.chunk" if chat else "text_completion"

        def chunk(piece: str | None, finish: str | None) -> bytes:
            if chat:
                delta = {} if piece is None else {"role": "assistant", "content": piece}
                choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": piece or "", "finish_reason": finish}
            doc = {
                "id": ident,
                "object": kind,
                "created": created,
                "model": self.state.model_id,
                "choices": [choice],
            }
            if finish:
                doc["usage"] = usage
            return f"data: {json.dumps(doc)}\n\n".encode()

        for piece in result.text:
            self.wfile.write(chunk(piece, None))
        self.wfile.write(chunk(None, result.finish_reason))
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def chat_completions(self) -> None:
        self._openai(chat=True)

    def completions(self) -> None:
        self._openai(chat=False)


NODE0_ROUTES = {
    ("GET", "/health"): Handler.health,
    ("GET", "/health_generate"): Handler.health_generate,
    ("GET", "/get_model_info"): Handler.get_model_info,
    ("GET", "/get_server_info"): Handler.get_server_info,
    ("GET", "/v1/models"): Handler.models,
    ("POST", "/generate"): Handler.generate,
    ("POST", "/v1/completions"): Handler.completions,
    ("POST", "/v1/chat/completions"): Handler.chat_completions,
    ("GET", "/flush_cache"): Handler.flush_cache,
    ("POST", "/flush_cache"): Handler.flush_cache,
    ("GET", "/start_profile"): Handler.profile,
    ("POST", "/start_profile"): Handler.profile,
    ("GET", "/stop_profile"): Handler.profile,
    ("POST", "/stop_profile"): Handler.profile,
}
DUMMY_ROUTES = {
    ("GET", "/health"): Handler.health,
    ("GET", "/health_generate"): Handler.health_generate,
}


def make_server(state: ServerState) -> ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"state": state})
    server = ThreadingHTTPServer((state.args.host, state.args.port), handler)
    server.daemon_threads = True
    return server
