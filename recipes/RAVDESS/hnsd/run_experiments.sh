#!/usr/bin/env bash
# Every row of the RAVDESS results table. Each row is one speaker-independent cross-validation
# over the 6 actor folds; rerunning skips finished folds and resumes an interrupted one from its
# last checkpoint. Results land in $EXP/<label set>/<row>/ with a cv_results.md report per row.
#
# Usage: bash run_experiments.sh [DATA_FOLDER]   (default: the shared 16 kHz copy)
# Environment:
#   ROWS    rows to run, e.g. "four/hnsd all/hnsd" (default: all, in the table's order)
#   EPOCHS  epochs of the paper-settings rows (default 20; hnsd_improved.yaml sets its own 40)
#   FOLDS   folds to train (default "1 2 3 4 5 6")
#   JOBS    folds trained at once (default 1); each fold is a process of its own
#   DEVICE  e.g. cuda:0 (default: SpeechBrain's default, cpu)
#   EXP     results folder (default experiments)
#   PYTHON  the interpreter (default python)
#   ARGS    more train.py overrides for every row, split at spaces (e.g. "--debug" for a dry run)
#   REPORT_ONLY=1  train nothing; write the reports of the folds that have finished
# A fold being trained by another run of this script (its lock held) is skipped, and named.
set -euo pipefail
cd "$(dirname "$0")"
export DATA=${1:-../../../../shared/data/ravdess} PYTHON=${PYTHON:-python}
export EPOCHS=${EPOCHS:-20} EXP=${EXP:-experiments} DEVICE=${DEVICE:-} ARGS=${ARGS:-}
JOBS=${JOBS:-1} FOLDS=${FOLDS:-1 2 3 4 5 6}

# The paper's ablations: each swaps parts of the model in the hparams file (quoted for eval)
STATIC_ONLY="--dynamic_encoder=null --fusion=null"
DYNAMIC_ONLY="--static_encoder=null --fusion=null"
EARLY_FUSION="--static_encoder=null --dynamic_encoder=null --fusion=null '--joint_encoder=!ref <lstm>'"
CONCAT_FUSION="--fusion=!name:hnsd_sb.ConcatFusion"
MEAN_POOLING="--pooling=!name:hnsd_sb.MeanPooling"

# row (label set/name) | hparams file | classes | cross_validate.py options and train.py overrides
# (the baseline rows run baseline.py, the statistics baseline, on the same folds)
TABLE="
four/baseline       hnsd.yaml           4 --script=baseline.py
all/baseline        hnsd.yaml           8 --script=baseline.py
four/hnsd           hnsd.yaml           4 --number_of_epochs=$EPOCHS
all/hnsd            hnsd.yaml           8 --number_of_epochs=$EPOCHS
four/static_only    hnsd.yaml           4 --number_of_epochs=$EPOCHS $STATIC_ONLY
four/dynamic_only   hnsd.yaml           4 --number_of_epochs=$EPOCHS $DYNAMIC_ONLY
four/early_fusion   hnsd.yaml           4 --number_of_epochs=$EPOCHS $EARLY_FUSION
four/concat_fusion  hnsd.yaml           4 --number_of_epochs=$EPOCHS $CONCAT_FUSION
four/mean_pooling   hnsd.yaml           4 --number_of_epochs=$EPOCHS $MEAN_POOLING
all/hnsd_improved   hnsd_improved.yaml  8
four/hnsd_improved  hnsd_improved.yaml  4
four/static_only_improved    hnsd_improved.yaml  4 $STATIC_ONLY
four/dynamic_only_improved   hnsd_improved.yaml  4 $DYNAMIC_ONLY
four/early_fusion_improved   hnsd_improved.yaml  4 $EARLY_FUSION
four/concat_fusion_improved  hnsd_improved.yaml  4 $CONCAT_FUSION
four/mean_pooling_improved   hnsd_improved.yaml  4 $MEAN_POOLING
"
ROWS=${ROWS:-$(awk 'NF {print $1}' <<<"$TABLE")}

row_args() {  # the cross_validate.py arguments of row $1, one per line
  local row=$1 spec
  spec=$(awk -v r="$row" '$1 == r' <<<"$TABLE")
  [[ -n $spec ]] || { echo "unknown row $row" >&2; return 1; }
  eval "set -- $spec"  # quotes group words: '--joint_encoder=!ref <lstm>' is one argument
  # shellcheck disable=SC2086
  printf '%s\n' "hparams/$2" "--data_folder=$DATA" "--cv_folder=$EXP/$row" \
    "--label_set=${row%%/*}" "--n_classes=$3" "${@:4}" ${DEVICE:+--device=$DEVICE} $ARGS
}

train_fold() {  # train_fold ROW FOLD: one fold of one row, its output in <row>/fold<k>.out
  local args lock
  mapfile -t args < <(row_args "$1")
  mkdir -p "$EXP/$1"
  # A second run on the same EXP must not train a fold that a first one is training (the two
  # would interleave its log and checkpoints): the fold's lock, released when its process ends.
  if command -v flock >/dev/null; then
    exec {lock}>"$EXP/$1/fold$2.lock"
    flock -n "$lock" || { echo "SKIPPED $1 fold $2: another run is training it"; return 1; }
  fi
  "$PYTHON" cross_validate.py "${args[@]}" --folds "$2" --no_report >"$EXP/$1/fold$2.out" 2>&1 \
    && echo "done $1 fold $2" || { echo "FAILED $1 fold $2 (see $EXP/$1/fold$2.out)"; return 1; }
}
export -f row_args train_fold
export TABLE STATIC_ONLY DYNAMIC_ONLY EARLY_FUSION CONCAT_FUSION MEAN_POOLING

# Folds of the rows in order; with JOBS > 1 several run at once, each writing its log and
# progress bars to its own fold<k>.out.
failed=0
if [[ -z ${REPORT_ONLY:-} ]]; then
  for row in $ROWS; do
    row_args "$row" >/dev/null
    for k in $FOLDS; do echo "$row $k"; done
  done | xargs -P "$JOBS" -L 1 bash -c 'train_fold "$@"' _ || failed=1
fi

for row in $ROWS; do  # the report of every row, over the folds that finished
  mapfile -t args < <(row_args "$row")
  "$PYTHON" cross_validate.py "${args[@]}" --folds 1 2 3 4 5 6 --report_only >/dev/null 2>&1 \
    && echo "report: $EXP/$row/cv_results.md" || echo "no finished fold: $row"
done
exit $failed  # non-zero when a fold failed
