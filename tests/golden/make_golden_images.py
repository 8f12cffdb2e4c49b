#!/usr/bin/env python3
"""Writes tests/golden/images/: small JPEG and PNG inputs and golden.safetensors, what
PIL 9.4 decodes them to and what transformers 4.45.2's CLIPImageProcessor makes of them,
for tests/data/test_image.cpp (tag [image]) and tests/data/test_clip_image_processor.cpp
(tag [clip_processor]).

Usage (from the repository root, with the venv that has transformers and Pillow 9.4):
    /work/V/bin/python tests/golden/make_golden_images.py [--out DIR]

Inputs (written with PIL, or byte by byte below where PIL cannot write the kind):
    photo420.jpg      40x30 RGB, baseline, 4:2:0 chroma, a photo-like gradient with texture
    progressive.jpg   37x29 RGB, progressive, 4:2:2
    grey.jpg          33x21 greyscale JPEG
    cmyk.jpg          20x16 CMYK JPEG (PIL writes the Adobe marker; PIL reads it as inverted)
    rgb.png           23x17 RGB 8-bit
    rgba.png          19x25 RGBA 8-bit (alpha varies; convert("RGB") drops it)
    grey_alpha.png    15x11 LA 8-bit
    palette_trns.png  21x13 palette with a tRNS chunk
    grey16.png        17x9 16-bit grey, values 0..700 (PIL opens mode "I" and clips to 255)
    rgb16.png          7x5 16-bit RGB (PIL keeps the high byte)
    la16.png           6x4 16-bit grey+alpha (PIL keeps the high byte)
    grey4_adam7.png   11x7 4-bit grey, Adam7 interlaced (PIL scales by 17)
    palette_short.png  5x3 2-bit palette of 3 entries, index 3 used (PIL: grey ramp, (3,3,3))
    tall.png          18x31 RGB, for the pad mode's other branch

golden.safetensors (header: format vlmc-golden, version 1, family images/golden):
    decode.<file>              U8 [H, W, 3]: np.asarray(Image.open(f).convert("RGB"))
    resize.<filter>.<w>x<h>    U8 [h, w, 3]: photo420's pixels after PIL's Image.resize to
                               w x h with that filter (lanczos, bilinear, bicubic, box,
                               hamming), no reducing_gap, as transformers calls it
    <case>.resized             U8: the processor's resize output alone (after the pad,
                               when padded), to localise a mismatch
    <case>.pixel_values        F32 [1, 3, H, W]: CLIPImageProcessor(**config)(image,
                               return_tensors="pt").pixel_values, after LLaVA's
                               expand2square(img, tuple(int(x*255) for x in image_mean))
                               when the case pads
and <case>.args: {"image": file, "pad": bool, "config": the preprocessor_config.json}.
"""

import argparse
import io
import json
import os
import struct
import zlib

import numpy as np
import PIL
from PIL import Image
from safetensors.numpy import save_file
import transformers
from transformers import CLIPImageProcessor

FORMAT, VERSION, FAMILY = "vlmc-golden", "1", "images/golden"

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def photo(w, h, seed):
    """A smooth colour gradient with a little texture: what a photo's 8x8 blocks look like."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 255 * (x / max(w - 1, 1))
    g = 255 * (y / max(h - 1, 1))
    b = 128 + 100 * np.sin(x / 3.0) * np.cos(y / 4.0)
    img = np.stack([r, g, b], axis=-1) + rng.normal(0, 12, (h, w, 3))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def png_bytes(width, height, bit_depth, colour_type, rows, plte=None, trns=None, interlace=0):
    """A PNG written chunk by chunk: for the kinds PIL cannot save. `rows` is a list of the
    filtered-type-0 scanlines' bytes (without the filter byte), in PNG's pass order."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\x00" + r for r in rows)
    out = b"\x89PNG\r\n\x1a\n"
    out += chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, interlace))
    if plte is not None:
        out += chunk(b"PLTE", bytes(plte))
    if trns is not None:
        out += chunk(b"tRNS", bytes(trns))
    out += chunk(b"IDAT", zlib.compress(raw, 9))
    out += chunk(b"IEND", b"")
    return out


def pack_bits(values, bits):
    """Big-endian packing of sub-byte samples into one scanline."""
    out, acc, n = bytearray(), 0, 0
    for v in values:
        acc = (acc << bits) | int(v)
        n += bits
        if n == 8:
            out.append(acc)
            acc, n = 0, 0
    if n:
        out.append(acc << (8 - n))
    return bytes(out)


def adam7_rows(pixels, bits):
    """The reduced images of Adam7 (pixels: 2-D grey values), each row packed."""
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    rows = []
    h, w = pixels.shape
    for x0, y0, dx, dy in passes:
        sub = pixels[y0::dy, x0::dx]
        if sub.size == 0:
            continue
        rows += [pack_bits(r, bits) for r in sub]
    return rows


def write_inputs(out):
    files = {}

    def save(name, img, **kw):
        buf = io.BytesIO()
        img.save(buf, **kw)
        files[name] = buf.getvalue()

    save("photo420.jpg", Image.fromarray(photo(40, 30, 1)), format="JPEG", quality=90, subsampling=2)
    save("progressive.jpg", Image.fromarray(photo(37, 29, 2)), format="JPEG", quality=85, subsampling=1,
         progressive=True)
    save("grey.jpg", Image.fromarray(photo(33, 21, 3)[..., 1]), format="JPEG", quality=90)
    cmyk = np.concatenate([photo(20, 16, 4), photo(20, 16, 5)[..., :1] // 2], axis=-1)
    save("cmyk.jpg", Image.fromarray(cmyk, mode="CMYK"), format="JPEG", quality=90)
    save("rgb.png", Image.fromarray(photo(23, 17, 6)), format="PNG")
    rgba = np.concatenate([photo(19, 25, 7), photo(19, 25, 8)[..., :1]], axis=-1)
    save("rgba.png", Image.fromarray(rgba, mode="RGBA"), format="PNG")
    la = np.stack([photo(15, 11, 9)[..., 0], photo(15, 11, 10)[..., 1]], axis=-1)
    save("grey_alpha.png", Image.fromarray(la, mode="LA"), format="PNG")
    pal = Image.fromarray(photo(21, 13, 11)).quantize(colors=12, dither=Image.Dither.NONE)
    save("palette_trns.png", pal, format="PNG", transparency=3)
    g16 = (np.arange(17 * 9).reshape(9, 17) * 700 // (17 * 9 - 1)).astype(np.uint16)
    files["grey16.png"] = png_bytes(17, 9, 16, 0, [r.astype(">u2").tobytes() for r in g16])
    rgb16 = np.random.default_rng(12).integers(0, 65536, (5, 7, 3)).astype(">u2")
    files["rgb16.png"] = png_bytes(7, 5, 16, 2, [r.tobytes() for r in rgb16])
    la16 = np.random.default_rng(13).integers(0, 65536, (4, 6, 2)).astype(">u2")
    files["la16.png"] = png_bytes(6, 4, 16, 4, [r.tobytes() for r in la16])
    g4 = np.random.default_rng(14).integers(0, 16, (7, 11))
    files["grey4_adam7.png"] = png_bytes(11, 7, 4, 0, adam7_rows(g4, 4), interlace=1)
    idx = np.array([[0, 1, 2, 3, 0], [3, 2, 1, 0, 3], [1, 3, 0, 2, 1]])
    files["palette_short.png"] = png_bytes(5, 3, 2, 3, [pack_bits(r, 2) for r in idx],
                                           plte=[200, 10, 30, 20, 220, 40, 5, 60, 250])
    save("tall.png", Image.fromarray(photo(18, 31, 15)), format="PNG")

    for name, data in files.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    return sorted(files)


def expand2square(img, background):
    """LLaVA-1.5's pad mode (llava/mm_utils.py): the image centred on a square of the mean colour."""
    w, h = img.size
    if w == h:
        return img
    side = max(w, h)
    result = Image.new(img.mode, (side, side), background)
    result.paste(img, (0, (w - h) // 2) if w > h else ((h - w) // 2, 0))
    return result


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(here, "images"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    names = write_inputs(args.out)
    tensors = {}
    metadata = {"format": FORMAT, "version": VERSION, "family": FAMILY, "pillow": PIL.__version__,
                "transformers": transformers.__version__, "numpy": np.__version__}

    def load(name):
        return Image.open(os.path.join(args.out, name)).convert("RGB")

    for name in names:
        tensors[f"decode.{name}"] = np.ascontiguousarray(np.asarray(load(name)), dtype=np.uint8)

    filters = {"lanczos": Image.Resampling.LANCZOS, "bilinear": Image.Resampling.BILINEAR,
               "bicubic": Image.Resampling.BICUBIC, "box": Image.Resampling.BOX,
               "hamming": Image.Resampling.HAMMING}
    photo_img = load("photo420.jpg")
    for fname, f in filters.items():
        for w, h in [(17, 13), (53, 41)] if fname == "bicubic" else [(17, 13)]:
            tensors[f"resize.{fname}.{w}x{h}"] = np.asarray(photo_img.resize((w, h), resample=f))
    # One axis unchanged: PIL skips that pass.
    tensors["resize.bicubic.40x19"] = np.asarray(photo_img.resize((40, 19), resample=3))

    base = {"image_processor_type": "CLIPImageProcessor", "do_resize": True, "do_center_crop": True,
            "do_rescale": True, "rescale_factor": 0.00392156862745098, "do_normalize": True,
            "do_convert_rgb": True, "image_mean": CLIP_MEAN, "image_std": CLIP_STD, "resample": 3}
    shrink = dict(base, size={"shortest_edge": 24}, crop_size={"height": 24, "width": 24})
    enlarge = dict(base, size={"shortest_edge": 50}, crop_size={"height": 48, "width": 48})
    # The old openai/clip-vit-large-patch14-336 form: ints, no image_processor_type.
    legacy = {k: v for k, v in base.items() if k != "image_processor_type"}
    legacy.update(feature_extractor_type="CLIPFeatureExtractor", size=24, crop_size=24)
    hw_nocrop = dict(base, size={"height": 20, "width": 28}, do_center_crop=False, crop_size=18)
    crop_pads = dict(base, size={"shortest_edge": 20}, crop_size={"height": 26, "width": 22})
    no_norm = dict(base, size={"shortest_edge": 24}, crop_size=24, do_normalize=False,
                   image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    raw = dict(base, do_resize=False, do_center_crop=False, do_rescale=False,
               image_mean=[127.5, 127.5, 127.5], image_std=[64.0, 64.0, 64.0])
    cases = [
        ("shrink_photo", "photo420.jpg", False, shrink),
        ("shrink_photo_pad", "photo420.jpg", True, shrink),
        ("shrink_tall", "tall.png", False, shrink),
        ("shrink_tall_pad", "tall.png", True, shrink),
        ("enlarge_photo", "photo420.jpg", False, enlarge),
        ("enlarge_tall_pad", "tall.png", True, enlarge),
        ("legacy_progressive", "progressive.jpg", False, legacy),
        ("hw_nocrop_rgba", "rgba.png", False, hw_nocrop),
        ("crop_pads_photo", "photo420.jpg", False, crop_pads),
        ("no_normalize_grey", "grey.jpg", False, no_norm),
        ("raw_normalize_rgb", "rgb.png", False, raw),
    ]
    for case, image, pad, config in cases:
        proc = CLIPImageProcessor(**config)
        img = load(image)
        if pad:
            img = expand2square(img, tuple(int(x * 255) for x in proc.image_mean))
        out = proc(img, return_tensors="pt")["pixel_values"]
        tensors[f"{case}.pixel_values"] = out.numpy().astype(np.float32)
        if proc.do_resize:
            resized = proc.resize(np.asarray(img), size=proc.size, resample=proc.resample)
            tensors[f"{case}.resized"] = np.ascontiguousarray(resized, dtype=np.uint8)
        metadata[f"{case}.args"] = json.dumps({"image": image, "pad": pad, "config": config},
                                              separators=(",", ":"))

    path = os.path.join(args.out, "golden.safetensors")
    save_file(tensors, path, metadata=metadata)
    os.chmod(path, 0o644)  # safetensors writes 0600
    # (safetensors orders the metadata in its header as a hash map does: a rerun can
    # differ in those header bytes only, never in a tensor or a value.)
    total = sum(os.path.getsize(os.path.join(args.out, n)) for n in os.listdir(args.out))
    print(f"wrote {path}: {len(tensors)} tensors; folder {total} bytes")


if __name__ == "__main__":
    main()
