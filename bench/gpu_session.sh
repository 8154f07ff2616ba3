#!/usr/bin/env bash
# Issue 31's GPU measurements in one go, for a session lent an H100/H200 (the device tool's `run`).
#
# Here, once (the device machine has torch, Lightning, transformers and peft, but not Hydra): copy the pure
# Python packages it lacks into .gpu_site/ (ignored by git; it travels with `carry`):
#     bench/gpu_session.sh prepare
# There, in two calls (each under the 600 s a command may run; the machine stays warm between them):
#     run(command="bash bench/gpu_session.sh 1", carry=[".gpu_site"], timeout_s=600)
#     run(command="bash bench/gpu_session.sh 2", carry=[".gpu_site"], timeout_s=600)
# Part 1: the GPU, the sync tests, host reads per step, the LM table (fp32, bf16, fp16, compile, 32k tokens).
# Part 2: compile paid once per sweep (bench/compile.py on the LM preset), the BERT fine-tuning table.
# Each step has its own timeout and writes $OUT/<step>.log; a step that fails or times out does not stop
# the next. ROUNDS (default 2) and STEPS (default 20) shorten or lengthen the tables.
set -u
cd "$(dirname "$0")/.."
PY=${PY:-python3}
OUT=${OUT:-/tmp/gpu_session}
ROUNDS=${ROUNDS:-2}
STEPS=${STEPS:-20}

if [ "${1:-}" = prepare ]; then
    site=$(.venv/bin/python -c 'import hydra, os; print(os.path.dirname(os.path.dirname(hydra.__file__)))' 2>/dev/null \
        || /work/main/.venv/bin/python -c 'import hydra, os; print(os.path.dirname(os.path.dirname(hydra.__file__)))')
    mkdir -p .gpu_site
    cp -r "$site/hydra" "$site/omegaconf" "$site/antlr4" .gpu_site/
    exclude=$(git rev-parse --git-path info/exclude)
    grep -qx '/.gpu_site/' "$exclude" 2>/dev/null || echo '/.gpu_site/' >> "$exclude"
    du -sh .gpu_site
    exit 0
fi

mkdir -p "$OUT"
export PYTHONPATH="$PWD/.gpu_site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
step() {  # step NAME SECONDS COMMAND...: run it with a timeout, its output to the screen and $OUT/NAME.log
    local name=$1 seconds=$2
    shift 2
    echo "=== $name (timeout ${seconds}s): $*"
    timeout --kill-after=10 "$seconds" "$@" 2>&1 | tee "$OUT/$name.log"
    echo "=== $name: exit ${PIPESTATUS[0]}"
}

case "${1:-}" in
1)
    step env 30 bash -c "nvidia-smi; $PY -c 'import torch, pytorch_lightning as pl; print(torch.__version__, pl.__version__, torch.cuda.get_device_name())'"
    step tests 90 "$PY" -m pytest tests/test_syncs.py tests/test_models.py -q -p no:cacheprovider -o addopts=""
    step reads 60 "$PY" bench/gpu.py --reads --case none
    step lm 420 "$PY" bench/gpu.py --case lm --compile --big --steps "$STEPS" --warmup 8 --rounds "$ROUNDS"
    ;;
2)
    step compile 240 "$PY" bench/compile.py --preset gpu_lm --fresh-processes
    step finetune 330 "$PY" bench/gpu.py --case finetune --compile --steps "$STEPS" --warmup 8 --rounds "$ROUNDS"
    ;;
*)
    echo "usage: bench/gpu_session.sh prepare | 1 | 2" >&2
    exit 2
    ;;
esac
