// `vlmc data export-mosaics`: the Fashion-MNIST mosaics (train/mosaic.h) as
// files in LLaVA's data formats, so the LLaVA loader can be tested end to end
// on real image files and JSON:
//
//   DIR/images/mosaic-000000.png ...  the 56x56 grey mosaics (PNG, or JPEG;
//                                     112x112 with --mosaic-grid 4)
//   DIR/captions.json   stage 1, as blip_laion_cc_sbu_558k.json: one caption
//                       per mosaic, the human turn "<image>" alone
//   DIR/questions.json  stage 2, as llava_v1_5_mix665k.json: per mosaic one
//                       multi-turn conversation of its questions (the first
//                       human turn starts with "<image>\n"), then text-only
//                       conversations (no "image" key) that ask the same
//                       questions about a caption given as text
//
// The mosaics and questions are the ones `vlmc train` / `vlmc eval` draw for
// the same seed: the train split uses the pool's seeds (seeds::kPool,
// kPoolQuestions), the test split the evaluation's (kEval, kEvalQuestions).
// Exporting N train mosaics with K questions each gives exactly the pool of a
// run with data.train_mosaics = N and data.questions_per_image = K. Text-only
// conversations use the mosaics after the N (rows N.. of the same stream),
// whose images are not written.
//
// Every path in the JSON is relative to DIR. The same options give the same
// bytes. DIR appears whole or not at all (written as DIR.tmp.<pid>, renamed);
// an existing DIR is never replaced.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "train/idx.h"
#include "train/mosaic.h"

namespace vlmc::train {

enum class ExportImageFormat { png, jpeg };

struct MosaicExportOptions {
  std::string out;                   // the folder to create
  Split split = Split::train;
  int64_t count = 1000;              // mosaics (images) written, >= 1
  int64_t questions_per_image = 4;   // K questions per mosaic, >= 1
  int64_t text_only = -1;            // text-only conversations; -1: one per 10 mosaics, rounded up
  int64_t seed = 0;                  // the run seed (TrainConfig::seed)
  int64_t grid = 2;                  // items per mosaic side (TrainConfig::mosaic_grid)
  ExportImageFormat image_format = ExportImageFormat::png;
  std::string data_dir = kFashionMnistDir;
};

struct MosaicExportSummary {
  int64_t images = 0;      // = captions.json's samples = questions.json's image samples
  int64_t questions = 0;   // question-answer pairs over every conversation of questions.json
  int64_t text_only = 0;   // questions.json's samples without an image
};

// Reads the split, writes options.out. Throws vlmc::Error naming the option,
// folder or file that is wrong; nothing is left behind on failure.
MosaicExportSummary export_mosaics(const MosaicExportOptions& options);

// The JPEG quality of --image-format jpg (libjpeg's 0..100 scale).
inline constexpr int kExportJpegQuality = 95;

// Mosaic m of a set as 8-bit grey pixels [56 * 56] (round(pixel * 255), the
// Fashion-MNIST bytes themselves).
std::vector<uint8_t> mosaic_pixels(const MosaicSet& set, int64_t m);

// A question sample's text without its image: "what is at the top left? <image>"
// -> "what is at the top left?". Throws if the prompt does not end in " <image>".
std::string question_text(const Sample& sample);

// "mosaic-000042" / "text-000042": ids, and image file stems.
std::string mosaic_id(int64_t m);
std::string text_only_id(int64_t t);

}  // namespace vlmc::train
