// `vlmc connector list | run | bench`: the registered connectors
// (modules/connector_registry.h) from the command line, for people porting
// from PyTorch.
//
//   list:  the registry as a Markdown table (docs/connectors.md holds it).
//   run:   loads a PyTorch state_dict and an input from safetensors, runs one
//          forward (and, given an output gradient, one backward) and writes the
//          output, every gradient and every buffer, so the result can be
//          compared tensor by tensor with the seed's classes.
//   bench: times the forward (or forward + backward) on random weights, in
//          f32 or bf16 mixed precision.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>

#include "modules/connector.h"

namespace vlmc::cli {

// Flags shared by both subcommands: the seed's constructor arguments and the
// dynamic connector's forward argument.
struct ConnectorDims {
  nn::ConnectorConfig config;
  int64_t dim_hidden = 0;     // 0: the seed's `dim_hidden or dim_llm`
  int64_t target_tokens = 0;  // 0: None, the seed's default (min(N, max_tokens))
  std::string device = "cpu";

  nn::ConnectorConfig resolved() const;  // config with dim_hidden applied
};

struct ConnectorRunOptions {
  ConnectorDims dims;
  std::string weights, input, out, grad_output;
  bool eval = false;
};

struct ConnectorBenchOptions {
  ConnectorDims dims;
  int64_t batch = 4;
  int64_t tokens = 576;
  bool backward = false;
  int threads = 0;  // 0: the global --threads / VLMC_NUM_THREADS / all cores
  int repeats = 5;  // timed runs after `warmup` untimed ones; the median is reported
  int warmup = 1;
  uint64_t seed = 42;
  bool json = false;
  // "f32", or "bf16": the timed forward and backward run under an
  // AutocastGuard (bf16 matmul operands, f32 accumulation), as the seed's
  // classes do under torch.autocast(dtype=torch.bfloat16).
  std::string precision = "f32";
  // With backward: "sum", the gradient of sum(output) (all ones, the seed's
  // benchmark), or "random", one fixed N(0, 1) gradient of the output's shape,
  // as a loss downstream gives (a product on an all-ones gradient can run
  // faster than on real data: docs/perf.md, sixteenth session).
  std::string grad = "sum";
};

int run_connector(const ConnectorRunOptions& options);
int bench_connector(const ConnectorBenchOptions& options);

// The `connector` subcommand group, with `list`, `run` and `bench` under it. The
// object owns the option values CLI11 writes into, so it must outlive parsing.
class ConnectorCommands {
 public:
  explicit ConnectorCommands(CLI::App& app);
  ConnectorCommands(const ConnectorCommands&) = delete;
  ConnectorCommands& operator=(const ConnectorCommands&) = delete;

  bool parsed() const { return group_->parsed(); }
  int execute() const;  // runs whichever subcommand was given

 private:
  CLI::App* group_;
  CLI::App* list_;
  CLI::App* run_;
  CLI::App* bench_;
  ConnectorRunOptions run_options_;
  ConnectorBenchOptions bench_options_;
};

}  // namespace vlmc::cli
