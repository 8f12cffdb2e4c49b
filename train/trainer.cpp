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

// Each stage's place in the run: checkpoint names sort by it.
constexpr int kStageVision = 0, kStageLanguage = 1, kStage1 = 2, kStage2 = 3;

std::vector<optim::NamedTensor> named(const nn::Module& module, const std::string& prefix) {
  std::vector<optim::NamedTensor> out;
  for (auto& [name, tensor] : module.named_parameters()) out.push_back({prefix + name, tensor});
  return out;
}

// Part of every stage-0 cache key: bump it when what stage 0 learns changes
// in code (the text layout, the slot words, the encoder head), so that no run
// reuses a model made for other data.
constexpr int kStage0Format = 3;  // 3: the train split's last data.validation_items are held out

// The two halves of stage 0, each cached on its own under run.cache_dir.
struct Stage0Part {
  const char* name;                    // "vision" or "language"
  std::vector<std::string> prefixes;   // its state_dict keys
  std::vector<std::string> settings;   // the config keys (or key prefixes) its result depends on
};

const Stage0Part kVisionPart{"vision", {"vision_encoder.", "quadrant_head."},
                             {"vision.", "stage0.vision.", "run.seed", "data.dir", "data.validation_items",
                              "data.mosaic_grid"}};
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
  // So do the keys added after the main job's caches were made, at their defaults.
  for (const auto& [added, default_value] :
       {std::pair<const char*, nlohmann::json>{"data.mosaic_grid", 2}, {"data.image_first", false}})
    if (key.contains(added) && key[added] == default_value) key.erase(added);
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

// ---- the run ---------------------------------------------------------------------------

// One run of the mosaic recipe, phase by phase: what every phase shares (the
// config, the processes, the models, the files, where a resume starts) is
// held here, and run_training calls the phases in order.
class MosaicRun {
 public:
  MosaicRun(const TrainConfig& c, const TrainOptions& options);
  void stage0_vision();
  void stage0_language();
  void stages_1_and_2();
  TrainResult evaluate_and_write();

 private:
  StageSpec stage_spec(const char* name, int stage_index, const StageSettings& settings) const;
  // The resume point applies to the stage it was taken in; later stages start afresh.
  std::optional<StageResume> resume_for(int stage_index) const;
  void timed(const std::string& stage, const StageSummary& s);
  // A stage-0 half is loaded from the cache, resumed, or run: it runs when the
  // resume point is inside it, or when the run has not reached it and the
  // cache has no copy.
  void stage0(const Stage0Part& part, int stage_index, const std::function<void()>& run);
  // One batch of stage 1 or 2 on the cached features: spliced, forward, loss.
  std::function<StepLoss(int64_t)> llava_step(const std::vector<Sample>& samples, uint64_t stream,
                                               const StageSettings& s);
  // Scores the validation set (no oracle) for a stage's curve.
  nlohmann::json validate();
  // Each stage's validation curve, read back from metrics.jsonl (a resumed run included).
  std::map<std::string, ValidationSummary> validation_summaries() const;

  const TrainConfig& c_;
  const TrainOptions& options_;
  // A data-parallel job: every process runs all of this in lockstep on its
  // share of each batch; process 0 alone writes files and prints.
  dist::ProcessGroup* group_;
  int world_, proc_;
  bool lead_;
  RunStart start_;
  const Tokenizer tokenizer_;
  MosaicModels models_;
  TrainResult result_;
  int resume_stage_ = -1;
  std::optional<StageResume> resume_point_;
  RunFiles files_;
  FashionMnist train_split_;  // the items stage 0 and the pool draw from (the validation items held out)
  EvalSet validation_;
  MosaicSet pool_;
  std::vector<Sample> captions_, questions_, stage2_samples_;
  Tensor pool_features_;  // [M, N, Dv]: the frozen encoder's features of the pool, for stages 1 and 2
};

MosaicRun::MosaicRun(const TrainConfig& c, const TrainOptions& options)
    : c_(c), options_(options), group_(options.group), world_(group_ ? group_->world_size() : 1),
      proc_(group_ ? group_->rank() : 0), lead_(proc_ == 0), tokenizer_(c.mosaic_grid) {
  for (const auto& [key, stage] : {std::pair<const char*, const StageSettings*>{"stage0.vision", &c.stage0_vision},
                                   {"stage0.language", &c.stage0_language},
                                   {"stage1", &c.stage1},
                                   {"stage2", &c.stage2}})
    VLMC_CHECK(stage->batch_size % world_ == 0, key, ".batch_size ", stage->batch_size, " does not split over the ",
               world_, " processes of this job (each takes batch_size / ", world_, " samples)");
  // A stage whose estimated peak exceeds the memory left is refused here,
  // before anything is allocated (train/memory_plan.h; the CPU only).
  if (c.device.rfind("cuda", 0) != 0) {
    const AvailableMemory memory = available_memory();
    check_plan_fits(plan_training(c, world_), memory.bytes, memory.source);
  }

  // Where a previous process stopped (train/run_start.h).
  const std::map<std::string, int> stage_indices = {{"stage0-vision", kStageVision},
                                                    {"stage0-language", kStageLanguage},
                                                    {"stage1", kStage1},
                                                    {"stage2", kStage2}};
  start_run(c.runs_dir, c.name, options, stage_indices, start_);

  // Built on the CPU from the seed (the same initial weights on every device
  // and every process), then moved.
  models_ = build_models(c, tokenizer_);
  models_.to(dist::rank_device(c.device, dist::launch_info()));
  if (start_.resume) {
    ResumePoint& point = *start_.resume;
    try {
      models_.load_state_dict(point.checkpoint.model);
    } catch (const std::exception& e) {
      throw Error(str("--resume: ", point.dir, ": ", e.what()));
    }
    resume_stage_ = point.stage_index;
    resume_point_ = StageResume{point.step, std::move(point.checkpoint.optimizer), point.skipped_steps};
  }

  // metrics.jsonl's records also as TensorBoard scalars (runs/<name>/tb), on
  // one step axis: each stage's steps after the stages before it.
  if (start_.metrics) {
    std::map<std::string, int64_t> offsets;
    int64_t before = 0;
    for (const auto& [stage, steps] : {std::pair<const char*, int64_t>{"stage0-vision", c.stage0_vision.steps},
                                       {"stage0-language", c.stage0_language.steps},
                                       {"stage1", c.stage1.steps},
                                       {"stage2", c.stage2.steps}}) {
      offsets[stage] = before;
      before += steps;
    }
    offsets["eval"] = before;
    int64_t start_step = 0;
    if (start_.resume)
      for (const auto& [stage, index] : stage_indices)
        if (index == start_.resume->stage_index) start_step = offsets.at(stage) + start_.resume->step;
    start_.metrics->mirror_to_tensorboard((fs::path(start_.run_dir) / "tb").string(), offsets, start_step);
  }
  files_.run_dir = start_.run_dir;
  files_.checkpoint_root = start_.checkpoint_root;
  files_.metrics = start_.metrics ? &*start_.metrics : nullptr;
  files_.group = group_;
  files_.zero_stage = static_cast<int>(c.zero_stage);
  files_.model_state = [this] { return models_.state_dict(); };
  files_.config = options.config_json;
  files_.checkpoint_every = c.checkpoint_every;
  files_.keep_checkpoints = c.keep_checkpoints;
  files_.log_every_s = c.log_every_s;
  files_.skip_nonfinite = c.skip_nonfinite;

  // Both splits are read before anything trains: a corrupt test split must
  // stop the run now, not at the evaluation after every stage.
  load_fashion_mnist(Split::test, c.data_dir);
  const FashionMnist whole_train = load_fashion_mnist(Split::train, c.data_dir);
  train_split_ = training_items(whole_train, c.validation_items);
  validation_ = validation_set(c, whole_train);
  Generator pool_gen(seeds::derive(c.seed, seeds::kPool));
  pool_ = make_mosaics(train_split_, c.train_mosaics, pool_gen, c.mosaic_grid);
  Generator pool_questions(seeds::derive(c.seed, seeds::kPoolQuestions));
  captions_ = caption_samples(pool_);
  questions_ = instruction_samples(pool_, c.questions_per_image, pool_questions, std::nullopt, c.image_first);
}

StageSpec MosaicRun::stage_spec(const char* name, int stage_index, const StageSettings& settings) const {
  StageSpec spec;
  spec.name = name;
  spec.index = stage_index;
  spec.settings = settings;
  spec.bf16 = c_.precision == "bf16";
  return spec;
}

std::optional<StageResume> MosaicRun::resume_for(int stage_index) const {
  if (resume_stage_ == stage_index) return resume_point_;
  return std::nullopt;
}

void MosaicRun::timed(const std::string& stage, const StageSummary& s) {
  result_.stages[stage] = StageTiming{s.seconds, s.tokens_per_s, s.final_loss, s.peak_device_bytes};
}

void MosaicRun::stage0(const Stage0Part& part, int stage_index, const std::function<void()>& run) {
  if (resume_stage_ > stage_index) return;  // done before the resume point: in the checkpoint
  const std::string name = stage0_cache_name(part, options_.config_json);
  const std::string dir = (fs::path(c_.cache_dir) / name).string();
  // The cache entry is written by one run at a time; another run with the
  // same stage-0 settings is refused until it is there.
  std::optional<RunLock> cache_lock;
  if (lead_) {
    fs::create_directories(c_.cache_dir);
    cache_lock.emplace(dir + ".lock", "the stage-0 cache entry " + dir);
  }
  if (resume_stage_ < stage_index && is_checkpoint(dir)) {
    load_part(models_, part, dir);
    if (lead_) std::fprintf(stderr, "stage 0 %s: using the cached model in %s\n", part.name, dir.c_str());
    return;
  }
  run();
  if (lead_) save_part(models_, part, c_.cache_dir, name, options_.config_json);
}

void MosaicRun::stage0_vision() {
  stage0(kVisionPart, kStageVision, [&] {
    models_.vision->set_requires_grad(true);
    StageSpec spec = stage_spec("stage0-vision", kStageVision, c_.stage0_vision);
    spec.params = named(*models_.vision, "vision_encoder.");
    for (auto& p : named(*models_.quadrant_head, "quadrant_head.")) spec.params.push_back(p);
    spec.step = [&](int64_t step) {
      // A fresh batch of mosaics per step, a pure function of the step.
      const int64_t G = c_.mosaic_grid, cells = G * G;
      Generator gen(seeds::derive(c_.seed, seeds::kVisionMosaics));
      gen.advance(static_cast<uint64_t>(step * c_.stage0_vision.batch_size * mosaic_counters(G)));
      const MosaicSet batch = make_mosaics(train_split_, c_.stage0_vision.batch_size, gen, G);
      const int64_t per = batch.size() / world_, first = per * proc_;  // this process's mosaics
      const Tensor pixels = encoder_pixels(batch, row_range(first, first + per)).to(models_.device);
      const Tensor features = patch_features(models_.vision->hidden_states(pixels), c_.vision_select_layer);
      const Tensor logits = cell_logits(*models_.quadrant_head, features, G);  // [per * G*G, 10]
      const Tensor classes = batch.classes.narrow(0, first, per).reshape({per * cells}).to(models_.device);
      return StepLoss{cross_entropy(logits, classes), per * (c_.patch_grid() * c_.patch_grid() + 1), per * cells};
    };
    timed("stage0-vision", run_stage(spec, files_, resume_for(kStageVision)));
    models_.vision->set_requires_grad(false);
  });
}

void MosaicRun::stage0_language() {
  stage0(kLanguagePart, kStageLanguage, [&] {
    // Text in the image slots: sums of place and item word embeddings, on a
    // grid of the encoder's size or of half its side (pooling connectors).
    models_.language->set_requires_grad(true);
    std::vector<Sample> texts = captions_;
    texts.insert(texts.end(), questions_.begin(), questions_.end());
    Generator extra_gen(seeds::derive(c_.seed, seeds::kExtraQuestions));
    for (QuestionKind kind : {QuestionKind::count, QuestionKind::where}) {
      const std::vector<Sample> extra = instruction_samples(pool_, c_.stage0_extra_questions, extra_gen, kind, c_.image_first);
      texts.insert(texts.end(), extra.begin(), extra.end());
    }
    StageSpec spec = stage_spec("stage0-language", kStageLanguage, c_.stage0_language);
    spec.params = named(*models_.language, "llm.");
    spec.step = [&](int64_t step) {
      const std::vector<int64_t> rows =
          shard(batch_indices(static_cast<uint64_t>(c_.seed), kStreamLanguage, step, c_.stage0_language.batch_size,
                              static_cast<int64_t>(texts.size())),
                proc_, world_);
      const TextBatch batch = make_text_batch(tokenizer_, texts, rows);
      // Every other step on the grid of half the side, when its slots still
      // hold whole cells: a sum over several cells loses which class stands
      // in which cell (what a "what" or "where" asks), so a 4x4 mosaic read
      // by 4x4 patches always has one slot per cell.
      const int64_t grid = c_.patch_grid(), half = grid / 2;
      const int64_t slot_grid = step % 2 == 1 && grid % 2 == 0 && half % c_.mosaic_grid == 0 ? half : grid;
      const SpliceResult in = text_slot_inputs(models_, tokenizer_, pool_, batch, slot_grid);
      const Tensor logits = models_.language->forward(in.inputs_embeds, in.attention_mask, in.position_ids);
      return StepLoss{nn::causal_lm_loss(logits, in.labels), in.tokens, in.targets};
    };
    timed("stage0-language", run_stage(spec, files_, resume_for(kStageLanguage)));
    models_.language->set_requires_grad(false);
  });
}

std::function<StepLoss(int64_t)> MosaicRun::llava_step(const std::vector<Sample>& samples, uint64_t stream,
                                                       const StageSettings& s) {
  return [this, &samples, stream, s](int64_t step) {
    const std::vector<int64_t> rows = shard(batch_indices(static_cast<uint64_t>(c_.stages12_seed()), stream, step,
                                                          s.batch_size, static_cast<int64_t>(samples.size())),
                                            proc_, world_);
    const TextBatch batch = make_text_batch(tokenizer_, samples, rows);
    const Tensor index =
        Tensor::from_vector(batch.images, {static_cast<int64_t>(batch.images.size())}).to(models_.device);
    const SpliceResult in = models_.llava->prepare_inputs_from_features(
        batch.input_ids, index_select(pool_features_, 0, index), batch.labels, batch.text_mask);
    const Tensor logits = models_.language->forward(in.inputs_embeds, in.attention_mask, in.position_ids);
    return StepLoss{nn::causal_lm_loss(logits, in.labels), in.tokens, in.targets};
  };
}

nlohmann::json MosaicRun::validate() {
  return validation_record(evaluate(models_, c_, tokenizer_, validation_, /*with_oracle=*/false));
}

std::map<std::string, ValidationSummary> MosaicRun::validation_summaries() const {
  std::map<std::string, ValidationSummary> out;
  if (!start_.metrics) return out;
  for (const nlohmann::json& r : MetricsLog::read_all(start_.metrics_path)) {
    if (!r.contains("validation") || !r["validation"].is_object()) continue;
    const nlohmann::json& v = r["validation"];
    ValidationSummary& s = out[r.value("stage", "")];
    const double answers = v.value("answer_accuracy", 0.0);
    const int64_t step = r.value("step", int64_t{0});
    if (s.points == 0 || answers > s.best) {
      s.best = answers;
      s.best_step = step;
    }
    ++s.points;
    s.last = answers;
    s.last_step = step;
    s.last_caption = v.contains("kinds") ? v["kinds"].value("caption", 0.0) : 0.0;
  }
  return out;
}

void MosaicRun::stages_1_and_2() {
  pool_features_ = features_of(models_, pool_);  // [M, N, Dv]
  pool_.images = Tensor();                        // not needed any more
  models_.llava->train();
  if (resume_stage_ <= kStage1) {
    models_.llava->set_stage(1);
    StageSpec spec = stage_spec("stage1", kStage1, c_.stage1);
    spec.params = named(*models_.llava->connector, "connector.");
    spec.step = llava_step(captions_, kStreamStage1, c_.stage1);
    spec.validate = [this] { return validate(); };
    spec.validate_every = c_.eval_every;
    timed("stage1", run_stage(spec, files_, resume_for(kStage1)));
  }
  // Stage 2's samples: the questions, then stage2.caption_mix captions per
  // question taken in turn from stage 1's (LLaVA-1.5 keeps general data in its mixture).
  stage2_samples_ = questions_;
  const auto mixed = static_cast<size_t>(std::llround(c_.stage2_caption_mix * static_cast<double>(questions_.size())));
  for (size_t i = 0; i < mixed; ++i) stage2_samples_.push_back(captions_[i % captions_.size()]);
  models_.llava->set_stage(2);
  StageSpec spec = stage_spec("stage2", kStage2, c_.stage2);
  spec.params = named(*models_.llava->connector, "connector.");
  for (auto& p : named(*models_.language, "llm.")) spec.params.push_back(p);
  spec.lr_prefix = "connector.";
  spec.prefix_lr = c_.stage2_connector_lr;
  spec.step = llava_step(stage2_samples_, kStreamStage2, c_.stage2);
  spec.validate = [this] { return validate(); };
  spec.validate_every = c_.eval_every;
  timed("stage2", run_stage(spec, files_, resume_for(kStage2)));
  models_.llava->set_stage(1);
}

TrainResult MosaicRun::evaluate_and_write() {
  result_.connector_parameters = models_.llava->connector->num_parameters();
  {
    NoGradGuard no_grad;
    models_.llava->eval();
    result_.visual_tokens = models_.llava->connector->forward(pool_features_.narrow(0, 0, 1)).size(1);
    models_.llava->train();
  }
  const EvalReport report = evaluate(models_, c_, tokenizer_);
  result_.eval = report;
  result_.validation = validation_summaries();
  nlohmann::json record = report.to_json();
  record["stage"] = "eval";
  for (const auto& [stage, v] : result_.validation)
    record["validation_curves"][stage] = {{"points", v.points},       {"last_step", v.last_step}, {"answer_accuracy", v.last},
                                   {"best_answer_accuracy", v.best}, {"best_step", v.best_step},
                                   {"caption_accuracy", v.last_caption}};
  record["eval_seed"] = c_.eval_seed;
  record["train_seed"] = c_.stages12_seed();
  record["run_seed"] = c_.seed;
  record["mosaic_grid"] = c_.mosaic_grid;  // which built-in task: 2 (the main job) or 4
  if (!lead_) return result_;  // every process evaluated the same model; process 0 writes
  start_.metrics->write(record);
  // results.json also says how the run ran: where, in what precision, how fast.
  record["device"] = c_.device;
  record["precision"] = c_.precision;
  record["processes"] = world_;
  // Results reproduce bit for bit for one kind of CPU and one thread count only.
  record["cpu_model"] = cpu_model_name();
  record["threads"] = num_threads();
  for (const auto& [stage, t] : result_.stages)
    record["stages"][stage] = {{"seconds", t.seconds}, {"tokens_per_s", t.tokens_per_s},
                               {"final_loss", t.final_loss}, {"peak_device_bytes", t.peak_device_bytes}};
  io::write_file_atomically((fs::path(start_.run_dir) / "results.json").string(), record.dump(2) + "\n", "train");
  plot_loss_history(start_.metrics_path, (fs::path(start_.run_dir) / "loss.png").string());
  plot_validation_history(start_.metrics_path, (fs::path(start_.run_dir) / "validation.png").string());
  return result_;
}

}  // namespace

void print_validation(const std::map<std::string, ValidationSummary>& validation, std::FILE* out) {
  for (const auto& [stage, v] : validation)
    std::fprintf(out, "validation %s: answers %.1f %% at step %lld (best %.1f %% at step %lld, %lld points), "
                 "captions %.1f %%\n", stage.c_str(), 100.0 * v.last, static_cast<long long>(v.last_step),
                 100.0 * v.best, static_cast<long long>(v.best_step), static_cast<long long>(v.points),
                 100.0 * v.last_caption);
  const auto s1 = validation.find("stage1"), s2 = validation.find("stage2");
  if (s1 != validation.end() && s2 != validation.end())
    std::fprintf(out, "captions forgotten in stage 2: %.1f %% -> %.1f %% on validation (stage2.caption_mix keeps "
                 "some)\n", 100.0 * s1->second.last_caption, 100.0 * s2->second.last_caption);
}

TrainResult run_training(const TrainConfig& c, const TrainOptions& options) {
  c.validate();
  MosaicRun run(c, options);
  run.stage0_vision();
  run.stage0_language();
  run.stages_1_and_2();
  return run.evaluate_and_write();
}

}  // namespace vlmc::train
