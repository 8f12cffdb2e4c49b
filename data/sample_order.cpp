// Epoch orders (see sample_order.h). LLaVA's sampler functions restated from their published
// definitions in llava/train/llava_trainer.py; the draws are ours (mt19937_64), not torch's.
#include "data/sample_order.h"

#include <algorithm>
#include <limits>
#include <random>

#include "core/error.h"

namespace vlmc::data {

namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Uniform in [0, n) without modulo bias: draws below 2^64 mod n are rejected.
uint64_t bounded(std::mt19937_64& rng, uint64_t n) {
  const uint64_t threshold = (0 - n) % n;
  for (;;) {
    const uint64_t r = rng();
    if (r >= threshold) return r % n;
  }
}

// Sub-streams of one caller stream, for the independent shuffles of one order.
uint64_t sub_stream(uint64_t stream, uint64_t k) { return splitmix64(stream) ^ (k + 1) * 0xD1B54A32D192ED03ull; }

std::vector<int64_t> gather(const std::vector<int64_t>& values, const std::vector<int64_t>& at) {
  std::vector<int64_t> out;
  out.reserve(at.size());
  for (const int64_t i : at) out.push_back(values[static_cast<size_t>(i)]);
  return out;
}

}  // namespace

std::vector<int64_t> seeded_permutation(int64_t n, uint64_t seed, uint64_t stream) {
  VLMC_CHECK(n >= 0, "seeded_permutation: n = ", n);
  std::vector<int64_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[static_cast<size_t>(i)] = i;
  std::mt19937_64 rng(splitmix64(seed ^ splitmix64(stream)));
  for (int64_t i = n - 1; i > 0; --i)  // Fisher-Yates
    std::swap(p[static_cast<size_t>(i)], p[bounded(rng, static_cast<uint64_t>(i) + 1)]);
  return p;
}

std::vector<std::vector<int64_t>> split_to_even_chunks(const std::vector<int64_t>& indices,
                                                       const std::vector<int64_t>& lengths, int64_t num_chunks) {
  VLMC_CHECK(num_chunks >= 1, "split_to_even_chunks: ", num_chunks, " chunks");
  const size_t chunks_n = static_cast<size_t>(num_chunks);
  std::vector<std::vector<int64_t>> chunks(chunks_n);
  if (indices.size() % chunks_n != 0) {  // LLaVA: indices[i::num_chunks]
    for (size_t i = 0; i < indices.size(); ++i) chunks[i % chunks_n].push_back(indices[i]);
    return chunks;
  }
  const size_t per_chunk = indices.size() / chunks_n;
  constexpr int64_t kClosed = std::numeric_limits<int64_t>::max();  // LLaVA's float("inf")
  std::vector<int64_t> total(chunks_n, 0);
  for (const int64_t index : indices) {
    // list.index(min(...)): the first chunk with the least total.
    const size_t shortest = static_cast<size_t>(std::min_element(total.begin(), total.end()) - total.begin());
    chunks[shortest].push_back(index);
    total[shortest] += lengths[static_cast<size_t>(index)];
    if (chunks[shortest].size() == per_chunk) total[shortest] = kClosed;
  }
  return chunks;
}

std::vector<int64_t> length_grouped_order(const std::vector<int64_t>& lengths, int64_t batch_size,
                                          int64_t world_size, uint64_t seed, uint64_t stream) {
  VLMC_CHECK(batch_size >= 1 && world_size >= 1, "length_grouped_order: batch ", batch_size, ", world size ",
             world_size);
  const std::vector<int64_t> perm = seeded_permutation(static_cast<int64_t>(lengths.size()), seed, stream);
  const size_t mega = static_cast<size_t>(batch_size * world_size);
  std::vector<int64_t> out;
  out.reserve(perm.size());
  for (size_t start = 0; start < perm.size(); start += mega) {
    std::vector<int64_t> megabatch(perm.begin() + static_cast<std::ptrdiff_t>(start),
                                   perm.begin() + static_cast<std::ptrdiff_t>(std::min(perm.size(), start + mega)));
    // sorted(megabatch, key=lengths, reverse=True): Python's sort is stable, and reverse keeps
    // the order of equal keys, so ties stay in permutation order.
    std::stable_sort(megabatch.begin(), megabatch.end(), [&](int64_t a, int64_t b) {
      return lengths[static_cast<size_t>(a)] > lengths[static_cast<size_t>(b)];
    });
    for (const auto& chunk : split_to_even_chunks(megabatch, lengths, world_size))
      out.insert(out.end(), chunk.begin(), chunk.end());
  }
  return out;
}

std::vector<int64_t> modality_grouped_order(const std::vector<int64_t>& lengths, int64_t batch_size,
                                            int64_t world_size, uint64_t seed, uint64_t stream) {
  std::vector<int64_t> mm_index, mm_length, lang_index, lang_length;
  for (size_t i = 0; i < lengths.size(); ++i) {
    VLMC_CHECK(lengths[i] != 0, "modality_grouped_order: sample ", i, " has length 0");
    if (lengths[i] > 0) {
      mm_index.push_back(static_cast<int64_t>(i));
      mm_length.push_back(lengths[i]);
    } else {
      lang_index.push_back(static_cast<int64_t>(i));
      lang_length.push_back(-lengths[i]);
    }
  }
  // One modality: LLaVA groups the lengths as given (negative ones included).
  if (mm_index.empty() || lang_index.empty())
    return length_grouped_order(lengths, batch_size, world_size, seed, stream);

  const std::vector<int64_t> mm =
      gather(mm_index, length_grouped_order(mm_length, batch_size, world_size, seed, sub_stream(stream, 0)));
  const std::vector<int64_t> lang =
      gather(lang_index, length_grouped_order(lang_length, batch_size, world_size, seed, sub_stream(stream, 1)));
  const size_t mega = static_cast<size_t>(batch_size * world_size);
  auto cut = [mega](const std::vector<int64_t>& order) {
    std::vector<std::vector<int64_t>> out;
    for (size_t start = 0; start < order.size(); start += mega)
      out.emplace_back(order.begin() + static_cast<std::ptrdiff_t>(start),
                       order.begin() + static_cast<std::ptrdiff_t>(std::min(order.size(), start + mega)));
    return out;
  };
  std::vector<std::vector<int64_t>> mm_mega = cut(mm), lang_mega = cut(lang);
  // LLaVA's additional_batch: the last megabatch of each modality (full or not), together.
  std::vector<int64_t> additional = mm_mega.back();
  additional.insert(additional.end(), lang_mega.back().begin(), lang_mega.back().end());
  mm_mega.pop_back();
  lang_mega.pop_back();
  std::vector<std::vector<int64_t>> megabatches = std::move(mm_mega);
  megabatches.insert(megabatches.end(), lang_mega.begin(), lang_mega.end());

  std::vector<int64_t> out;
  out.reserve(lengths.size());
  for (const int64_t m :
       seeded_permutation(static_cast<int64_t>(megabatches.size()), seed, sub_stream(stream, 2)))
    out.insert(out.end(), megabatches[static_cast<size_t>(m)].begin(), megabatches[static_cast<size_t>(m)].end());
  std::sort(additional.begin(), additional.end());  // sorted(additional_batch): by index
  out.insert(out.end(), additional.begin(), additional.end());
  return out;
}

std::vector<int64_t> process_share(int64_t n, int64_t batch, int64_t world_size, int64_t rank) {
  VLMC_CHECK(n >= 0 && batch >= 1 && world_size >= 1 && rank >= 0 && rank < world_size, "process_share: n ", n,
             ", batch ", batch, ", process ", rank, " of ", world_size);
  std::vector<int64_t> out;
  for (int64_t k = rank, start = rank * batch; start < n; k += world_size, start = k * batch)
    for (int64_t p = start; p < std::min(n, start + batch); ++p) out.push_back(p);
  return out;
}

}  // namespace vlmc::data
