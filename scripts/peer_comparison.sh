#!/usr/bin/env bash
# STT against its closest peers (axial and criss-cross attention): the main-comparison and captioning runs
# in priority order, one at a time (each comparison skips the runs its runs.jsonl already holds, so
# running this again resumes where it stopped; the interrupted run starts over).
#
#   nohup bash scripts/peer_comparison.sh > outputs/peer_comparison.log 2>&1 &
#
# The committed runs.jsonl files are copied into outputs/ first (if outputs/ has none yet), so the
# existing runs are kept and only the new ones train.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
python=${PYTHON:-python}

seed_outputs() {  # seed_outputs RESULTS_DIR OUT_DIR FILE...: copy committed files not yet in OUT_DIR
    local results=$1 out=$2
    shift 2
    mkdir -p "$out"
    for f in "$@"; do
        [ -e "$out/$f" ] || cp "$results/$f" "$out/$f"
    done
}

seed_outputs model_cards/results/main_comparison outputs/main_comparison runs.jsonl
main=("$python" scripts/main_comparison.py --datasets fashion_mnist)
"${main[@]}" --variants axial --seeds 0 1 2 3 4
"${main[@]}" --variants stt plain res_block self_attn --seeds 3 4
"${main[@]}" --variants criss_cross --seeds 0 1 2

seed_outputs model_cards/results/caption_comparison outputs/caption_comparison runs.jsonl rescored.jsonl
# The comparison's runs were trained with a 3-gram limit; --rescore 0 scores them again without it.
"$python" scripts/caption_comparison.py --encoders axial --seeds 0 1 2 -- --no_repeat_ngram_size 3
"$python" scripts/caption_comparison.py --encoders axial --seeds 0 1 2 --rescore 0
