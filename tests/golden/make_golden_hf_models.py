#!/usr/bin/env python3
"""Writes tests/golden/hf_models/: tiny random Hugging Face checkpoints, written by
transformers itself, and what transformers computes from them. Checked by
tests/modules/test_hf_checkpoint.cpp (tag [hf_checkpoint]).

Usage (transformers 4.45.2 over Debian's torch 1.13, see tests/golden/README.md):
    apt-get install -y python3-torch        # first: else pip puts NumPy 2 in the venv
    /usr/bin/python3 -m venv --system-site-packages V
    V/bin/pip install transformers==4.45.2 sentencepiece
    V/bin/python tests/golden/make_golden_hf_models.py [--out DIR]

Folders (each a config.json and its safetensors, as save_pretrained writes them):
    llama/             LlamaForCausalLM, grouped KV heads (4 heads, 2 KV), rope_theta 500000
    llama_tied/        LlamaForCausalLM with tie_word_embeddings (no lm_head.weight in the file)
    llama_bf16/        llama/'s weights stored in bfloat16 (save_pretrained of the bf16 model)
    clip_vision/       CLIPVisionModel (keys vision_model.*)
    clip_full/         CLIPModel (vision_model.* among text_model.*, projections, logit_scale)
    llava/             LlavaForConditionalGeneration, one model.safetensors (transformers <= 4.51 keys:
                       language_model.model.*, vision_tower.vision_model.*, multi_modal_projector.*)
    llava_sharded/     the same model, max_shard_size 20KB: model.safetensors.index.json + shards
    llava_new_layout/  the same weights under newer transformers' keys (model.language_model.*,
                       model.vision_tower.*, model.multi_modal_projector.*, lm_head.*), renamed here
                       because 4.45 cannot write them
    llava_chat/        a LlavaForConditionalGeneration with tokenizer files (tests/golden/tokenizer/nonlegacy)
                       and a preprocessor_config.json, for `vlmc generate` end to end (see chat())
    llava_original/    the same weights in the original LLaVA layout (LlavaLlamaForCausalLM:
                       model.*, lm_head.*, model.mm_projector.{0,2}.*, mm_* config keys); its vision
                       tower is clip_full/ (the same vision weights), passed with --vision-tower
and expected.safetensors:
    llama.input_ids i64 [2, 7] (row 1 right-padded), llama.attention_mask, llama.logits f32 [2, 7, V]
    llama_tied.logits, llama_bf16.logits (from the bf16 file upcast to f32)
    clip.pixel_values f32 [2, 3, 12, 12], clip.hidden_states.{i} f32 [2, 10, 16], clip.pooler_output
    llava.input_ids i64 [1, 9] with image_token_index 71 at position 3, llava.pixel_values [1, 3, 12, 12],
    llava.logits f32 [1, 17, V] (9 - 1 + 9 positions after the splice),
    llava.greedy_ids i64 [12] (generate(max_new_tokens=12, do_sample=False), new tokens only),
    llava.greedy_margin f32 [12] (top-1 minus top-2 logit at each greedy step, so a test can tell
    a numerically fragile step from a wrong one)
Float32 compute, one thread, fixed seeds: the files are reproducible.
"""

import argparse
import json
import os
import shutil

import torch
from safetensors.torch import load_file, save_file
from transformers import (CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModel, LlamaConfig,
                          LlamaForCausalLM, LlavaConfig, LlavaForConditionalGeneration)

VOCAB = 72
IMAGE_TOKEN = 71  # HF's image_token_index: the last id of the vocabulary


def text_config(**over):
    cfg = dict(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
               rms_norm_eps=1e-5, rope_theta=500000.0, initializer_range=0.2, bos_token_id=1,
               eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    cfg.update(over)
    return LlamaConfig(**cfg)


def vision_config():
    return CLIPVisionConfig(hidden_size=16, intermediate_size=24, num_hidden_layers=3, num_attention_heads=2,
                            image_size=12, patch_size=4, num_channels=3, hidden_act="quick_gelu",
                            projection_dim=24, initializer_range=0.2, layer_norm_eps=1e-5)


def perturb_norms(model):
    """LayerNorm/RMSNorm weights start at exactly 1 and biases at 0; move them so a loader that
    skipped them (or swapped weight and bias) could not pass."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "layrnorm" in name or name.endswith(".bias"):
                p.add_(0.1 * torch.randn(p.shape, generator=g))


def save(model, folder, **kw):
    if os.path.exists(folder):
        shutil.rmtree(folder)
    model.save_pretrained(folder, safe_serialization=True, **kw)
    # generation_config.json is not part of what vlmc reads; keep the folders minimal.
    gen = os.path.join(folder, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)


def rewrite_config(folder, fn):
    path = os.path.join(folder, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    cfg = fn(cfg)
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")


def write_renamed(src_folder, dst_folder, rename, config_fn):
    """Copies src_folder's single model.safetensors under renamed keys (None drops a key)."""
    if os.path.exists(dst_folder):
        shutil.rmtree(dst_folder)
    os.makedirs(dst_folder)
    tensors = load_file(os.path.join(src_folder, "model.safetensors"))
    out = {}
    for k, v in tensors.items():
        nk = rename(k)
        if nk is not None:
            out[nk] = v.contiguous()
    save_file(out, os.path.join(dst_folder, "model.safetensors"), metadata={"format": "pt"})
    shutil.copy(os.path.join(src_folder, "config.json"), os.path.join(dst_folder, "config.json"))
    rewrite_config(dst_folder, config_fn)


def new_layout_key(k):
    if k.startswith("language_model.model."):
        return "model.language_model." + k[len("language_model.model."):]
    if k.startswith("language_model.lm_head."):
        return "lm_head." + k[len("language_model.lm_head."):]
    if k.startswith("vision_tower.") or k.startswith("multi_modal_projector."):
        return "model." + k
    raise ValueError(k)


def original_layout_key(k):
    if k.startswith("language_model."):
        return k[len("language_model."):]  # model.* and lm_head.*
    if k.startswith("multi_modal_projector.linear_1."):
        return "model.mm_projector.0." + k.split(".")[-1]
    if k.startswith("multi_modal_projector.linear_2."):
        return "model.mm_projector.2." + k.split(".")[-1]
    if k.startswith("vision_tower."):
        return None  # LLaVA's checkpoints do not hold the tower; it comes from --vision-tower
    raise ValueError(k)


def original_layout_config(cfg):
    text = cfg["text_config"]
    out = {k: v for k, v in text.items() if k not in ("architectures", "_name_or_path")}
    out.update({
        "architectures": ["LlavaLlamaForCausalLM"],
        "model_type": "llava_llama",
        "mm_projector_type": "mlp2x_gelu",
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        "mm_vision_tower": "clip_full",
        "mm_hidden_size": 16,
        "image_aspect_ratio": "pad",
        "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False,
        "tune_mm_mlp_adapter": False,
        "torch_dtype": "float32",
    })
    return out


def greedy(model, input_ids, pixel_values, steps):
    """transformers' generate, plus the top-1/top-2 logit margin at each step."""
    out = model.generate(input_ids=input_ids, pixel_values=pixel_values, attention_mask=torch.ones_like(input_ids), max_new_tokens=steps, do_sample=False,
                         output_scores=True, return_dict_in_generate=True, pad_token_id=0, eos_token_id=None)
    new = out.sequences[0, input_ids.shape[1]:]
    margins = []
    for s in out.scores:
        top = torch.topk(s[0].float(), 2).values
        margins.append(float(top[0] - top[1]))
    return new, torch.tensor(margins)


CHAT_PROMPT = "USER: <image>\nWhat is in the picture? ASSISTANT:"
CHAT_IMAGE = "photo420.jpg"  # tests/golden/images/, 40x30


def chat(out_dir, expected, metadata):
    """llava_chat/: a LLaVA with a real tokenizer (tests/golden/tokenizer/nonlegacy: 400 pieces,
    <image> = 400, <pad> = 401) and a CLIPImageProcessor, for `vlmc generate` end to end:
    transformers' ids for the prompt, pixel values of a JPEG, the prompt's logits and the greedy
    continuation (12 tokens or up to </s>) with its text."""
    from PIL import Image
    from transformers import CLIPImageProcessor, LlamaTokenizer

    golden = os.path.dirname(os.path.abspath(__file__))
    tok = LlamaTokenizer.from_pretrained(os.path.join(golden, "tokenizer", "nonlegacy"))
    processor = CLIPImageProcessor(size={"shortest_edge": 12}, crop_size={"height": 12, "width": 12},
                                   do_center_crop=True, resample=3)
    image = Image.open(os.path.join(golden, "images", CHAT_IMAGE)).convert("RGB")
    pixels = processor(images=image, return_tensors="pt")["pixel_values"]
    ids = torch.tensor([tok(CHAT_PROMPT).input_ids], dtype=torch.int64)
    cfg = LlavaConfig(vision_config=vision_config().to_dict(),
                      text_config=text_config(vocab_size=402, pad_token_id=401).to_dict(),
                      image_token_index=400, projector_hidden_act="gelu", vision_feature_layer=-2,
                      vision_feature_select_strategy="default", image_seq_length=9)
    for seed in range(100, 400):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(cfg).eval()
        perturb_norms(model)
        with torch.no_grad():
            out = model.generate(input_ids=ids, pixel_values=pixels, attention_mask=torch.ones_like(ids),
                                 max_new_tokens=12, do_sample=False, output_scores=True,
                                 return_dict_in_generate=True, pad_token_id=401, eos_token_id=2)
        new = out.sequences[0, ids.shape[1]:]
        margins = [float(torch.topk(s_[0], 2).values[0] - torch.topk(s_[0], 2).values[1]) for s_ in out.scores]
        if min(margins) >= 0.02 and 400 not in new.tolist() and 401 not in new.tolist():
            break
    else:
        raise SystemExit("no seed in [100, 400) gives a robust greedy chat continuation")
    folder = os.path.join(out_dir, "llava_chat")
    save(model, folder)
    tok.save_pretrained(folder)
    processor.save_pretrained(folder)
    with torch.no_grad():
        logits = model(input_ids=ids, pixel_values=pixels, attention_mask=torch.ones_like(ids)).logits.float()
    expected["llava_chat.input_ids"] = ids
    expected["llava_chat.pixel_values"] = pixels
    expected["llava_chat.prompt_logits"] = logits
    expected["llava_chat.greedy_ids"] = new.to(torch.int64)
    metadata["llava_chat.prompt"] = CHAT_PROMPT
    metadata["llava_chat.image"] = CHAT_IMAGE
    metadata["llava_chat.text"] = tok.decode(new, skip_special_tokens=True)
    print("llava_chat seed", seed, "greedy", new.tolist(), repr(metadata["llava_chat.text"]),
          "min margin", min(margins))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "hf_models"))
    out_dir = ap.parse_args().out
    torch.set_num_threads(1)
    os.makedirs(out_dir, exist_ok=True)
    expected = {}

    # ---- LLaMA --------------------------------------------------------------------------
    torch.manual_seed(1)
    llama = LlamaForCausalLM(text_config()).eval()
    perturb_norms(llama)
    save(llama, os.path.join(out_dir, "llama"))
    ids = torch.tensor([[1, 5, 9, 33, 60, 2, 17], [1, 44, 3, 70, 8, 0, 0]], dtype=torch.int64)
    mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2], dtype=torch.int64)
    with torch.no_grad():
        expected["llama.input_ids"] = ids
        expected["llama.attention_mask"] = mask
        expected["llama.logits"] = llama(input_ids=ids, attention_mask=mask).logits.float()

    torch.manual_seed(2)
    tied = LlamaForCausalLM(text_config(tie_word_embeddings=True, num_key_value_heads=1)).eval()
    perturb_norms(tied)
    save(tied, os.path.join(out_dir, "llama_tied"))
    with torch.no_grad():
        expected["llama_tied.logits"] = tied(input_ids=ids, attention_mask=mask).logits.float()

    bf16_folder = os.path.join(out_dir, "llama_bf16")
    save(llama.to(torch.bfloat16), bf16_folder)
    upcast = LlamaForCausalLM.from_pretrained(bf16_folder, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        expected["llama_bf16.logits"] = upcast(input_ids=ids, attention_mask=mask).logits.float()

    # ---- CLIP -----------------------------------------------------------------------------
    torch.manual_seed(3)
    clip = CLIPVisionModel(vision_config()).eval()
    perturb_norms(clip)
    save(clip, os.path.join(out_dir, "clip_vision"))
    pixels = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        o = clip(pixel_values=pixels, output_hidden_states=True)
    expected["clip.pixel_values"] = pixels
    for i, h in enumerate(o.hidden_states):
        expected[f"clip.hidden_states.{i}"] = h
    expected["clip.pooler_output"] = o.pooler_output

    # ---- LLaVA ----------------------------------------------------------------------------
    # The first seed whose greedy continuation never emits the image token (HF's generate
    # would then splice nothing for it, a corner vlmc need not mimic) and whose top-1/top-2
    # margins are all >= 0.02, so that last-bit differences cannot flip a greedy step.
    llava_cfg = LlavaConfig(vision_config=vision_config().to_dict(), text_config=text_config().to_dict(),
                            image_token_index=IMAGE_TOKEN, projector_hidden_act="gelu", vision_feature_layer=-2,
                            vision_feature_select_strategy="default", ignore_index=-100)
    llava_ids = torch.tensor([[1, 12, 30, IMAGE_TOKEN, 7, 19, 55, 23, 41]], dtype=torch.int64)
    for seed in range(4, 200):
        torch.manual_seed(seed)
        llava = LlavaForConditionalGeneration(llava_cfg).eval()
        perturb_norms(llava)
        llava_pixels = torch.randn(1, 3, 12, 12)
        with torch.no_grad():
            ids_out, margins = greedy(llava, llava_ids, llava_pixels, 12)
        if IMAGE_TOKEN not in ids_out.tolist() and float(margins.min()) >= 0.02:
            break
    else:
        raise SystemExit("no seed in [4, 200) gives a robust greedy continuation")
    print("llava seed", seed, "greedy", ids_out.tolist(), "min margin", float(margins.min()))
    llava_folder = os.path.join(out_dir, "llava")
    save(llava, llava_folder)
    save(llava, os.path.join(out_dir, "llava_sharded"), max_shard_size="20KB")
    write_renamed(llava_folder, os.path.join(out_dir, "llava_new_layout"), new_layout_key, lambda c: c)
    write_renamed(llava_folder, os.path.join(out_dir, "llava_original"), original_layout_key,
                  original_layout_config)

    # The original layout's tower: a CLIPModel whose vision half is LLaVA's tower.
    torch.manual_seed(1000)
    clip_full = CLIPModel(CLIPConfig(text_config=dict(vocab_size=40, hidden_size=16, intermediate_size=32,
                                                      num_hidden_layers=1, num_attention_heads=2,
                                                      max_position_embeddings=16, projection_dim=24),
                                     vision_config=vision_config().to_dict(), projection_dim=24)).eval()
    clip_full.vision_model.load_state_dict(llava.vision_tower.vision_model.state_dict())
    save(clip_full, os.path.join(out_dir, "clip_full"))

    with torch.no_grad():
        expected["llava.input_ids"] = llava_ids
        expected["llava.pixel_values"] = llava_pixels
        expected["llava.logits"] = llava(input_ids=llava_ids, pixel_values=llava_pixels,
                                         attention_mask=torch.ones_like(llava_ids)).logits.float()
    expected["llava.greedy_ids"] = ids_out.to(torch.int64)
    expected["llava.greedy_margin"] = margins

    metadata = {"format": "pt", "transformers": __import__("transformers").__version__, "torch": torch.__version__}
    chat(out_dir, expected, metadata)

    save_file({k: v.contiguous() for k, v in expected.items()}, os.path.join(out_dir, "expected.safetensors"),
              metadata=metadata)
    print("wrote", out_dir)


if __name__ == "__main__":
    main()
