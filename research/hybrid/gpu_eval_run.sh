#!/bin/sh
# The product's `tempscale-rag eval` (default four sizes, and the fast preset's one 499 size as a second axis value)
# on a GPU machine, chunks replayed from the development CPU (research/hybrid/gpu_eval.py). Expects /tmp/xp/model,
# /tmp/xp/data (a copy of ../shared/data), /tmp/xp/*.json.gz (recorded chunks) and the wheels in /tmp/site.
#   sh research/hybrid/gpu_eval_run.sh qmsum questions bamboo passkey needle
# EVAL_ARGS replaces the chunk arguments, e.g. EVAL_ARGS="--preset fast --lexical-weight 1 1.5 2 3".
set -u
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
CHUNKS="--chunk-tokens 24:1,48:1,192:0.9,499:0.9 499:0.9"
M=/tmp/xp/model; D=/tmp/xp/data; O=${OUT:-/tmp/out}; mkdir -p "$O"
run() {
    name=$1; chunks=$2; shift 2; s=$(date +%s)
    # shellcheck disable=SC2086
    python3 research/hybrid/gpu_eval.py replay "$chunks" -- -q eval "$@" ${EVAL_ARGS:-$CHUNKS} --device cuda --dtype float32 --model $M --no-per-query --out "$O/$name" >"$O/$name.log" 2>&1
    echo "## $name rc=$? $(($(date +%s) - s)) s"; grep -E "^\| (BM25|tau|hybrid)" "$O/$name.log" | head -16
}
Q=/tmp/xp/questions; mkdir -p $Q
ln -sf $D/qmsum/corpus.jsonl $D/qmsum/qrels.tsv $Q/; ln -sf $D/qmsum/queries_questions.jsonl $Q/queries.jsonl
for job in "$@"; do
    case $job in
    qmsum) run qmsum /tmp/xp/qmsum.json.gz $D/qmsum ;;
    questions) run questions /tmp/xp/qmsum.json.gz $Q ;;
    bamboo) run bamboo /tmp/xp/bamboo.json.gz $D/bamboo ;;
    passkey) run passkey /tmp/xp/passkey.json.gz passkey ;;
    needle) run needle /tmp/xp/needle.json.gz needle --haystack $D/paul_graham_essays/txt \
        --needles $D/needles/needles_100.tsv ;;
    esac
done
