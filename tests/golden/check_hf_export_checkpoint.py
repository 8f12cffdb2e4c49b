#!/usr/bin/env python3
"""Checks the transformers side of `vlmc export --checkpoint`: a model trained by `vlmc train`,
exported as a Hugging Face LLaVA folder, loads with LlavaForConditionalGeneration.from_pretrained and
AutoProcessor.from_pretrained and computes what vlmc computes.

vlmc writes, beside the export (--reference-out), one evaluation mosaic, a question in the run's own
prompt format, and its own logits and greedy answer for them, computed from the checkpoint's models
(train/export_checkpoint.h). This script writes the mosaic as a grey PNG, runs the exported folder's
processor on that PNG and the question, and compares:
  - the processor's pixel_values with vlmc's encoder input (each of the 3 channels),
  - the tokenizer's ids with vlmc's (one <image> per visual token in place of vlmc's -200),
  - the logits (first V columns; relative error in norm <= 1e-5) and the extra <image> column (0),
  - model.generate's greedy answer with vlmc's,
  - the tokenizer on more prompts and answers of the run (captions, the four question kinds) against
    the ids vlmc's tokenizer gave them (also in the reference file), and decode(encode(t)) == t.

Usage (the venv of tests/golden/README.md; `build` is a built vlmc):
    V/bin/python tests/golden/check_hf_export_checkpoint.py build/vlmc runs/<name>/checkpoints/<checkpoint>
Exit status 0 when every check passes.
"""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoProcessor, LlavaForConditionalGeneration, PreTrainedTokenizerFast

def rel(a, b):
    return float((a - b).norm() / b.norm())


def main():
    vlmc, checkpoint = sys.argv[1], sys.argv[2]
    failures = 0

    def report(ok, what):
        nonlocal failures
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {what}")

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "hf")
        ref_path = os.path.join(tmp, "reference.safetensors")
        subprocess.run([vlmc, "export", "--checkpoint", checkpoint, "--format", "hf", "--out", out,
                        "--reference-out", ref_path], check=True, stderr=subprocess.DEVNULL)
        ref = load_file(ref_path)
        with safe_open(ref_path, "pt") as f:
            meta = f.metadata()
        prompt, truth = meta["prompt"], meta["answer"]
        png = os.path.join(tmp, "mosaic.png")
        grey = np.rint(ref["image"].numpy() * 255).astype(np.uint8)
        Image.fromarray(grey, mode="L").save(png)

        model = LlavaForConditionalGeneration.from_pretrained(out).eval()
        processor = AutoProcessor.from_pretrained(out)
        tokenizer = processor.tokenizer
        report(isinstance(tokenizer, PreTrainedTokenizerFast), f"AutoProcessor -> {type(processor).__name__} with "
               f"{type(tokenizer).__name__} and {type(processor.image_processor).__name__}")
        V = model.config.image_token_index
        vocab_vlmc = ref["logits"].shape[1]
        report(V == vocab_vlmc and model.config.text_config.vocab_size == V + 1,
               f"vocabulary: {vocab_vlmc} words + <image> = {V}")

        inputs = processor(images=Image.open(png), text=prompt, return_tensors="pt")
        pix = inputs["pixel_values"]
        want_pix = ref["pixel_values"].expand(1, 3, -1, -1)
        err = float((pix - want_pix).abs().max())
        report(pix.shape == want_pix.shape and err <= 1e-6, f"pixel_values {list(pix.shape)}: max |diff| {err:.2e}")

        n_visual = model.config.image_seq_length
        want_ids = []
        for i in ref["input_ids"].tolist():
            want_ids += [V] * n_visual if i == -200 else [i]
        got_ids = inputs["input_ids"][0].tolist()
        report(got_ids == want_ids, f"input_ids of {prompt!r}: {got_ids[:8]}... ({len(got_ids)} tokens)")

        with torch.no_grad():
            logits = model(**inputs).logits[0]
        err = rel(logits[:, :V], ref["logits"])
        extra = float(logits[:, V].abs().max())
        report(err <= 1e-5 and extra == 0.0,
               f"logits {list(logits.shape)}: relative error {err:.2e} (first {V} columns), <image> column max |x| {extra}")

        with torch.no_grad():
            generated = model.generate(**inputs, max_new_tokens=16, do_sample=False)[0, len(got_ids):].tolist()
        want = ref["answer_ids"].tolist()
        report(generated == want, f"greedy answer {tokenizer.decode(generated, skip_special_tokens=True)!r} "
               f"(ids {generated}), vlmc {want} (truth {truth!r})")

        # The tokenizer on more texts of the run (vlmc's ids from the reference), and decode's round trip.
        bad = []
        texts, text_ids = json.loads(meta["texts"]), json.loads(meta["text_ids"])
        for text, ids in zip(texts, text_ids):
            want = [V if i == -200 else i for i in ids]
            got = tokenizer(text)["input_ids"]
            back = tokenizer.decode(got, skip_special_tokens=True)
            if got != want or ("<image>" not in text and back != text):
                bad.append((text, got, want, back))
        report(not bad, f"tokenizer on {len(texts)} prompts and answers of the run: vlmc's ids, decode round trip"
               + (f"; first mismatch {bad[0]}" if bad else ""))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
