#!/usr/bin/env bash
# Download every wheel the GPU benchmarks need that the GPU image lacks, and split them into carries of <= 60 MiB.
#
# For: benchmarks/scale_gpu.py (ray[data]), benchmarks/adapters_gpu.py (llama-index-core, langchain-core),
# benchmarks/faiss_gpu.py and tests/test_faiss_gpu.py (faiss-cuda, the CUDA 13 build), and tempscale_rag itself
# (pydantic), and pytest for the gpu-marked tests. The GPU image (Python 3.12, torch 2.11+cu130) already has numpy,
# torch, transformers, sentence-transformers, tokenizers, safetensors, tqdm, pyarrow, pandas, msgpack, grpcio, protobuf, psutil, requests,
# aiohttp, pyyaml, filelock, click, jinja2, pillow, cloudpickle and their dependencies: those are left out.
# faiss-cuda is taken without its dependencies: nvidia-cublas and nvidia-cuda-runtime (CUDA 13) come with torch.
#
#   bash benchmarks/gpu_wheels.sh [DEST]            # DEST defaults to .whl-gpu in the repository root
#
# Result: DEST/carry1, DEST/carry2, ... each <= 60 MiB, each with the same MANIFEST (sha256, wheel, parts). Wheels over
# 50 MiB are cut into NAME.whl.part-00, -01, ... (split -b 50m). On the GPU machine, carry one folder per call and run
# `bash benchmarks/gpu_setup.sh .whl-gpu/carryN` each time (see that script).
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.whl-gpu}
PY=${PYTHON:-python3}
PART_MB=50
CARRY_MB=60
REQUIREMENTS=("ray[data]==2.60.0" "llama-index-core==0.14.25" "langchain-core==1.8.3" "pydantic==2.14.4" "pytest==9.2.0")
FAISS="faiss-cuda==1.14.1.post4"   # CUDA 13 build ("GPU-enabled FAISS wheels (CUDA 13, Taylor Geospatial)")
# Distributions the GPU image has (and what they depend on), normalised names.
IMAGE="numpy torch transformers sentence-transformers tokenizers safetensors tqdm pyarrow pandas msgpack grpcio
protobuf psutil requests aiohttp pyyaml filelock click jinja2 pillow cloudpickle huggingface-hub regex packaging
typing-extensions networkx sympy mpmath fsspec setuptools python-dateutil six tzdata pytz urllib3 idna certifi
charset-normalizer multidict yarl frozenlist aiosignal attrs propcache aiohappyeyeballs markupsafe scipy scikit-learn
joblib threadpoolctl hf-xet"

PLATFORMS=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
    manylinux_2_5_x86_64 manylinux1_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64; do
    PLATFORMS+=(--platform "$tag")
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
common=(--only-binary=:all: --python-version 3.12 --implementation cp "${PLATFORMS[@]}" -q)
"$PY" -m pip download "${common[@]}" -d "$work/all" "${REQUIREMENTS[@]}"
"$PY" -m pip download "${common[@]}" --no-deps -d "$work/all" "$FAISS"

# Drop what the image has; check that every dependency of what is kept is kept or in the image.
IMAGE="$IMAGE" "$PY" - "$work/all" <<'PY'
import os, re, sys, zipfile
from pathlib import Path
from packaging.markers import Marker
from packaging.requirements import Requirement

norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
image = set(norm(n) for n in os.environ["IMAGE"].split())
folder = Path(sys.argv[1])
kept = {}
for wheel in sorted(folder.glob("*.whl")):
    name = norm(wheel.name.split("-")[0])
    if name in image:
        wheel.unlink()
    else:
        kept[name] = wheel
env = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux", "platform_system": "Linux",
       "platform_machine": "x86_64", "os_name": "posix", "implementation_name": "cpython",
       "platform_python_implementation": "CPython", "extra": ""}
wanted_extras = {"ray": {"data"}}
missing = []
for name, wheel in kept.items():
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    for line in meta.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        req = Requirement(line.split(":", 1)[1].strip())
        extras = wanted_extras.get(name, set()) | {""}
        if req.marker is not None and not any(req.marker.evaluate({**env, "extra": e}) for e in extras):
            continue
        dep = norm(req.name)
        if name == "faiss-cuda" and dep.startswith("nvidia-"):
            continue  # CUDA 13 runtime and cuBLAS: torch's nvidia-* wheels in the image provide them
        if dep not in kept and dep not in image:
            missing.append(f"{name} needs {req}")
if missing:
    sys.exit("missing dependencies:\n  " + "\n  ".join(missing))
print(f"{len(kept)} wheels, every dependency kept or in the image")
PY

# Split the big wheels and pack carries of <= CARRY_MB.
rm -rf "$DEST"
mkdir -p "$work/files"
: >"$work/MANIFEST"
for wheel in "$work"/all/*.whl; do
    name=$(basename "$wheel")
    sum=$(sha256sum "$wheel" | cut -d' ' -f1)
    if [ "$(stat -c %s "$wheel")" -gt $((PART_MB * 1024 * 1024)) ]; then
        split -b "${PART_MB}m" -d -a 2 "$wheel" "$work/files/$name.part-"
        parts=$(ls "$work/files/$name".part-* | wc -l)
    else
        cp "$wheel" "$work/files/"
        parts=0
    fi
    echo "$sum $name $parts" >>"$work/MANIFEST"
done
carry=1
used=0
limit=$((CARRY_MB * 1024 * 1024 - 64 * 1024))
mkdir -p "$DEST/carry$carry"
for file in $(ls -S "$work"/files/*); do  # largest first, greedy
    size=$(stat -c %s "$file")
    placed=0
    for dir in "$DEST"/carry*; do
        have=$(du -sb "$dir" | cut -f1)
        if [ $((have + size)) -le "$limit" ]; then
            cp "$file" "$dir/"
            placed=1
            break
        fi
    done
    if [ "$placed" = 0 ]; then
        carry=$((carry + 1))
        mkdir -p "$DEST/carry$carry"
        cp "$file" "$DEST/carry$carry/"
    fi
done
for dir in "$DEST"/carry*; do cp "$work/MANIFEST" "$dir/MANIFEST"; done
echo "wheels in $DEST:"
awk '{printf "  %s%s\n", $2, ($3 > 0 ? " (" $3 " parts)" : "")}' "$work/MANIFEST"
du -sh "$DEST"/carry* "$DEST"
