"""Write data/sample.csv: rows to try score.sh on, from scikit-learn's bundled breast cancer data.

    python make_sample.py [--rows N] [--output data/sample.csv]

Each row has an `id` and the 30 feature columns a model trained on that data takes (the train
template's model does); score.sh keeps the `id` next to each prediction.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from sklearn.datasets import load_breast_cancer


def sample(rows: int | None = None) -> pd.DataFrame:
    """An `id` column, then the features, for the first ``rows`` rows (all 569 by default)."""
    features = load_breast_cancer(as_frame=True).data
    if rows is not None:
        features = features.head(rows)
    return features.reset_index(drop=True).rename_axis("id").reset_index()


def write(path: str | Path = "data/sample.csv", rows: int | None = None) -> Path:
    """Write the sample as CSV and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sample(rows).to_csv(path, index=False)
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=None, help="How many rows (default: all 569).")
    parser.add_argument("--output", default="data/sample.csv", help="Where to write the CSV file.")
    args = parser.parse_args()
    print(f"Wrote {write(args.output, args.rows)}")
