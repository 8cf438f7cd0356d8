#!/usr/bin/env bash
# Every GPU check of the input-pipeline work in one run on a lent GPU machine (one H100 or H200,
# see ../shared/notes/GPU.md): the `gpu` tests, `fstore bench --provider cuda` (model only, end
# to end and the pipeline view in one run, so the ratios share a baseline) and a timed
# `fstore build --provider cuda`. Written without a GPU at hand: not yet run there.
#
# Prepare here, once (the bundle is ~61 MB of the 64 MiB that travel; images are made there):
#   ../shared/tools/gpu/make_ort_bundle.sh .gpu
#   cp ../shared/tools/gpu/setup_on_device.sh ../shared/tools/gpu/augment_images.py .gpu/
#   for c in ../shared/data/scene15/train/*/; do
#     mkdir -p .gpu/seed/"$(basename "$c")"; cp $(ls "$c"*.jpg | head -2) .gpu/seed/"$(basename "$c")"/
#   done
#   echo /.gpu/ >> .git/info/exclude
# Run there (device tool: carry [".gpu"], timeout_s 560):
#   bash scripts/gpu_check.sh .gpu "$OUT"
set -uo pipefail
bundle=$1
out=${2:-/tmp/fstore-gpu}
per_class=${PER_CLASS:-128}  # 15 classes: 1,920 images of 15-Scene's size
mkdir -p "$out"
# shellcheck source=/dev/null
source "$bundle/setup_on_device.sh" "$bundle" .
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/machine.txt"
nproc | tee -a "$out/machine.txt"

images=/tmp/fstore-gpu-images
rm -rf "$images" && python3 "$bundle/augment_images.py" "$bundle/seed" "$images" "$per_class"

step() {  # step NAME SECONDS COMMAND...: run, keep its output, never stop the script
    local name=$1 limit=$2
    shift 2
    echo "== $name"
    local start=$SECONDS
    timeout "$limit" "$@" >"$out/$name.txt" 2>&1
    echo "   exit $? after $((SECONDS - start)) s"
    tail -n 15 "$out/$name.txt"
}

step gpu_tests 150 python3 -m pytest -q -p no:cacheprovider -m gpu \
    tests/runtime tests/pipeline/test_gpu.py
step bench 240 python3 -c 'from fstore.cli import main; main()' bench --provider cuda \
    --weights random --images "$images" --batch-sizes 128 --precision fp32,fp16 \
    --views model,e2e,pipeline --workers "$(nproc)" --memory off --out "$out/bench"
step build 120 python3 -c 'from fstore.cli import main; main()' build "$images" --layer fc7 \
    --weights random --provider cuda --batch-size 128 --store /tmp/fstore-gpu.h5
