#!/usr/bin/env python3
"""Checks the transformers side of `vlmc export`: the folders vlmc writes load with
transformers' from_pretrained and give the golden logits of make_golden_hf_models.py.
(The vlmc side — export then load again, bit-identical — is tests/modules/test_hf_checkpoint.cpp.)

Usage (the venv of tests/golden/README.md; `build` is a built vlmc):
    V/bin/python tests/golden/check_hf_export.py build/vlmc
Exit status 0 when every folder loads and every logit is within 1e-5 relative (in norm).
"""

import os
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import load_file
from transformers import LlamaForCausalLM, LlavaForConditionalGeneration

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(HERE, "hf_models")


def rel(a, b):
    return float((a - b).norm() / b.norm())


def main():
    vlmc = sys.argv[1]
    expected = load_file(os.path.join(MODELS, "expected.safetensors"))
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        cases = [
            ("llama", [], LlamaForCausalLM, "llama"),
            ("llama_tied", [], LlamaForCausalLM, "llama_tied"),
            ("llava", [], LlavaForConditionalGeneration, "llava"),
            ("llava_sharded", [], LlavaForConditionalGeneration, "llava"),
            ("llava_new_layout", [], LlavaForConditionalGeneration, "llava"),
        ]
        for name, extra, cls, golden in cases:
            out = os.path.join(tmp, name)
            subprocess.run([vlmc, "export", "--model", os.path.join(MODELS, name), "--out", out] + extra, check=True,
                           stderr=subprocess.DEVNULL)
            model = cls.from_pretrained(out).eval()
            with torch.no_grad():
                if cls is LlamaForCausalLM:
                    logits = model(input_ids=expected["llama.input_ids"],
                                   attention_mask=expected["llama.attention_mask"]).logits
                else:
                    ids = expected["llava.input_ids"]
                    logits = model(input_ids=ids, pixel_values=expected["llava.pixel_values"],
                                   attention_mask=torch.ones_like(ids)).logits
            err = rel(logits.float(), expected[golden + ".logits"])
            ok = err <= 1e-5
            failures += not ok
            print(f"{'ok  ' if ok else 'FAIL'} {name}: vlmc export -> {cls.__name__}.from_pretrained, "
                  f"logits relative error {err:.2e}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
