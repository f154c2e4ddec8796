#!/usr/bin/env bash
# Every row of the RAVDESS results table, in the order they were run. Each line is one
# speaker-independent cross-validation over the 6 actor folds; rerunning skips finished folds
# and resumes an interrupted one from its last checkpoint. Results land in experiments/.
# Usage: bash run_experiments.sh [DATA_FOLDER]   (default: the shared 16 kHz copy)
set -euo pipefail
cd "$(dirname "$0")"
data=${1:-../../../../shared/data/ravdess}
epochs=${EPOCHS:-20}
cv() {  # cv NAME LABEL_SET N_CLASSES [overrides...]
  local name=$1 label_set=$2 n_classes=$3
  shift 3
  python cross_validate.py hparams/hnsd.yaml --data_folder="$data" --folds 1 2 3 4 5 6 \
    --cv_folder="experiments/$label_set/$name" --label_set="$label_set" \
    --n_classes="$n_classes" --number_of_epochs="$epochs" "$@"
}
cv hnsd four 4
cv hnsd all 8
cv static_only four 4 --streams=static
cv dynamic_only four 4 --streams=dynamic
cv early_fusion four 4 --streams=early
cv concat_fusion four 4 --fusion=concat
cv mean_pooling four 4 --pooling=mean
