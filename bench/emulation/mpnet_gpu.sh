#!/usr/bin/env bash
# The mpnet-gpu profile (docs/results.md, "Transformer successor"): AG News, the shared 17,321-text pool,
# 8 iterations of 1% (173 texts), 3 seeds, a distilled student of minilm-l6 acquiring, MPNet successor (a)-(d),
# bf16 autocast on the GPU (albackend.models.device). Resumable: each finished (configuration group, seed) is
# saved, and a second call with the same OUT_DIR continues where the first stopped.
#
#   bench/emulation/mpnet_gpu.sh [OUT_DIR [DATASET [emulate.py options...]]]
#   defaults: bench/out/emulate/<DATASET>-mpnet-gpu, agnews; e.g. '' agnews --plasm-filter both (TracIn too)
#
# BUDGET_S (default 540) stops the run in time to render the report of what finished; with $OUT set (the device
# tool), results.json, report.md and the PNGs are copied there. PYTHON defaults to .venv/bin/python, else python3.
# On a GPU machine without the project's venv or network, send the bundle first (bench/device_bundle.py):
#   here:  python bench/device_bundle.py pack      -> bench/out/device/part-NN (<= 60 MiB each) + manifest.json
#   there: python3 bench/device_bundle.py unpack --src bench/out/device --dest /tmp/bundle
#          eval "$(python3 bench/device_bundle.py env --dest /tmp/bundle)"; bench/emulation/mpnet_gpu.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
DATASET=${2:-agnews}
OUT_DIR=${1:-bench/out/emulate/$DATASET-mpnet-gpu}
shift $(( $# < 2 ? $# : 2 ))
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi: CPU run"
timeout --signal=INT "${BUDGET_S:-540}" "$PYTHON" bench/emulate.py --dataset "$DATASET" --profile mpnet-gpu \
    --out "$OUT_DIR" --resume --no-progress "$@"
status=$?
[ -f "$OUT_DIR/results.json" ] && "$PYTHON" bench/emulate.py --report-only "$OUT_DIR"
if [ -n "${OUT:-}" ] && [ -d "$OUT_DIR" ]; then
    cp "$OUT_DIR"/results.json "$OUT_DIR"/report.md "$OUT_DIR"/*.png "$OUT"/ 2>/dev/null
fi
echo "exit $status (124 = BUDGET_S reached: run again to continue)"
exit "$status"
