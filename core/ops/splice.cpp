// splice_image_embeddings: LLaVA's prepare_inputs_labels_for_multimodal
// (kernels/splice.h). The host reads the token ids and builds the plan; one
// kernel launch then fills inputs_embeds; the backward gathers the visual
// tokens' gradient and sums the table's per token id.
//
// A frozen bf16 / f16 table (a pretrained LLM kept in its file's dtype) with
// f32 visual tokens gives f32 embeddings: the rows the prompt uses are looked
// up once (embedding widens them to f32) into a small f32 table, and the
// plan's table rows are renumbered into it; the copy is then the f32 one.
#include <algorithm>
#include <vector>

#include "core/dispatch.h"
#include "core/ops.h"
#include "kernels/splice.h"

namespace vlmc {
namespace {

constexpr const char* kOp = "splice_image_embeddings";

Tensor to_device(const std::vector<int64_t>& values, const Shape& shape, Device device) {
  const Tensor host = Tensor::from_vector(values, shape);
  return device.is_cpu() ? host : host.to(device);
}

// An optional [B, T] index tensor read to the host (empty when undefined).
std::vector<int64_t> host_values(const Tensor& t) {
  return t.defined() ? t.to_vector<int64_t>() : std::vector<int64_t>();
}

void check_index_tensor(const char* what, const Tensor& t, const Tensor& input_ids, const Tensor& table) {
  VLMC_CHECK(t.shape() == input_ids.shape(), kOp, ": ", what, " ", shape_str(t.shape()), " must match input_ids ",
             shape_str(input_ids.shape()));
  VLMC_CHECK(t.device().is_cpu() || t.device() == table.device(), kOp, ": ", what, " on ", t.device().str(),
             " but embed_table on ", table.device().str());
}

// What the backward needs, on the table's device: the visual rows' output
// rows, and the text rows grouped by token id.
struct BackwardPlan {
  Tensor visual_dest;                               // i64 [num_images * Nv]
  Tensor table_ids, group_offsets, group_rows;      // i64
  int64_t groups = 0;
};

}  // namespace

SpliceResult splice_image_embeddings(const Tensor& input_ids, const Tensor& embed_table, const Tensor& visual_tokens,
                                     const Tensor& labels, const Tensor& text_mask, const SpliceOptions& o) {
  check_dtype(kOp, "input_ids", input_ids, DType::i64);
  VLMC_CHECK(input_ids.dim() == 2, kOp, ": input_ids ", shape_str(input_ids.shape()), " must be [B, T]");
  VLMC_CHECK(embed_table.defined(), kOp, ": embed_table is undefined");
  const bool lowp_table = embed_table.dtype() == DType::bf16 || embed_table.dtype() == DType::f16;
  if (!lowp_table) check_float(kOp, "embed_table", embed_table);
  VLMC_CHECK(embed_table.dim() == 2, kOp, ": embed_table ", shape_str(embed_table.shape()), " must be [V, D]");
  VLMC_CHECK(visual_tokens.defined() && visual_tokens.dim() == 3, kOp, ": visual_tokens ",
             visual_tokens.defined() ? shape_str(visual_tokens.shape()) : std::string("(undefined)"),
             " must be [num_images, Nv, D]");
  if (lowp_table) {
    VLMC_CHECK(!embed_table.requires_grad(), kOp, ": embed_table ", describe(embed_table), " is ",
               dtype_name(embed_table.dtype()),
               " and requires grad: trained parameters are f32 masters (freeze it, or convert it to f32)");
    // No image: the caller's empty visual tensor may carry the table's dtype.
    VLMC_CHECK(visual_tokens.dtype() == DType::f32 || visual_tokens.numel() == 0, kOp, ": visual_tokens ",
               describe(visual_tokens), " must be f32 with a ", dtype_name(embed_table.dtype()),
               " embed_table (the embeddings are f32)");
  } else {
    check_same_dtype(kOp, {embed_table, visual_tokens});
  }
  check_same_device(kOp, {embed_table, visual_tokens});
  VLMC_CHECK(visual_tokens.size(2) == embed_table.size(1), kOp, ": visual_tokens ", shape_str(visual_tokens.shape()),
             " and embed_table ", shape_str(embed_table.shape()), " differ in width (", visual_tokens.size(2), " vs ",
             embed_table.size(1), ")");
  check_index_tensor("input_ids", input_ids, input_ids, embed_table);
  if (labels.defined()) {
    check_dtype(kOp, "labels", labels, DType::i64);
    check_index_tensor("labels", labels, input_ids, embed_table);
  }
  if (text_mask.defined()) {
    VLMC_CHECK(text_mask.dtype() == DType::u8 || text_mask.dtype() == DType::i64, kOp, ": text_mask ",
               describe(text_mask), " must be u8 or i64");
    check_index_tensor("text_mask", text_mask, input_ids, embed_table);
  }
  VLMC_CHECK(o.max_length >= 0, kOp, ": max_length ", o.max_length, " must be >= 0 (0 = no cap)");

  const int64_t batch = input_ids.size(0), text_len = input_ids.size(1);
  const int64_t vocab = embed_table.size(0), width = embed_table.size(1);
  const int64_t num_images = visual_tokens.size(0), image_tokens = visual_tokens.size(1);
  const std::vector<int64_t> ids = input_ids.to_vector<int64_t>();
  const std::vector<int64_t> given_labels = host_values(labels);
  const std::vector<int64_t> mask = host_values(text_mask);
  std::vector<uint8_t> keep(mask.size());
  for (size_t i = 0; i < mask.size(); ++i) keep[i] = mask[i] != 0;

  kernels::SpliceRequest request;
  request.input_ids = ids.data();
  request.labels = labels.defined() ? given_labels.data() : nullptr;
  request.keep = text_mask.defined() ? keep.data() : nullptr;
  request.batch = batch;
  request.text_len = text_len;
  request.vocab = vocab;
  request.num_images = num_images;
  request.image_tokens = image_tokens;
  request.image_token_id = o.image_token_id;
  request.prepend_image_if_missing = o.prepend_image_if_missing;
  request.max_length = o.max_length;
  kernels::SplicePlan plan;
  const std::string problem = kernels::plan_splice(plan, request);
  VLMC_CHECK(problem.empty(), kOp, ": ", problem, " (input_ids ", shape_str(input_ids.shape()), ", visual_tokens ",
             shape_str(visual_tokens.shape()), ")");

  // Outputs: the embeddings from one kernel, the rest from the plan.
  const Device device = embed_table.device();
  const int64_t length = plan.length, rows = batch * length;
  Tensor table = embed_table.contiguous(), visual = visual_tokens.contiguous();
  int64_t table_rows = vocab;
  if (lowp_table) {
    // The ids the rows use, ascending; row_source renumbered into them (and
    // the visual rows' vocab + j into used + j).
    std::vector<int64_t> used;
    for (int64_t s : plan.row_source)
      if (s >= 0 && s < vocab) used.push_back(s);
    std::sort(used.begin(), used.end());
    used.erase(std::unique(used.begin(), used.end()), used.end());
    const int64_t count = static_cast<int64_t>(used.size());
    for (int64_t& s : plan.row_source) {
      if (s < 0) continue;
      s = s < vocab ? std::lower_bound(used.begin(), used.end(), s) - used.begin() : count + (s - vocab);
    }
    NoGradGuard no_grad;
    table = embedding(embed_table, to_device(used, {count}, device));  // f32 [count, D]
    table_rows = count;
    if (visual.dtype() != DType::f32) visual = Tensor::empty(visual.shape(), DType::f32, device);  // no rows
  }
  const Tensor row_source = to_device(plan.row_source, {rows}, device);
  SpliceResult result;
  result.inputs_embeds = Tensor::empty({batch, length, width}, table.dtype(), device);
  const int64_t row_bytes = width * static_cast<int64_t>(dtype_size(table.dtype()));
  if (device.is_cuda()) {
    VLMC_CUDA_DISPATCH(kernels::cuda::splice_rows(result.inputs_embeds.data_ptr(), table.data_ptr(), visual.data_ptr(),
                                                  row_source.data<int64_t>(), rows, table_rows, row_bytes,
                                                  stream_of(table)));
  } else {
    kernels::cpu::splice_rows(result.inputs_embeds.data_ptr(), table.data_ptr(), visual.data_ptr(),
                              row_source.data<int64_t>(), rows, table_rows, row_bytes);
  }
  std::vector<int64_t> attention(static_cast<size_t>(rows), 0), positions(static_cast<size_t>(rows), 0);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t p = 0; p < plan.lengths[static_cast<size_t>(b)]; ++p) {
      attention[static_cast<size_t>(b * length + p)] = 1;
      positions[static_cast<size_t>(b * length + p)] = p;
    }
  result.attention_mask = to_device(attention, {batch, length}, device);
  result.position_ids = to_device(positions, {batch, length}, device);
  result.labels = to_device(plan.labels, {batch, length}, device);
  result.truncated = plan.truncated;
  for (int64_t len : plan.lengths) result.tokens += len;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t p = 1; p < length; ++p) result.targets += plan.labels[static_cast<size_t>(b * length + p)] != -100;

  if (!any_requires_grad({embed_table, visual_tokens})) return result;
  BackwardPlan back;
  if (visual_tokens.requires_grad())
    back.visual_dest = to_device(plan.visual_dest, {num_images * image_tokens}, device);
  if (embed_table.requires_grad()) {
    back.groups = static_cast<int64_t>(plan.table_ids.size());
    back.table_ids = to_device(plan.table_ids, {back.groups}, device);
    back.group_offsets = to_device(plan.group_offsets, {static_cast<int64_t>(plan.group_offsets.size())}, device);
    back.group_rows = to_device(plan.group_rows, {static_cast<int64_t>(plan.group_rows.size())}, device);
  }
  const Shape table_shape = embed_table.shape(), visual_shape = visual_tokens.shape();
  record(result.inputs_embeds, kOp, {embed_table, visual_tokens},
         [back, table_shape, visual_shape, row_bytes](const Tensor& grad, const GradMask& needs) {
           const Tensor g = grad.contiguous();
           const int64_t vocab = table_shape[0], width = table_shape[1];
           std::vector<Tensor> grads(2);
           if (needs[0]) {
             Tensor dtable = Tensor::empty(table_shape, g.dtype(), g.device());
             dispatch_float("splice_image_embeddings backward", g.dtype(), [&](auto zero) {
               using T = decltype(zero);
               if (g.device().is_cuda()) {
                 VLMC_CUDA_DISPATCH(kernels::cuda::splice_table_backward<T>(
                     dtable.data<T>(), g.data<T>(), back.table_ids.data<int64_t>(),
                     back.group_offsets.data<int64_t>(), back.group_rows.data<int64_t>(), back.groups, vocab, width,
                     stream_of(g)));
               } else {
                 kernels::cpu::splice_table_backward<T>(dtable.data<T>(), g.data<T>(), back.table_ids.data<int64_t>(),
                                                        back.group_offsets.data<int64_t>(),
                                                        back.group_rows.data<int64_t>(), back.groups, vocab, width);
               }
             });
             grads[0] = dtable;
           }
           if (needs[1]) {
             Tensor dvisual = Tensor::empty(visual_shape, g.dtype(), g.device());
             const int64_t visual_rows = visual_shape[0] * visual_shape[1];
             if (g.device().is_cuda()) {
               VLMC_CUDA_DISPATCH(kernels::cuda::rows_from_map(dvisual.data_ptr(), g.data_ptr(),
                                                               back.visual_dest.data<int64_t>(), visual_rows,
                                                               row_bytes, stream_of(g)));
             } else {
               kernels::cpu::rows_from_map(dvisual.data_ptr(), g.data_ptr(), back.visual_dest.data<int64_t>(),
                                           visual_rows, row_bytes);
             }
             grads[1] = dvisual;
           }
           return grads;
         });
  return result;
}

}  // namespace vlmc
