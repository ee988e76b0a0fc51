import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import shipway
from shipway.registry import render_card, update_version
from shipway.store import Store


def sh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shipway", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )


@pytest.fixture
def version(store: Store, sk_model, churn_data):  # type: ignore[no-untyped-def]
    frame, y = churn_data
    with shipway.start_run(experiment="churn") as run:
        run.log_metric("auc", 0.9)
        run.log_dataset(frame.assign(churned=y), name="churn-train", role="train", target="churned")
    return shipway.register_model(sk_model, name="churn", run=run, input_example=frame.head(20))


def test_card_marks_human_fields_missing_until_written(version) -> None:
    card = render_card(version)
    assert "# Model card: churn version 1" in card
    assert card.count("_Missing: not written yet._") >= 3
    assert "| auc | 0.9 |" in card and "churn-train" in card and version.manifest_digest in card
    written = update_version(
        "churn",
        1,
        card={
            "intended_use": "Rank accounts for retention outreach.",
            "limitations": "Trained on one region.",
            "ethical_considerations": "Not for pricing decisions.",
        },
    )
    card = render_card(written)
    assert "_Missing" not in card.split("## Intended use")[1].split("## Metrics")[0]
    assert "Trained on one region." in card


def test_models_cli(version, tmp_path: Path) -> None:
    out = sh("models", "list")
    assert out.returncode == 0 and "churn" in out.stdout
    shown = sh("models", "show", "churn", "--version", "1")
    assert shown.returncode == 0
    for text in ("sklearn / skops", version.manifest_digest, "churn-train", "auc", "tenure", "unsigned"):
        assert text in shown.stdout
    data = json.loads(sh("models", "show", "churn", "--json").stdout)
    assert data["card_missing"] == ["intended_use", "limitations", "ethical_considerations"]
    assert sh("models", "card", "churn", "1", "--out", str(tmp_path / "card.md")).returncode == 0
    assert (tmp_path / "card.md").read_text().startswith("# Model card: churn version 1")
    assert sh("models", "alias", "churn", "staging", "1").returncode == 0
    assert "staging" in sh("models", "versions", "churn").stdout
    assert "alias:staging" in sh("models", "history", "churn", "1").stdout


def test_keygen_sign_verify_from_the_shell(version, tmp_path: Path, shipway_home: Path) -> None:
    keys = tmp_path / "keys"
    assert sh("models", "keygen", "--out", str(keys)).returncode == 0
    assert sh("models", "sign", "churn", "1", "--key", str(keys / "shipway.key")).returncode == 0
    ok = sh("models", "verify", "churn", "1", "--public-key", str(keys / "shipway.pub"))
    assert ok.returncode == 0 and "verified" in ok.stdout and "valid" in ok.stdout
    [(name, entry)] = list(version.manifest.items())
    blob = shipway_home / "artifacts" / "sha256" / entry["digest"][:2] / entry["digest"][2:]
    blob.write_bytes(blob.read_bytes() + b"\0")
    bad = sh("models", "verify", "churn", "1", "--public-key", str(keys / "shipway.pub"))
    assert (
        bad.returncode == 8 and f"{name} changed or missing" in bad.stderr and "Traceback" not in bad.stderr
    )


def test_cli_errors_name_what_to_do(version) -> None:
    out = sh("models", "show", "nope")
    assert out.returncode == 3 and "No model named 'nope'" in out.stderr
    out = sh("models", "delete-artifacts", "churn", "1")
    assert out.returncode == 5 and "shipway models archive churn 1" in out.stderr
    assert sh("models", "archive", "churn", "1").returncode == 0
    out = sh("models", "delete-artifacts", "churn", "1")
    assert out.returncode == 2 and "--yes" in out.stderr


def test_verify_with_a_key_on_an_unsigned_version_says_so(version, tmp_path: Path) -> None:
    out = sh("models", "verify", "churn", "1", "--public-key", str(tmp_path / "missing.pub"))
    assert out.returncode == 3 and "No public key" in out.stderr
    (tmp_path / "k.pub").write_text("x")
    out = sh("models", "verify", "churn", "1", "--public-key", str(tmp_path / "k.pub"))
    assert out.returncode == 8 and "is not signed" in out.stderr
