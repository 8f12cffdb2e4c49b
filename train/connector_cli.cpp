#include "train/connector_cli.h"
#include "train/cli_checks.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <map>
#include <vector>

#include "core/autocast.h"
#include "core/autograd.h"
#include "core/cuda/runtime.h"
#include "core/io/tensor_io.h"
#include "core/ops.h"
#include "core/text.h"
#include "core/threads.h"
#include "modules/connector_registry.h"

namespace vlmc::cli {

nn::ConnectorConfig ConnectorDims::resolved() const {
  nn::ConnectorConfig c = config;
  if (dim_hidden > 0) c.dim_hidden = dim_hidden;
  return c;
}

namespace {

std::optional<int64_t> target_tokens_of(const ConnectorDims& dims) {
  if (dims.target_tokens > 0) return dims.target_tokens;
  return std::nullopt;
}

// The named tensor of a safetensors file given by `flag`; both missing files
// and missing tensors name the flag, the file and the tensor.
Tensor load_tensor(const std::string& flag, const std::string& path, const std::string& name) {
  std::map<std::string, Tensor> tensors;
  try {
    tensors = io::load_safetensors(path);
  } catch (const Error& e) {
    throw Error(str("connector run: ", flag, ": ", e.what()));
  }
  const auto it = tensors.find(name);
  if (it == tensors.end()) {
    std::string present;
    for (const auto& [key, t] : tensors) present += (present.empty() ? "" : ", ") + key;
    throw Error(str("connector run: ", flag, " ", path, " has no tensor '", name, "' (it holds: ",
                    present.empty() ? "nothing" : present, ")"));
  }
  return it->second;
}

void sync(Device device) {
  if (device.is_cuda()) cuda::synchronize(device.index);
}

std::string shape_list(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// A JSON string literal (the values here are plain names, but never trust that).
std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (const char ch : s) {
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += ch;
    } else if (static_cast<unsigned char>(ch) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", ch);
      out += buf;
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

void add_dims(CLI::App* cmd, ConnectorDims& d) {
  nn::ConnectorConfig& c = d.config;
  cmd->add_option("--type", c.type, "connector: " + join(nn::connector_types()) + " (`vlmc connector list` describes each)")
      ->required()
      ->check(CLI::IsMember(nn::connector_types()));
  cmd->add_option("--dim-vision", c.dim_vision, "vision feature width Dv")
      ->capture_default_str()->check(kPositive);
  cmd->add_option("--dim-llm", c.dim_llm, "language model width")->capture_default_str()->check(kPositive);
  cmd->add_option("--dim-hidden", d.dim_hidden, "mlp: hidden width (0 = the seed's `dim_hidden or dim_llm`); perceiver: SwiGLU width (0 = 3.5 x dim-llm); honeybee: the stages' width (0 = dim-vision)")
      ->capture_default_str()->check(kNonNegative);
  cmd->add_option("--grid-size", c.grid_size, "downsample, c-abstractor, patch-merger, pixel-shuffle, ldp-v2, honeybee: patch grid side (tokens = grid^2)")
      ->capture_default_str()->check(kPositive);
  cmd->add_option("--target-size", c.target_size, "downsample, c-abstractor, ldp-v2, honeybee: pooled grid side")
      ->capture_default_str()->check(kPositive);
  cmd->add_option("--num-conv-layers", c.num_conv_layers, "c-abstractor: conv + BatchNorm + GELU layers")
      ->capture_default_str()->check(kNonNegative);
  cmd->add_option("--max-tokens", c.max_tokens, "dynamic: most tokens kept when --target-tokens is 0")
      ->capture_default_str()->check(kPositive);
  cmd->add_option("--min-tokens", c.min_tokens, "dynamic: the seed's min_tokens (stored, unused by its forward)")
      ->capture_default_str()->check(kNonNegative);
  cmd->add_option("--max-visual-tokens", c.max_visual_tokens,
                  "ocr: learned positions (interpolated when there are more tokens)")
      ->capture_default_str()->check(kPositive);
  cmd->add_option("--merge-size", c.merge_size, "patch-merger, pixel-shuffle: r (each r x r window becomes one token)")
      ->capture_default_str()->check(kPositive);
  cmd->add_option("--num-latents", c.num_latents, "perceiver, qwen-resampler: learned queries, the visual tokens they emit")
      ->capture_default_str()->check(kPositive);
  cmd->add_option("--resampler-depth", c.resampler_depth, "perceiver: cross-attention layers")
      ->capture_default_str()->check(kPositive);
  cmd->add_option("--resampler-heads", c.resampler_heads, "perceiver, qwen-resampler: query heads")
      ->capture_default_str()->check(kPositive);
  cmd->add_option("--resampler-head-dim", c.resampler_head_dim, "perceiver: width of each head")
      ->capture_default_str()->check(kPositive);
  cmd->add_option("--resampler-kv-heads", c.resampler_kv_heads, "perceiver: key/value heads (divide the query heads)")
      ->capture_default_str()->check(kPositive);
  cmd->add_option("--reg-depth", c.reg_depth, "honeybee: RegNet bottlenecks per stage")
      ->capture_default_str()->check(kPositive);
  cmd->add_option("--target-tokens", d.target_tokens,
                  "dynamic: tokens to keep, the forward's target_tokens (0 = None: min(N, max-tokens))")
      ->capture_default_str()->check(kNonNegative);
  cmd->add_option("--device", d.device, "cpu, cuda or cuda:N")->capture_default_str();
}

}  // namespace

int run_connector(const ConnectorRunOptions& o) {
  const Device device = Device::parse(o.dims.device);
  const nn::ConnectorConfig config = o.dims.resolved();
  const bool want_grads = !o.grad_output.empty();

  // Read everything before computing, so a missing file fails fast.
  std::map<std::string, Tensor> weights;
  try {
    weights = io::load_safetensors(o.weights);
  } catch (const Error& e) {
    throw Error(str("connector run: --weights: ", e.what()));
  }
  Tensor x = load_tensor("--input", o.input, "visual_features");
  Tensor grad_output;
  if (want_grads) grad_output = load_tensor("--grad-output", o.grad_output, "grad_output");
  VLMC_CHECK(x.dim() == 3, "connector run: --input ", o.input, ": visual_features must be [B, N, Dv], got ",
             shape_str(x.shape()));

  const std::shared_ptr<nn::Connector> connector = nn::make_connector(config);
  try {
    connector->load_state_dict(weights, /*strict=*/true);
  } catch (const Error& e) {
    throw Error(str("connector run: --weights ", o.weights, " does not fit the ", config.type,
                    " connector: ", e.what()));
  }
  connector->to(device);
  connector->train(!o.eval);

  x = x.to(device, DType::f32).detach();
  if (want_grads) x.set_requires_grad(true);
  Tensor out;
  if (want_grads) {
    out = connector->forward(x, target_tokens_of(o.dims));
  } else {
    NoGradGuard no_grad;
    out = connector->forward(x, target_tokens_of(o.dims));
  }

  std::map<std::string, Tensor> result;
  result["visual_tokens"] = out.detach();
  if (want_grads) {
    VLMC_CHECK(grad_output.shape() == out.shape(), "connector run: --grad-output ", o.grad_output,
               ": grad_output ", shape_str(grad_output.shape()), " does not match visual_tokens ",
               shape_str(out.shape()));
    out.backward(grad_output.to(device, DType::f32));
    result["grad.visual_features"] = x.grad();
    for (const auto& [name, p] : connector->named_parameters()) {
      // A parameter off the graph (the seed's token scorer) gets zeros, as
      // PyTorch users compare against `p.grad or zeros`.
      result["grad." + name] = p.grad().defined() ? p.grad() : Tensor::zeros(p.shape(), p.dtype(), p.device());
    }
  }
  for (const auto& [name, b] : connector->named_buffers()) result["state." + name] = b.detach();

  io::save_safetensors(o.out, result,
                       {{"format", "vlmc-connector-run"},
                        {"type", config.type},
                        {"mode", o.eval ? "eval" : "train"}});
  return 0;
}

int bench_connector(const ConnectorBenchOptions& o) {
  if (o.threads > 0) set_num_threads(o.threads);
  const Device device = Device::parse(o.dims.device);
  const nn::ConnectorConfig config = o.dims.resolved();
  const std::optional<int64_t> target_tokens = target_tokens_of(o.dims);

  Generator gen(o.seed);
  const std::shared_ptr<nn::Connector> connector = nn::make_connector(config, gen);
  connector->to(device);
  connector->train();  // as the seed's modules are after construction
  const Tensor x = Tensor::randn({o.batch, o.tokens, config.dim_vision}, gen, DType::f32, device);

  const bool bf16 = o.precision == "bf16";
  Tensor out;
  Tensor grad;  // --grad random: drawn at the first backward, once the output's shape is known
  const auto step = [&] {
    AutocastGuard autocast(bf16);  // the backward captures the mode with its forward
    if (!o.backward) {
      NoGradGuard no_grad;
      out = connector->forward(x, target_tokens);
    } else {
      connector->zero_grad();
      out = connector->forward(x, target_tokens);
      if (o.grad == "random") {
        if (!grad.defined()) grad = Tensor::randn(out.shape(), gen, DType::f32, device);
        VLMC_CHECK(grad.shape() == out.shape(), "connector bench: the output's shape ", shape_str(out.shape()),
                   " changed from ", shape_str(grad.shape()), " between steps; --grad random needs one shape");
        out.backward(grad);
      } else {
        sum(out).backward();
      }
    }
    sync(device);
  };
  for (int i = 0; i < o.warmup; ++i) step();
  std::vector<double> ms;
  for (int r = 0; r < o.repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    step();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(ms.begin(), ms.end());
  const double median = ms.size() % 2 ? ms[ms.size() / 2] : 0.5 * (ms[ms.size() / 2 - 1] + ms[ms.size() / 2]);
  const nn::ConnectorFlops counted = nn::connector_kind(config.type).flops(config, o.batch, o.tokens, target_tokens);
  const double flops = counted.forward + (o.backward ? counted.backward : 0.0);
  const double gflops = flops / (median * 1e-3) / 1e9;
  const std::string mode = !o.backward ? "forward" : o.grad == "random" ? "forward+backward (random gradient)"
                                                                         : "forward+backward";

  if (o.json) {
    std::printf(
        "{\"impl\": \"vlmc\", \"type\": %s, \"batch\": %lld, \"tokens\": %lld, \"dim_vision\": %lld, "
        "\"dim_llm\": %lld, \"threads\": %d, \"device\": %s, \"backward\": %s, \"repeats\": %d, "
        "\"median_ms\": %.4f, \"min_ms\": %.4f, \"max_ms\": %.4f, \"gflop\": %.4f, \"gflops\": %.3f, "
        "\"parameters\": %lld, \"output_shape\": %s, \"precision\": %s, \"grad\": %s}\n",
        json_string(config.type).c_str(), static_cast<long long>(o.batch), static_cast<long long>(o.tokens),
        static_cast<long long>(config.dim_vision), static_cast<long long>(config.dim_llm), num_threads(),
        json_string(device.str()).c_str(), o.backward ? "true" : "false", o.repeats, median, ms.front(),
        ms.back(), flops / 1e9, gflops, static_cast<long long>(connector->num_parameters()),
        shape_list(out.shape()).c_str(), json_string(o.precision).c_str(),
        json_string(o.backward ? o.grad : "none").c_str());
  } else {
    std::printf("connector %s on %s, %s, %d threads\n", config.type.c_str(), device.str().c_str(),
                o.precision.c_str(), num_threads());
    std::printf("  parameters:    %lld\n", static_cast<long long>(connector->num_parameters()));
    std::printf("  input shape:   %s\n", shape_list(x.shape()).c_str());
    std::printf("  output shape:  %s\n", shape_list(out.shape()).c_str());
    std::printf("  %s time: median %.2f ms of %d after %d warm-up (min %.2f, max %.2f)\n", mode.c_str(), median,
                o.repeats, o.warmup, ms.front(), ms.back());
    std::printf("  %.1f GFLOP/s (%.2f GFLOP of matmul/conv)\n", gflops, flops / 1e9);
  }
  return 0;
}

ConnectorCommands::ConnectorCommands(CLI::App& app) {
  group_ = app.add_subcommand("connector", "List, run or time the registered connectors");
  group_->require_subcommand(1);

  list_ = group_->add_subcommand(
      "list", "Print every registered connector: class, visual tokens, options, parameters, what it does");

  run_ = group_->add_subcommand(
      "run",
      "Load a PyTorch state_dict and visual_features from safetensors, run the connector and write "
      "visual_tokens (with --grad-output also grad.visual_features and grad.<param>) and state.<buffer>");
  ConnectorRunOptions& r = run_options_;
  add_dims(run_, r.dims);
  run_->add_option("--weights", r.weights, "safetensors with the seed class's state_dict() keys")
      ->required();
  run_->add_option("--input", r.input, "safetensors holding visual_features [B, N, Dv]")->required();
  run_->add_option("--out", r.out, "safetensors to write (atomically)")->required();
  run_->add_option("--grad-output", r.grad_output,
                   "safetensors holding grad_output [B, N', Dllm]: back-propagate it (default: forward only)");
  run_->add_flag("--eval", r.eval, "eval mode (BatchNorm running statistics); default: training mode");

  bench_ = group_->add_subcommand("bench", "Time the connector on random weights and features");
  ConnectorBenchOptions& b = bench_options_;
  add_dims(bench_, b.dims);
  bench_->add_option("--batch", b.batch, "batch size B")->capture_default_str()->check(kPositive);
  bench_->add_option("--tokens", b.tokens, "visual tokens N per image")
      ->capture_default_str()->check(kPositive);
  bench_->add_flag("--backward", b.backward, "time forward + backward of sum(output) (default: forward only)");
  bench_->add_option("--grad", b.grad,
                     "with --backward: sum (the gradient of sum(output), all ones) or random (a fixed N(0,1) "
                     "gradient of the output's shape, as a loss downstream gives)")
      ->capture_default_str()
      ->check(CLI::IsMember({"sum", "random"}));
  bench_->add_option("--threads", b.threads, "CPU threads (0 = --threads before the subcommand, "
                                             "VLMC_NUM_THREADS or all cores)")
      ->capture_default_str()->check(kNonNegative);
  bench_->add_option("--repeats", b.repeats, "timed runs; the median is reported")
      ->capture_default_str()->check(kPositive);
  bench_->add_option("--warmup", b.warmup, "untimed runs first")->capture_default_str()->check(kNonNegative);
  bench_->add_option("--seed", b.seed, "seed of the random weights and features")->capture_default_str();
  bench_->add_option("--precision", b.precision,
                      "f32, or bf16: matmul operands in bf16 with f32 accumulation (torch.autocast's bf16)")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "bf16"}));
  bench_->add_flag("--json", b.json, "print one JSON object per line (median_ms, gflops, ...)");
}

int ConnectorCommands::execute() const {
  if (list_->parsed()) {
    std::fputs(nn::connector_table_markdown().c_str(), stdout);
    return 0;
  }
  if (run_->parsed()) return run_connector(run_options_);
  if (bench_->parsed()) return bench_connector(bench_options_);
  return 0;
}

}  // namespace vlmc::cli
