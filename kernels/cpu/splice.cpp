// The splice plan (host code for both devices) and the CPU splice kernels
// (see kernels/splice.h).
#include "kernels/splice.h"

#include <algorithm>
#include <cstring>
#include <sstream>
#include <utility>

namespace vlmc::kernels {
namespace {
constexpr int64_t kParallelGrain = 1 << 15;  // bytes moved
}  // namespace

std::string plan_splice(SplicePlan& plan, const SpliceRequest& q) {
  const auto kept = [&](int64_t i) { return q.keep == nullptr || q.keep[i] != 0; };

  // Pass 1: validate the ids and count the image slots. Padding (keep = 0) is
  // dropped before anything else, as LLaVA does, so its ids are not looked at.
  int64_t placeholders = 0, prepended = 0;
  for (int64_t b = 0; b < q.batch; ++b) {
    int64_t in_sample = 0;
    for (int64_t t = 0; t < q.text_len; ++t) {
      const int64_t i = b * q.text_len + t;
      if (!kept(i)) continue;
      const int64_t id = q.input_ids[i];
      if (id == q.image_token_id) {
        ++in_sample;
      } else if (id < 0 || id >= q.vocab) {
        std::ostringstream os;
        os << "input_ids[" << b << ", " << t << "] = " << id << " is neither a row of the embedding table [0, "
           << q.vocab << ") nor the image token id " << q.image_token_id;
        return os.str();
      }
    }
    placeholders += in_sample;
    if (in_sample == 0 && q.prepend_image_if_missing) ++prepended;
  }
  if (placeholders + prepended != q.num_images) {
    std::ostringstream os;
    os << "input_ids hold " << placeholders + prepended << " image slots (" << placeholders
       << " placeholders with id " << q.image_token_id;
    if (q.prepend_image_if_missing) os << " + " << prepended << " text-only samples given a prepended image";
    os << ") but visual_tokens holds " << q.num_images << " image(s)";
    return os.str();
  }

  // Pass 2: each sample's sequence of (source, label), images in order across
  // the batch, then the cap.
  std::vector<std::vector<std::pair<int64_t, int64_t>>> samples(static_cast<size_t>(q.batch));
  int64_t image = 0;
  const auto add_image = [&](std::vector<std::pair<int64_t, int64_t>>& seq) {
    for (int64_t j = 0; j < q.image_tokens; ++j) seq.emplace_back(q.vocab + image * q.image_tokens + j, kIgnoreLabel);
    ++image;
  };
  plan.batch = q.batch;
  plan.truncated = 0;
  plan.lengths.assign(static_cast<size_t>(q.batch), 0);
  int64_t longest = 0;
  for (int64_t b = 0; b < q.batch; ++b) {
    auto& seq = samples[static_cast<size_t>(b)];
    bool has_placeholder = false;
    for (int64_t t = 0; t < q.text_len; ++t) {
      const int64_t i = b * q.text_len + t;
      if (kept(i) && q.input_ids[i] == q.image_token_id) has_placeholder = true;
    }
    if (!has_placeholder && q.prepend_image_if_missing) add_image(seq);
    for (int64_t t = 0; t < q.text_len; ++t) {
      const int64_t i = b * q.text_len + t;
      if (!kept(i)) continue;
      if (q.input_ids[i] == q.image_token_id) {
        add_image(seq);
      } else {
        seq.emplace_back(q.input_ids[i], q.labels != nullptr ? q.labels[i] : kIgnoreLabel);
      }
    }
    const int64_t full = static_cast<int64_t>(seq.size());
    const int64_t len = q.max_length > 0 ? std::min(full, q.max_length) : full;
    plan.truncated += full - len;
    plan.lengths[static_cast<size_t>(b)] = len;
    longest = std::max(longest, len);
  }
  plan.length = longest;

  // The output rows, and the reverse maps for the backward.
  const size_t rows = static_cast<size_t>(q.batch * longest);
  plan.row_source.assign(rows, -1);
  plan.labels.assign(rows, kIgnoreLabel);
  plan.visual_dest.assign(static_cast<size_t>(q.num_images * q.image_tokens), -1);
  std::vector<std::pair<int64_t, int64_t>> text;  // (token id, output row)
  for (int64_t b = 0; b < q.batch; ++b) {
    const auto& seq = samples[static_cast<size_t>(b)];
    for (int64_t p = 0; p < plan.lengths[static_cast<size_t>(b)]; ++p) {
      const int64_t row = b * longest + p;
      const auto [source, label] = seq[static_cast<size_t>(p)];
      plan.row_source[static_cast<size_t>(row)] = source;
      plan.labels[static_cast<size_t>(row)] = label;
      if (source >= q.vocab) {
        plan.visual_dest[static_cast<size_t>(source - q.vocab)] = row;
      } else {
        text.emplace_back(source, row);
      }
    }
  }
  std::sort(text.begin(), text.end());
  plan.table_ids.clear();
  plan.group_offsets.assign(1, 0);
  plan.group_rows.clear();
  for (size_t i = 0; i < text.size(); ++i) {
    if (i == 0 || text[i].first != text[i - 1].first) {
      if (i > 0) plan.group_offsets.push_back(static_cast<int64_t>(i));
      plan.table_ids.push_back(text[i].first);
    }
    plan.group_rows.push_back(text[i].second);
  }
  if (!text.empty()) plan.group_offsets.push_back(static_cast<int64_t>(text.size()));
  return "";
}

namespace cpu {

void splice_rows(void* out, const void* table, const void* visual, const int64_t* row_source,
                 int64_t rows, int64_t vocab, int64_t row_bytes) {
  auto* dst = static_cast<unsigned char*>(out);
  const auto* tab = static_cast<const unsigned char*>(table);
  const auto* vis = static_cast<const unsigned char*>(visual);
#pragma omp parallel for schedule(static) if (rows * row_bytes > kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t s = row_source[r];
    unsigned char* d = dst + r * row_bytes;
    if (s < 0) {
      std::memset(d, 0, static_cast<size_t>(row_bytes));
    } else {
      const unsigned char* src = s < vocab ? tab + s * row_bytes : vis + (s - vocab) * row_bytes;
      std::memcpy(d, src, static_cast<size_t>(row_bytes));
    }
  }
}

void rows_from_map(void* dst, const void* src, const int64_t* map, int64_t rows, int64_t row_bytes) {
  auto* d = static_cast<unsigned char*>(dst);
  const auto* s = static_cast<const unsigned char*>(src);
#pragma omp parallel for schedule(static) if (rows * row_bytes > kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    if (map[r] < 0) {
      std::memset(d + r * row_bytes, 0, static_cast<size_t>(row_bytes));
    } else {
      std::memcpy(d + r * row_bytes, s + map[r] * row_bytes, static_cast<size_t>(row_bytes));
    }
  }
}

template <typename T>
void splice_table_backward(T* dtable, const T* grad, const int64_t* table_ids, const int64_t* group_offsets,
                           const int64_t* group_rows, int64_t groups, int64_t vocab, int64_t d) {
  std::memset(dtable, 0, static_cast<size_t>(vocab * d) * sizeof(T));
  // Groups own distinct table rows; each sums its gradient rows in position
  // order, the same order as the CUDA kernel.
#pragma omp parallel for schedule(dynamic, 4) if (groups * d > kParallelGrain)
  for (int64_t g = 0; g < groups; ++g) {
    T* dst = dtable + table_ids[g] * d;
    for (int64_t p = group_offsets[g]; p < group_offsets[g + 1]; ++p) {
      const T* src = grad + group_rows[p] * d;
      for (int64_t j = 0; j < d; ++j) dst[j] += src[j];
    }
  }
}

template void splice_table_backward<float>(float*, const float*, const int64_t*, const int64_t*, const int64_t*,
                                           int64_t, int64_t, int64_t);
template void splice_table_backward<double>(double*, const double*, const int64_t*, const int64_t*,
                                            const int64_t*, int64_t, int64_t, int64_t);

}  // namespace cpu
}  // namespace vlmc::kernels
