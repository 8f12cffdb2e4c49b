#include "train/mosaic_models.h"

#include <cmath>

#include "core/error.h"
#include "core/ops.h"
#include "train/batches.h"

namespace vlmc::train {
namespace {

std::vector<std::vector<int64_t>> classes_of(const MosaicSet& set, const std::vector<int64_t>& rows) {
  std::vector<std::vector<int64_t>> out;
  for (int64_t r : rows) out.push_back(set.classes_of(r));
  return out;
}

}  // namespace

// Hidden state `select_layer` without its CLS token: [B, N, Dv].
Tensor patch_features(const std::vector<Tensor>& hidden, int64_t select_layer) {
  const int64_t count = static_cast<int64_t>(hidden.size());
  const int64_t layer = select_layer < 0 ? count + select_layer : select_layer;
  const Tensor& h = hidden.at(static_cast<size_t>(layer));  // [B, 1 + N, Dv]
  return h.narrow(1, 1, h.size(1) - 1);
}

std::vector<int64_t> row_range(int64_t begin, int64_t end) {
  std::vector<int64_t> out;
  for (int64_t i = begin; i < end; ++i) out.push_back(i);
  return out;
}

// The frozen encoder's features of every mosaic of a set, computed once: [M, N, Dv].
Tensor features_of(MosaicModels& models, const MosaicSet& set) {
  NoGradGuard no_grad;
  std::vector<Tensor> chunks;
  constexpr int64_t kChunk = 256;
  for (int64_t begin = 0; begin < set.size(); begin += kChunk) {
    const int64_t end = std::min(set.size(), begin + kChunk);
    chunks.push_back(models.llava->vision_features(encoder_pixels(set, row_range(begin, end)).to(models.device)));
  }
  return cat(chunks, 0);
}

// Stage 0's language-model inputs: the batch's <image> replaced by the true
// classes as text (slot_word_ids on a grid x grid layout).
SpliceResult text_slot_inputs(const MosaicModels& models, const Tokenizer& tokenizer, const MosaicSet& set,
                              const TextBatch& batch, int64_t grid) {
  const Tensor table = models.language->embed_tokens();  // [V, D]
  const Tensor words =
      slot_word_ids(tokenizer, classes_of(set, batch.images), set.grid, grid).to(table.device());  // [B, n, W]
  const Tensor slots = sum(embedding(table, words), {2});                                          // [B, n, D]
  return splice_image_embeddings(batch.input_ids, table, slots, batch.labels, batch.text_mask);
}

// ---- models ----------------------------------------------------------------------------

std::map<std::string, Tensor> MosaicModels::state_dict() const {
  std::map<std::string, Tensor> out = llava->state_dict();
  for (auto& [k, v] : quadrant_head->state_dict()) out["quadrant_head." + k] = v;
  return out;
}

void MosaicModels::to(Device to) {
  llava->to(to);  // the vision encoder, the connector and the language model
  quadrant_head->to(to);
  device = to;
}

void MosaicModels::load_state_dict(const std::map<std::string, Tensor>& state) {
  std::map<std::string, Tensor> llava_state, head_state;
  for (const auto& [k, v] : state) {
    if (k.rfind("quadrant_head.", 0) == 0) {
      head_state[k.substr(14)] = v;
    } else {
      llava_state[k] = v;
    }
  }
  llava->load_state_dict(llava_state);
  quadrant_head->load_state_dict(head_state);
}

MosaicModels build_models(const TrainConfig& c, const Tokenizer& tokenizer) {
  Generator gen(seeds::derive(c.seed, seeds::kWeights));
  MosaicModels m;
  m.vision = std::make_shared<nn::CLIPVisionModel>(c.vision_config(), gen);
  m.quadrant_head = std::make_shared<nn::Linear>(c.vision_hidden_size, kFashionMnistClasses, true, gen);
  m.language = std::make_shared<nn::LlamaForCausalLM>(c.language_config(tokenizer.vocab_size()), gen);
  // Stage 0's text batches mix captions and questions of different lengths:
  // the decoder's per-row work skips the padding (a third of the rows).
  m.language->model->pack_padding = true;
  nn::LlavaConfig lc;
  lc.projector_type = c.connector;
  lc.connector = c.connector_config();
  lc.select_layer = c.vision_select_layer;
  lc.keep_cls = false;
  lc.stage = 1;
  lc.splice.max_length = c.lm_max_position_embeddings;
  // The connector's draws: the same counters in the stages-1-2 seed's stream,
  // so that run.train_seed = run.seed gives the very weights gen would.
  Generator connector_gen(seeds::derive(c.stages12_seed(), seeds::kWeights));
  connector_gen.advance(gen.advance(0));
  m.llava = std::make_shared<nn::LlavaModel>(m.vision, m.language, lc, connector_gen);
  return m;
}

Tensor cell_logits(const nn::Linear& head, const Tensor& features, int64_t mosaic_grid) {
  const int64_t B = features.size(0), N = features.size(1), D = features.size(2), G = mosaic_grid;
  const int64_t g = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(N))));
  VLMC_CHECK(g * g == N && G >= 1 && g % G == 0, "cell_logits: features ", shape_str(features.shape()),
             " are not a square grid of patches that splits into ", G, "x", G, " cells");
  const Tensor grid = features.contiguous().reshape({B, g, g, D});                // channels last
  const Tensor cells = adaptive_avg_pool2d(grid, G, G).reshape({B * G * G, D});   // row-major: TL, TR, BL, BR for 2x2
  return linear(cells, head.weight, head.bias);                                  // [B * G * G, 10]
}

}  // namespace vlmc::train
