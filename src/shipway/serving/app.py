"""The inference ASGI app: V2 and plain-JSON prediction endpoints, health, metadata and metrics.

A plain ASGI callable rather than a framework: the prediction path is path split, one table
lookup, body read, parse, batched predict, encode, with nothing per request that it does not need.

    GET  /v2                                      server metadata
    GET  /v2/health/live | /v2/health/ready       liveness; readiness (every endpoint answers)
    GET  /v2/models/{name}[/versions/{v}]         model metadata from the version's signature
    GET  /v2/models/{name}[/versions/{v}]/ready   200 when it answers, 503 while loading
    POST /v2/models/{name}[/versions/{v}]/infer   Open Inference Protocol v2
    POST /v1/models/{name}[/versions/{v}]/predict {"records": [...]} or {"columns", "data"}
    POST /v2/models/{name}/feedback               {"labels": [{"request_id", "row", "label"}, ...]}
    GET  /metrics                                 Prometheus text format

Inference endpoints are unauthenticated, like KServe's and Triton's: put them behind your
network policy or gateway. The control-plane API (``shipway up``) is a different server.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import threading
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from shipway.core.errors import InvalidInput, ShipwayError
from shipway.registry import Signature
from shipway.serving.batching import BatchConfig
from shipway.serving.host import ModelHost
from shipway.serving.metrics import CONTENT_TYPE, ServingMetrics
from shipway.serving.protocol import (
    RequestError,
    Table,
    encode_v1,
    encode_v2,
    parse_v1,
    parse_v2,
    v2_table,
)
from shipway.serving.routing import Arm, Endpoint, RolloutRef, Router, retired_hosts
from shipway.serving.shadow import Mirror
from shipway.store import Store

log = logging.getLogger("shipway.serving")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

VERSION_HEADER = b"shipway-model-version"
ARM_HEADER = b"shipway-arm"
REQUEST_ID_HEADER = b"shipway-request-id"
_CLIENT_REQUEST_ID = b"x-request-id"
_MAX_REQUEST_ID = 256  # a longer X-Request-Id is replaced, not logged
_JSON = (b"content-type", b"application/json")


@dataclass(frozen=True)
class ServingConfig:
    """Server-wide limits, and the batching every endpoint gets unless deployed with its own."""

    max_body_bytes: int = 8 * 1024 * 1024
    batch: BatchConfig = field(default_factory=BatchConfig)
    max_shadow_in_flight: int = 64  # copies to shadow versions; beyond it copies are dropped


@dataclass(frozen=True)
class PredictionEvent:
    """One prediction request a version handled, as listeners (a prediction log, the rollout
    windows) receive it: answered, refused or failed, or a shadow's copy.

    ``columns`` are the request's columns as sent, before the signature's casts (empty when the
    body could not be read); ``arm`` is the label of the arm that answered (``"pinned"`` when the
    client named the version). A failed request has ``error`` (its code) and ``status`` and no
    ``predictions``: 4xx are the client's mistakes, 5xx the version's. ``mirrored`` marks a
    shadow's copy, whose answer went to nobody; ``agreement`` is (rows that agreed with the answer
    returned, rows compared). ``rollout`` is the rollout step the routing belonged to, if any.
    ``request_id`` is the V2 ``id``, else the client's X-Request-Id, else one made up (uuid4 hex),
    as the answer's Shipway-Request-Id header carries it; ``signature`` is the answering version's.
    """

    endpoint: str
    version: str
    arm: str
    request_id: str | None
    columns: dict[str, Any]
    predictions: Any
    seconds: float
    error: str | None = None
    status: int = 200
    rollout: RolloutRef | None = None
    mirrored: bool = False
    agreement: tuple[int, int] | None = None
    signature: Signature | None = None


class _ClientGone(Exception):
    pass


def _error(status: int, code: str, message: str) -> RequestError:
    return RequestError(status, code, message)


async def _respond(send: Send, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class ServingApp:
    """Serves the endpoints in its :class:`Router`; ``deploy`` loads a version and routes to it."""

    def __init__(self, config: ServingConfig | None = None, *, store: Store | None = None) -> None:
        self.config = config or ServingConfig()
        self.store = store
        self.router = Router()
        self.metrics = ServingMetrics()
        # Called with a PredictionEvent after each prediction request a version handled (answered
        # or not) and each shadow copy, on the event loop: keep them cheap (count, or hand the event
        # to a queue). Seam for the prediction log and the rollout windows.
        self.listeners: list[Callable[[PredictionEvent], None]] = []
        # Called once when the app shuts down, before its hosts are retired (flush what is buffered).
        self.on_close: list[Callable[[], None]] = []
        self.mirror = Mirror(self.config.max_shadow_in_flight, self._emit)
        self._closed = False

    # -- deploying ---------------------------------------------------------------------------

    def load(
        self, endpoint: str, uri: str, *, trust: bool = False, batch: BatchConfig | None = None
    ) -> ModelHost:
        """Load and warm ``uri`` as a host for ``endpoint`` without routing any traffic to it."""
        return ModelHost.load(
            endpoint,
            uri,
            config=batch or self.config.batch,
            metrics=self.metrics,
            trust=trust,
            store=self.store,
        )

    def route(
        self,
        endpoint: str,
        *arms: Arm,
        sticky_header: str | None = None,
        sticky_field: str | None = None,
        rollout: RolloutRef | None = None,
    ) -> None:
        """Atomically point ``endpoint`` at ``arms``; hosts no longer routed are retired.

        With ``sticky_header`` or ``sticky_field`` a request's arm follows from that header's
        value, else that field's value in its first row; a field the version's signature does
        not take is removed before predicting. ``rollout`` tags the requests for its windows.
        """
        for arm in arms:
            if arm.host.endpoint != endpoint:
                raise InvalidInput(
                    f"{arm.host.uri} was loaded for '{arm.host.endpoint}', not '{endpoint}'; load it with "
                    f"app.load('{endpoint}', ...) so its metrics carry the right name."
                )
        for arm in arms:
            arm.host.activate()
        previous = self.router.route(
            endpoint, *arms, sticky_header=sticky_header, sticky_field=sticky_field, rollout=rollout
        )
        for host in retired_hosts(previous, self.router.table.endpoints.get(endpoint)):
            host.retire()

    def deploy(
        self, endpoint: str, uri: str, *, trust: bool = False, batch: BatchConfig | None = None
    ) -> ModelHost:
        """Load and warm ``uri``, then switch ``endpoint`` to it in one swap (blocking)."""
        self.router.mark_unready(endpoint, f"{uri} is loading.")
        try:
            host = self.load(endpoint, uri, trust=trust, batch=batch)
        except ShipwayError as exc:
            self.router.mark_unready(endpoint, f"{uri} could not be loaded: {exc.message}")
            raise
        self.route(endpoint, Arm(host))
        return host

    def deploy_in_background(
        self,
        targets: Iterable[tuple[str, str]],
        *,
        trust: bool = False,
        on_ready: Callable[[ModelHost], None] | None = None,
        on_error: Callable[[str, str, Exception], None] | None = None,
    ) -> threading.Thread:
        """Deploy each (endpoint, uri) in a thread; endpoints answer 503 until their version is warm."""
        targets = list(targets)
        for endpoint, uri in targets:
            self.router.mark_unready(endpoint, f"{uri} is loading.")

        def work() -> None:
            for endpoint, uri in targets:
                try:
                    host = self.deploy(endpoint, uri, trust=trust)
                except Exception as exc:  # reported; the endpoint keeps answering 503 with why
                    if not isinstance(exc, ShipwayError):
                        self.router.mark_unready(endpoint, f"{uri} could not be loaded: {exc}")
                    if on_error is not None:
                        on_error(endpoint, uri, exc)
                    else:
                        log.error("could not serve %s as %s: %s", uri, endpoint, exc)
                    continue
                if on_ready is not None:
                    on_ready(host)

        thread = threading.Thread(target=work, name="shipway-deploy", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        """Run the ``on_close`` callbacks once, then stop every host's predict thread."""
        if not self._closed:
            self._closed = True
            for callback in self.on_close:
                try:
                    callback()
                except Exception:  # one failing callback must not keep the others from running
                    log.exception("shutdown callback failed")
        for endpoint in self.router.table.endpoints.values():
            for arm in endpoint.arms:
                arm.host.retire()

    def _emit(self, event: PredictionEvent) -> None:
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:  # a listener's bug must not fail the request already answered
                log.exception("prediction listener failed")

    # -- ASGI --------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self.mirror.drain(timeout=2.0)  # copies in flight still count
                    self.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        parts = scope["path"].strip("/").split("/")
        method = scope["method"]
        try:
            if len(parts) >= 3 and parts[1] == "models" and parts[0] in ("v1", "v2"):
                await self._model_route(parts, method, scope, receive, send)
            elif parts == ["metrics"]:
                self._allow(method, "GET")
                await _respond(send, 200, self.metrics.render(), [(b"content-type", CONTENT_TYPE.encode())])
            elif parts[0] == "v2" and len(parts) <= 3:
                self._allow(method, "GET")
                await self._server_route(parts, send)
            else:
                raise _error(404, "not_found", f"No endpoint at {scope['path']}; see /v2/health/ready.")
        except RequestError as err:
            await _respond(send, err.status, err.body(), [_JSON, *err.headers])
        except _ClientGone:
            return
        except Exception:  # a bug in Shipway: answer with the envelope, log the traceback
            log.exception("unexpected error serving %s %s", method, scope["path"])
            error = _error(500, "internal", "Unexpected server error; the server log has the traceback.")
            await _respond(send, 500, error.body(), [_JSON])

    @staticmethod
    def _allow(method: str, allowed: str) -> None:
        if method != allowed and not (allowed == "GET" and method == "HEAD"):
            raise RequestError(
                405,
                "method_not_allowed",
                f"Use {allowed} here, not {method}.",
                headers=[(b"allow", allowed.encode())],
            )

    async def _server_route(self, parts: list[str], send: Send) -> None:
        if parts == ["v2"]:
            import shipway

            body = {"name": "shipway", "version": shipway.__version__, "extensions": ["binary_tensor_data"]}
            await _respond(send, 200, orjson.dumps(body), [_JSON])
        elif parts == ["v2", "health", "live"]:
            await _respond(send, 200, b'{"live":true}', [_JSON])
        elif parts == ["v2", "health", "ready"]:
            waiting = {n: e.problem for n, e in self.router.table.endpoints.items() if not e.ready}
            body = orjson.dumps({"ready": not waiting, "waiting": waiting})
            await _respond(send, 503 if waiting else 200, body, [_JSON])
        else:
            raise _error(404, "not_found", f"No endpoint at /{'/'.join(parts)}; see /v2/health/ready.")

    def _endpoint(self, name: str) -> Endpoint:
        endpoint = self.router.table.endpoints.get(name)
        if endpoint is None:
            served = ", ".join(sorted(self.router.table.endpoints)) or "none"
            raise _error(404, "model_not_found", f"No model is served as '{name}'. Served: {served}.")
        return endpoint

    @staticmethod
    def _host(
        endpoint: Endpoint, version: str | None, headers: dict[bytes, bytes] | None
    ) -> tuple[ModelHost, str]:
        if not endpoint.arms:
            raise _error(503, "model_not_ready", f"'{endpoint.name}' is not ready: {endpoint.problem}")
        if version is not None:
            host = endpoint.host_for(version)
            if host is None:
                raise _error(
                    404,
                    "version_not_found",
                    f"'{endpoint.name}' does not serve version {version}; it serves "
                    f"{', '.join(endpoint.versions)}.",
                )
            return host, "pinned"
        key = None
        if endpoint.sticky_header is not None and headers is not None:
            raw = headers.get(endpoint.sticky_header.encode())
            key = raw.decode("latin-1") if raw is not None else None
        arm = endpoint.choose(key)
        return arm.host, arm.label

    async def _model_route(
        self, parts: list[str], method: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        protocol, name, rest = parts[0], parts[2], parts[3:]
        version = None
        if len(rest) >= 2 and rest[0] == "versions":
            version, rest = rest[1], rest[2:]
        action = rest[0] if len(rest) == 1 else None if not rest else "?"
        if protocol == "v1":
            if action != "predict":
                raise _error(
                    404, "not_found", f"No endpoint at {scope['path']}; use /v1/models/{name}/predict."
                )
            self._allow(method, "POST")
            await self._predict(scope, receive, send, name, version, v2=False)
        elif action == "infer":
            self._allow(method, "POST")
            await self._predict(scope, receive, send, name, version, v2=True)
        elif action == "feedback" and protocol == "v2" and version is None:
            # True labels for logged predictions (shipway.monitoring.record_feedback), off the loop;
            # only for what this server routes, as labels steer rollbacks and quality alerts.
            from shipway.monitoring.feedback import http_feedback

            self._allow(method, "POST")
            self._endpoint(name)
            body = await self._read_body(receive, dict(scope["headers"]))
            status, answer = await asyncio.to_thread(http_feedback, name, body, self.store)
            await _respond(send, status, answer, [_JSON])
        elif action is None or action == "ready":
            self._allow(method, "GET")
            endpoint = self._endpoint(name)
            if action == "ready":
                ready = endpoint.ready and (version is None or endpoint.host_for(version) is not None)
                body = orjson.dumps({"name": name, "ready": ready})
                await _respond(send, 200 if ready else 503, body, [_JSON])
                return
            host, _ = self._host(endpoint, version, None)
            versions = [version] if version is not None else endpoint.versions
            await _respond(send, 200, orjson.dumps(host.metadata(name, versions)), [_JSON])
        else:
            raise _error(404, "not_found", f"No endpoint at {scope['path']}.")

    async def _read_body(self, receive: Receive, headers: dict[bytes, bytes]) -> bytes:
        limit = self.config.max_body_bytes
        too_large = RequestError(
            413,
            "payload_too_large",
            f"The body is over this server's limit of {limit} bytes; send fewer rows per request.",
        )
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large  # refused before reading a byte of it
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        encoding = headers.get(b"content-encoding")
        if encoding is None or encoding == b"identity":
            return body
        if encoding not in (b"gzip", b"deflate"):
            raise _error(
                415, "unsupported_encoding", f"Content-Encoding {encoding.decode()!r}: use gzip or deflate."
            )
        inflater = zlib.decompressobj(31 if encoding == b"gzip" else 15)
        try:
            plain = inflater.decompress(body, limit + 1)
        except zlib.error as exc:
            raise _error(
                400, "malformed_request", f"The {encoding.decode()} body does not decompress: {exc}."
            ) from None
        if len(plain) > limit:
            raise too_large
        if not inflater.eof:
            raise _error(400, "malformed_request", f"The {encoding.decode()} body is truncated.")
        return plain

    @staticmethod
    def _pick(
        endpoint: Endpoint, version: str | None, headers: dict[bytes, bytes]
    ) -> tuple[ModelHost, str, bool]:
        """The host and arm label for a request, and whether a request field should decide instead."""
        if version is not None or not endpoint.arms or len(endpoint.arms) == 1:
            host, label = ServingApp._host(endpoint, version, headers)
            return host, label, False
        key = None
        if endpoint.sticky_header is not None:
            raw = headers.get(endpoint.sticky_header.encode())
            key = raw.decode("latin-1") if raw is not None else None
        arm = endpoint.choose(key)  # without a key, a provisional choice the field may overrule
        return arm.host, arm.label, key is None and endpoint.sticky_field is not None

    async def _predict(
        self, scope: Scope, receive: Receive, send: Send, name: str, version: str | None, *, v2: bool
    ) -> None:
        started = time.perf_counter()
        endpoint = self.router.table.endpoints.get(name)
        headers = dict(scope["headers"])
        try:
            endpoint = self._endpoint(name) if endpoint is None else endpoint
            host, arm, by_field = self._pick(endpoint, version, headers)
        except RequestError as err:
            # Unknown names share one label value, so clients cannot grow the metric set.
            self.metrics.error(name if name in self.router.table.endpoints else "", "", err.code)
            err.headers.append(_id_header(_request_id(None, headers)))
            raise
        table: Table | None = None
        request_id = None
        predict_seconds = 0.0
        try:
            body = await self._read_body(receive, headers)
            if v2:
                header_length = headers.get(b"inference-header-content-length")
                if header_length is not None and not header_length.isdigit():
                    raise _error(
                        400, "malformed_request", "Inference-Header-Content-Length must be an integer."
                    )
                request = parse_v2(body, int(header_length) if header_length is not None else None)
                request_id = request.id
                table = v2_table(request, host.columns)
            else:
                table = parse_v1(body)
            field = endpoint.sticky_field
            if field is not None:
                if by_field:
                    key = _field_key(table, field)
                    if key is not None:
                        chosen = endpoint.choose(key)
                        if chosen.host is not host and v2 and chosen.host.columns != host.columns:
                            table = v2_table(request, chosen.host.columns)
                        host, arm = chosen.host, chosen.label
                if host.columns is not None and field in table.columns and field not in host.columns:
                    # The key is routing information, not a model input: the model never sees it.
                    table = Table({k: v for k, v in table.columns.items() if k != field}, table.rows)
            before = time.perf_counter()
            predictions = await host.predict(table)
            predict_seconds = time.perf_counter() - before
            if v2:
                payload, content = encode_v2(request, name, host.label, predictions)
            else:
                payload, content = encode_v1(name, host.label, predictions), [_JSON]
        except RequestError as err:
            seconds = time.perf_counter() - started
            if host.metrics is not None:
                m = host.metrics.arm(arm)
                m.errors(err.code).inc()
                m.requests.inc()
                m.latency.observe(seconds)
            request_id = _request_id(request_id, headers)
            await _respond(
                send,
                err.status,
                err.body(),
                [_JSON, *self._answer_headers(host, arm), _id_header(request_id), *err.headers],
            )
            if self.listeners:
                self._emit(
                    PredictionEvent(
                        name,
                        host.label,
                        arm,
                        request_id,
                        table.columns if table is not None else {},
                        None,
                        seconds,
                        error=err.code,
                        status=err.status,
                        rollout=endpoint.rollout,
                        signature=host.signature,
                    )
                )
            return
        request_id = _request_id(request_id, headers)
        await _respond(
            send, 200, payload, [*content, *self._answer_headers(host, arm), _id_header(request_id)]
        )
        seconds = time.perf_counter() - started
        if host.metrics is not None:
            m = host.metrics.arm(arm)
            m.requests.inc()
            m.latency.observe(seconds)
        if self.listeners:
            self._emit(
                PredictionEvent(
                    name,
                    host.label,
                    arm,
                    request_id,
                    table.columns,
                    predictions,
                    seconds,
                    rollout=endpoint.rollout,
                    signature=host.signature,
                )
            )
        if endpoint.shadows and version is None:
            overhead = max(seconds - predict_seconds, 0.0)
            for shadow in endpoint.shadows:
                if shadow.host is not host and random.random() * 100 < shadow.mirror:
                    self.mirror.send(name, shadow, table, predictions, overhead, request_id, endpoint.rollout)

    @staticmethod
    def _answer_headers(host: ModelHost, arm: str) -> tuple[tuple[bytes, bytes], tuple[bytes, bytes]]:
        """Which version and which arm answered: on every answer to a prediction, error or not."""
        return (VERSION_HEADER, host.label.encode()), _arm_header(arm)


@functools.lru_cache(maxsize=64)
def _arm_header(arm: str) -> tuple[bytes, bytes]:
    return ARM_HEADER, arm.encode("latin-1")


def _request_id(given: str | None, headers: dict[bytes, bytes]) -> str:
    """The request's id: the V2 ``id``, else the client's X-Request-Id, else a new uuid4 (hex)."""
    if given:
        return given
    raw = headers.get(_CLIENT_REQUEST_ID)
    if raw and len(raw) <= _MAX_REQUEST_ID:
        return raw.decode("latin-1")
    return uuid.uuid4().hex


def _id_header(request_id: str) -> tuple[bytes, bytes]:
    """The Shipway-Request-Id header; an id a header cannot carry as is (a V2 ``id`` with line
    breaks or non-ASCII text) is percent-encoded there, and logged as sent."""
    if request_id.isascii() and request_id.isprintable() and "%" not in request_id:
        return REQUEST_ID_HEADER, request_id.encode()
    from urllib.parse import quote

    return REQUEST_ID_HEADER, quote(request_id, safe="").encode()


def _field_key(table: Table, field: str) -> str | None:
    """The sticky key a request carries in ``field``: its first row's value, as text."""
    column = table.columns.get(field)
    if column is None or not len(column):
        return None
    value = column[0]
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 42.0 and 42 are one customer
    return str(value)
