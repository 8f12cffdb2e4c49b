// The fashion-mosaic run at toy sizes (a few seconds on 2 cores), shared by the
// trainer suites on the CPU (tests/train) and on CUDA (tests/cuda). Header-only:
// the support library links vlmc_core alone.
#pragma once

#include <cstdlib>
#include <filesystem>

#include "train/train_config.h"

namespace vlmc::test {

// Every stage 4 steps of 4 samples, widths 16, one layer each; outputs and the
// stage-0 cache under root.
inline train::TrainConfig toy_run_config(const std::filesystem::path& root) {
  train::TrainConfig c;
  c.runs_dir = (root / "runs").string();
  c.cache_dir = (root / "cache").string();
  c.log_every_s = 1e9;
  c.checkpoint_every = 2;
  c.keep_checkpoints = 100;
  c.train_mosaics = 64;
  c.questions_per_image = 2;
  c.vision_hidden_size = 16;
  c.vision_intermediate_size = 32;
  c.vision_num_attention_heads = 2;
  c.vision_num_hidden_layers = 1;
  c.lm_hidden_size = 16;
  c.lm_intermediate_size = 32;
  c.lm_num_attention_heads = 2;
  c.lm_num_key_value_heads = 1;
  c.lm_num_hidden_layers = 1;
  for (train::StageSettings* s : {&c.stage0_vision, &c.stage0_language, &c.stage1, &c.stage2}) {
    s->steps = 4;
    s->batch_size = 4;
  }
  c.eval_mosaics = 8;
  c.eval_questions_per_image = 2;
  c.eval_validation_mosaics = 8;
  c.eval_every = 2;
  // Where the machine keeps Fashion-MNIST elsewhere (the GPU machine unpacks
  // the Debian package beside the tree: scripts/gpu-check.sh).
  if (const char* dir = std::getenv("VLMC_FASHION_MNIST_DIR")) c.data_dir = dir;
  return c;
}

}  // namespace vlmc::test
