#!/usr/bin/env bash
# Score a file with the version of {{project}} an alias names, and write the predictions as Parquet:
#
#   ./score.sh [INPUT] [OUTPUT] [more `shipway score` options, e.g. --proba --workers 4]
#
# MODEL and ALIAS choose the version (default {{project}}@prod). The alias is read once, when the
# job starts; an interrupted job run again resumes from its last finished chunk.
set -euo pipefail

MODEL="${MODEL:-{{project}}}"
ALIAS="${ALIAS:-prod}"
INPUT="${1:-data/sample.csv}"
OUTPUT="${2:-scored/predictions.parquet}"
shift $(($# < 2 ? $# : 2))

exec shipway score "$MODEL@$ALIAS" --input "$INPUT" --output "$OUTPUT" "$@"
