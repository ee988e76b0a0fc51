"""Train {{project}}, track the run with Shipway, and register the model as the next version.

    python train.py     # into ./.shipway, or the server SHIPWAY_URI names (with SHIPWAY_TOKEN)

Put your own data in load_data() and your own estimator in build_model(); the rest is the paved
road: parameters, datasets and metrics tracked in a run, and a version registered from that run
with its lineage and an input example (the signature every prediction is checked against).
"""

from __future__ import annotations

import os
from typing import Any

import pandas as pd
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

import shipway
from shipway.registry import ModelVersion

MODEL = "{{project}}"
TARGET = "target"
# The staging gate in shipway.yaml scores every candidate on this dataset, never on the run's claims.
HOLDOUT = f"{MODEL}-holdout"
PARAMS: dict[str, Any] = {"C": 1.0, "holdout_share": 0.25, "seed": 0}
# The model card's human fields. Promotion to prod requires them (shipway.yaml): write them
# before asking for prod. They can also be edited later with shipway.registry.update_version.
CARD = {"intended_use": "", "limitations": ""}


def load_data() -> pd.DataFrame:
    """Features and a TARGET column: scikit-learn's bundled breast cancer data (569 rows, 30 features)."""
    return load_breast_cancer(as_frame=True).frame


def build_model(params: dict[str, Any]) -> Pipeline:
    """An unfitted estimator for these parameters."""
    return make_pipeline(StandardScaler(), LogisticRegression(C=params["C"], max_iter=1000))


def train(**overrides: Any) -> ModelVersion:
    """Train one model as a run of the MODEL experiment and register it as MODEL's next version."""
    params = {**PARAMS, **overrides}
    shipway.seed(params["seed"])
    data = load_data()
    train_set, holdout = train_test_split(
        data, test_size=params["holdout_share"], random_state=params["seed"], stratify=data[TARGET]
    )
    features = [c for c in data.columns if c != TARGET]
    with shipway.start_run(experiment=MODEL) as run:
        run.log_params(params)
        run.log_dataset(train_set, name=f"{MODEL}-train", role="train", target=TARGET)
        run.log_dataset(holdout, name=HOLDOUT, role="test", target=TARGET)
        model = build_model(params).fit(train_set[features], train_set[TARGET])
        run.log_metrics(
            {
                "train_accuracy": model.score(train_set[features], train_set[TARGET]),
                "holdout_accuracy": model.score(holdout[features], holdout[TARGET]),
            }
        )
    return shipway.register_model(
        model,
        name=MODEL,
        run=run,
        input_example=train_set[features].head(20),
        card={field: text for field, text in CARD.items() if text},
    )


def main() -> None:
    version = train()
    print(f"Registered {MODEL} v{version.version} (run {version.run_id}).")
    print(f"Next: shipway promote {MODEL} {version.version} --to staging")
    # In GitHub Actions, later steps read the version as steps.<id>.outputs.version.
    if os.environ.get("GITHUB_OUTPUT"):
        with open(os.environ["GITHUB_OUTPUT"], "a", encoding="utf-8") as out:
            out.write(f"version={version.version}\n")


if __name__ == "__main__":
    main()
