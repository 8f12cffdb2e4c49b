// The image-token splice of LLaVA's prepare_inputs_labels_for_multimodal:
// text embeddings with each <image> placeholder replaced by that image's Nv
// visual tokens, samples right-padded to the longest.
//
// The host builds a SplicePlan from the (small) token ids: where every output
// row comes from, the labels, and the reverse maps the backward needs. The
// kernels then only move rows:
//   splice_rows      out [rows, D] = table row, visual row or zeros, per
//                    row_source (a copy; any dtype: rows are bytes)
//   rows_from_map    dvisual [visual_rows, D] = the gradient row each visual
//                    row went to, or zeros (a gather: no accumulation)
//   splice_table_backward  dtable [vocab, D]: each token id's row is the sum
//                    of the gradient rows of its text positions, in position
//                    order (grouped by the host's sort: deterministic, no
//                    atomics); rows of ids that do not occur are zero.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/cuda_stream.h"

namespace vlmc::kernels {

inline constexpr int64_t kIgnoreLabel = -100;

// Output [batch, length]; row r of the output is sample r / length, slot r % length.
struct SplicePlan {
  int64_t batch = 0, length = 0;
  int64_t truncated = 0;            // tokens cut by max_length, over the batch
  std::vector<int64_t> lengths;     // [batch] real tokens per sample (<= length)
  // [batch * length]: a table row (< vocab), vocab + a visual row (image i,
  // token j is visual row i * Nv + j), or -1 for padding.
  std::vector<int64_t> row_source;
  std::vector<int64_t> labels;      // [batch * length]
  std::vector<int64_t> visual_dest; // [num_images * Nv] the output row of each visual row, -1 if cut
  // Text rows grouped by token id, for the table gradient: ids ascending,
  // group g covers group_rows[group_offsets[g] .. group_offsets[g + 1]), the
  // output rows of id table_ids[g] in ascending order.
  std::vector<int64_t> table_ids, group_offsets, group_rows;
};

struct SpliceRequest {
  const int64_t* input_ids = nullptr;  // [batch, text_len]
  const int64_t* labels = nullptr;     // [batch, text_len] or null (every label is kIgnoreLabel)
  const uint8_t* keep = nullptr;       // [batch, text_len] nonzero = real token, or null (all real)
  int64_t batch = 0, text_len = 0;
  int64_t vocab = 0;                   // the embedding table's rows
  int64_t num_images = 0, image_tokens = 0;
  int64_t image_token_id = -200;
  bool prepend_image_if_missing = false;
  int64_t max_length = 0;              // 0: no cap
};

// Fills plan, or returns what is wrong with the request (then plan is
// unspecified): an id outside [0, vocab) that is not the image id, at a kept
// position (named by its [sample, position]); or a number of image slots that
// differs from num_images. Host code, shared by both devices.
std::string plan_splice(SplicePlan& plan, const SpliceRequest& request);

namespace cpu {
// out [rows, row_bytes]; table [vocab, row_bytes]; visual [*, row_bytes].
void splice_rows(void* out, const void* table, const void* visual, const int64_t* row_source,
                 int64_t rows, int64_t vocab, int64_t row_bytes);
// dst [rows, row_bytes]: row r = src row map[r], or zeros where map[r] < 0.
void rows_from_map(void* dst, const void* src, const int64_t* map, int64_t rows, int64_t row_bytes);
// dtable [vocab, d] (overwritten) from grad [*, d] and the plan's grouping.
template <typename T>
void splice_table_backward(T* dtable, const T* grad, const int64_t* table_ids, const int64_t* group_offsets,
                           const int64_t* group_rows, int64_t groups, int64_t vocab, int64_t d);
}  // namespace cpu

namespace cuda {
void splice_rows(void* out, const void* table, const void* visual, const int64_t* row_source,
                 int64_t rows, int64_t vocab, int64_t row_bytes, cudaStream_t stream);
void rows_from_map(void* dst, const void* src, const int64_t* map, int64_t rows, int64_t row_bytes,
                   cudaStream_t stream);
template <typename T>
void splice_table_backward(T* dtable, const T* grad, const int64_t* table_ids, const int64_t* group_offsets,
                           const int64_t* group_rows, int64_t groups, int64_t vocab, int64_t d,
                           cudaStream_t stream);
}  // namespace cuda

}  // namespace vlmc::kernels
