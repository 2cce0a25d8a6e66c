#!/usr/bin/env bash
# On the GPU machine: collect carried wheel folders (from benchmarks/gpu_wheels.sh), reassemble split wheels, check
# their sha256, and once every wheel of the MANIFEST is there, install them into /tmp/site (no index, no deps).
#
#   bash benchmarks/gpu_setup.sh .whl-gpu/carry1        # one call per carried folder; /tmp survives between calls
#   ...                                                 # on a warm machine, so the folders may come in any order
#   export PYTHONPATH=/tmp/site:$PWD:$PWD/integrations/llama-index-embeddings-tempscale:$PWD/integrations/langchain-tempscale
#
# Exit status 0 with "incomplete" when folders are still missing (carry the next one), 0 with "installed" when done.
set -euo pipefail
STASH=/tmp/whl-stash
WHEELS=/tmp/whl
SITE=/tmp/site
PY=${PYTHON:-python3}
mkdir -p "$STASH" "$WHEELS"
for dir in "$@"; do
    cp -f "$dir"/* "$STASH"/
done
[ -f "$STASH/MANIFEST" ] || { echo "no MANIFEST carried yet"; exit 1; }
missing=()
while read -r sum name parts; do
    if [ -f "$WHEELS/$name" ]; then
        continue
    fi
    if [ "$parts" = 0 ]; then
        [ -f "$STASH/$name" ] && cp "$STASH/$name" "$WHEELS/$name.tmp"
    else
        have=$(find "$STASH" -maxdepth 1 -name "$name.part-*" | wc -l)
        [ "$have" = "$parts" ] && cat "$STASH/$name".part-* >"$WHEELS/$name.tmp"
    fi
    if [ -f "$WHEELS/$name.tmp" ]; then
        if [ "$(sha256sum "$WHEELS/$name.tmp" | cut -d' ' -f1)" != "$sum" ]; then
            rm -f "$WHEELS/$name.tmp"
            echo "checksum mismatch for $name: carry its folder again" >&2
            exit 1
        fi
        mv "$WHEELS/$name.tmp" "$WHEELS/$name"
    else
        missing+=("$name")
    fi
done <"$STASH/MANIFEST"
if [ "${#missing[@]}" -gt 0 ]; then
    echo "incomplete: ${#missing[@]} wheels still missing (carry the other folders): ${missing[*]}"
    exit 0
fi
if [ ! -f "$SITE/.installed" ]; then
    mkdir -p "$SITE"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
    touch "$SITE/.installed"
fi
echo "installed $(ls "$WHEELS" | wc -l) wheels into $SITE"
PYTHONPATH=$SITE "$PY" -c "import ray, faiss, llama_index.core, langchain_core, pydantic; print('ray', ray.__version__, '| faiss', faiss.__version__, 'GPUs', faiss.get_num_gpus(), '| llama-index-core', llama_index.core.__version__, '| langchain-core', langchain_core.__version__, '| pydantic', pydantic.__version__)"
