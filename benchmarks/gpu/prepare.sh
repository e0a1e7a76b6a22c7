#!/usr/bin/env bash
# GPU proof kit (issue 17): fetch and pack what the device calls carry; run here, once, before the device run.
#
#   bash benchmarks/gpu/prepare.sh
#
# Downloads, for the device's CPython 3.12 on x86-64, the wheels its image lacks into benchmarks/gpu/wheels/
# (git-ignored), builds the CUDA 12 → 13 cuBLAS shim (needs cc), packs the FAISS side as one .tar.xz, lays out
# one folder per device call under benchmarks/gpu/carry/ (git-ignored), prints each call's size and its exact
# run command, and fails when a call would carry more than 64 MiB. PYTHON picks the interpreter (needs pip).
set -euo pipefail
cd "$(dirname "$0")/../.."

KIT=benchmarks/gpu
WHEELS=$KIT/wheels
STAGE=$WHEELS/faiss-site
PYTHON=${PYTHON:-python3}
TARGET_FLAGS=(--no-deps --only-binary=:all: --python-version 3.12 --implementation cp
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
    --platform manylinux2014_x86_64)
# The image holds torch, torchvision, timm, numpy, pillow, huggingface_hub, safetensors, tqdm, regex, attrs,
# certifi, click, pyparsing and packaging: only what it lacks travels (versions as in the project's venv).
EMBED=(open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 rasterio==1.4.4 affine==3.0.1 cligj==0.7.2
    click-plugins==1.1.1.2)
# faiss-gpu 1.15.1 is the only FAISS GPU wheel for cp312 on PyPI and is built for CUDA 12: it needs CUDA 12's
# runtime (carried) and cuBLAS (the image has CUDA 13's: a shim forwards to it, see cublas12_shim.c).
FAISS=(faiss-gpu==1.15.1 nvidia-cuda-runtime-cu12==12.9.79)

rm -rf "$WHEELS/embed" "$WHEELS/faiss" "$STAGE"
"$PYTHON" -m pip download -q "${TARGET_FLAGS[@]}" -d "$WHEELS/embed" "${EMBED[@]}"
"$PYTHON" -m pip download -q "${TARGET_FLAGS[@]}" -d "$WHEELS/faiss" "${FAISS[@]}"
echo "wheels (bytes):"
(cd "$WHEELS" && stat -c '  %s  %n' embed/*.whl faiss/*.whl)

# The FAISS site: the two wheels unpacked, plus nvidia/cublas/lib/libcublas.so.12 (the shim), empty
# libcublasLt.so.12 and libcurand.so.10 (FAISS's loader opens them; FAISS calls nothing in them) and an
# nvidia/__init__.py so that this nvidia package, first on PYTHONPATH, is the one FAISS's loader imports.
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$STAGE" "$WHEELS"/faiss/*.whl
rm -rf "$STAGE"/nvidia/cuda_runtime/include "$STAGE"/nvidia/cuda_runtime/lib/*.a  # headers, static libraries
mkdir -p "$STAGE/nvidia/cublas/lib" "$STAGE/nvidia/curand/lib"
touch "$STAGE/nvidia/__init__.py"
cc -shared -fPIC -O2 -Wall -Wextra -Werror -Wl,-soname,libcublas.so.12 -Wl,--version-script="$KIT/cublas12.map" \
    -o "$STAGE/nvidia/cublas/lib/libcublas.so.12" "$KIT/cublas12_shim.c" -ldl
cc -shared -x c /dev/null -Wl,-soname,libcublasLt.so.12 -o "$STAGE/nvidia/cublas/lib/libcublasLt.so.12"
cc -shared -x c /dev/null -Wl,-soname,libcurand.so.10 -o "$STAGE/nvidia/curand/lib/libcurand.so.10"

# Every cuBLAS function FAISS needs must be one the shim forwards.
needed=$(readelf --dyn-syms -W "$STAGE"/faiss/*.so | grep -o '[A-Za-z0-9_]*@libcublas\.so\.12' | sort -u)
shimmed=$(readelf --dyn-syms -W "$STAGE/nvidia/cublas/lib/libcublas.so.12" | grep -o '[A-Za-z0-9_]*@@libcublas\.so\.12' \
    | sed 's/@@/@/' | sort -u)
missing=$(comm -23 <(echo "$needed") <(echo "$shimmed"))
if [ -n "$missing" ]; then
    echo "prepare.sh: FAISS needs cuBLAS functions the shim lacks: $missing" >&2
    exit 1
fi
echo "cuBLAS shim forwards all $(echo "$needed" | wc -l) functions FAISS calls"

"$PYTHON" "$KIT/carry_plan.py" bundle "$STAGE" "$WHEELS/faiss-site.tar.xz"  # xz -9e: a few minutes the first time
echo "FAISS bundle: $(stat -c %s "$WHEELS/faiss-site.tar.xz") bytes"
"$PYTHON" "$KIT/carry_plan.py" plan --embed "$WHEELS/embed" --bundle "$WHEELS/faiss-site.tar.xz" --carry "$KIT/carry"
