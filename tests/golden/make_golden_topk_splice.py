#!/usr/bin/env python3
"""Writes tests/golden/topk_splice.safetensors: PyTorch values for topk_indices +
gather_rows and for splice_image_embeddings, checked by tests/kernels/test_topk.cpp
and tests/kernels/test_splice.cpp.

Usage (from tests/golden; see README.md):
    /usr/bin/python3 make_golden_topk_splice.py [--out DIR]

Top-k ("op": "topk_gather"): the seed's DynamicResolutionConnector selection,
    indices = scores.topk(k, dim=1).indices.sort(dim=1).values
    out     = torch.gather(x, 1, indices[..., None].expand(-1, -1, D))
torch.topk does not promise which of several equal scores it keeps, so the
reference ranks with a stable descending sort (equal scores: the lower position
first; NaN above everything, as torch.topk), and the script asserts that this
agrees with torch.topk wherever a row has no ties.

Splice ("op": "splice"): the reference below follows LLaVA's
prepare_inputs_labels_for_multimodal: padding (text_mask 0) dropped first;
labels default to IGNORE (-100); each <image> placeholder replaced by the next
image's tokens (IGNORE labels); per-sample truncation to max_length; right
padding with zeros / IGNORE / attention 0 / position 0. One documented
difference: LLaVA's loop advances its image counter on a text-only sample
because LLaVA's collator gives such samples a dummy image; here the image list
holds only real images, so a text-only sample consumes none (prepend=False) or
gets the next image in front (prepend=True, the seed's prepare_inputs).
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_golden import Family, randn, write_families  # noqa: E402

IGNORE = -100


# ---- top-k + gather ----------------------------------------------------------------

def topk_reference(scores, k):
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    return order.sort(dim=1).values


def topk_gather(scores, x, k):
    indices = topk_reference(scores, k)
    for row in range(scores.shape[0]):
        s = scores[row]
        if s.unique().numel() == s.numel() and not torch.isnan(s).any():
            want = torch.topk(s, k).indices.sort().values
            assert torch.equal(want, indices[row]), (row, want, indices[row])
    out = torch.gather(x, 1, indices.unsqueeze(-1).expand(-1, -1, x.shape[2]))
    return {"indices": indices, "y": out}


def topk_cases(fam):
    def case(name, make_scores, b, n, d, k):
        fam.case(name, lambda: {"scores": make_scores(b, n), "x": randn(b, n, d)},
                 lambda scores, x: topk_gather(scores.detach(), x, k), op="topk_gather", k=k)

    case("topk_basic", randn, 3, 7, 5, 3)
    case("topk_k_equals_n", randn, 2, 5, 3, 5)
    case("topk_one_token_rows", randn, 4, 1, 6, 1)
    case("topk_k1", randn, 3, 10, 4, 1)
    # The seed's token_selector: a sigmoid of a linear map; 6x6 grid -> 9 tokens.
    case("topk_seed_sigmoid", lambda b, n: torch.sigmoid(randn(b, n)), 2, 36, 8, 9)
    # Three distinct values per row: most of the top k are ties.
    case("topk_ties", lambda b, n: torch.randint(0, 3, (b, n)).float(), 3, 9, 2, 4)

    def specials(b, n):
        s = randn(b, n)
        s[0, 1] = float("nan")
        s[0, 4] = float("inf")
        s[1, 0] = -0.0
        s[1, 2] = 0.0
        s[1, 3] = 0.0
        s[1, 5] = float("-inf")
        s[1] = torch.where(s[1] > 0, -s[1], s[1])  # every other score of row 1 negative
        return s
    case("topk_nan_inf_zeros", specials, 2, 6, 3, 2)


# ---- splice ----------------------------------------------------------------------------

def splice_reference(input_ids, embed_table, visual_tokens, labels=None, text_mask=None,
                     image_token_id=-200, prepend=False, max_length=0):
    batch, _ = input_ids.shape
    num_images, nv, width = visual_tokens.shape
    if labels is None:
        labels = torch.full_like(input_ids, IGNORE)
    keep = torch.ones_like(input_ids, dtype=torch.bool) if text_mask is None else text_mask.bool()
    embeds, labs = [], []
    image, truncated = 0, 0
    for b in range(batch):
        ids, lab = input_ids[b][keep[b]], labels[b][keep[b]]
        places = (ids == image_token_id).nonzero(as_tuple=True)[0].tolist()
        pieces, piece_labels = [], []

        def take_image():
            nonlocal image
            pieces.append(visual_tokens[image])
            piece_labels.append(torch.full((nv,), IGNORE, dtype=torch.int64))
            image += 1

        if not places and prepend:
            take_image()
        bounds = [-1] + places + [ids.shape[0]]
        for i in range(len(bounds) - 1):
            segment = ids[bounds[i] + 1:bounds[i + 1]]
            pieces.append(embed_table[segment])
            piece_labels.append(lab[bounds[i] + 1:bounds[i + 1]])
            if i < len(places):
                take_image()
        e, l = torch.cat(pieces), torch.cat(piece_labels)
        if max_length > 0:
            truncated += max(0, e.shape[0] - max_length)
            e, l = e[:max_length], l[:max_length]
        embeds.append(e)
        labs.append(l)
    assert image == num_images, (image, num_images)

    length = max(e.shape[0] for e in embeds)
    out_labels = torch.full((batch, length), IGNORE, dtype=torch.int64)
    attention = torch.zeros((batch, length), dtype=torch.int64)
    positions = torch.zeros((batch, length), dtype=torch.int64)
    padded = []
    for b, (e, l) in enumerate(zip(embeds, labs)):
        n = e.shape[0]
        padded.append(torch.cat([e, torch.zeros(length - n, width)]))
        out_labels[b, :n] = l
        attention[b, :n] = 1
        positions[b, :n] = torch.arange(n)
    return {"inputs_embeds": torch.stack(padded), "attention_mask": attention, "labels": out_labels,
            "position_ids": positions, "truncated": torch.tensor([truncated], dtype=torch.int64)}


def splice_cases(fam):
    IMG = -200

    def case(name, ids, vocab, width, num_images, nv, labels=False, mask=None, **args):
        ids_t = torch.tensor(ids, dtype=torch.int64)

        def make():
            inputs = {"input_ids": ids_t, "embed_table": randn(vocab, width),
                      "visual_tokens": randn(num_images, nv, width)}
            if labels:
                inputs["labels"] = torch.randint(0, vocab, ids_t.shape)
            if mask is not None:
                inputs["text_mask"] = torch.tensor(mask, dtype=torch.uint8)
            return inputs

        params = {"image_token_id": args.get("image_token_id", IMG),
                  "prepend": args.get("prepend", False), "max_length": args.get("max_length", 0)}
        fam.case(name, make, lambda **t: splice_reference(**t, **params), op="splice", **params)

    # Two images in sample 0, one in sample 1, consumed in order.
    case("splice_several_images", [[1, IMG, 2, 3, IMG, 4, 5], [6, 7, IMG, 8, 9, 10, 0]],
         vocab=11, width=4, num_images=3, nv=3, labels=True)
    # A text-only sample in the middle: LLaVA (no image) and the seed (prepended).
    text_only = [[1, IMG, 2, 3], [4, 5, 6, 7], [IMG, 8, 9, 1]]
    case("splice_text_only_llava", text_only, vocab=10, width=3, num_images=2, nv=2, labels=True)
    case("splice_text_only_prepend", text_only, vocab=10, width=3, num_images=3, nv=2, labels=True,
         prepend=True)
    # Right padding in sample 0 (pad id 0), left padding in sample 1 (pad id -1,
    # not a table row: padding is dropped before the ids are looked at).
    case("splice_padding", [[3, IMG, 4, 5, 0, 0], [-1, -1, 6, IMG, 7, 8]], vocab=9, width=5,
         num_images=2, nv=4, labels=True, mask=[[1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1]])
    # A cap of 6: sample 0 is cut inside its image, sample 1 inside its text.
    case("splice_truncation", [[1, 2, IMG, 3, 4], [IMG, 5, 6, 7, 8]], vocab=9, width=3, num_images=2,
         nv=5, labels=True, max_length=6)
    # No labels given: every label is IGNORE.
    case("splice_no_labels", [[IMG, 1, 2], [3, IMG, 4]], vocab=5, width=4, num_images=2, nv=2)
    # Many repeated ids: the table gradient sums per id.
    case("splice_repeated_ids", [[2, 2, IMG, 2, 1, 1], [1, 2, 2, 2, IMG, 0]], vocab=3, width=3,
         num_images=2, nv=1, labels=True)
    # An image id inside the vocabulary (Hugging Face style added token).
    case("splice_image_id_in_vocab", [[0, 7, 1, 2], [3, 4, 7, 5]], vocab=8, width=2, num_images=2, nv=3,
         labels=True, image_token_id=7)
    # The seed's layout at small size: one <image> per sample, a 4x4 grid of tokens.
    case("splice_seed_layout", [[1, IMG, 2, 3, 4, 5], [IMG, 6, 7, 8, 9, 1]], vocab=10, width=8,
         num_images=2, nv=16, labels=True, prepend=True)


def topk_splice():
    fam = Family("topk_splice")
    topk_cases(fam)
    splice_cases(fam)
    return fam


def main():
    write_families(__doc__, [topk_splice])


if __name__ == "__main__":
    main()
