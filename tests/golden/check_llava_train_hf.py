#!/usr/bin/env python3
"""Checks the transformers side of a `vlmc train` LLaVA run (data.format = "llava") end to end:
Hugging Face folders in, a stage-1 and a stage-2 run, and the stage-2 model as transformers'
LlavaForConditionalGeneration out (train/llava_to_hf.h), computing what vlmc computes.

  1. splits tests/golden/hf_models/llava_chat (a tiny random LLaVA with a SentencePiece tokenizer)
     into the two folders users hold: a CLIPVisionModel and a LlamaForCausalLM (with its tokenizer),
     with transformers' save_pretrained;
  2. writes a few PNGs and LLaVA-format JSON (captions for stage 1, two-turn chats for stage 2);
  3. runs `vlmc train` stage 1 (plain) and stage 2 (vicuna_v1, from stage 1's projector);
  4. loads runs/<stage2>/model-hf with LlavaForConditionalGeneration and AutoProcessor, and compares
     with `vlmc generate --model runs/<stage2>/model-hf --logits-out`: the prompt's ids, the pixel
     values, the logits (relative error in norm <= 1e-5) and the greedy continuation of 8 tokens.

Usage (the venv of tests/golden/README.md; `build` is a built vlmc):
    V/bin/python tests/golden/check_llava_train_hf.py build/vlmc
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
from safetensors.torch import load_file
from transformers import AutoProcessor, LlavaForConditionalGeneration

HERE = os.path.dirname(os.path.abspath(__file__))
CHAT = os.path.join(HERE, "hf_models", "llava_chat")
TOKENIZER_FILES = ["tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"]


def rel(a, b):
    return float((a - b).norm() / b.norm())


def split(root, own_image_token):
    """own_image_token False: the tokenizer's 400 becomes "<x>", so the vocabulary (402) is full
    without <image>, as Vicuna's is: the export adds it and grows the rows to 448."""
    model = LlavaForConditionalGeneration.from_pretrained(CHAT)
    clip, llama = os.path.join(root, "clip"), os.path.join(root, "llama")
    model.vision_tower.save_pretrained(clip)
    model.language_model.config.max_position_embeddings = 512  # room for vicuna_v1's system line
    model.language_model.save_pretrained(llama)
    for name in TOKENIZER_FILES:
        with open(os.path.join(CHAT, name), "rb") as src, open(os.path.join(llama, name), "wb") as dst:
            dst.write(src.read())
    if not own_image_token:
        with open(os.path.join(llama, "tokenizer_config.json")) as f:
            config = json.load(f)
        config["added_tokens_decoder"]["400"]["content"] = "<x>"
        config["additional_special_tokens"] = []
        with open(os.path.join(llama, "tokenizer_config.json"), "w") as f:
            json.dump(config, f)
        with open(os.path.join(llama, "added_tokens.json"), "w") as f:
            json.dump({"<x>": 400, "<pad>": 401}, f)
        os.remove(os.path.join(llama, "special_tokens_map.json"))
    with open(os.path.join(CHAT, "preprocessor_config.json"), "rb") as src, \
            open(os.path.join(clip, "preprocessor_config.json"), "wb") as dst:
        dst.write(src.read())
    return clip, llama


def write_data(root):
    images = os.path.join(root, "images")
    os.makedirs(images)
    captions, chats = [], []
    for i in range(12):
        light = i % 2 == 0
        pixels = (np.arange(20 * 16 * 3).reshape(16, 20, 3) * 7 + i) % 40 + (200 if light else 30)
        Image.fromarray(pixels.astype(np.uint8)).save(os.path.join(images, f"img{i}.png"))
        caption = "a light picture" if light else "a dark picture"
        captions.append({"id": f"c{i}", "image": f"img{i}.png",
                         "conversations": [{"from": "human", "value": "<image>\n"}, {"from": "gpt", "value": caption}]})
        chats.append({"id": i, "image": f"img{i}.png",
                      "conversations": [{"from": "human", "value": "What is this?\n<image>"},
                                        {"from": "gpt", "value": caption},
                                        {"from": "human", "value": "Light or dark?"},
                                        {"from": "gpt", "value": "light" if light else "dark"}]})
    with open(os.path.join(root, "captions.json"), "w") as f:
        json.dump(captions, f)
    with open(os.path.join(root, "chats.json"), "w") as f:
        json.dump(chats, f)
    return images


def run(cmd):
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def check(vlmc, own_image_token, failures):
    with tempfile.TemporaryDirectory() as root:
        clip, llama = split(root, own_image_token)
        images = write_data(root)
        common = ["--run.runs_dir", os.path.join(root, "runs"), "--data.format", "llava",
                  "--model.vision_tower", clip, "--model.language_model", llama, "--data.image_folder", images,
                  "--data.workers", "1", "--run.log_every_s", "0"]
        run([vlmc, "train", *common, "--run.name", "s1", "--data.json", os.path.join(root, "captions.json"),
             "--data.template", "plain", "--data.model_max_length", "64", "--stage1.steps", "6",
             "--stage1.batch_size", "2", "--stage1.lr", "3e-2"])
        run([vlmc, "train", *common, "--run.name", "s2", "--data.json", os.path.join(root, "chats.json"),
             "--data.template", "vicuna_v1", "--data.model_max_length", "512", "--model.stage", "2",
             "--model.projector", os.path.join(root, "runs", "s1", "mm_projector.safetensors"),
             "--stage2.steps", "3", "--stage2.batch_size", "4", "--stage2.lr", "1e-3"])
        hf_dir = os.path.join(root, "runs", "s2", "model-hf")
        prompt = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives "
                  "helpful, detailed, and polite answers to the user's questions. USER: <image>\nWhat is this? "
                  "ASSISTANT:")
        image = os.path.join(images, "img3.png")
        logits_file = os.path.join(root, "logits.safetensors")
        out = json.loads(run([vlmc, "generate", "--model", hf_dir, "--image", image, "--prompt", prompt,
                              "--max-new-tokens", "8", "--json", "--logits-out", logits_file]))
        ref = load_file(logits_file)

        model = LlavaForConditionalGeneration.from_pretrained(hf_dir).eval()
        expected = (400, 402) if own_image_token else (402, 448)
        got = (model.config.image_token_index, model.config.text_config.vocab_size)
        print(f"image_token_index {got[0]}, vocab_size {got[1]}")
        if got != expected:
            failures.append(f"image_token_index, vocab_size {got}, expected {expected}")
        processor = AutoProcessor.from_pretrained(hf_dir)
        inputs = processor(text=prompt, images=Image.open(image), return_tensors="pt")
        image_id = model.config.image_token_index
        ids = inputs["input_ids"][0].tolist()
        collapsed = [t for k, t in enumerate(ids) if t != image_id or k == 0 or ids[k - 1] != image_id]
        if collapsed != out["input_ids"]:
            failures.append(f"ids: transformers {collapsed} vs vlmc {out['input_ids']}")
        px = float((inputs["pixel_values"] - ref["pixel_values"]).abs().max())
        if px > 0.02:
            failures.append(f"pixel values differ by {px}")
        with torch.no_grad():
            logits = model(**inputs).logits
        err = rel(logits.float(), ref["logits"].float())
        print(f"logits relative error {err:.2e}; pixel max difference {px:.2e}")
        if err > 1e-5:
            failures.append(f"logits relative error {err}")
        with torch.no_grad():
            gen = model.generate(**inputs, max_new_tokens=8, do_sample=False)
        new = gen[0, inputs["input_ids"].shape[1]:].tolist()
        if new != out["output_ids"][:len(new)]:
            failures.append(f"greedy: transformers {new} vs vlmc {out['output_ids']}")


def main():
    vlmc = os.path.abspath(sys.argv[1])
    failures = []
    for own_image_token in (True, False):
        check(vlmc, own_image_token, failures)
    for f in failures:
        print("FAIL:", f)
    print("all checks passed" if not failures else f"{len(failures)} checks failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
