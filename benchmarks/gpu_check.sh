#!/usr/bin/env bash
# One prepared GPU check of the training throughput (about 3 minutes on one H100).
#
#   bash benchmarks/gpu_check.sh [extra throughput.py options]
#
# Runs benchmarks/throughput.py at full settings on CUDA (resnet18@224,
# efficientnet_b0@224, efficientnet_b0@384; batch 256; 2048 synthetic 1024x1024
# JPEGs), prints its Markdown report once, and writes that block between the markers
#   <!-- throughput-gpu:start --> and <!-- throughput-gpu:end -->
# of benchmarks/RESULTS.md (nothing else in that file changes). Where $OUT is
# set (the device tool), the block and the updated RESULTS.md are also copied
# there: copy $OUT/RESULTS.md over benchmarks/RESULTS.md afterwards.
# Python: .venv/bin/python when present, else python3 (torch, torchvision,
# pandas, scipy, scikit-image and Pillow are all it needs).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

nvidia-smi -L || true
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'; print('torch', torch.__version__)"
"$PY" benchmarks/throughput.py --device cuda --markdown "$@" | tee "$tmp/block.md"

"$PY" - "$tmp/block.md" benchmarks/RESULTS.md <<'EOF'
import datetime, sys
from pathlib import Path

block, results = Path(sys.argv[1]).read_text().strip(), Path(sys.argv[2])
start, end = "<!-- throughput-gpu:start -->", "<!-- throughput-gpu:end -->"
text = results.read_text()
if start not in text or end not in text:
    sys.exit(f"{results}: markers {start} / {end} not found; paste {sys.argv[1]} by hand")
head, rest = text.split(start, 1)
_, tail = rest.split(end, 1)
stamp = f"Measured with `bash benchmarks/gpu_check.sh` on {datetime.date.today().isoformat()}:"
results.write_text(f"{head}{start}\n{stamp}\n\n{block}\n{end}{tail}")
print(f"updated {results}")
EOF

if [ -n "${OUT:-}" ]; then
  cp "$tmp/block.md" "$OUT/throughput_gpu.md"
  cp benchmarks/RESULTS.md "$OUT/RESULTS.md"
fi
echo "GPU THROUGHPUT CHECK DONE"
