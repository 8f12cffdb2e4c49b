#include "train/data_cli.h"

#include <cstdio>

#include "core/error.h"
#include "train/cli_checks.h"

namespace vlmc::cli {

DataCommands::DataCommands(CLI::App& app) {
  group_ = app.add_subcommand("data", "Data-set tools");
  group_->require_subcommand(1);

  export_mosaics_ = group_->add_subcommand(
      "export-mosaics",
      "Write Fashion-MNIST mosaics as image files with LLaVA-format JSON: OUT/images/mosaic-NNNNNN.png, "
      "OUT/captions.json (stage 1, as blip_laion_cc_sbu_558k.json) and OUT/questions.json (stage 2, multi-turn, "
      "text-only samples mixed in, as llava_v1_5_mix665k.json); the mosaics and questions vlmc train (train split) "
      "or vlmc eval (test split) draws for the same seed");
  ExportMosaicsOptions& o = export_mosaics_options_;
  train::MosaicExportOptions& e = o.export_options;
  export_mosaics_->add_option("--out", e.out, "the folder to create (an existing one is never replaced)")
      ->required();
  export_mosaics_->add_option("--split", o.split, "train (the training pool's mosaics) or test (the evaluation's)")
      ->capture_default_str()
      ->check(CLI::IsMember({"train", "test"}));
  export_mosaics_->add_option("--count", e.count, "mosaics (images) to write")->capture_default_str()->check(kPositive);
  export_mosaics_->add_option("--questions-per-image", e.questions_per_image,
                              "questions (turns) in each mosaic's conversation of questions.json")
      ->capture_default_str()
      ->check(kPositive);
  export_mosaics_->add_option("--text-only", e.text_only,
                              "text-only conversations in questions.json (a caption as text, then questions about "
                              "it); default: one per 10 mosaics, rounded up")
      ->check(kNonNegative);
  export_mosaics_->add_option("--seed", e.seed, "the run seed (vlmc train's seed)")->capture_default_str();
  export_mosaics_->add_option("--mosaic-grid", e.grid, "items per mosaic side, as data.mosaic_grid: 2 or 4")
      ->capture_default_str()
      ->check(CLI::IsMember({2, 4}));
  export_mosaics_->add_option("--image-format", o.image_format, "png, or jpg (greyscale JPEG, quality 95)")
      ->capture_default_str()
      ->check(CLI::IsMember({"png", "jpg"}));
  export_mosaics_->add_option("--format", o.format, "the JSON layout: llava")
      ->capture_default_str()
      ->check(CLI::IsMember({"llava"}));
  export_mosaics_->add_option("--data-dir", e.data_dir, "Debian's dataset-fashion-mnist folder")
      ->capture_default_str();
}

int run_export_mosaics(const ExportMosaicsOptions& options) {
  VLMC_CHECK(options.format == "llava", "data export-mosaics: --format '", options.format, "' is not llava");
  VLMC_CHECK(options.split == "train" || options.split == "test", "data export-mosaics: --split '", options.split,
             "' is not train or test");
  VLMC_CHECK(options.image_format == "png" || options.image_format == "jpg", "data export-mosaics: --image-format '",
             options.image_format, "' is not png or jpg");
  train::MosaicExportOptions e = options.export_options;
  e.split = options.split == "train" ? train::Split::train : train::Split::test;
  e.image_format = options.image_format == "png" ? train::ExportImageFormat::png : train::ExportImageFormat::jpeg;
  const train::MosaicExportSummary s = train::export_mosaics(e);
  std::fprintf(stderr,
               "wrote %s: %lld %s images of the %s split, captions.json (%lld samples), questions.json (%lld "
               "conversations with an image, %lld text-only, %lld questions)\n",
               e.out.c_str(), static_cast<long long>(s.images), options.image_format.c_str(), options.split.c_str(),
               static_cast<long long>(s.images), static_cast<long long>(s.images),
               static_cast<long long>(s.text_only), static_cast<long long>(s.questions));
  return 0;
}

int DataCommands::execute() const {
  if (export_mosaics_->parsed()) return run_export_mosaics(export_mosaics_options_);
  return 0;
}

}  // namespace vlmc::cli
