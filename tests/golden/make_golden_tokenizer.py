#!/usr/bin/env python3
"""Writes tests/golden/tokenizer/: tiny Hugging Face LLaMA tokenizer folders and the ids and
texts transformers' slow LlamaTokenizer gives for them, checked by
tests/data/test_sentencepiece_tokenizer.cpp (tag [tokenizer_sp]).

Usage (the venv with transformers 4.45.2 and sentencepiece, see tests/golden/README.md):
    /work/V/bin/python tests/golden/make_golden_tokenizer.py [--out DIR]

What it writes under DIR (default tests/golden/tokenizer):
    legacy/          LlamaTokenizer(legacy=True) + <image>, <pad> added (LLaVA-1.5 / llava-hf style),
                     saved by save_pretrained: tokenizer.model, tokenizer_config.json (with
                     added_tokens_decoder), special_tokens_map.json, added_tokens.json
    nonlegacy/       the same with legacy=False (the "▁" prefix handled by transformers, not by
                     SentencePiece's dummy prefix)
    oldfiles/        the layout of older checkpoints (liuhaotian/llava-v1.5-7b): no
                     added_tokens_decoder, so added_tokens.json and special_tokens_map.json say what
                     is added and special; pad is "<unk>", add_eos_token is true, <image> is an
                     ordinary (not special) added token
    golden.json      {"format": "vlmc-golden-tokenizer", "version": 1, "cases": [...]}: per folder
                     and text, the ids of encode(text) with and without special tokens, LLaVA's
                     tokenizer_image_token ids, decode(ids) and decode(ids, skip_special_tokens=True),
                     and a few decodes of hand-made id lists (byte fallback, partial UTF-8)

The SentencePiece model is trained here, on the few lines of TRAINING_TEXT, with the settings of
LLaMA's tokenizer.model: BPE, byte_fallback, split_digits, identity normalization (no NFKC),
remove_extra_whitespaces=False, add_dummy_prefix=True, <unk>/<s>/</s> = 0/1/2, no pad piece.
Training is single-threaded and deterministic, so the files are reproducible.
"""

import argparse
import io
import json
import os
import shutil
import tempfile

import sentencepiece as spm
import transformers
from transformers import AddedToken, LlamaTokenizer

TRAINING_TEXT = """\
A chest X-ray shows the lungs, the heart and the bones of the chest.
The model reads the image and answers the question in a few words.
USER: What is shown in this image? ASSISTANT: A small grey cat sitting on a red chair.
The quick brown fox jumps over the lazy dog near the river bank.
Training the connector first, then the language model, is the usual recipe.
There are 12 apples, 7 pears and 305 grapes in the basket on the table.
Visual tokens are projected into the word embedding space of the language model.
She said: "Look at the picture, then describe it in one sentence."
Numbers such as 3.14, 2024 and 42 are split into single digits.
Hello world! Hello again, world. How are you today?
"""

VOCAB_SIZE = 400  # 3 control + 256 byte pieces + the merges and characters

# Texts covering what LLaVA prompts contain: spaces (leading, double, trailing), newlines,
# digits, unknown unicode (CJK, emoji -> byte fallback), the <image> tag and other added
# tokens, a literal "▁", tabs.
TEXTS = [
    "Hello world",
    "The model reads the image.",
    " leading space",
    "double  space and   triple",
    "trailing space ",
    "new\nline\n\nand two",
    "\nstarts with a newline",
    "digits 12345 and 3.14 and 007",
    "CJK 你好世界 text",
    "emoji 😀 and 👍🏽!",
    "USER: <image>\nWhat is shown in this image? ASSISTANT:",
    "<image>",
    "a<image>b",
    "two <image> <image> images",
    "<image>\nDescribe it.",
    "<s>literal bos</s> and <unk>",
    "<pad> padded <pad>",
    "tab\tseparated\tvalues",
    "▁already an underline",
    "Ünïcödé àccents café",
    "",
    " ",
    "   ",
]


def byte_id(sp, b):
    """The id of the byte-fallback piece of byte b."""
    return sp.piece_to_id("<0x%02X>" % b)


def train_model(path):
    sp_bytes = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TRAINING_TEXT.splitlines()),
        model_writer=sp_bytes,
        model_type="bpe",
        vocab_size=VOCAB_SIZE,
        character_coverage=1.0,
        byte_fallback=True,
        split_digits=True,
        split_by_unicode_script=True,
        split_by_whitespace=True,
        allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        normalization_rule_name="identity",
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    with open(path, "wb") as f:
        f.write(sp_bytes.getvalue())


def make_folders(model_path, out):
    folders = {}
    for name, legacy in (("legacy", True), ("nonlegacy", False)):
        tok = LlamaTokenizer(vocab_file=model_path, legacy=legacy, add_bos_token=True, add_eos_token=False)
        # As llava-hf does: <image> and <pad> as special added tokens after the sp vocabulary.
        tok.add_tokens([AddedToken("<image>", special=True, normalized=False)], special_tokens=True)
        tok.add_special_tokens({"pad_token": "<pad>"})
        d = os.path.join(out, name)
        shutil.rmtree(d, ignore_errors=True)
        tok.save_pretrained(d)
        folders[name] = d

    # The older layout: written, then made to look like liuhaotian/llava-v1.5-7b's files.
    tok = LlamaTokenizer(vocab_file=model_path, legacy=True, add_bos_token=True, add_eos_token=True)
    tok.add_tokens(["<image>"])  # an ordinary added token (not special)
    tok.pad_token = tok.unk_token
    d = os.path.join(out, "oldfiles")
    shutil.rmtree(d, ignore_errors=True)
    tok.save_pretrained(d)
    cfg_path = os.path.join(d, "tokenizer_config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg.pop("added_tokens_decoder")
    # Older configs hold the special tokens as AddedToken dicts.
    cfg["bos_token"] = {"__type": "AddedToken", "content": "<s>", "lstrip": False, "normalized": False,
                        "rstrip": False, "single_word": False}
    cfg["pad_token"] = None
    cfg["clean_up_tokenization_spaces"] = True
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2)
    folders["oldfiles"] = d
    return folders


def tokenizer_image_token(prompt, tok, image_token_index=-200):
    """LLaVA's llava/mm_utils.py tokenizer_image_token, restated: each chunk between the literal
    "<image>" tags tokenized with special tokens, one bos kept at the start, image_token_index
    between the chunks."""
    chunks = [tok(c).input_ids for c in prompt.split("<image>")]
    ids = []
    offset = 0
    if chunks and chunks[0] and chunks[0][0] == tok.bos_token_id:
        offset = 1
        ids.append(chunks[0][0])
    for i, c in enumerate(chunks):
        if i > 0:
            ids.append(image_token_index)
        ids.extend(c[offset:])
    return ids


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "tokenizer"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    with tempfile.TemporaryDirectory() as tmp:
        model_path = os.path.join(tmp, "tokenizer.model")
        train_model(model_path)
        folders = make_folders(model_path, args.out)

    cases = []
    for name, d in folders.items():
        tok = LlamaTokenizer.from_pretrained(d)  # the slow tokenizer, as LLaVA uses it
        assert not tok.is_fast
        info = {
            "folder": name,
            "legacy": tok.legacy,
            "vocab_size": len(tok),
            "sp_vocab_size": tok.vocab_size,
            "bos_id": tok.bos_token_id,
            "eos_id": tok.eos_token_id,
            "pad_id": tok.pad_token_id if tok.pad_token is not None else -1,
            "image_id": tok.convert_tokens_to_ids("<image>"),
        }
        cases.append({"kind": "info", **info})
        for text in TEXTS:
            with_special = tok.encode(text, add_special_tokens=True)
            without = tok.encode(text, add_special_tokens=False)
            cases.append({
                "kind": "text",
                "folder": name,
                "text": text,
                "ids": with_special,
                "ids_no_special": without,
                "image_token_ids": tokenizer_image_token(text, tok),
                "decoded": tok.decode(with_special),
                "decoded_skip_special": tok.decode(with_special, skip_special_tokens=True),
                "decoded_no_special": tok.decode(without),
            })
        sp = tok.sp_model
        hand = [
            [byte_id(sp, 0xE4), byte_id(sp, 0xBD), byte_id(sp, 0xA0)],  # "你" from bytes
            [byte_id(sp, 0xE4), byte_id(sp, 0xBD)],                     # truncated UTF-8
            [tok.convert_tokens_to_ids("▁Hello"), byte_id(sp, 0x0A), tok.convert_tokens_to_ids("▁world")],
            [tok.bos_token_id, tok.convert_tokens_to_ids("<image>"), tok.eos_token_id],
            [tok.convert_tokens_to_ids("<image>"), tok.convert_tokens_to_ids("<image>")],
            [tok.eos_token_id, tok.convert_tokens_to_ids("▁Hello"), tok.bos_token_id, tok.eos_token_id],
        ]
        for ids in hand:
            cases.append({
                "kind": "decode",
                "folder": name,
                "ids": ids,
                "decoded": tok.decode(ids),
                "decoded_skip_special": tok.decode(ids, skip_special_tokens=True),
            })

    golden = {
        "format": "vlmc-golden-tokenizer",
        "version": 1,
        "transformers": transformers.__version__,
        "sentencepiece": spm.__version__,
        "cases": cases,
    }
    with open(os.path.join(args.out, "golden.json"), "w", encoding="utf-8") as f:
        json.dump(golden, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {args.out}: {len(cases)} cases")


if __name__ == "__main__":
    main()
