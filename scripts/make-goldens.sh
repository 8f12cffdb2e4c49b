#!/bin/sh
# Regenerates every golden file of tests/golden/ (tests/golden/README.md says
# what each holds and which test reads it), in one command:
#
#   scripts/make-goldens.sh [OUT]        # default OUT: tests/golden (in place)
#   make goldens
#
# Every generator runs in the venv V (made here when missing: Debian's
# python3-torch 1.13 through --system-site-packages, and transformers 4.45.2,
# sentencepiece and tensorboard from PyPI), the tokenizer first, since the
# conversation and model generators read the tokenizer folders it writes. With
# OUT elsewhere, `diff -r` against tests/golden shows what a torch or
# transformers upgrade would change. CI never runs this: the golden files are
# committed.
set -eu
cd "$(dirname "$0")/.."
OUT=${1:-tests/golden}
VENV=${VENV:-V}

if ! /usr/bin/python3 -c "import torch" 2>/dev/null; then
  echo "make-goldens: Debian's python3-torch is missing (apt-get install -y python3-torch)" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  /usr/bin/python3 -m venv --system-site-packages "$VENV"
  "$VENV/bin/pip" install -q transformers==4.45.2 sentencepiece tensorboard
fi
"$VENV/bin/python" - <<'PY'
import torch, transformers
assert transformers.__version__ == "4.45.2", f"transformers {transformers.__version__}: the golden files use 4.45.2"
try:
    import tensorboard  # torch.utils.tensorboard needs it (make_golden_tensorboard.py)
except ImportError:
    raise SystemExit("make-goldens: tensorboard is missing from the venv (pip install tensorboard)")
print(f"make-goldens: torch {torch.__version__}, transformers {transformers.__version__}, "
      f"tensorboard {tensorboard.__version__}")
PY

mkdir -p "$OUT"
for generator in tokenizer make_golden attention fused_linear conv_bn topk_splice optim llama clip_vision \
                 connectors connector_run post_llava images conversation hf_models tensorboard; do
  case $generator in
    make_golden) script=tests/golden/make_golden.py ;;
    *) script=tests/golden/make_golden_$generator.py ;;
  esac
  echo "== $script"
  "$VENV/bin/python" "$script" --out "$OUT"
done
echo "make-goldens: every golden file written under $OUT"
