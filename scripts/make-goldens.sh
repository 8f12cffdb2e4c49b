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

if ! /usr/bin/python3 -c "import torch, torchvision" 2>/dev/null; then
  echo "make-goldens: Debian's python3-torch or python3-torchvision is missing" \
       "(apt-get install -y python3-torch python3-torchvision)" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  /usr/bin/python3 -m venv --system-site-packages "$VENV"
  "$VENV/bin/pip" install -q transformers==4.45.2 sentencepiece tensorboard
  # timm's RegStage is the Honeybee reference (make_golden_post_llava.py);
  # --no-deps, or pip replaces Debian's torch 1.13 with a torch 2.
  "$VENV/bin/pip" install -q --no-deps timm==0.9.16
fi
"$VENV/bin/python" - <<'PY'
import torch, transformers
assert torch.__version__.startswith("1.13"), f"torch {torch.__version__}: the golden files use Debian's 1.13"
assert transformers.__version__ == "4.45.2", f"transformers {transformers.__version__}: the golden files use 4.45.2"
try:
    import timm  # Honeybee's RegStage (make_golden_post_llava.py)
except ImportError:
    raise SystemExit("make-goldens: timm is missing from the venv (pip install --no-deps timm==0.9.16)")
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
  # These generators' --out is their own folder under tests/golden; the
  # others' is tests/golden itself.
  case $generator in
    tokenizer | connector_run | images | conversation | hf_models) out=$OUT/$generator ;;
    *) out=$OUT ;;
  esac
  echo "== $script --out $out"
  "$VENV/bin/python" "$script" --out "$out"
done
echo "make-goldens: every golden file written under $OUT"
