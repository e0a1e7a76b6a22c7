#!/usr/bin/env bash
# GPU proof kit (issue 17): the command of each device call, run in the repository root; see README.md beside it.
#
#   bash benchmarks/gpu/run.sh embed [gpu_proof.py embed options]   # call 1: archive, reads, tower, end to end
#   bash benchmarks/gpu/run.sh stash                                # a middle call: keep the carried FAISS parts
#   bash benchmarks/gpu/run.sh faiss [gpu_proof.py faiss options]   # last call: IVF-PQ at 1M, GPU against CPU
#   bash benchmarks/gpu/run.sh --dry-run                            # here, on the CPU: both modes at toy sizes
#
# Results go to $OUT (set by the device tool; for a dry run a new temporary folder unless OUT is set).
# PYTHON picks the interpreter (default python3: on the device, the one holding torch).
set -euo pipefail
cd "$(dirname "$0")/../.."

KIT=benchmarks/gpu
CARRY=$KIT/carry
PARTS=/tmp/rsretrieve-faiss-parts  # outside the repository copy; outlives calls while the machine stays warm
EMBED_SITE=/tmp/rsretrieve-site
FAISS_SITE=/tmp/rsretrieve-faiss-site
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 RUST_LOG=error

stash() {  # copy the carried FAISS parts and manifest to $PARTS
    mkdir -p "$PARTS"
    local file
    for file in "$CARRY"/call-*/faiss-site.*; do
        [ -e "$file" ] && cp "$file" "$PARTS/"
    done
    echo "stashed in $PARTS: $(cd "$PARTS" && ls | tr '\n' ' ')"
}

cublas13() {  # path of CUDA 13's libcublas.so.13 on the device (torch's wheels, else the toolkit)
    "$PYTHON" - <<'EOF'
import glob, site, sys
roots = [*site.getsitepackages(), *(p for p in sys.path if p)]
patterns = [f"{root}/nvidia/{sub}/lib/libcublas.so.13" for root in roots for sub in ("cu13", "cublas")]
patterns += ["/usr/local/cuda*/lib64/libcublas.so.13", "/usr/local/cuda*/targets/x86_64-linux/lib/libcublas.so.13"]
print(next((hit for pattern in patterns for hit in sorted(glob.glob(pattern))), ""))
EOF
}

mode=${1:?usage: run.sh embed|stash|faiss|--dry-run [options]}
shift
case "$mode" in
embed | faiss)
    : "${OUT:?set OUT to the folder for the results}"
    ;;&
embed)
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$EMBED_SITE" \
        "$CARRY"/call-*/*.whl
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    PYTHONPATH="$EMBED_SITE:$PWD" "$PYTHON" "$KIT/gpu_proof.py" embed --out "$OUT" "$@"
    ;;
stash)
    stash
    ;;
faiss)
    stash
    "$PYTHON" "$KIT/carry_plan.py" restore --parts "$PARTS" --to "$FAISS_SITE"
    library=$(cublas13)
    echo "CUDA 13 cuBLAS behind the libcublas.so.12 shim: ${library:-none found, the FAISS GPU stage will fail}"
    RSRETRIEVE_CUBLAS13="$library" LD_LIBRARY_PATH="${library%/*}:${LD_LIBRARY_PATH:-}" \
        PYTHONPATH="$FAISS_SITE:$PWD" "$PYTHON" "$KIT/gpu_proof.py" faiss --out "$OUT" "$@"
    ;;
--dry-run)
    OUT=${OUT:-$(mktemp -d /tmp/rsretrieve-gpu-dry-run-XXXXXX)}
    for proof in embed faiss; do
        PYTHONPATH="$PWD" "$PYTHON" "$KIT/gpu_proof.py" "$proof" --dry-run --out "$OUT"
    done
    ;;
*)
    echo "run.sh: unknown mode '$mode' (embed, stash, faiss or --dry-run)" >&2
    exit 2
    ;;
esac
