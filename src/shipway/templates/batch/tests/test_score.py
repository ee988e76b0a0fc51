import os
import subprocess
import sys
from pathlib import Path

import make_sample
import pyarrow.parquet as pq
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import shipway

ROOT = Path(__file__).resolve().parents[1]
MODEL = "{{project}}"


@pytest.fixture
def prod_version(shipway_home: Path) -> int:
    """A tiny model registered as MODEL, with prod pointing at it."""
    data = load_breast_cancer(as_frame=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(data.data, data.target)
    version = shipway.register_model(model, name=MODEL, input_example=data.data.head(20))
    shipway.set_alias(MODEL, "prod", version.version)
    return version.version


def score_sh(*args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **variables}
    # The `shipway` command of the interpreter running the tests, wherever it is installed.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return subprocess.run(
        ["bash", str(ROOT / "score.sh"), *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_score_sh_scores_the_sample_with_the_prod_version(tmp_path: Path, prod_version: int) -> None:
    sample = make_sample.write(tmp_path / "sample.csv", rows=200)
    output = tmp_path / "scored.parquet"
    done = score_sh(str(sample), str(output), "--columns", "id", "--proba")
    assert done.returncode == 0, done.stderr
    scored = pq.read_table(output)
    assert scored.num_rows == 200
    assert scored.column_names == ["id", "prediction", "proba_0", "proba_1"]
    assert scored.column("id").to_pylist() == list(range(200))
    assert set(scored.column("prediction").to_pylist()) <= {0, 1}
    assert scored.schema.metadata[b"shipway.model_uri"].decode() == f"models:/{MODEL}/{prod_version}"


def test_score_sh_refuses_an_alias_that_points_nowhere(tmp_path: Path, prod_version: int) -> None:
    sample = make_sample.write(tmp_path / "sample.csv", rows=5)
    failed = score_sh(str(sample), str(tmp_path / "never.parquet"), ALIAS="champion")
    assert failed.returncode != 0
    assert "champion" in failed.stderr
    assert not (tmp_path / "never.parquet").exists()
