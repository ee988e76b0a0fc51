"""`shipway init`: the starter policy, and starter projects whose own tests pass as soon as they exist."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shipway.templates import TEMPLATES

SHIPWAY = [sys.executable, "-m", "shipway"]


def clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHIPWAY_", "PYTEST_"))}
    env.update(SHIPWAY_HOME=str(home), COLUMNS="200")
    return env


def init(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SHIPWAY, "init", *args],
        cwd=cwd,
        env=clean_env(cwd / "home"),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_a_new_projects_own_tests_pass(template: str, tmp_path: Path) -> None:
    made = init(f"my-{template}", "--template", template, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    project = tmp_path / f"my-{template}"
    assert f"Created the {template} project my-{template}" in made.stdout
    for path in project.rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert "{{project}}" not in text and "{{version}}" not in text, path
    ran = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        env=clean_env(tmp_path / "home"),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert " passed" in ran.stdout and "failed" not in ran.stdout and "skipped" not in ran.stdout
    assert not (tmp_path / "home").exists(), "the project's tests keep to a temporary store"


def test_train_project_layout(tmp_path: Path) -> None:
    assert init("churn", "--template", "train", cwd=tmp_path).returncode == 0
    project = tmp_path / "churn"
    files = sorted(p.relative_to(project).as_posix() for p in project.rglob("*") if p.is_file())
    assert files == [
        ".github/workflows/shipway.yml",
        ".gitignore",
        "README.md",
        "pyproject.toml",
        "requirements.txt",
        "shipway.yaml",
        "tests/conftest.py",
        "tests/test_train.py",
        "train.py",
    ]
    assert 'MODEL = "churn"' in (project / "train.py").read_text()
    assert "dataset: churn-holdout" in (project / "shipway.yaml").read_text()
    workflow = (project / ".github/workflows/shipway.yml").read_text()
    assert "${{ secrets.SHIPWAY_TOKEN }}" in workflow
    assert "shipway promote churn ${{ steps.train.outputs.version }} --to staging" in workflow


def test_shell_scripts_are_executable(tmp_path: Path) -> None:
    assert init("svc", "-t", "service", cwd=tmp_path).returncode == 0
    assert init("nightly", "-t", "batch", cwd=tmp_path).returncode == 0
    for script in ("svc/deploy.sh", "svc/serve.sh", "nightly/score.sh"):
        assert os.access(tmp_path / script, os.X_OK), script


def test_init_without_a_template_writes_the_starter_policy(tmp_path: Path) -> None:
    out = init(cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Wrote shipway.yaml" in out.stdout
    assert "environments: [dev, staging, prod]" in (tmp_path / "shipway.yaml").read_text()
    again = init(cwd=tmp_path)
    assert again.returncode != 0 and "already exists" in again.stderr and "--force" in again.stderr
    assert init("--force", cwd=tmp_path).returncode == 0
    assert init("policies", cwd=tmp_path).returncode == 0
    assert (tmp_path / "policies" / "shipway.yaml").is_file()


def test_a_directory_that_is_not_empty_needs_force(tmp_path: Path) -> None:
    (tmp_path / "churn").mkdir()
    (tmp_path / "churn" / "notes.txt").write_text("keep me")
    (tmp_path / "churn" / "train.py").write_text("old")
    refused = init("churn", "--template", "train", cwd=tmp_path)
    assert refused.returncode != 0
    assert "is not empty (it has notes.txt, train.py)" in refused.stderr and "--force" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert (tmp_path / "churn" / "train.py").read_text() == "old"

    assert init("churn", "--template", "train", "--force", cwd=tmp_path).returncode == 0
    assert (tmp_path / "churn" / "notes.txt").read_text() == "keep me"
    assert 'MODEL = "churn"' in (tmp_path / "churn" / "train.py").read_text()


def test_the_current_directory_names_the_project(tmp_path: Path) -> None:
    here = tmp_path / "fraud-model"
    here.mkdir()
    made = init("--template", "batch", cwd=here)
    assert made.returncode == 0, made.stderr
    assert 'MODEL="${MODEL:-fraud-model}"' in (here / "score.sh").read_text()
    named = init("elsewhere", "--template", "batch", "--name", "fraud", cwd=tmp_path)
    assert named.returncode == 0, named.stderr
    assert 'MODEL="${MODEL:-fraud}"' in (tmp_path / "elsewhere" / "score.sh").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["p", "--template", "trian"],
            "Unknown template 'trian'; the templates are batch, service, train. Did you mean 'train'?",
        ),
        (["my model", "--template", "train"], "Project name 'my model' is not allowed"),
        (["2fast", "--template", "train"], "starting with a letter"),
        (["p", "--name", "x.y", "--template", "train"], "Project name 'x.y' is not allowed"),
        (["p", "--name", "p"], "--name names a project made from a template"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(args: list[str], message: str, tmp_path: Path) -> None:
    out = init(*args, cwd=tmp_path)
    assert out.returncode != 0
    assert message in " ".join(out.stderr.split())
    assert "Traceback" not in out.stderr
    assert [p.name for p in tmp_path.iterdir()] == [], "nothing is written"


def test_a_file_in_the_way_is_refused(tmp_path: Path) -> None:
    (tmp_path / "churn").write_text("")
    out = init("churn", "--template", "train", cwd=tmp_path)
    assert out.returncode != 0 and "churn is a file" in out.stderr
