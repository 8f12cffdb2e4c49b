// `vlmc data`: data-set tools. `vlmc data export-mosaics` writes the
// Fashion-MNIST mosaics as image files with LLaVA-format captions and
// questions (train/mosaic_export.h, docs/data.md).
#pragma once

#include <CLI/CLI.hpp>

#include <string>

#include "train/mosaic_export.h"

namespace vlmc::cli {

struct ExportMosaicsOptions {
  train::MosaicExportOptions export_options;  // split, image_format and text_only are set from the strings below
  std::string split = "train";                // train | test
  std::string image_format = "png";           // png | jpg
  std::string format = "llava";               // the JSON layout; LLaVA's is the only one
};

// Writes the export and prints a one-line summary on stderr.
int run_export_mosaics(const ExportMosaicsOptions& options);

// The `data` subcommand group. The object owns the option values CLI11 writes
// into, so it must outlive parsing.
class DataCommands {
 public:
  explicit DataCommands(CLI::App& app);
  DataCommands(const DataCommands&) = delete;
  DataCommands& operator=(const DataCommands&) = delete;

  bool parsed() const { return group_->parsed(); }
  int execute() const;  // runs whichever subcommand was given

 private:
  CLI::App* group_ = nullptr;
  CLI::App* export_mosaics_ = nullptr;
  ExportMosaicsOptions export_mosaics_options_;
};

}  // namespace vlmc::cli
