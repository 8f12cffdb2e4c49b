#!/usr/bin/env python3
"""Writes tests/golden/conversation/: LLaVA-format samples and the input_ids / labels LLaVA's
training preprocessing makes of them, checked by tests/data/test_conversation.cpp (tag
[conversation]).

Usage (the venv with transformers 4.45.2 and sentencepiece, see tests/golden/README.md):
    /work/V/bin/python tests/golden/make_golden_conversation.py [--out DIR]

What it writes under DIR (default tests/golden/conversation):
    data.json     the samples, in LLaVA's data.json format (what vlmc reads with read_llava_json)
    golden.json   {"format": "vlmc-golden-conversation", "version": 1, "prompts": ...,
                   "cases": [...]}: per template and sample the conversation text (get_prompt),
                  and per (template, tokenizer folder, sample) the input_ids, the labels (as the
                  [begin, end) ranges where labels == input_ids; -100 elsewhere), the length
                  before truncation, and whether LLaVA's tokenization-mismatch rule fired; or
                  "refused" where LLaVA's preprocessing would assert (plain on a sample that is not
                  one image + one caption)

The reference below is written from the published definitions of LLaVA-1.5's training code
(haotian-liu/LLaVA: llava/conversation.py Conversation.get_prompt and the conv_llava_plain /
conv_vicuna_v1 / conv_llava_llama_2 templates; llava/train/train.py preprocess_multimodal,
preprocess_plain, preprocess_v1, preprocess_llama_2 and DataCollatorForSupervisedDataset;
llava/mm_utils.py tokenizer_image_token), step by step, with transformers' slow LlamaTokenizer
over the tiny SentencePiece folders tests/golden/tokenizer/legacy and nonlegacy. Like LLaVA's
train(), the pad token is set to the unk token before preprocessing (the count of non-pad ids
in the mismatch rule depends on it). IS_TOKENIZER_GREATER_THAN_0_14 is taken as true (tokenizers
0.20 with transformers 4.45.2).

One extension, which LLaVA-1.5 does not define: a sample with several images. LLaVA-1.5's
preprocess_multimodal removes every "<image>" of a turn and puts one back at the front, which
would leave one image token for several images; for those samples the rule is LLaVA-NeXT's
(a turn with exactly one "<image>" not at its start has it moved to the front; a turn with
several keeps them where they are), and plain puts one "<image>" per image before the caption.
"""

import argparse
import json
import os

import transformers
from transformers import LlamaTokenizer

IGNORE_INDEX = -100
IMAGE_TOKEN_INDEX = -200
IMAGE_TAG = "<image>"
HERE = os.path.dirname(os.path.abspath(__file__))

TEMPLATES = {
    "plain": dict(style="plain", system="", roles=("", ""), sep="\n", sep2=None),
    "vicuna_v1": dict(
        style="two",
        system="A chat between a curious user and an artificial intelligence assistant. "
        "The assistant gives helpful, detailed, and polite answers to the user's questions.",
        roles=("USER", "ASSISTANT"),
        sep=" ",
        sep2="</s>",
    ),
    "llava_llama_2": dict(
        style="llama_2",
        system="You are a helpful language and vision assistant. "
        "You are able to understand the visual content that the user provides, "
        "and assist the user with a variety of tasks using natural language.",
        roles=("USER", "ASSISTANT"),
        sep="<s>",
        sep2="</s>",
    ),
}

# (sample, model_max_length). Every text exercises something the masking depends on.
NBSP, IDEO = "\u00a0", "\u3000"
SAMPLES = [
    ({"id": "caption", "image": "pretrain/00001.jpg",
      "conversations": [{"from": "human", "value": "Render a clear and concise summary of the photo.\n<image>"},
                        {"from": "gpt", "value": "a grey cat sitting on a red chair"}]}, 2048),
    ({"id": "single", "image": "coco/train2017/000000001.jpg",
      "conversations": [{"from": "human", "value": "<image>\nWhat is shown in this image?"},
                        {"from": "gpt", "value": "A small grey cat sitting on a red chair."}]}, 2048),
    ({"id": 1002, "image": "coco/train2017/000000002.jpg",
      "conversations": [{"from": "human", "value": "What is the model reading?\n<image>"},
                        {"from": "gpt", "value": "The model reads the image."}]}, 2048),
    ({"id": "multi_turn", "image": "gqa/images/2354786.jpg",
      "conversations": [{"from": "human", "value": "<image>\nHow many apples are there?"},
                        {"from": "gpt", "value": "There are 12 apples."},
                        {"from": "human", "value": "And pears?"},
                        {"from": "gpt", "value": "7 pears, on the table."},
                        {"from": "human", "value": "Describe it in one sentence."},
                        {"from": "gpt", "value": "A basket of fruit on the table."}]}, 2048),
    ({"id": "text_only",
      "conversations": [{"from": "human", "value": "Hello world! How are you today?"},
                        {"from": "gpt", "value": "Hello again, world."}]}, 2048),
    ({"id": "text_multi",
      "conversations": [{"from": "human", "value": "Say a number."},
                        {"from": "gpt", "value": "42"},
                        {"from": "human", "value": "Another one, please."},
                        {"from": "gpt", "value": "3.14"}]}, 2048),
    ({"id": "two_images_one_turn", "image": ["a/1.png", "b/2.png"],
      "conversations": [{"from": "human", "value": "Compare <image> with <image> please."},
                        {"from": "gpt", "value": "The first is brighter."}]}, 2048),
    ({"id": "two_images_two_turns", "image": ["a/1.png", "b/2.png"],
      "conversations": [{"from": "human", "value": "First one: <image>"},
                        {"from": "gpt", "value": "A cat."},
                        {"from": "human", "value": "And this <image> one?"},
                        {"from": "gpt", "value": "A dog."}]}, 2048),
    ({"id": "unicode", "image": "ocr_vqa/images/猫.jpg",
      "conversations": [{"from": "human", "value": NBSP + "<image>" + IDEO + "Qu'est-ce que c'est ? 猫 🐱" + NBSP},
                        {"from": "gpt", "value": "Un chat gris. 🐱 ñ"}]}, 2048),
    ({"id": "eos_in_answer", "image": "vg/VG_100K/1.jpg",
      "conversations": [{"from": "human", "value": "<image>\nWhat ends a text?"},
                        {"from": "gpt", "value": "The tag </s> ends it."},
                        {"from": "human", "value": "Sure?"},
                        {"from": "gpt", "value": "Yes."}]}, 2048),
    ({"id": "role_in_question",
      "conversations": [{"from": "human", "value": "Repeat: ASSISTANT: [/INST] hi"},
                        {"from": "gpt", "value": "ASSISTANT: [/INST] hi"}]}, 2048),
    ({"id": "unk_in_answer",
      "conversations": [{"from": "human", "value": "Print the unknown token."},
                        {"from": "gpt", "value": "<unk>"}]}, 2048),
    ({"id": "gpt_first", "image": "textvqa/train_images/1.jpg",
      "conversations": [{"from": "gpt", "value": "Hi, ask me something."},
                        {"from": "human", "value": "<image>\nWhat is this?"},
                        {"from": "gpt", "value": "A chest X-ray."}]}, 2048),
    ({"id": "spaces", "image": "x.jpg",
      "conversations": [{"from": "human", "value": "  Look at\t <image>  closely.  \n"},
                        {"from": "gpt", "value": "  It is a  river bank. "}]}, 2048),
    ({"id": "empty_answer",
      "conversations": [{"from": "human", "value": "Say nothing."},
                        {"from": "gpt", "value": ""},
                        {"from": "human", "value": "Now say hi."},
                        {"from": "gpt", "value": "hi"}]}, 2048),
    ({"id": "too_long", "image": "long.jpg",
      "conversations": [{"from": "human", "value": "<image>\nDescribe the picture in detail."},
                        {"from": "gpt", "value": "The quick brown fox jumps over the lazy dog near the river bank."},
                        {"from": "human", "value": "More?"},
                        {"from": "gpt", "value": "Visual tokens are projected into the word embedding space."}]}, 225),
    ({"id": "too_long_text",
      "conversations": [{"from": "human", "value": "Tell me about the recipe."},
                        {"from": "gpt", "value": "Training the connector first, then the language model, "
                                                 "is the usual recipe."}]}, 160),
    ({"id": "plain_short", "image": "p.jpg",
      "conversations": [{"from": "human", "value": "<image>"},
                        {"from": "gpt", "value": "a dog"}]}, 6),
]


# --- llava/conversation.py: get_prompt -------------------------------------------------------

def get_prompt(t, messages):
    """messages: [(role, text)], as Conversation.append_message stores them."""
    style = t["style"]
    if style == "two":
        seps = [t["sep"], t["sep2"]]
        out = t["system"] + seps[0]
        for i, (role, msg) in enumerate(messages):
            if msg:
                out += role + ": " + msg + seps[i % 2]
            else:
                out += role + ":"
        return out
    if style == "llama_2":
        out = ""
        for i, (role, msg) in enumerate(messages):
            if i == 0:
                assert msg and role == t["roles"][0]
            if not msg:
                continue
            if i == 0:
                msg = ("<<SYS>>\n" + t["system"] + "\n<</SYS>>\n\n" if t["system"] else "") + msg
            if i % 2 == 0:
                out += t["sep"] + "[INST] " + msg + " [/INST]"
            else:
                out += " " + msg + " " + t["sep2"]
        return out.lstrip(t["sep"])  # str.lstrip takes a set of characters, as LLaVA's does
    raise ValueError(style)


# --- llava/mm_utils.py: tokenizer_image_token -------------------------------------------------

def tokenizer_image_token(prompt, tok):
    chunks = [tok(c).input_ids for c in prompt.split(IMAGE_TAG)]
    skip = 1 if chunks[0] and chunks[0][0] == tok.bos_token_id else 0
    ids = chunks[0][:1] if skip else []
    for k, chunk in enumerate(chunks):
        if k > 0:
            ids.append(IMAGE_TOKEN_INDEX)
        ids.extend(chunk[skip:])
    return ids


# --- llava/train/train.py ---------------------------------------------------------------------

def preprocess_multimodal(turns, n_images):
    out = []
    for turn in turns:
        value = turn["value"]
        count = value.count(IMAGE_TAG)
        if n_images == 1 and count > 0:  # LLaVA-1.5
            value = (IMAGE_TAG + "\n" + value.replace(IMAGE_TAG, "").strip()).strip()
        elif n_images > 1 and count == 1 and not value.startswith(IMAGE_TAG):  # LLaVA-NeXT
            value = (IMAGE_TAG + "\n" + value.replace(IMAGE_TAG, "").strip()).strip()
        out.append({"from": turn["from"], "value": value})
    return out


def preprocess_plain(turns, n_images, tok):
    if len(turns) != 2 or turns[0]["from"] != "human" or turns[1]["from"] != "gpt" or n_images == 0:
        return None  # LLaVA asserts
    head = IMAGE_TAG * n_images
    text = head + turns[1]["value"] + TEMPLATES["plain"]["sep"]
    ids = tokenizer_image_token(text, tok)
    labels = list(ids)
    for k in range(len(tokenizer_image_token(head, tok))):
        labels[k] = IGNORE_INDEX
    return text, ids, labels, False


def to_messages(t, turns):
    roles = {"human": t["roles"][0], "gpt": t["roles"][1]}
    if roles[turns[0]["from"]] != t["roles"][0]:
        turns = turns[1:]  # a conversation opened by gpt loses its first turn
    messages = []
    for j, turn in enumerate(turns):
        assert roles[turn["from"]] == t["roles"][j % 2]
        messages.append((roles[turn["from"]], turn["value"]))
    return messages


def preprocess_rounds(t, turns, has_image, tok, max_len):
    """preprocess_v1 (style two) and preprocess_llama_2 (style llama_2)."""
    prompt = get_prompt(t, to_messages(t, turns))
    if has_image:
        ids = tokenizer_image_token(prompt, tok)
    else:  # LLaVA tokenizes text-only conversations with truncation at model_max_length
        ids = tok(prompt, max_length=max_len, truncation=True).input_ids
    labels = list(ids)
    total_len = sum(1 for i in ids if i != tok.pad_token_id)
    if t["style"] == "two":
        sep = t["sep"] + t["roles"][1] + ": "
    else:
        sep = "[/INST] "
    cur_len = 1
    labels[:cur_len] = [IGNORE_INDEX] * len(labels[:cur_len])
    for i, rou in enumerate(prompt.split(t["sep2"])):
        if rou == "":
            break
        parts = rou.split(sep)
        if len(parts) != 2:
            break
        parts[0] += sep
        round_len = len(tokenizer_image_token(rou, tok))
        instruction_len = len(tokenizer_image_token(parts[0], tok)) - 2
        if t["style"] == "two" and i != 0 and not tok.legacy:  # and tokenizers >= 0.14
            round_len -= 1
            instruction_len -= 1
        for k in range(cur_len, min(cur_len + instruction_len, len(labels))):
            labels[k] = IGNORE_INDEX
        cur_len += round_len
    for k in range(cur_len, len(labels)):
        labels[k] = IGNORE_INDEX
    mismatch = False
    if cur_len < max_len and cur_len != total_len:
        labels = [IGNORE_INDEX] * len(labels)
        mismatch = True
    return prompt, ids, labels, mismatch


def preprocess(template, sample, tok, max_len):
    images = sample.get("image")
    n_images = 0 if images is None else (1 if isinstance(images, str) else len(images))
    turns = sample["conversations"]
    if n_images:
        turns = preprocess_multimodal(turns, n_images)
    t = TEMPLATES[template]
    if t["style"] == "plain":
        result = preprocess_plain(turns, n_images, tok)
    else:
        result = preprocess_rounds(t, turns, n_images > 0, tok, max_len)
    if result is None:
        return None
    prompt, ids, labels, mismatch = result
    full_length = len(tokenizer_image_token(prompt, tok))
    # DataCollatorForSupervisedDataset: input_ids[:, :model_max_length], labels likewise
    return prompt, ids[:max_len], labels[:max_len], full_length, mismatch


def label_ranges(ids, labels):
    """[begin, end) ranges where labels[k] == ids[k]; every other label must be -100."""
    ranges, k = [], 0
    while k < len(labels):
        if labels[k] == IGNORE_INDEX:
            k += 1
            continue
        begin = k
        while k < len(labels) and labels[k] != IGNORE_INDEX:
            assert labels[k] == ids[k]
            k += 1
        ranges.append([begin, k])
    return ranges


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.path.join(HERE, "conversation"))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    tokenizers = {}
    for folder in ("legacy", "nonlegacy"):
        tok = LlamaTokenizer.from_pretrained(os.path.join(HERE, "tokenizer", folder), use_fast=False)
        tok.pad_token = tok.unk_token  # as LLaVA's train() does for every template but v0
        assert tok.legacy == (folder == "legacy")
        tokenizers[folder] = tok

    prompts, cases = {}, []
    for template in TEMPLATES:
        for sample, max_len in SAMPLES:
            sid = str(sample["id"])
            for folder, tok in tokenizers.items():
                tok.model_max_length = max_len
                result = preprocess(template, sample, tok, max_len)
                case = {"template": template, "folder": folder, "id": sid, "model_max_length": max_len}
                if result is None:
                    case["refused"] = True
                else:
                    prompt, ids, labels, full_length, mismatch = result
                    prompts.setdefault(template, {})[sid] = prompt
                    case.update(input_ids=ids, label_ranges=label_ranges(ids, labels),
                                full_length=full_length, mismatch=mismatch)
                cases.append(case)

    with open(os.path.join(args.out, "data.json"), "w", encoding="utf-8") as f:
        json.dump([s for s, _ in SAMPLES], f, ensure_ascii=False, indent=1)
        f.write("\n")
    golden = {"format": "vlmc-golden-conversation", "version": 1,
              "transformers": transformers.__version__, "prompts": prompts, "cases": cases}
    with open(os.path.join(args.out, "golden.json"), "w", encoding="utf-8") as f:
        json.dump(golden, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    n_mismatch = sum(1 for c in cases if c.get("mismatch"))
    n_cut = sum(1 for c in cases if "full_length" in c and c["full_length"] > c["model_max_length"])
    print(f"{len(cases)} cases ({sum(1 for c in cases if c.get('refused'))} refused, "
          f"{n_mismatch} mismatched, {n_cut} truncated) -> {args.out}")


if __name__ == "__main__":
    main()
