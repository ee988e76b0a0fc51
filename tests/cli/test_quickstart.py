"""The README's quickstart block, run as written, and each step's outcome read back from its store."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _readme_block() -> str:
    blocks = re.findall(r"^```sh\n(.*?)^```", (ROOT / "README.md").read_text(), re.S | re.M)
    (block,) = [b for b in blocks if "shipway quickstart" in b]
    return block.strip()


def test_the_readme_quickstart_runs_the_whole_loop(tmp_path: Path) -> None:
    block = _readme_block()
    assert block == ".venv/bin/shipway quickstart"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPWAY_")}
    env.update(COLUMNS="200", PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}")
    out = subprocess.run(
        ["bash", "-c", block.replace(".venv/bin/shipway", "shipway")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    printed = out.stdout
    home = tmp_path / "shipway-quickstart"

    # Each step's outcome, from what it printed and from its store.
    assert "-> staging: completed (metric_threshold pass, lineage_required pass)" in printed
    assert "demo-approver approved: prod is now v1 (completed)" in printed
    assert re.search(r"canary of v2: rolled back after \d+ requests", printed), printed
    assert "live_quality: wrong answers" in printed
    assert re.search(r"alert tumor-drift \(page\): FIRING", printed), printed
    assert "audit chain: intact" in printed
    assert f"SHIPWAY_HOME={home} shipway up" in printed
    assert (home / "drift-report.html").is_file()

    check = """
import json
from shipway import governance
from shipway.rollout import get_deployment
from shipway.rollout.deployments import history
from shipway.monitoring import list_alerts
from shipway.registry import get_version
print(json.dumps({
    "prod": get_version("tumor-classifier", alias="prod").version,
    "serving": get_deployment("tumor-classifier", "prod").stable_version,
    "outcomes": [r["outcome"] for r in history("tumor-classifier", "prod")],
    "alerts": [(a.rule, a.state) for a in list_alerts(model="tumor-classifier")],
    "audit": governance.audit.verify().ok,
}))
"""
    env["SHIPWAY_HOME"] = str(home)
    read = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=120)
    assert read.returncode == 0, read.stderr
    state = json.loads(read.stdout)
    assert state["prod"] == 2 and state["serving"] == 1, "the rollback moved traffic, not governance"
    assert state["outcomes"] == ["rolled_back", "succeeded"]
    assert state["alerts"] == [["tumor-drift", "firing"]]
    assert state["audit"] is True

    # A second run refuses to overwrite its store unless asked to, and --force never deletes a
    # directory the quickstart did not make.
    again = subprocess.run(["shipway", "quickstart"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert again.returncode == 2 and "--force" in again.stderr
    (tmp_path / "notes.txt").write_text("mine")
    here = subprocess.run(
        ["shipway", "quickstart", "--dir", ".", "--force"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert here.returncode == 2 and "not a quickstart's directory" in here.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"
