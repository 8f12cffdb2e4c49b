// The vlmc command line. Every subcommand lists its flags and defaults with --help.
#include <CLI/CLI.hpp>

#include <omp.h>
#include <sched.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <new>
#include <vector>

#include "core/error.h"
#include "core/threads.h"
#include "train/connector_cli.h"
#include "train/cli_checks.h"
#include "train/data_cli.h"
#include "train/demo.h"
#include "train/export_cli.h"
#include "train/generate_cli.h"
#include "train/inspect_cli.h"
#include "train/plan_cli.h"
#include "train/tokenize_cli.h"
#include "train/train_cli.h"

namespace {

// With OMP_PROC_BIND or OMP_PLACES set, libgomp binds the initial thread to
// the first place as it loads, and exec keeps that mask: the re-executed
// libgomp then saw one place's CPUs and put every thread there. Both threads
// of `OMP_PROC_BIND=true OMP_PLACES=cores vlmc --threads 2` ran on CPU 0, and
// the language model's stage-0 step took 26-31 ms against 13-19 unbound (AMD
// EPYC, 2 cores; docs/perf.md). Before exec the thread gets back every CPU of
// the places, so the new process finds the same places. Without binding there
// are no places and nothing to do; a refused mask leaves it bound, as before.
void unbind_before_exec() {
  if (omp_get_num_places() <= 0) return;
  const std::vector<int> usable = vlmc::usable_cpus();
  if (usable.empty()) return;
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  for (const int id : usable) CPU_SET(id, &cpus);
  sched_setaffinity(0, sizeof(cpus), &cpus);
}

// How long an idle OpenMP thread spins before it sleeps. A training step is
// hundreds of small parallel regions with serial work between them (autograd
// bookkeeping, tiny ops):
//   - sleeping at once (OMP_WAIT_POLICY=passive) pays a futex wake-up at every
//     region: the main job's stage-2 step took 33.3 ms on 2 threads;
//   - spinning without end (OMP_WAIT_POLICY=active) took cores from the rest
//     of the process on an AMD EPYC: 3.4-4.1x slower than passive there;
//   - spinning a bounded while (GOMP_SPINCOUNT=10000, libgomp's default policy
//     otherwise, which also cuts the spin to 1000 when threads outnumber
//     cores): 20.9 ms, the same losses (docs/perf.md, Intel Xeon, 2026-12-05).
// libgomp reads these when it is loaded, before main, so vlmc sets
// GOMP_SPINCOUNT and re-executes itself once; nothing is changed when the
// user set either variable.
void bound_openmp_spinning(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr || std::getenv("GOMP_SPINCOUNT") != nullptr) return;
  if (setenv("GOMP_SPINCOUNT", "10000", 1) != 0) return;
  unbind_before_exec();
  execv("/proc/self/exe", argv);  // returns only on failure: run on with libgomp's defaults
}

// A thread count asked for (--threads, VLMC_NUM_THREADS) above the CPUs the
// process may use runs as asked, but is said once: the threads take turns on
// the CPUs, and every parallel region waits for the one descheduled (two
// threads under a quota of one CPU: the language model's step 32-35 ms
// against 23-26 on one thread, docs/perf.md).
void note_more_threads_than_cpus(bool asked) {
  if (!asked) return;
  const int threads = vlmc::num_threads(), cpus = vlmc::available_cpus();
  if (threads <= cpus) return;
  std::fprintf(stderr,
               "vlmc: note: %d threads on the %d CPU%s this process may use (its CPU mask, OpenMP places and "
               "cgroup CPU quota): the threads will take turns; leave out --threads and VLMC_NUM_THREADS for %d\n",
               threads, cpus, cpus == 1 ? "" : "s", cpus);
}

}  // namespace

int main(int argc, char** argv) {
  bound_openmp_spinning(argv);
  CLI::App app{"vlmc: a C++/CUDA engine for LLaVA-style vision-language connectors"};
  app.require_subcommand(1);
  int threads = 0;
  app.add_option("--threads", threads,
                 "CPU threads for OpenMP and OpenBLAS (default: VLMC_NUM_THREADS or the CPUs this process may use, at most its cgroup CPU quota)")
      ->check(vlmc::cli::kPositive);

  vlmc::cli::DemoOptions demo;
  CLI::App* demo_cmd = app.add_subcommand(
      "demo", "Compare the Linear, MLP and Downsampling connectors (the seed's compare_connectors())");
  demo_cmd->add_option("--batch", demo.batch, "batch size")->capture_default_str()->check(vlmc::cli::kPositive);
  demo_cmd->add_option("--grid-size", demo.grid_size, "patch grid side (tokens = grid^2)")
      ->capture_default_str()->check(vlmc::cli::kPositive);
  demo_cmd->add_option("--target-size", demo.target_size, "pooled grid side of the downsampler")
      ->capture_default_str()->check(vlmc::cli::kPositive);
  demo_cmd->add_option("--dim-vision", demo.dim_vision, "vision feature width")
      ->capture_default_str()->check(vlmc::cli::kPositive);
  demo_cmd->add_option("--dim-llm", demo.dim_llm, "language model width")
      ->capture_default_str()->check(vlmc::cli::kPositive);
  demo_cmd->add_option("--repeats", demo.repeats, "timed runs after a warm-up (the median is printed)")
      ->capture_default_str()->check(vlmc::cli::kPositive);
  demo_cmd->add_flag("--backward", demo.backward, "time forward + backward of sum(output)");
  demo_cmd->add_option("--device", demo.device, "cpu, cuda or cuda:N")->capture_default_str();
  demo_cmd->add_option("--seed", demo.seed, "seed of the random features and weights")->capture_default_str();

  vlmc::cli::ConnectorCommands connector(app);
  vlmc::cli::TrainCommands training(app);
  vlmc::cli::TokenizeCommand tokenize(app);
  vlmc::cli::DataCommands data(app);
  vlmc::cli::PlanCommand plan(app);
  vlmc::cli::ExportCommand export_cmd(app);
  vlmc::cli::InspectCommand inspect(app);
  vlmc::cli::GenerateCommand generate(app);

  CLI11_PARSE(app, argc, argv);
  try {
    if (threads > 0) vlmc::set_num_threads(threads);
    note_more_threads_than_cpus(threads > 0 || std::getenv("VLMC_NUM_THREADS") != nullptr);
    if (demo_cmd->parsed()) return vlmc::cli::run_demo(demo);
    if (connector.parsed()) return connector.execute();
    if (training.parsed()) return training.execute();
    if (tokenize.parsed()) return tokenize.execute();
    if (data.parsed()) return data.execute();
    if (plan.parsed()) return plan.execute();
    if (export_cmd.parsed()) return export_cmd.execute();
    if (inspect.parsed()) return inspect.execute();
    if (generate.parsed()) return generate.execute();
  } catch (const std::bad_alloc&) {
    // Sizes are checked where they are read; what still fails to allocate is a
    // size the machine cannot hold, said plainly rather than as "std::bad_alloc".
    std::fprintf(stderr, "vlmc: error: out of memory: an allocation of this command did not fit (std::bad_alloc)\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vlmc: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
