// Samples -> tensors for the language model, and the deterministic sample
// order of every stage.
//
// Each sample is "<bos> prompt answer <eos>": the prompt holds one <image>
// (id -200) where the splice puts the visual tokens, and only the answer and
// <eos> are labelled, so the loss and exact-match accuracy are on the answer.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "train/mosaic.h"
#include "train/tokenizer.h"

namespace vlmc::train {

struct TextBatch {
  Tensor input_ids;  // i64 [B, T], right-padded with <pad>
  Tensor labels;     // i64 [B, T]: the answer's tokens and <eos>; -100 elsewhere
  Tensor text_mask;  // i64 [B, T]: 1 on real tokens, 0 on padding
  std::vector<int64_t> images;  // MosaicSet row of each sample (one <image> each)
  int64_t text_tokens = 0;      // real text tokens in the batch (without the visual ones)
};

// Every sample's prompt must hold exactly one <image>.
TextBatch make_text_batch(const Tokenizer& tokenizer, const std::vector<Sample>& samples,
                          const std::vector<int64_t>& rows);

// The step-th batch of a stage: `batch` indices in [0, count), drawn with
// replacement from Philox stream (seed, stream). A pure function of its
// arguments, so a resumed run reads exactly the batches it would have read.
std::vector<int64_t> batch_indices(uint64_t seed, uint64_t stream, int64_t step, int64_t batch,
                                   int64_t count);

// The text that stands where the image will be while the language model is
// pre-trained (stage 0): slot token j of an s x s grid (row-major) over a
// G x G mosaic is the sum of the embeddings of its cell's place and item
// words ("top" + "left" + "bag"; "b3" + "bag"). A slot grid coarser than the
// mosaic's (s < G) sums the words of every cell a slot covers, as a pooling
// connector's token averages their features. The model thus learns to read
// its context by content, whatever the number or order of the visual tokens
// the connector will later write there.
// classes: one row of G*G class ids per sample; returns i64 [B, s*s, W] token
// ids (W = the cells per slot x (place words + 1)) whose embeddings, summed
// over the last axis, make the slots. One of s and G must divide the other.
Tensor slot_word_ids(const Tokenizer& tokenizer, const std::vector<std::vector<int64_t>>& classes,
                     int64_t mosaic_grid, int64_t slot_grid);

// Normalised mosaics as the vision encoder reads them: rows of a MosaicSet ->
// f32 [B, 1, 28 G, 28 G], (pixel - mean) / std with Fashion-MNIST's statistics.
Tensor encoder_pixels(const MosaicSet& set, const std::vector<int64_t>& rows);

}  // namespace vlmc::train
