#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <optional>
#include <utility>

#include "core/error.h"
#include "core/ops.h"
#include "core/threads.h"
#include "core/io/atomic_file.h"
#include "train/batches.h"
#include "train/checkpoint.h"
#include "train/memory_plan.h"
#include "train/metrics_log.h"
#include "train/mosaic_models.h"
#include "train/plot.h"
#include "train/resume.h"
#include "train/run_lock.h"
#include "train/run_start.h"
#include "train/stage_loop.h"

namespace vlmc::train {
namespace fs = std::filesystem;
namespace {

// Philox streams of the run (batch_indices' `stream`), one per use, so that no
// two draws share numbers.
enum Stream : uint64_t { kStreamLanguage = 1, kStreamStage1 = 2, kStreamStage2 = 3 };

// Stage ranks: checkpoint names sort by them.
constexpr int kStageVision = 0, kStageLanguage = 1, kStage1 = 2, kStage2 = 3;

std::vector<optim::NamedTensor> named(const nn::Module& module, const std::string& prefix) {
  std::vector<optim::NamedTensor> out;
  for (auto& [name, tensor] : module.named_parameters()) out.push_back({prefix + name, tensor});
  return out;
}

// Part of every stage-0 cache key: bump it when what stage 0 learns changes
// in code (the text layout, the slot words, the encoder head), so that no run
// reuses a model made for other data.
constexpr int kStage0Format = 2;

// The two halves of stage 0, each cached on its own under run.cache_dir.
struct Stage0Part {
  const char* name;                    // "vision" or "language"
  std::vector<std::string> prefixes;   // its state_dict keys
  std::vector<std::string> settings;   // the config keys (or key prefixes) its result depends on
};

const Stage0Part kVisionPart{"vision", {"vision_encoder.", "quadrant_head."},
                             {"vision.", "stage0.vision.", "run.seed", "data.dir"}};
const Stage0Part kLanguagePart{"language", {"llm."},
                               {"language.", "stage0.language.", "run.seed", "data.", "vision.patch_size"}};

bool starts_with_any(const std::string& key, const std::vector<std::string>& prefixes) {
  for (const std::string& p : prefixes)
    if (key.rfind(p, 0) == 0) return true;
  return false;
}

// "stage0-vision-<FNV-1a of the relevant settings>": a run with the same ones reuses the cache.
std::string stage0_cache_name(const Stage0Part& part, const nlohmann::json& config) {
  nlohmann::json key;
  for (auto& [k, v] : config.items())
    if (starts_with_any(k, part.settings)) key[k] = v;
  // bf16 training learns other weights; f32 keeps the keys caches were made with.
  // The device does not count: CPU and CUDA are designed to differ only in the last bits, as
  // thread counts do (checked only as tests/cuda/test_cuda_trainer.cpp does: 20 f32 steps'
  // losses within 1e-4 relative, on an H200, 2026-12-04).
  const std::string precision = config.value("run.precision", "f32");
  if (precision != "f32") key["run.precision"] = precision;
  key["format"] = kStage0Format;
  const std::string text = key.dump();
  uint64_t h = 1469598103934665603ull;  // FNV-1a: stable across builds and machines
  for (unsigned char ch : text) h = (h ^ ch) * 1099511628211ull;
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(h));
  return std::string("stage0-") + part.name + "-" + hex;
}

void save_part(const MosaicModels& models, const Stage0Part& part, const std::string& root,
               const std::string& name, const nlohmann::json& config) {
  Checkpoint cache;
  for (auto& [k, v] : models.state_dict())
    if (starts_with_any(k, part.prefixes)) cache.model[k] = v;
  cache.state = {{"config", config}, {"part", part.name}};
  save_checkpoint(root, name, cache);
}

void load_part(MosaicModels& models, const Stage0Part& part, const std::string& dir) {
  std::map<std::string, Tensor> state = models.state_dict();
  const Checkpoint cached = load_checkpoint(dir);
  const std::string bad = nonfinite_in(cached);
  VLMC_CHECK(bad.empty(), "the stage-0 cache entry ", dir, ": ", bad,
             " holds a NaN or an infinity; delete the entry to train stage 0 again");
  for (auto& [k, v] : cached.model) {
    VLMC_CHECK(starts_with_any(k, part.prefixes) && state.count(k), dir, ": '", k,
               "' is not a parameter of the stage-0 ", part.name, " model");
    state[k] = v;
  }
  models.load_state_dict(state);
}


// This process's contiguous share of a global batch's rows.
std::vector<int64_t> shard(const std::vector<int64_t>& rows, int proc, int world) {
  const size_t per = rows.size() / static_cast<size_t>(world);
  return std::vector<int64_t>(rows.begin() + static_cast<std::ptrdiff_t>(per * proc),
                              rows.begin() + static_cast<std::ptrdiff_t>(per * (proc + 1)));
}

}  // namespace

// ---- the run ---------------------------------------------------------------------------

TrainResult run_training(const TrainConfig& c, const TrainOptions& options) {
  c.validate();
  // A data-parallel job: every process runs all of this in lockstep on its
  // share of each batch; process 0 alone writes files and prints.
  dist::ProcessGroup* group = options.group;
  const int world = group ? group->world_size() : 1;
  const int proc = group ? group->rank() : 0;
  const bool lead = proc == 0;
  for (const auto& [key, stage] : {std::pair<const char*, const StageSettings*>{"stage0.vision", &c.stage0_vision},
                                   {"stage0.language", &c.stage0_language},
                                   {"stage1", &c.stage1},
                                   {"stage2", &c.stage2}})
    VLMC_CHECK(stage->batch_size % world == 0, key, ".batch_size ", stage->batch_size, " does not split over the ",
               world, " processes of this job (each takes batch_size / ", world, " samples)");
  // A stage whose estimated peak exceeds the memory left is refused here,
  // before anything is allocated (train/memory_plan.h; the CPU only).
  if (c.device.rfind("cuda", 0) != 0)
    check_plan_fits(plan_training(c, world), available_memory_bytes(), available_memory_source());

  // Where a previous process stopped (train/run_start.h).
  const std::map<std::string, int> stage_indices = {{"stage0-vision", kStageVision}, {"stage0-language", kStageLanguage},
                                                  {"stage1", kStage1}, {"stage2", kStage2}};
  RunStart start;
  start_run(c.runs_dir, c.name, options, stage_indices, start);
  const std::string& run_dir = start.run_dir;
  const std::string& metrics_path = start.metrics_path;

  const Tokenizer tokenizer;
  // Built on the CPU from the seed (the same initial weights on every device
  // and every process), then moved.
  MosaicModels models = build_models(c, tokenizer);
  models.to(dist::rank_device(c.device, dist::launch_info()));
  TrainResult result;
  auto timed = [&](const std::string& stage, const StageSummary& s) {
    result.stages[stage] = StageTiming{s.seconds, s.tokens_per_s, s.final_loss, s.peak_device_bytes};
  };

  int resume_stage = -1;
  std::optional<StageResume> resume_point;
  if (start.resume) {
    ResumePoint& point = *start.resume;
    try {
      models.load_state_dict(point.checkpoint.model);
    } catch (const std::exception& e) {
      throw Error(str("--resume: ", point.dir, ": ", e.what()));
    }
    resume_stage = point.stage_index;
    resume_point = StageResume{point.step, std::move(point.checkpoint.optimizer), point.skipped_steps};
  }
  std::optional<MetricsLog>& metrics = start.metrics;

  RunFiles files;
  files.run_dir = run_dir;
  files.checkpoint_root = start.checkpoint_root;
  files.metrics = metrics ? &*metrics : nullptr;
  files.group = group;
  files.zero_stage = static_cast<int>(c.zero_stage);
  files.model_state = [&] { return models.state_dict(); };
  files.config = options.config_json;
  files.checkpoint_every = c.checkpoint_every;
  files.keep_checkpoints = c.keep_checkpoints;
  files.log_every_s = c.log_every_s;
  files.skip_nonfinite = c.skip_nonfinite;
  // The resume point applies to the stage it was taken in; later stages start afresh.
  auto resume_for = [&](int stage_index) -> std::optional<StageResume> {
    if (resume_stage == stage_index) return resume_point;
    return std::nullopt;
  };

  // Both splits are read before anything trains: a corrupt test split must
  // stop the run now, not at the evaluation after every stage.
  load_fashion_mnist(Split::test, c.data_dir);
  const FashionMnist train_split = load_fashion_mnist(Split::train, c.data_dir);
  Generator pool_gen(seeds::derive(c.seed, seeds::kPool));
  MosaicSet pool = make_mosaics(train_split, c.train_mosaics, pool_gen);
  Generator pool_questions(seeds::derive(c.seed, seeds::kPoolQuestions));
  const std::vector<Sample> captions = caption_samples(pool);
  const std::vector<Sample> questions = instruction_samples(pool, c.questions_per_image, pool_questions);
  const int64_t grid = patch_grid_side(c);

  // What every stage shares: its name, its order in the run, its settings, the precision.
  auto stage_spec = [&](const char* name, int stage_index, const StageSettings& settings) {
    StageSpec spec;
    spec.name = name;
    spec.index = stage_index;
    spec.settings = settings;
    spec.bf16 = c.precision == "bf16";
    return spec;
  };

  // ---- stage 0: each half is loaded from the cache, resumed, or run --------------------
  // A half runs when the resume point is inside it, or when the run has not
  // reached it and the cache has no copy.
  auto stage0 = [&](const Stage0Part& part, int stage_index, const std::function<void()>& run) {
    if (resume_stage > stage_index) return;  // done before the resume point: in the checkpoint
    const std::string name = stage0_cache_name(part, options.config_json);
    const std::string dir = (fs::path(c.cache_dir) / name).string();
    // The cache entry is written by one run at a time; another run with the
    // same stage-0 settings is refused until it is there.
    std::optional<RunLock> cache_lock;
    if (lead) {
      fs::create_directories(c.cache_dir);
      cache_lock.emplace(dir + ".lock", "the stage-0 cache entry " + dir);
    }
    if (resume_stage < stage_index && is_checkpoint(dir)) {
      load_part(models, part, dir);
      if (lead) std::fprintf(stderr, "stage 0 %s: using the cached model in %s\n", part.name, dir.c_str());
      return;
    }
    run();
    if (lead) save_part(models, part, c.cache_dir, name, options.config_json);
  };
  stage0(kVisionPart, kStageVision, [&] {
    models.vision->set_requires_grad(true);
    StageSpec spec = stage_spec("stage0-vision", kStageVision, c.stage0_vision);
    spec.params = named(*models.vision, "vision_encoder.");
    for (auto& p : named(*models.quadrant_head, "quadrant_head.")) spec.params.push_back(p);
    spec.step = [&](int64_t step) {
      // A fresh batch of mosaics per step, a pure function of the step.
      Generator gen(seeds::derive(c.seed, seeds::kVisionMosaics));
      gen.advance(static_cast<uint64_t>(step * c.stage0_vision.batch_size));
      const MosaicSet batch = make_mosaics(train_split, c.stage0_vision.batch_size, gen);
      const int64_t per = batch.size() / world, first = per * proc;  // this process's mosaics
      const Tensor pixels = encoder_pixels(batch, row_range(first, first + per)).to(models.device);
      const Tensor features = patch_features(models.vision->hidden_states(pixels), c.vision_select_layer);
      const Tensor logits = quadrant_logits(*models.quadrant_head, features);
      const Tensor classes = batch.classes.narrow(0, first, per).reshape({per * 4}).to(models.device);
      return StepLoss{cross_entropy(logits, classes), per * (grid * grid + 1), per * 4};
    };
    timed("stage0-vision", run_stage(spec, files, resume_for(kStageVision)));
    models.vision->set_requires_grad(false);
  });
  stage0(kLanguagePart, kStageLanguage, [&] {
    // Text in the image slots: sums of place and item word embeddings, on a
    // grid of the encoder's size or of half its side (pooling connectors).
    models.language->set_requires_grad(true);
    std::vector<Sample> texts = captions;
    texts.insert(texts.end(), questions.begin(), questions.end());
    Generator extra_gen(seeds::derive(c.seed, seeds::kExtraQuestions));
    for (QuestionKind kind : {QuestionKind::count, QuestionKind::where}) {
      const std::vector<Sample> extra = instruction_samples(pool, c.stage0_extra_questions, extra_gen, kind);
      texts.insert(texts.end(), extra.begin(), extra.end());
    }
    StageSpec spec = stage_spec("stage0-language", kStageLanguage, c.stage0_language);
    spec.params = named(*models.language, "llm.");
    spec.step = [&](int64_t step) {
      const std::vector<int64_t> rows =
          shard(batch_indices(static_cast<uint64_t>(c.seed), kStreamLanguage, step, c.stage0_language.batch_size,
                              static_cast<int64_t>(texts.size())),
                proc, world);
      const TextBatch batch = make_text_batch(tokenizer, texts, rows);
      // Every other step on the pooled grid, when it has whole quadrants.
      const int64_t slot_grid = step % 2 == 1 && grid % 4 == 0 ? grid / 2 : grid;
      const SpliceResult in = text_slot_inputs(models, tokenizer, pool, batch, slot_grid);
      const Tensor logits = models.language->forward(in.inputs_embeds, in.attention_mask, in.position_ids);
      return StepLoss{nn::causal_lm_loss(logits, in.labels), in.tokens, in.targets};
    };
    timed("stage0-language", run_stage(spec, files, resume_for(kStageLanguage)));
    models.language->set_requires_grad(false);
  });

  // ---- stages 1 and 2 on cached features -------------------------------------------------
  const Tensor pool_features = features_of(models, pool);  // [M, N, Dv]
  pool.images = Tensor();                                  // not needed any more
  auto llava_step = [&](const std::vector<Sample>& samples, uint64_t stream, const StageSettings& s) {
    return [&, stream, s](int64_t step) {
      const std::vector<int64_t> rows = shard(batch_indices(static_cast<uint64_t>(c.seed), stream, step,
                                                            s.batch_size, static_cast<int64_t>(samples.size())),
                                              proc, world);
      const TextBatch batch = make_text_batch(tokenizer, samples, rows);
      const Tensor index =
          Tensor::from_vector(batch.images, {static_cast<int64_t>(batch.images.size())}).to(models.device);
      const SpliceResult in = models.llava->prepare_inputs_from_features(
          batch.input_ids, index_select(pool_features, 0, index), batch.labels, batch.text_mask);
      const Tensor logits = models.language->forward(in.inputs_embeds, in.attention_mask, in.position_ids);
      return StepLoss{nn::causal_lm_loss(logits, in.labels), in.tokens, in.targets};
    };
  };
  models.llava->train();
  if (resume_stage <= kStage1) {
    models.llava->set_stage(1);
    StageSpec spec = stage_spec("stage1", kStage1, c.stage1);
    spec.params = named(*models.llava->connector, "connector.");
    spec.step = llava_step(captions, kStreamStage1, c.stage1);
    timed("stage1", run_stage(spec, files, resume_for(kStage1)));
  }
  {
    models.llava->set_stage(2);
    StageSpec spec = stage_spec("stage2", kStage2, c.stage2);
    spec.params = named(*models.llava->connector, "connector.");
    for (auto& p : named(*models.language, "llm.")) spec.params.push_back(p);
    spec.lr_prefix = "connector.";
    spec.prefix_lr = c.stage2_connector_lr;
    spec.step = llava_step(questions, kStreamStage2, c.stage2);
    timed("stage2", run_stage(spec, files, resume_for(kStage2)));
  }
  models.llava->set_stage(1);

  // ---- evaluation ------------------------------------------------------------------------
  result.connector_parameters = models.llava->connector->num_parameters();
  {
    NoGradGuard no_grad;
    models.llava->eval();
    result.visual_tokens = models.llava->connector->forward(pool_features.narrow(0, 0, 1)).size(1);
    models.llava->train();
  }
  const EvalReport report = evaluate(models, c, tokenizer);
  result.eval = report;
  nlohmann::json record = report.to_json();
  record["stage"] = "eval";
  if (!lead) return result;  // every process evaluated the same model; process 0 writes
  metrics->write(record);
  // results.json also says how the run ran: where, in what precision, how fast.
  record["device"] = c.device;
  record["precision"] = c.precision;
  record["processes"] = world;
  for (const auto& [stage, t] : result.stages)
    record["stages"][stage] = {{"seconds", t.seconds}, {"tokens_per_s", t.tokens_per_s},
                               {"final_loss", t.final_loss}, {"peak_device_bytes", t.peak_device_bytes}};
  io::write_file_atomically((fs::path(run_dir) / "results.json").string(), record.dump(2) + "\n", "train");
  plot_loss_history(metrics_path, (fs::path(run_dir) / "loss.png").string());
  return result;
}

}  // namespace vlmc::train
