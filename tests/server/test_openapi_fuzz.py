"""The OpenAPI document as a contract: schemathesis fuzzes every operation of a live server.

uvicorn serves a seeded store on a loopback port, SQLite and then PostgreSQL (which refuses some
text SQLite keeps, such as NUL characters), and ``schemathesis run`` (its CLI, in its own process)
reads the schema from the server's ``/openapi.json`` and sends every operation a bounded number of
generated requests, valid and invalid, as an admin. The run fails when a response is a 5xx, when its
status code or content type is not documented for the operation, when its body does not match the
documented schema, or when the server accepts data the schema says is invalid. The failure message
is schemathesis' report, with a curl command that reproduces each failing case.
"""

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from servers import free_port
from sklearn.dummy import DummyClassifier

import shipway
from shipway import governance
from shipway.server import create_app
from shipway.store import Store

# Generated requests per operation and phase: about 30 s per database for the whole API on two cores.
MAX_EXAMPLES = 12

CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
]

POLICY = """
environments: [staging, prod]
models:
  default:
    prod:
      approvals: {count: 2, role: approver, distinct_from: [author, requester]}
"""


def _seed(store: Store) -> str:
    """A run with metrics, a model with a version and an alias, a policy, a request; an admin token."""
    with shipway.start_run(experiment="churn") as run:
        run.log_params({"depth": 6})
        run.log_metric("auc", 0.9)
    shipway.register_model(DummyClassifier().fit([[0], [1]], [0, 1]), name="churn", run=run)
    shipway.set_alias("churn", "champion", 1)
    governance.apply_policy(POLICY, store=store)
    governance.promote("churn", 1, "prod", store=store)
    governance.add_principal("ada", "admin", store=store)
    _, secret = governance.create_token("ada", store=store)
    return secret


@pytest.fixture
def live_servers(store: Store) -> Iterator[tuple[str, str, str]]:
    """(authenticated base URL, admin token, --insecure-local base URL), both on one seeded store."""
    token = _seed(store)
    servers, threads, urls = [], [], []
    for insecure_local in (False, True):
        port = free_port()
        config = uvicorn.Config(
            create_app(store, insecure_local=insecure_local), host="127.0.0.1", port=port, log_level="error"
        )
        servers.append(uvicorn.Server(config))
        threads.append(threading.Thread(target=servers[-1].run, daemon=True))
        threads[-1].start()
        urls.append(f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 20
    while not all(server.started for server in servers):
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield urls[0], token, urls[1]
    finally:
        for server in servers:
            server.should_exit = True
        for thread in threads:
            thread.join(timeout=10)


def _config(tmp_path: Path) -> Path:
    checks = "\n".join(f"{name}.enabled = true" for name in CHECKS)
    path = tmp_path / "schemathesis.toml"
    path.write_text(
        f"""
workers = 1  # 2 threads race in ast.parse on CPython 3.11 ("AST constructor recursion depth mismatch")
suppress-health-check = ["all"]

[generation]
mode = "all"
max-examples = {MAX_EXAMPLES}
deterministic = true

[phases]
examples.enabled = true
coverage.enabled = true
fuzzing.enabled = true
stateful.enabled = false

[checks]
enabled = false
{checks}
# A body made invalid by being too long is refused before it is read, with 413.
negative_data_rejection.expected-statuses = ["400", "401", "403", "404", "405", "409", "413", "422"]
"""
    )
    return path


def _fuzz(tmp_path: Path, base: str, *filters: str, headers: tuple[str, ...] = ()) -> tuple[bool, str]:
    exe = Path(sys.executable).parent / "schemathesis"
    cli = [str(exe)] if exe.exists() else [sys.executable, "-m", "schemathesis.cli"]
    command = [*cli, "--config-file", str(_config(tmp_path)), "run", f"{base}/openapi.json", "--no-color"]
    for header in headers:
        command += ["--header", header]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEMATHESIS_")} | {"COLUMNS": "160"}
    done = subprocess.run(
        [*command, *filters], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    report = done.stdout + done.stderr
    selected = re.search(r"Selected: (\d+)/\d+\s+Tested: (\d+)", report)
    tested_all = selected is not None and selected[1] == selected[2] != "0"
    return done.returncode == 0 and tested_all, report


def test_every_operation_honours_its_documented_contract(
    live_servers: tuple[str, str, str], tmp_path: Path
) -> None:
    base, token, insecure_base = live_servers
    # Operations that can take the fuzzer's own identity away (revoke its token, demote or disable
    # its principal, whose ids it learns from earlier responses) run against the --insecure-local
    # server, whose caller is the local OS user, after everything else.
    lockout = r"^/api/v1/(tokens/\{token_id\}|principals/\{principal\}/.*)$"
    passed, report = _fuzz(
        tmp_path, base, "--exclude-path-regex", lockout, headers=(f"Authorization: Bearer {token}",)
    )
    assert passed, report
    passed, report = _fuzz(tmp_path, insecure_base, "--include-path-regex", lockout)
    assert passed, report
