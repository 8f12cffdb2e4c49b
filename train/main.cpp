// The vlmc command line. Every subcommand lists its flags and defaults with --help.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>

#include "core/error.h"
#include "core/threads.h"
#include "train/connector_cli.h"
#include "train/demo.h"

int main(int argc, char** argv) {
  CLI::App app{"vlmc: a C++/CUDA engine for LLaVA-style vision-language connectors"};
  app.require_subcommand(1);
  int threads = 0;
  app.add_option("--threads", threads,
                 "CPU threads for OpenMP and OpenBLAS (default: VLMC_NUM_THREADS or all cores)")
      ->check(CLI::PositiveNumber);

  vlmc::cli::DemoOptions demo;
  CLI::App* demo_cmd = app.add_subcommand(
      "demo", "Compare the Linear, MLP and Downsampling connectors (the seed's compare_connectors())");
  demo_cmd->add_option("--batch", demo.batch, "batch size")->capture_default_str()->check(CLI::PositiveNumber);
  demo_cmd->add_option("--grid-size", demo.grid_size, "patch grid side (tokens = grid^2)")
      ->capture_default_str()->check(CLI::PositiveNumber);
  demo_cmd->add_option("--target-size", demo.target_size, "pooled grid side of the downsampler")
      ->capture_default_str()->check(CLI::PositiveNumber);
  demo_cmd->add_option("--dim-vision", demo.dim_vision, "vision feature width")
      ->capture_default_str()->check(CLI::PositiveNumber);
  demo_cmd->add_option("--dim-llm", demo.dim_llm, "language model width")
      ->capture_default_str()->check(CLI::PositiveNumber);
  demo_cmd->add_option("--repeats", demo.repeats, "timed runs after a warm-up (the median is printed)")
      ->capture_default_str()->check(CLI::PositiveNumber);
  demo_cmd->add_flag("--backward", demo.backward, "time forward + backward of sum(output)");
  demo_cmd->add_option("--device", demo.device, "cpu, cuda or cuda:N")->capture_default_str();
  demo_cmd->add_option("--seed", demo.seed, "seed of the random features and weights")->capture_default_str();

  vlmc::cli::ConnectorCommands connector(app);

  CLI11_PARSE(app, argc, argv);
  try {
    if (threads > 0) vlmc::set_num_threads(threads);
    if (demo_cmd->parsed()) return vlmc::cli::run_demo(demo);
    if (connector.parsed()) return connector.execute();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vlmc: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
