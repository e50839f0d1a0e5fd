#!/usr/bin/env bash
# One GPU run of the truthfulness and bias experiments, as done on a lent H200 (see
# benchmarks/README.md). Expects the embedded model's GGUF at $MODEL_GGUF, the benchmark
# data at $DATA_DIR, lm-eval importable, and writes everything small to $OUT.
# Each step has its own time budget so a slow step cannot starve the others.
set -uo pipefail
T0=$(date +%s)
OUT=${OUT:-runs/gpu}
WORK=${WORK:-$OUT}  # results accumulate here (reruns resume); copied to $OUT at exit
MODEL_GGUF=${MODEL_GGUF:?path of the .gguf}
DATA_DIR=${DATA_DIR:?benchmark data folder}
TOTAL=${TOTAL:-570}
mkdir -p "$WORK/grid" "$WORK/bias" "$WORK/lmeval" "$OUT"
copy_back() { [ "$WORK" = "$OUT" ] || for d in grid bias lmeval; do mkdir -p "$OUT/$d"; cp "$WORK/$d"/*.json* "$OUT/$d/" 2>/dev/null; done; }
trap copy_back EXIT
left() { echo $(( TOTAL - ($(date +%s) - T0) )); }
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name())"
python3 - "$MODEL_GGUF" > /tmp/model_dir.txt <<'PY'
import sys, time
from spectral_edit.hf.gguf_cache import converted_model_dir
from spectral_edit.hf.models import load_model
t = time.perf_counter(); load_model(sys.argv[1]); print(f"convert+load {time.perf_counter()-t:.1f}s", file=sys.stderr)
print(converted_model_dir(sys.argv[1]))
PY
MODEL_DIR=$(tail -1 /tmp/model_dir.txt)
echo "model folder: $MODEL_DIR ($(left)s left)"
# 1. lm-evaluation-harness reference, full TruthfulQA MC1 + MC2 (timed)
[ -f "$WORK/lmeval/summary.json" ] || timeout $(( $(left) - 360 )) \
  python3 benchmarks/run_lmeval_truthfulqa.py "$MODEL_DIR" --output-dir "$WORK/lmeval" --data-dir "$DATA_DIR" --device cuda --batch-size 64
echo "lm-eval done ($(left)s left)"
# 2. our evaluator (unedited, timed) and the SEA grid
timeout $(( $(left) - 140 )) python3 benchmarks/truthfulness_grid.py --model "$MODEL_GGUF" \
  --out "$WORK/grid" --data-dir "$DATA_DIR" --acts "$WORK/activations.safetensors" \
  --batch-size 256 --budget $(( $(left) - 190 ))
echo "grid done ($(left)s left)"
# 3. bias: BBQ demonstrations, SEA and Φ-SEA, held-out BBQ + TruthfulQA
timeout $(( $(left) - 10 )) python3 benchmarks/bias_grid.py --model "$MODEL_GGUF" \
  --out "$WORK/bias" --data-dir "$DATA_DIR" --batch-size 256 --budget $(( $(left) - 40 ))
echo "all done after $(( $(date +%s) - T0 ))s"
