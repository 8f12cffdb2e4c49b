#include "train/llava_trainer.h"

#include <cstdio>
#include <filesystem>
#include <optional>
#include <set>

#include "core/error.h"
#include "core/ops.h"
#include "core/threads.h"
#include "data/clip_image_processor.h"
#include "data/conversation.h"
#include "data/llava_dataset.h"
#include "data/llava_loader.h"
#include "data/sentencepiece_tokenizer.h"
#include "modules/hf_checkpoint.h"
#include "modules/hf_export.h"
#include "modules/projector_io.h"
#include "train/llava_sources.h"
#include "core/io/atomic_file.h"
#include "train/llava_to_hf.h"
#include "train/memory_plan.h"
#include "train/mosaic_models.h"
#include "train/plot.h"
#include "train/run_start.h"
#include "train/stage_loop.h"

namespace vlmc::train {
namespace fs = std::filesystem;
namespace {

// Checkpoint names sort by these (train/stage_loop.h); the fashion-mosaic
// run's stage 1 and stage 2 have the same places.
constexpr int kStage1 = 2, kStage2 = 3;

// Every process's loader place, gathered (one all-reduce of a table each
// process fills its row of), as state.json's "data".
nlohmann::json gather_loader_states(const data::LoaderState& mine, dist::ProcessGroup* group) {
  const int world = group ? group->world_size() : 1;
  const int proc = group ? group->rank() : 0;
  std::vector<double> table(static_cast<size_t>(4 * world), 0.0);
  const size_t row = static_cast<size_t>(4 * proc);
  table[row] = static_cast<double>(mine.step);
  table[row + 1] = static_cast<double>(mine.epoch);
  table[row + 2] = static_cast<double>(mine.cursor);
  table[row + 3] = static_cast<double>(mine.skipped);
  if (world > 1) table = group->all_reduce_sum(table, "the loaders' places");
  nlohmann::json loaders = nlohmann::json::array();
  for (int r = 0; r < world; ++r) {
    const size_t at = static_cast<size_t>(4 * r);
    loaders.push_back({{"step", static_cast<int64_t>(table[at])}, {"epoch", static_cast<int64_t>(table[at + 1])},
                       {"cursor", static_cast<int64_t>(table[at + 2])},
                       {"skipped", static_cast<int64_t>(table[at + 3])}});
  }
  return {{"loaders", loaders}};
}

// The checkpoint's tensors into the trained parameters: every one of them
// must be there, and nothing else.
void load_trained(nn::LlavaModel& llava, const std::map<std::string, Tensor>& trained_names,
                  const std::map<std::string, Tensor>& saved, const std::string& dir) {
  for (const auto& [name, t] : trained_names)
    VLMC_CHECK(saved.count(name), "--resume: ", dir, " has no '", name, "', a parameter this stage trains");
  for (const auto& [name, t] : saved)
    VLMC_CHECK(trained_names.count(name), "--resume: ", dir, ": '", name,
               "' is not a parameter this stage trains (was the checkpoint written with another model.stage "
               "or connector.type?)");
  try {
    llava.load_state_dict(saved, /*strict=*/false);
  } catch (const std::exception& e) {
    throw Error(str("--resume: ", dir, ": ", e.what()));
  }
}

nlohmann::json counters_json(const data::PreprocessCounters& p) {
  return {{"samples", p.samples},          {"truncated", p.truncated},
          {"mismatched", p.mismatched},    {"no_target", p.no_target},
          {"first_truncated", p.first_truncated}, {"first_mismatched", p.first_mismatched},
          {"first_no_target", p.first_no_target}};
}

}  // namespace

TrainResult run_llava_training(const TrainConfig& c, const TrainOptions& options) {
  c.validate();
  dist::ProcessGroup* group = options.group;
  const int world = group ? group->world_size() : 1;
  const int proc = group ? group->rank() : 0;
  const bool lead = proc == 0;
  const int stage = static_cast<int>(c.model_stage);
  const std::string stage_name = stage == 2 ? "stage2" : "stage1";
  const StageSettings& s = c.llava_stage();
  VLMC_CHECK(s.batch_size % world == 0, stage_name, ".batch_size ", s.batch_size, " does not split over the ", world,
             " processes of this job (each takes batch_size / ", world, " samples)");

  // ---- what the files say, checked before anything large is read ----------------------
  VLMC_CHECK(!c.data_json.empty(), "data.json: a data.format = \"llava\" run needs LLaVA's JSON (or JSONL) file");
  const LlavaSources sources = resolve_llava_sources(c);
  const nn::HfModelConfig& tower_config = sources.tower;
  const nn::HfModelConfig& lm_config = sources.language;
  if (c.device.rfind("cuda", 0) != 0) {
    const AvailableMemory memory = available_memory();
    check_plan_fits({plan_llava_run(c, world)}, memory.bytes, memory.source);
  }
  const data::SentencePieceTokenizer tokenizer = data::SentencePieceTokenizer::from_folder(sources.tokenizer_dir);
  VLMC_CHECK(tokenizer.vocab_size() <= lm_config.text.vocab_size, "the tokenizer in ", sources.tokenizer_dir,
             " has ", tokenizer.vocab_size(), " tokens but the model's vocab_size is ", lm_config.text.vocab_size);
  const data::CLIPImageProcessor processor =
      data::CLIPImageProcessor::from_folder(sources.processor_dir, c.data_image_aspect_ratio == "pad");
  const data::ConversationTemplate& conv = data::conversation_template(c.data_template);
  data::LlavaReadOptions read;
  read.image_folder = c.data_image_folder;
  read.strict = c.data_strict;
  read.conversation_template = c.data_template;
  const data::LlavaDataset dataset = data::read_llava_json(c.data_json, read);
  if (lead) {
    std::fprintf(stderr, "data: %zu samples from %s", dataset.size(), c.data_json.c_str());
    if (!dataset.bad().empty()) {
      const data::BadSample& first = dataset.bad().front();
      std::fprintf(stderr, "; %zu bad ones skipped (first: id '%s' at %s: %s)", dataset.bad().size(),
                   first.id.c_str(), first.where.c_str(), first.reason.c_str());
    }
    std::fprintf(stderr, "\n");
  }

  // ---- the run directory, and where a previous process stopped -------------------------
  const std::map<std::string, int> stage_indices = {{"stage1", kStage1}, {"stage2", kStage2}};
  const int stage_index = stage == 2 ? kStage2 : kStage1;
  RunStart start;
  start_run(c.runs_dir, c.name, options, stage_indices, start);
  if (start.resume)
    VLMC_CHECK(start.resume->stage_index == stage_index, "--resume: ", start.resume->dir, " is a checkpoint of another stage than "
               "model.stage ", stage, "'s");
  // metrics.jsonl's records also as TensorBoard scalars (runs/<name>/tb).
  if (start.metrics)
    start.metrics->mirror_to_tensorboard((std::filesystem::path(start.run_dir) / "tb").string(), {{stage_name, 0}},
                                         start.resume ? start.resume->step : 0);

  // ---- the model ----------------------------------------------------------------------
  nn::PretrainedOptions frozen;
  frozen.weights = nn::parse_weights_dtype(c.model_weights_dtype);
  nn::PretrainedOptions language = frozen;
  // Stage 2 trains the language model: its parameters are f32 masters.
  if (stage == 2) language.weights = nn::WeightsDType::f32;
  nn::PretrainedModel tower, lm, whole;  // whole: model.pretrained's LLaVA (tower and lm then share its parts)
  if (sources.pretrained.empty()) {
    tower = nn::load_pretrained(c.model_vision_tower, frozen);
    lm = nn::load_pretrained(c.model_language_model, language);
    if (lead) {
      std::fprintf(stderr, "vision tower: %s\n", tower.report.summary().c_str());
      std::fprintf(stderr, "language model: %s\n", lm.report.summary().c_str());
    }
  } else {
    nn::PretrainedOptions options = language;
    options.vision_tower = sources.tower_dir;
    whole = nn::load_pretrained(sources.pretrained, options);
    // Stage 2 read everything as f32 masters; the tower stays frozen in 16 bits.
    if (stage == 2 && frozen.weights != nn::WeightsDType::f32) nn::convert_frozen_weights(*whole.vision, DType::bf16);
    tower.vision = whole.vision;
    lm.llama = whole.llama;
    if (lead) std::fprintf(stderr, "LLaVA: %s\n", whole.report.summary().c_str());
  }
  nn::LlavaConfig lc;
  lc.projector_type = c.connector;
  lc.connector = c.connector_config(tower_config.vision.hidden_size, lm_config.text.hidden_size,
                                    tower_config.vision.image_size / tower_config.vision.patch_size);
  lc.select_layer = c.model_vision_select_layer;
  lc.keep_cls = c.model_vision_select_feature == "cls_patch";
  lc.stage = stage;
  lc.splice.image_token_id = data::kImageTokenIndex;  // the loader's -200 at each image
  lc.splice.max_length = c.data_model_max_length;     // LLaVA cuts the spliced sequence there too
  const int64_t layers = tower_config.vision.num_hidden_layers + 1;
  VLMC_CHECK(lc.select_layer >= -layers && lc.select_layer < layers, "model.vision_select_layer ", lc.select_layer,
             " is outside the ", layers, " hidden states of ", tower_config.path);
  // The projector's initial weights: from the run's seed, the same on every process.
  Generator init(seeds::derive(c.seed, seeds::kWeights));
  auto llava = std::make_shared<nn::LlavaModel>(tower.vision, lm.llama, lc, init);
  if (whole.llava) {
    llava->connector->load_state_dict(whole.llava->connector->state_dict());  // strict: the same projector
  } else if (!c.model_projector.empty()) {
    nn::load_projector(*llava->connector, c.model_projector);
    if (lead) std::fprintf(stderr, "projector: %s\n", c.model_projector.c_str());
  } else if (stage == 2 && lead) {
    std::fprintf(stderr, "note: model.projector is empty: stage 2 starts from a fresh projector, not from "
                         "stage 1's (LLaVA passes pretrain_mm_mlp_adapter)\n");
  }
  lm.llama->model->gradient_checkpointing = c.model_gradient_checkpointing;
  lm.llama->model->pack_padding = true;  // conversations of every length: the padding is left out of the per-row work
  llava->set_stage(stage);
  llava->train();
  const Device device = dist::rank_device(c.device, dist::launch_info());
  llava->to(device);

  // What this stage trains: its checkpoints hold these alone (the frozen
  // parts are the model.* folders).
  std::vector<optim::NamedTensor> params;
  std::map<std::string, Tensor> trained;
  for (auto& [name, t] : llava->named_parameters())
    if (t.requires_grad()) {
      params.push_back({name, t});
      trained.emplace(name, t);
    }

  std::optional<StageResume> resume;
  data::LoaderState loader_start;
  if (start.resume) {
    ResumePoint& point = *start.resume;
    load_trained(*llava, trained, point.checkpoint.model, point.dir);
    loader_start = loader_state_from(point.checkpoint.state, point.dir, proc, world);
    resume = StageResume{point.step, std::move(point.checkpoint.optimizer), point.skipped_steps};
  }

  // ---- the data -----------------------------------------------------------------------
  data::LlavaLoaderOptions lo;
  lo.batch_size = s.batch_size;
  lo.world_size = world;
  lo.rank = proc;
  lo.accumulation = s.gradient_accumulation_steps;
  lo.seed = static_cast<uint64_t>(c.seed);
  lo.epochs = c.data_epochs;
  lo.workers = static_cast<int>(c.data_workers);
  lo.prefetch = static_cast<int>(c.data_prefetch);
  lo.strict = c.data_strict;
  lo.group_by_modality_length = c.data_group_by_modality_length;
  lo.preprocess.model_max_length = c.data_model_max_length;
  lo.resume = loader_start;
  data::LlavaLoader loader(dataset, tokenizer, conv, processor, lo);
  StageSettings settings = s;
  const int64_t K = s.gradient_accumulation_steps;
  if (settings.steps == 0) settings.steps = loader.total_steps() / K;
  VLMC_CHECK(settings.steps >= 1, stage_name, ": ", dataset.size(), " samples make ", loader.total_steps(),
             " batches of ", s.batch_size, ", fewer than one step of ", K, " (", stage_name,
             ".gradient_accumulation_steps); raise data.epochs or lower the batch");
  VLMC_CHECK(settings.steps * K <= loader.total_steps(), stage_name, ".steps ", settings.steps, " x ", K,
             " micro-batches is more than the ", loader.total_steps(), " batches of ", s.batch_size, " that ",
             c.data_epochs, " pass(es) over ", dataset.size(), " samples make (data.epochs)");
  VLMC_CHECK(loader_start.step == (resume ? resume->step * K : 0), "--resume: the loader's place (batch ",
             loader_start.step, ") is not the checkpoint's step ", resume ? resume->step : 0, " x ", K);
  if (lead)
    std::fprintf(stderr, "%s: %lld steps of %lld samples (x %lld micro-batches), %lld per process\n",
                 stage_name.c_str(), static_cast<long long>(settings.steps), static_cast<long long>(s.batch_size),
                 static_cast<long long>(K), static_cast<long long>(loader.per_process_batch()));

  RunFiles files;
  files.run_dir = start.run_dir;
  files.checkpoint_root = start.checkpoint_root;
  files.metrics = start.metrics ? &*start.metrics : nullptr;
  files.group = group;
  files.zero_stage = static_cast<int>(c.zero_stage);
  files.model_state = [&] {
    std::map<std::string, Tensor> state;
    for (const auto& [name, t] : trained) state.emplace(name, t.detach());
    return state;
  };
  files.data_state = [&] { return gather_loader_states(loader.state(), group); };
  files.config = options.config_json;
  files.checkpoint_every = c.checkpoint_every;
  files.keep_checkpoints = c.keep_checkpoints;
  files.log_every_s = c.log_every_s;
  files.skip_nonfinite = c.skip_nonfinite;

  StageSpec spec;
  spec.name = stage_name;
  spec.index = stage_index;
  spec.settings = settings;
  spec.bf16 = c.precision == "bf16";
  spec.params = params;
  if (stage == 2) {
    spec.lr_prefix = "connector.";
    spec.prefix_lr = c.stage2_connector_lr;
  }
  spec.step = [&](int64_t micro_step) {
    std::optional<data::LlavaBatch> batch = loader.next();
    VLMC_CHECK(batch.has_value(), stage_name, ": the loader ran out at micro-batch ", micro_step + 1);
    VLMC_CHECK(batch->state.step == micro_step + 1, stage_name, ": the loader is at batch ", batch->state.step,
               ", the step at micro-batch ", micro_step + 1);
    if (lead)
      for (const data::SkippedSample& bad : batch->skipped)
        std::fprintf(stderr, "skipped sample '%s'%s%s: %s\n", bad.id.c_str(), bad.file.empty() ? "" : " (",
                     bad.file.empty() ? "" : (bad.file + ")").c_str(), bad.reason.c_str());
    const Tensor pixels = batch->pixel_values.defined() ? batch->pixel_values.to(device) : Tensor();
    const SpliceResult in = llava->prepare_inputs(batch->input_ids.to(device), pixels,
                                                      batch->labels.to(device), batch->attention_mask.to(device));
    const Tensor logits = llava->llm->forward(in.inputs_embeds, in.attention_mask, in.position_ids);
    // A micro-batch with nothing to learn (every answer cut by
    // data.model_max_length, or LLaVA's tokenization mismatch) adds nothing:
    // a zero loss on the graph, rather than the NaN of a mean over no terms.
    if (in.targets == 0) return StepLoss{mul(sum(logits), 0.0), in.tokens, 0};
    return StepLoss{nn::causal_lm_loss(logits, in.labels), in.tokens, in.targets};
  };

  TrainResult result;
  const StageSummary summary = run_stage(spec, files, resume);
  result.stages[stage_name] = StageTiming{summary.seconds, summary.tokens_per_s, summary.final_loss,
                                          summary.peak_device_bytes};
  result.connector_parameters = llava->connector->num_parameters();
  {
    // What the connector writes per image: one forward of zero features.
    NoGradGuard no_grad;
    llava->eval();
    const int64_t patches = tower_config.vision.num_patches() + (lc.keep_cls ? 1 : 0);
    result.visual_tokens =
        llava->connector->forward(Tensor::zeros({1, patches, lc.connector.dim_vision}, DType::f32, device)).size(1);
    llava->train();
  }

  // Every process took its share: the run's counts are their sums.
  const data::LoaderStats& stats = loader.stats();
  std::vector<double> counts = {static_cast<double>(stats.samples), static_cast<double>(loader.state().skipped),
                                static_cast<double>(stats.preprocess.truncated),
                                static_cast<double>(stats.preprocess.no_target)};
  if (world > 1) counts = group->all_reduce_sum(counts, "the loaders' counts");
  if (!lead) return result;
  std::fprintf(stderr, "loader: %s\n", stats.summary().c_str());

  // ---- what the run leaves -------------------------------------------------------------
  const fs::path run_dir(start.run_dir);
  nn::save_projector(*llava->connector, (run_dir / "mm_projector.safetensors").string(), nn::ProjectorNaming::llava);
  if (c.connector == "mlp2x_gelu" || c.connector.rfind("mlp", 0) == 0)
    nn::save_projector(*llava->connector, (run_dir / "multi_modal_projector.safetensors").string(),
                       nn::ProjectorNaming::hugging_face);
  if (stage == 2) {
    const fs::path model_dir = run_dir / "model", hf_dir = run_dir / "model-hf";
    // A resumed run writes them again.
    for (const fs::path& d : {model_dir, hf_dir})
      if (fs::exists(d)) fs::remove_all(d);
    if (sources.pretrained.empty()) {
      // The whole model in the original LLaVA layout: the tower stays in its
      // folder, named by mm_vision_tower (absolute, so the output loads from anywhere).
      nn::PretrainedModel out;
      out.dir = c.model_language_model;  // the tokenizer files are copied from there
      out.config = lm.config;
      out.config.kind = nn::HfKind::llava_original;
      out.config.vision = tower_config.vision;
      out.config.llava.projector_type = c.connector;
      out.config.llava.vision_feature_layer = lc.select_layer;
      out.config.llava.keep_cls = lc.keep_cls;
      out.config.llava.image_token_index = data::kImageTokenIndex;
      out.config.llava.image_aspect_ratio = c.data_image_aspect_ratio;
      out.config.llava.vision_tower = fs::absolute(c.model_vision_tower).lexically_normal().string();
      out.config.llava.mm_hidden_size = tower_config.vision.hidden_size;
      out.llama = lm.llama;
      out.vision = tower.vision;
      out.llava = llava;
      nn::save_pretrained(out, model_dir.string());
      // The same as transformers' LlavaForConditionalGeneration (<image> in the vocabulary).
      if (c.connector == "mlp2x_gelu") save_as_transformers_llava(out, c.model_vision_tower, hf_dir.string());
    } else {
      // The LLaVA it started from, in its own layout, holding what was trained.
      nn::PretrainedModel out = whole;
      out.llava = llava;
      if (whole.config.kind == nn::HfKind::llava_original) {
        out.config.llava.vision_tower = fs::absolute(sources.tower_dir).lexically_normal().string();
        nn::save_pretrained(out, model_dir.string());
        if (c.connector == "mlp2x_gelu") save_as_transformers_llava(out, sources.tower_dir, hf_dir.string());
      } else {
        // A transformers LLaVA has no tower folder for the original layout to name.
        nn::save_pretrained(out, hf_dir.string());
        std::fprintf(stderr, "model: %s (transformers' layout, as model.pretrained; no original-layout model/: "
                             "it would name a tower folder, and this LLaVA's tower is inside it)\n",
                     hf_dir.string().c_str());
      }
    }
  }

  nlohmann::json record;
  record["stage"] = stage_name;
  record["device"] = c.device;
  record["precision"] = c.precision;
  record["processes"] = world;
  // Results reproduce bit for bit for one kind of CPU and one thread count only.
  record["cpu_model"] = cpu_model_name();
  record["threads"] = num_threads();
  record["connector_parameters"] = result.connector_parameters;
  record["visual_tokens"] = result.visual_tokens;
  for (const auto& [name, t] : result.stages)
    record["stages"][name] = {{"seconds", t.seconds}, {"tokens_per_s", t.tokens_per_s},
                              {"final_loss", t.final_loss}, {"peak_device_bytes", t.peak_device_bytes}};
  nlohmann::json bad_in_file = nlohmann::json::array();
  for (size_t i = 0; i < dataset.bad().size() && i < data::LoaderStats::kNamed; ++i)
    bad_in_file.push_back({{"id", dataset.bad()[i].id}, {"where", dataset.bad()[i].where},
                           {"reason", dataset.bad()[i].reason}});
  nlohmann::json first_skipped = nlohmann::json::array();
  for (const data::SkippedSample& bad : stats.first_skipped)
    first_skipped.push_back({{"id", bad.id}, {"file", bad.file}, {"reason", bad.reason}});
  record["data"] = {{"json", c.data_json},
                    {"samples_in_file", dataset.read()},
                    {"bad_in_file", dataset.bad().size()},
                    {"first_bad_in_file", bad_in_file},
                    {"samples_trained", static_cast<int64_t>(counts[0])},
                    {"skipped", static_cast<int64_t>(counts[1])},
                    {"first_skipped", first_skipped},
                    {"truncated", static_cast<int64_t>(counts[2])},
                    {"no_target", static_cast<int64_t>(counts[3])},
                    {"preprocess_process0", counters_json(stats.preprocess)},
                    {"wait_seconds_process0", stats.wait_seconds}};
  io::write_file_atomically((run_dir / "results.json").string(), record.dump(2) + "\n", "train");
  plot_loss_history(start.metrics_path, (run_dir / "loss.png").string());
  return result;
}

}  // namespace vlmc::train
