"""The HTTP client behind remote mode: each SDK call as one or a few requests to the server.

Results come back as the same dataclasses embedded mode returns, and errors as the same
:class:`~shipway.core.errors.ShipwayError` subclasses (the server's error envelope carries the
code). Files move content-addressed: a file is uploaded once under its SHA-256 (skipped when the
server has it), metadata then names it by digest, and every download is hashed on the way in
and refused on a mismatch, naming the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import tempfile
import types
import typing
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlparse

import httpx

from shipway.core import errors
from shipway.core.errors import IntegrityError, InvalidInput, ShipwayError, Unauthenticated, Unavailable

T = TypeVar("T")

# Metric points per request: well under the server's 1 MiB body limit (~60 bytes a point).
POINTS_PER_REQUEST = 5_000
_CHUNK = 1 << 20
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ERRORS: dict[str, type[ShipwayError]] = {
    cls.code: cls
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, ShipwayError) and cls is not ShipwayError
}


def _seg(value: Any) -> str:
    """One URL path segment."""
    return quote(str(value), safe="")


def _ms(value: Any) -> Any:
    """Milliseconds from an ISO 8601 time as the API shows them (numbers pass through)."""
    if isinstance(value, str):
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return (moment - _EPOCH) // timedelta(milliseconds=1)
    return value


def decode(cls: type[T], data: dict[str, Any]) -> T:
    """``data`` (as the API returns it) as an instance of the dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in data and f.init:
            values[f.name] = _convert(hints[f.name], data[f.name])
    return cls(**values)


def _convert(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value) if len(inner) == 1 else value
    if dataclasses.is_dataclass(tp):
        return decode(tp, value)  # type: ignore[arg-type]
    if origin is list and args and dataclasses.is_dataclass(args[0]):
        return [decode(args[0], item) for item in value]
    if origin is tuple:
        return tuple(value)
    if tp is int:
        return _ms(value)
    if tp is float:
        return float(value)
    return value


class Client:
    """A Shipway server at ``base_url``, called with ``token`` (a bearer token) if given."""

    def __init__(self, base_url: str, token: str | None, *, timeout: float = 120.0) -> None:
        parsed = urlparse(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise InvalidInput(
                f"SHIPWAY_URI={base_url!r} is not a server address; use http://HOST:PORT or https://HOST."
            )
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._actor: Any = None
        headers = {"user-agent": "shipway-sdk"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def __repr__(self) -> str:
        return f"<shipway.Client {self.base_url}>"

    # -- transport ----------------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send one request; the JSON answer, or the ShipwayError the error envelope names."""
        response = self._send(method, path, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise Unavailable(
                f"The Shipway server at {self.base_url} did not answer {method} {path} in time; "
                "retry, or check the server's load."
            ) from None
        except httpx.TransportError as exc:
            raise Unavailable(
                f"Cannot reach the Shipway server at {self.base_url} (SHIPWAY_URI): {exc}. "
                "Is `shipway server` running there?"
            ) from None
        if response.status_code >= 400:
            raise self._error(response)
        return response

    def _error(self, response: httpx.Response) -> ShipwayError:
        try:
            body = response.json()["error"]
            code, message, details = body["code"], body["message"], body.get("details")
        except (ValueError, KeyError, TypeError):
            code, message, details = "", f"HTTP {response.status_code}: {response.text[:300]}", None
        if isinstance(details, list) and details and all(isinstance(d, dict) for d in details):
            problems = "; ".join(f"{d.get('field', '?')}: {d.get('problem', '?')}" for d in details[:10])
            message = f"{message} ({problems})"
        if response.status_code == 401 and not self.token:
            message += " Set SHIPWAY_TOKEN to a token made on the server (`shipway token create`)."
        cls = _ERRORS.get(code)
        if cls is None:
            cls = Unauthenticated if response.status_code == 401 else ShipwayError
        error = cls(message, details=details)
        if cls is ShipwayError:
            error.http_status = response.status_code
        return error

    def _pages(self, path: str, key: str, params: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Every item of a paged list endpoint."""
        params = dict(params or {})
        while True:
            page = self.request("GET", path, params=params)
            yield from page[key]
            token = page.get("next_page_token")
            if not token:
                return
            params["page_token"] = token

    # -- files --------------------------------------------------------------------------------

    def upload(self, path: Path) -> dict[str, Any]:
        """Store one file on the server by its digest (sent only if the server lacks it)."""
        h, size = hashlib.sha256(), 0
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
                size += len(chunk)
        digest = h.hexdigest()
        if self._http.head(f"/api/v1/blobs/{digest}").status_code != 200:

            def body() -> Iterator[bytes]:
                with open(path, "rb") as f:
                    while chunk := f.read(_CHUNK):
                        yield chunk

            self._send(
                "PUT",
                f"/api/v1/blobs/{digest}",
                content=body(),
                headers={"content-type": "application/octet-stream", "content-length": str(size)},
            )
        return {"digest": digest, "size": size}

    def upload_files(self, files: dict[str, Path]) -> dict[str, dict[str, Any]]:
        """Upload files named by relative path; returns the manifest (path -> digest, size)."""
        return {rel: self.upload(path) for rel, path in files.items()}

    def download(self, path: str, dest: Path, digest: str, what: str) -> Path:
        """Fetch ``path`` into ``dest``, refusing it unless its SHA-256 is ``digest``."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256()
        partial = dest.with_name(dest.name + ".part")
        try:
            with self._http.stream("GET", path) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self._error(response)
                with open(partial, "wb") as out:
                    for chunk in response.iter_bytes(_CHUNK):
                        h.update(chunk)
                        out.write(chunk)
        except httpx.TransportError as exc:
            partial.unlink(missing_ok=True)
            raise Unavailable(f"Downloading {what} from {self.base_url} failed: {exc}") from None
        if h.hexdigest() != digest:
            partial.unlink(missing_ok=True)
            raise IntegrityError(
                f"{what} arrived with SHA-256 {h.hexdigest()[:12]}…, not the recorded {digest[:12]}…: "
                "it was altered or corrupted. Do not use it.",
                details={"file": what, "expected": digest, "actual": h.hexdigest()},
            )
        partial.replace(dest)
        return dest

    # -- tracking -----------------------------------------------------------------------------

    def create_run(self, experiment: str, name: str | None, facts: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", "/api/v1/runs", json={"experiment": experiment, "name": name, **facts})

    def log_run(
        self,
        run_id: str,
        *,
        params: dict[str, str] | None = None,
        tags: dict[str, str] | None = None,
        points: list[Any] | None = None,
        end: dict[str, Any] | None = None,
    ) -> None:
        """One write to a run (an empty one just records that the run is alive)."""
        body = {"params": params or {}, "tags": tags or {}, "metrics": points or [], "end": end}
        self.request("POST", f"/api/v1/runs/{_seg(run_id)}/log", json=body)

    def log_points(self, run_id: str, points: list[Any], finish: dict[str, Any] | None) -> None:
        """Send buffered points in chunks, removing each chunk from ``points`` once the server has it;
        ``finish`` (status, end_time, error) goes with the last chunk."""
        while True:
            chunk = [
                [k, None if v is None or math.isnan(v) else v, s, t]
                for k, v, s, t in points[:POINTS_PER_REQUEST]
            ]
            last = len(points) <= POINTS_PER_REQUEST
            self.log_run(run_id, points=chunk, end=finish if last else None)
            del points[: len(chunk)]
            if last:
                return

    def log_artifact(self, run_id: str, local_path: str | Path, artifact_path: str | None) -> list[Any]:
        from shipway.tracking.artifacts import ArtifactEntry, artifact_files

        entries = [
            {"path": name, **self.upload(path)} for path, name in artifact_files(local_path, artifact_path)
        ]
        self.request("POST", f"/api/v1/runs/{_seg(run_id)}/artifacts", json={"entries": entries})
        return [ArtifactEntry(e["path"], e["digest"], e["size"]) for e in entries]

    def get_run(self, run_id: str) -> Any:
        from shipway.tracking.records import RunRecord

        return _run(decode(RunRecord, self.request("GET", f"/api/v1/runs/{_seg(run_id)}")))

    def metric_history(self, run_id: str, key: str) -> list[Any]:
        from shipway.tracking.metrics import MetricPoint

        data = self.request("GET", f"/api/v1/runs/{_seg(run_id)}/metrics/{quote(key, safe='/')}")
        return [
            MetricPoint(p["step"], p["timestamp"], math.nan if p["value"] is None else p["value"])
            for p in data["points"]
        ]

    def search_runs(
        self,
        experiments: Any,
        *,
        filter: str | None,
        order_by: Any,
        limit: int,
        page_token: str | None,
    ) -> Any:
        from shipway.tracking.records import RunRecord
        from shipway.tracking.search import Page

        params: dict[str, Any] = {"limit": limit}
        if experiments is not None:
            params["experiment"] = [experiments] if isinstance(experiments, str) else list(experiments)
        if filter:
            params["filter"] = filter
        if order_by:
            params["order_by"] = [order_by] if isinstance(order_by, str) else list(order_by)
        if page_token:
            params["page_token"] = page_token
        data = self.request("GET", "/api/v1/runs", params=params)
        page: Page[Any] = Page(_run(decode(RunRecord, r)) for r in data["runs"])
        page.next_page_token = data.get("next_page_token")
        return page

    def list_experiments(self) -> list[Any]:
        from shipway.tracking.experiments import Experiment

        return [decode(Experiment, e) for e in self._pages("/api/v1/experiments", "experiments")]

    def download_artifacts(self, run_id: str, dest: str | Path, path: str | None) -> list[Path]:
        from shipway.core.errors import NotFound
        from shipway.store import safe_destination
        from shipway.tracking.artifacts import clean_artifact_path

        entries = self.get_run(run_id).artifacts
        if path is not None:
            wanted = clean_artifact_path(path)
            entries = [e for e in entries if e.path == wanted or e.path.startswith(wanted + "/")]
            if not entries:
                raise NotFound(f"Run {run_id} has no artifact at {wanted!r}.")
        dest = Path(dest)
        return [
            self.download(
                f"/api/v1/runs/{_seg(run_id)}/artifacts/{quote(e.path, safe='/')}",
                safe_destination(dest, e.path),
                e.digest,
                f"artifact {e.path!r} of run {run_id}",
            )
            for e in entries
        ]

    # -- datasets -----------------------------------------------------------------------------

    def log_dataset(
        self, data: Any, name: str, target: str | None, *, run_id: str | None = None, role: str | None = None
    ) -> Any:
        from shipway.data.datasets import check_frame, to_frame

        frame, fmt = to_frame(data)
        check_frame(frame, name, target)
        with tempfile.TemporaryDirectory(prefix="shipway-dataset-") as tmp:
            path = Path(tmp) / "data.parquet"
            frame.to_parquet(path, index=False)
            blob = self.upload(path)
        body = {"name": name, "target": target, "format": fmt, "digest": blob["digest"]}
        if run_id is not None:
            body.update(run_id=run_id, role=role)
        return _dataset(self.request("POST", "/api/v1/datasets", json=body))

    def get_dataset(self, name: str, version: int | None) -> Any:
        which = "latest" if version is None else str(version)
        return _dataset(self.request("GET", f"/api/v1/datasets/{_seg(name)}/versions/{which}"))

    def download_dataset(self, dataset: Any, dest: Path) -> Path:
        return self.download(
            f"/api/v1/datasets/{_seg(dataset.name)}/versions/{dataset.version}/data",
            dest,
            dataset.blob_digest,
            f"dataset {dataset.name} version {dataset.version}",
        )

    # -- registry -----------------------------------------------------------------------------

    def register_version(self, name: str, fields: dict[str, Any]) -> Any:
        body = {("schema" if k == "io_schema" else k): v for k, v in fields.items()}
        return _version(self.request("POST", f"/api/v1/models/{_seg(name)}/versions", json=body))

    def sign_version(self, version: Any, private_key: Path) -> Any:
        """Sign here, with a key that never leaves this machine; the server checks the signature."""
        from cryptography.hazmat.primitives import serialization

        from shipway.registry import integrity

        key = integrity.load_private_key(private_key)
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        signature, _ = integrity.sign(version.payload(), private_key)
        return _version(
            self.request(
                "POST",
                f"/api/v1/models/{_seg(version.name)}/versions/{version.version}/signature",
                json={"signature": signature, "public_key": public.decode()},
            )
        )

    def get_version(self, name: str, version: int | None, alias: str | None) -> Any:
        base = f"/api/v1/models/{_seg(name)}"
        if alias is not None:
            return _version(self.request("GET", f"{base}/aliases/{_seg(alias)}"))
        if version is not None:
            return _version(self.request("GET", f"{base}/versions/{int(version)}"))
        page = self.request("GET", f"{base}/versions", params={"limit": 1})
        if not page["versions"]:
            from shipway.core.errors import NotFound

            raise NotFound(f"Model {name!r} has no versions.")
        return _version(page["versions"][0])

    def list_versions(self, name: str) -> list[Any]:
        return [_version(v) for v in self._pages(f"/api/v1/models/{_seg(name)}/versions", "versions")]

    def list_models(self) -> list[Any]:
        from shipway.registry.versions import ModelSummary

        return [decode(ModelSummary, m) for m in self._pages("/api/v1/models", "models")]

    def set_alias(self, name: str, alias: str, version: int) -> None:
        self.request("PUT", f"/api/v1/models/{_seg(name)}/aliases/{_seg(alias)}", json={"version": version})

    def delete_alias(self, name: str, alias: str) -> None:
        self.request("DELETE", f"/api/v1/models/{_seg(name)}/aliases/{_seg(alias)}")

    def update_version(self, name: str, version: int, **changes: Any) -> Any:
        body = {k: v for k, v in changes.items() if v is not None}
        if "tags" in body:
            body["tags"] = {str(k): str(v) for k, v in body["tags"].items()}
        if "card" in body:
            body["card"] = {str(k): str(v) for k, v in body["card"].items()}
        return _version(
            self.request("PATCH", f"/api/v1/models/{_seg(name)}/versions/{int(version)}", json=body)
        )

    def materialize(self, version: Any, dest: Path) -> Path:
        """Download every file of ``version`` into ``dest``, each checked against its digest."""
        from shipway.store import safe_destination

        dest.mkdir(parents=True, exist_ok=True)
        base = f"/api/v1/models/{_seg(version.name)}/versions/{version.version}/files"
        for rel, entry in sorted(version.manifest.items()):
            self.download(
                f"{base}/{quote(rel, safe='/')}",
                safe_destination(dest, rel),
                entry["digest"],
                f"File {rel!r} of {version.uri}",
            )
        return dest

    def load_model(self, uri: str, *, trust: bool, public_key: str | Path | None) -> Any:
        """Resolve ``uri`` on the server, download and verify its files here, then load them."""
        from shipway.registry.loading import LoadedModel, check_before_load, load_folder, parse_model_uri

        name, number, alias = parse_model_uri(uri)
        version = self.get_version(name, number, alias)
        check_before_load(version, public_key)
        with tempfile.TemporaryDirectory(prefix="shipway-load-") as tmp:
            folder = self.materialize(version, Path(tmp) / "model")
            return LoadedModel(version, load_folder(version, folder, trust=trust))

    # -- governance ---------------------------------------------------------------------------

    def promote(self, name: str, version: int, to: str) -> Any:
        path = f"/api/v1/models/{_seg(name)}/versions/{int(version)}/promote"
        return _request(self.request("POST", path, json={"to": to}))

    def decide(
        self,
        name: str,
        version: int,
        to: str,
        decision: str,
        *,
        comment: str | None = None,
        reason: str | None = None,
    ) -> Any:
        body: dict[str, Any] = {"to": to}
        if decision == "approve":
            body["comment"] = comment
        else:
            body["reason"] = reason
        path = f"/api/v1/models/{_seg(name)}/versions/{int(version)}/{decision}"
        return _request(self.request("POST", path, json=body))

    def list_requests(
        self, *, model: str | None, status: str | None, limit: int, page_token: str | None
    ) -> Any:
        from shipway.tracking.search import Page

        params = {"model": model, "status": status, "limit": limit, "page_token": page_token}
        data = self.request(
            "GET", "/api/v1/requests", params={k: v for k, v in params.items() if v is not None}
        )
        page: Page[Any] = Page(_request(r) for r in data["requests"])
        page.next_page_token = data.get("next_page_token")
        return page

    def get_request(self, request_id: str) -> Any:
        return _request(self.request("GET", f"/api/v1/requests/{_seg(request_id)}"))

    def current_policy(self) -> Any:
        from shipway.governance.policy import Policy

        data = self.request("GET", "/api/v1/policy")["policy"]
        return None if data is None else decode(Policy, {"source": "", **data})

    def apply_policy(self, source: str, base: Path | None) -> Any:
        from shipway.governance.policy import parse

        parse(source, base=base)  # the same problems, reported here, with paths as the user wrote them
        self.request("PUT", "/api/v1/policy", json={"source": _inline_keys(source, base)})
        return self.current_policy()

    def whoami(self) -> dict[str, Any]:
        from shipway.core.actor import os_user

        # The identity is the server's answer; the OS user is the one running this process.
        return {**self.request("GET", "/api/v1/whoami"), "os_user": os_user()}

    def actor(self) -> Any:
        """The identity behind this client's token, asked of the server once."""
        if self._actor is None:
            from shipway.core.actor import Actor

            me = self.whoami()
            self._actor = Actor(
                name=me["name"],
                role=me["role"],
                kind=me["kind"],
                model_roles=dict(me.get("model_roles") or {}),
                ceiling=me.get("ceiling"),
                models=tuple(me["models"]) if me.get("models") else None,
            )
        return self._actor

    def create_token(
        self,
        principal: str | None,
        role: str | None,
        models: list[str] | None,
        expires_in_ms: int | None,
        description: str | None,
    ) -> tuple[Any, str]:
        from shipway.governance.identity import TokenInfo

        body = {
            "principal": principal,
            "role": role,
            "models": models,
            "expires_in": None if expires_in_ms is None else f"{max(1, expires_in_ms // 1000)}s",
            "description": description,
        }
        data = self.request("POST", "/api/v1/tokens", json=body)
        return decode(TokenInfo, data), data["token"]

    def list_tokens(self, principal: str | None) -> list[Any]:
        from shipway.governance.identity import TokenInfo

        params = {"principal": principal} if principal else {}
        return [decode(TokenInfo, t) for t in self._pages("/api/v1/tokens", "tokens", params)]

    def revoke_token(self, token_id: str) -> Any:
        from shipway.governance.identity import TokenInfo

        return decode(TokenInfo, self.request("DELETE", f"/api/v1/tokens/{_seg(token_id)}"))

    def list_principals(self) -> list[Any]:
        from shipway.governance.identity import Principal

        return [decode(Principal, p) for p in self._pages("/api/v1/principals", "principals")]

    def add_principal(self, name: str, role: str, *, kind: str) -> Any:
        from shipway.governance.identity import Principal

        body = {"name": name, "role": role, "kind": kind}
        return decode(Principal, self.request("POST", "/api/v1/principals", json=body))

    def grant(self, name: str, role: str, *, model: str | None) -> Any:
        from shipway.governance.identity import Principal

        path = f"/api/v1/principals/{_seg(name)}/grants"
        return decode(Principal, self.request("POST", path, json={"role": role, "model": model}))

    def disable_principal(self, name: str) -> Any:
        from shipway.governance.identity import Principal

        return decode(Principal, self.request("POST", f"/api/v1/principals/{_seg(name)}/disable"))

    # -- audit --------------------------------------------------------------------------------

    def audit_head(self) -> tuple[int, str]:
        head = self.request("GET", "/api/v1/audit/head")
        return head["seq"], head["hash"]

    def _audit(self, after_seq: int = 0, subject: str | None = None) -> Iterator[dict[str, Any]]:
        """Every audit entry after ``after_seq`` (of ``subject`` and its children), in order, page by page."""
        params: dict[str, Any] = {"after_seq": after_seq, "limit": 5_000}
        if subject is not None:
            params["subject"] = subject
        while True:
            page = self.request("GET", "/api/v1/audit", params=params)
            yield from page["entries"]
            if not page.get("next_after_seq"):
                return
            params["after_seq"] = page["next_after_seq"]

    def audit_rows(self, *, up_to: int | None = None, since_ms: int | None = None) -> Iterator[Any]:
        """Entries in order as objects with the stored columns (payload as canonical JSON text)."""
        from shipway.store.audit import canonical

        for entry in self._audit():
            if up_to is not None and entry["seq"] > up_to:
                return
            if since_ms is None or entry["time"] >= since_ms:
                yield types.SimpleNamespace(**{**entry, "payload": canonical(entry["payload"])})

    def audit_entries(
        self,
        *,
        since_ms: int | None,
        subject: str | None,
        action: str | None,
        limit: int | None,
        after_seq: int,
    ) -> list[Any]:
        from shipway.governance.audit import Entry

        found: list[Any] = []
        for entry in self._audit(after_seq, subject):
            if (since_ms is None or entry["time"] >= since_ms) and (
                action is None or entry["action"] == action
            ):
                found.append(decode(Entry, entry))
                if limit is not None and len(found) == limit:
                    break
        return found


def _run(record: Any) -> Any:
    # The API writes NaN metrics as null; the SDK's records hold NaN.
    metrics = {k: math.nan if v is None else v for k, v in record.metrics.items()}
    return dataclasses.replace(record, metrics=metrics)


def _version(data: dict[str, Any]) -> Any:
    from shipway.registry.versions import ModelVersion

    return decode(ModelVersion, data)


def _dataset(data: dict[str, Any]) -> Any:
    from shipway.data.datasets import DatasetVersion

    return decode(DatasetVersion, data)


def _request(data: dict[str, Any]) -> Any:
    from shipway.governance.promotion import PromotionRequest

    return decode(PromotionRequest, data)


def _inline_keys(source: str, base: Path | None) -> str:
    """The policy text with public-key file paths replaced by the keys, which the server cannot read."""
    import yaml

    from shipway.governance.policy import key_path

    document = yaml.safe_load(source)
    changed = False
    for stages in (document.get("models") or {}).values():
        for stage in (stages or {}).values():
            for gate in (stage or {}).get("gates") or []:
                config = gate.get("signature_required") if isinstance(gate, dict) else None
                key = config.get("public_key") if isinstance(config, dict) else None
                if isinstance(key, str) and "BEGIN PUBLIC KEY" not in key:
                    config["public_key"] = key_path(key, base).read_text()
                    changed = True
    return yaml.safe_dump(document, sort_keys=False) if changed else source
