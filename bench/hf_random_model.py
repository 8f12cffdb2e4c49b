#!/usr/bin/env python3
"""Writes a randomly initialised Hugging Face model folder of a real model's shape, for
benchmarks that need real sizes without downloading weights (nothing is downloaded).

    V/bin/python bench/hf_random_model.py tinyllama OUT_DIR [--dtype bfloat16]
    V/bin/python bench/hf_random_model.py llava-tiny OUT_DIR
    V/bin/python bench/hf_random_model.py clip-b16 OUT_DIR
    V/bin/python bench/hf_random_model.py tinyllama OUT_DIR --tokenizer tests/golden/tokenizer/legacy

Shapes:
    tinyllama   TinyLlama-1.1B: LlamaForCausalLM, hidden 2048, MLP 5632, 22 layers, 32 heads, 4 KV heads,
                vocab 32000 (1.10 B parameters)
    llava-tiny  LlavaForConditionalGeneration: CLIP ViT-B/16 at 224 (hidden 768, 12 layers) + the tinyllama LM,
                image_token_index 32000, vocab 32064 (LLaVA-1.5's padding of the vocabulary)
    clip-b16    CLIPVisionModel: CLIP ViT-B/16 at 224, with CLIP's preprocessor_config.json (shortest edge 224,
                centre crop 224, bicubic), the tower of the stage-1 benchmark (bench/llava_stage1_hf.py)

--tokenizer DIR copies a tokenizer folder's files beside the model (any SentencePiece tokenizer whose ids
fit the vocabulary: the benchmarks time steps, not language).
"""

import argparse
import os
import shutil

import torch
from transformers import (CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM,
                          LlavaConfig, LlavaForConditionalGeneration)


def tinyllama(vocab=32000):
    return LlamaConfig(vocab_size=vocab, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                       num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048,
                       rms_norm_eps=1e-5, rope_theta=10000.0, bos_token_id=1, eos_token_id=2)


def clip_b16():
    return CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                            image_size=224, patch_size=16)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("shape", choices=["tinyllama", "llava-tiny", "clip-b16"])
    ap.add_argument("--tokenizer", help="copy this folder's tokenizer files beside the model")
    ap.add_argument("out")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    args = ap.parse_args()
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    if args.shape == "tinyllama":
        model = LlamaForCausalLM(tinyllama())
    elif args.shape == "clip-b16":
        model = CLIPVisionModel(clip_b16())
    else:
        vision = clip_b16()
        model = LlavaForConditionalGeneration(LlavaConfig(vision_config=vision.to_dict(),
                                                          text_config=tinyllama(32064).to_dict(),
                                                          image_token_index=32000, image_seq_length=196))
    model.to(dtype).save_pretrained(args.out, safe_serialization=True)
    if args.shape == "clip-b16":
        CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(args.out)
    if args.tokenizer:
        for name in os.listdir(args.tokenizer):
            shutil.copy(os.path.join(args.tokenizer, name), os.path.join(args.out, name))
    print("wrote", args.out, sum(p.numel() for p in model.parameters()), "parameters in", args.dtype)


if __name__ == "__main__":
    main()
