import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

import shipway
from shipway.store import Store
from shipway.tracking import lineage

SCRIPT = textwrap.dedent(
    """
    import json, shipway
    shipway.seed(1234)
    with shipway.start_run(experiment="lin") as run:
        pass
    print(run.id)
    """
)


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_lineage_names_commit_branch_dirtiness_remote_and_seeds(store: Store, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.email", "t@example.com")
    _git(repo, "config", "user.name", "T")
    _git(repo, "remote", "add", "origin", "https://user:s3cret@git.example.com/team/churn.git")
    (repo / "train.py").write_text(SCRIPT)
    _git(repo, "add", "train.py")
    _git(repo, "commit", "-q", "-m", "train")
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True
    ).stdout.strip()

    def run_script() -> dict:
        out = subprocess.run(
            [sys.executable, "train.py"], cwd=repo, capture_output=True, text=True, check=True
        )
        return shipway.get_run(out.stdout.strip()).lineage

    clean = run_script()
    assert clean["git"]["commit"] == commit
    assert clean["git"]["branch"] == "main"
    assert clean["git"]["dirty"] is False
    assert clean["git"]["remote"] == "https://git.example.com/team/churn.git", "credentials are stripped"
    assert clean["seeds"]["python"] == 1234
    assert clean["command"] == ["train.py"]
    assert clean["python"]["version"].count(".") == 2
    assert clean["environment"]["packages"] > 10 and len(clean["environment"]["hash"]) == 64

    (repo / "train.py").write_text(SCRIPT + "\n# edited\n")
    dirty = run_script()
    assert dirty["git"]["dirty"] is True and dirty["git"]["changed_files"] == ["train.py"]


def test_seed_sets_python_and_numpy_generators() -> None:
    shipway.seed(7)
    a = (random.random(), np.random.rand())
    shipway.seed(7)
    assert (random.random(), np.random.rand()) == a
    assert lineage.seeds()["numpy"] == 7


def test_environment_is_stored_once_and_cached_per_process(store: Store) -> None:
    import sqlalchemy as sa

    from shipway.store import schema

    for _ in range(3):
        with shipway.start_run(experiment="env"):
            pass
    with store.read() as conn:
        rows = conn.execute(sa.select(schema.environments.c.hash, schema.environments.c.packages)).all()
    digest, packages = lineage.environment()
    assert [(r.hash, list(r.packages)) for r in rows] == [(digest, packages)]
    assert any(p.startswith("sqlalchemy==") for p in packages)
    assert lineage.environment.cache_info().misses == 1


def test_git_remotes_lose_every_credential() -> None:
    strip = lineage._strip_credentials
    assert strip("https://user:p@ss@github.com/team/repo.git") == "https://github.com/team/repo.git"
    assert strip("https://user:ab/cd@host:8443/x.git") == "https://host:8443/x.git"
    assert strip("https://gitlab.com/x.git?private_token=abc") == "https://gitlab.com/x.git"
    assert strip("git@github.com:team/repo.git") == "git@github.com:team/repo.git"
