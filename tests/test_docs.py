"""Every command and code block in README.md and docs/ runs here, as a reader would run it."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import httpx
import pytest
from servers import PostgresServer, S3Server, free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def blocks(path: Path, lang: str) -> list[str]:
    return [body for kind, body in FENCE.findall(path.read_text()) if kind == lang]


def env_for(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPWAY_")}
    env.update(SHIPWAY_HOME=str(home), COLUMNS="160")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def run_python(code: str, cwd: Path, env: dict[str, str]) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, f"{code}\n---\n{out.stderr}"
    return out.stdout


def run_shell(script: str, cwd: Path, env: dict[str, str]) -> str:
    out = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, f"{script}\n---\n{out.stdout}\n{out.stderr}"
    assert "Traceback" not in out.stderr
    return out.stdout


def test_ci_runs_the_readmes_test_command() -> None:
    install, test_command, *_ = blocks(ROOT / "README.md", "sh")
    assert test_command.strip() == "./scripts/test"
    assert "exec ./scripts/test" in (ROOT / ".ci" / "run").read_text()
    assert "shipway up" in install


def test_readme_tour(tmp_path: Path) -> None:
    env = env_for(tmp_path / "home")
    code = "\n\n".join(blocks(ROOT / "README.md", "python"))
    printed = run_python(code, tmp_path, env)
    assert "gbm-lr0.1-d6" in printed and "1000 MetricPoint(step=0" in printed
    ids = run_python(
        "import shipway; print(' '.join(r.id for r in shipway.search_runs('churn', order_by='name')))",
        tmp_path,
        env,
    ).split()
    # The quickstart's block has a test of its own (tests/cli/test_quickstart.py).
    shell = [b for b in blocks(ROOT / "README.md", "sh")[2:] if "shipway quickstart" not in b]
    assert shell, "the tour shows shell commands"
    for script in shell:
        script = script.replace("OTHER_RUN_ID", ids[1]).replace("RUN_ID", ids[0][:8])
        output = run_shell(script, tmp_path, env)
        assert "gbm-lr0.05-d6" in output and "healthy" in output


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_docs_code_blocks_run(doc: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    env = env_for(tmp_path / "home")
    code = "\n\n".join(blocks(doc, "python"))
    if code:
        run_python(code, tmp_path, env)
    for script in blocks(doc, "sh"):
        if "postgresql://" in script:
            pg: PostgresServer = request.getfixturevalue("postgres")
            uri = pg.create_database(f"d_{uuid.uuid4().hex[:10]}")
            script = re.sub(r"postgresql://\S+", uri, script)
        if "s3://" in script:
            s3: S3Server = request.getfixturevalue("s3")
            bucket = re.search(r"s3://([\w.-]+)", script).group(1)  # type: ignore[union-attr]
            with contextlib.suppress(Exception):  # created by an earlier block
                s3.create_bucket(bucket)
            script = re.sub(r"SHIPWAY_S3_ENDPOINT_URL=\S+", f"SHIPWAY_S3_ENDPOINT_URL={s3.endpoint}", script)
            env.update({k: os.environ[k] for k in os.environ if k.startswith("AWS_")})
        if "PORT=8765" in script:  # a server in the background: any free port will do
            script = script.replace("PORT=8765", f"PORT={free_port()}")
        run_shell(script, tmp_path, env)


def test_cli_reference_is_current_and_complete() -> None:
    from shipway.cli.reference import commands, render

    text = (ROOT / "docs" / "cli.md").read_text()
    assert text == render(), "docs/cli.md is stale: run python -m shipway.cli.reference > docs/cli.md"
    for path, _ in commands():
        assert f"## `{' '.join(['shipway', *path])}`" in text


@pytest.mark.slow
def test_readme_install_command_on_a_fresh_copy(tmp_path: Path) -> None:
    """The README's first command, exactly as written, in a clean copy with a fresh virtualenv."""
    copy = tmp_path / "shipway"
    shutil.copytree(
        ROOT,
        copy,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", ".shipway", "__pycache__", "*.egg-info", "bench", ".pytest_cache", ".ruff_cache"
        ),
    )
    install = blocks(ROOT / "README.md", "sh")[0].strip()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHIPWAY_", "VIRTUAL_ENV"))}
    env["SHIPWAY_PORT"] = str(port)
    env["SHIPWAY_SERVE_PORT"] = str(free_port())
    proc = subprocess.Popen(
        ["bash", "-c", install],
        cwd=copy,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for_port(port, timeout=600)
        health = httpx.get(f"http://127.0.0.1:{port}/health").json()
        assert health["status"] == "ok"
        assert (copy / ".shipway" / "shipway.db").is_file()  # the embedded default store
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert f"listening on http://127.0.0.1:{port}" in output, textwrap.shorten(output, 2000)
