#include "train/batches.h"

#include <algorithm>

#include "core/error.h"
#include "core/ops.h"
#include "kernels/philox.h"

namespace vlmc::train {

TextBatch make_text_batch(const Tokenizer& tokenizer, const std::vector<Sample>& samples,
                          const std::vector<int64_t>& rows) {
  VLMC_CHECK(!rows.empty(), "text batch: no samples");
  std::vector<std::vector<int64_t>> ids(rows.size());
  std::vector<size_t> answer_start(rows.size());
  size_t longest = 0;
  TextBatch batch;
  for (size_t b = 0; b < rows.size(); ++b) {
    VLMC_CHECK(rows[b] >= 0 && rows[b] < static_cast<int64_t>(samples.size()), "text batch: sample ",
               rows[b], " outside a set of ", samples.size());
    const Sample& s = samples[static_cast<size_t>(rows[b])];
    std::vector<int64_t> prompt = tokenizer.encode(s.prompt, {.bos = true, .strict = true});
    VLMC_CHECK(std::count(prompt.begin(), prompt.end(), kImageTokenId) == 1, "text batch: prompt '", s.prompt,
               "' must hold exactly one ", kImageToken);
    const std::vector<int64_t> answer = tokenizer.encode(s.answer, {.eos = true, .strict = true});
    answer_start[b] = prompt.size();
    prompt.insert(prompt.end(), answer.begin(), answer.end());
    longest = std::max(longest, prompt.size());
    batch.text_tokens += static_cast<int64_t>(prompt.size()) - 1;  // <image> is not text
    batch.images.push_back(s.image);
    ids[b] = std::move(prompt);
  }
  const int64_t B = static_cast<int64_t>(rows.size()), T = static_cast<int64_t>(longest);
  std::vector<int64_t> input(static_cast<size_t>(B * T), kPadId), labels(input.size(), -100),
      mask(input.size(), 0);
  for (size_t b = 0; b < ids.size(); ++b) {
    for (size_t t = 0; t < ids[b].size(); ++t) {
      const size_t at = b * longest + t;
      input[at] = ids[b][t];
      mask[at] = 1;
      if (t >= answer_start[b]) labels[at] = ids[b][t];
    }
  }
  batch.input_ids = Tensor::from_vector(input, {B, T});
  batch.labels = Tensor::from_vector(labels, {B, T});
  batch.text_mask = Tensor::from_vector(mask, {B, T});
  return batch;
}

std::vector<int64_t> batch_indices(uint64_t seed, uint64_t stream, int64_t step, int64_t batch,
                                   int64_t count) {
  VLMC_CHECK(count >= 1 && batch >= 1 && step >= 0, "batch_indices: step ", step, ", batch ", batch,
             ", count ", count);
  // One key per (seed, stream); counter = step * batch + i.
  const uint64_t key = seed * 0x9E3779B97F4A7C15ull ^ (stream + 1) * 0xD1B54A32D192ED03ull;
  std::vector<int64_t> out(static_cast<size_t>(batch));
  for (int64_t i = 0; i < batch; ++i) {
    const kernels::Philox4 r =
        kernels::philox4x32(key, static_cast<uint64_t>(step) * static_cast<uint64_t>(batch) + i);
    const uint64_t bits = (static_cast<uint64_t>(r.x[0]) << 32) | r.x[1];
    // Multiply-shift on 64 bits: unbiased enough for any count below 2^32.
    out[static_cast<size_t>(i)] =
        static_cast<int64_t>((static_cast<unsigned __int128>(bits) * static_cast<uint64_t>(count)) >> 64);
  }
  return out;
}

Tensor slot_word_ids(const Tokenizer& tokenizer, const std::vector<std::vector<int64_t>>& classes,
                     int64_t mosaic_grid, int64_t slot_grid) {
  const int64_t G = mosaic_grid, s = slot_grid;
  VLMC_CHECK(s >= 1 && (s % G == 0 || G % s == 0), "slot_word_ids: a ", s, "x", s, " slot grid does not tile a ", G,
             "x", G, " mosaic (one side must divide the other)");
  // place words of each cell: "top left" -> {top, left}; "b3" -> {b3}
  const std::vector<std::string>& names = cell_names(G);
  std::vector<std::vector<int64_t>> place;
  for (const std::string& name : names) place.push_back(tokenizer.encode(name, {.strict = true}));
  const auto place_words = static_cast<int64_t>(place[0].size());
  // A slot inside one cell (s >= G) reads that cell; a coarser one the block of (G/s)^2 cells it covers.
  const int64_t block = s >= G ? 1 : G / s, width = block * block * (place_words + 1);
  const int64_t B = static_cast<int64_t>(classes.size()), n = s * s;
  std::vector<int64_t> ids(static_cast<size_t>(B * n * width));
  for (int64_t b = 0; b < B; ++b) {
    const std::vector<int64_t>& row = classes[static_cast<size_t>(b)];
    VLMC_CHECK(static_cast<int64_t>(row.size()) == G * G, "slot_word_ids: sample ", b, " has ", row.size(),
               " classes for a ", G, "x", G, " mosaic");
    for (int64_t j = 0; j < n; ++j) {
      int64_t* out = &ids[static_cast<size_t>((b * n + j) * width)];
      const int64_t r0 = (j / s) * G / s, c0 = (j % s) * G / s;  // the first cell the slot covers
      for (int64_t dr = 0; dr < block; ++dr) {
        for (int64_t dc = 0; dc < block; ++dc) {
          const int64_t q = (r0 + dr) * G + c0 + dc;
          const int64_t cls = row[static_cast<size_t>(q)];
          VLMC_CHECK(cls >= 0 && cls < kFashionMnistClasses, "slot_word_ids: class ", cls, " is not a class id");
          for (int64_t w : place[static_cast<size_t>(q)]) *out++ = w;
          *out++ = tokenizer.id(class_names()[static_cast<size_t>(cls)]);
        }
      }
    }
  }
  return Tensor::from_vector(ids, {B, n, width});
}

Tensor encoder_pixels(const MosaicSet& set, const std::vector<int64_t>& rows) {
  // Fashion-MNIST's pixel mean and standard deviation over the train split (on [0, 1]).
  constexpr double kMean = 0.2860, kStd = 0.3530;
  const Tensor index = Tensor::from_vector(rows, {static_cast<int64_t>(rows.size())});
  const Tensor images = index_select(set.images, 0, index);  // [B, S, S], S = 28 G
  return div(sub(images, kMean), kStd).reshape({static_cast<int64_t>(rows.size()), 1, set.side(), set.side()});
}

}  // namespace vlmc::train
