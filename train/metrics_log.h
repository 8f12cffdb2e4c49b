// runs/<name>/metrics.jsonl: one JSON object per line, appended as training
// goes, so a plotting script can read it while the run is alive.
//
// Each record is serialised completely before a single write and flushed
// right after, so a crash loses at most the line being written, and that line
// is recognisable as torn: it is the last one and does not parse. Readers drop
// such a last line; a line that does not parse anywhere else means the file
// was damaged some other way and is an error naming the file and the line.
#pragma once

#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace vlmc::train {

class TensorBoardWriter;

class MetricsLog {
 public:
  // Opens `path` for appending, creating missing parent directories. Throws
  // vlmc::Error naming the path when it cannot. If the file ends in a torn
  // line, a newline is appended first so new records never fuse with it.
  explicit MetricsLog(const std::string& path);

  // Writes `record` (a JSON object) as one line and flushes. Non-finite
  // numbers become null (JSON has no NaN); strings that are not valid UTF-8
  // have the bad bytes replaced by U+FFFD rather than breaking the line.
  void write(const nlohmann::json& record);

  const std::string& path() const { return path_; }

  // From now on every record written is also written as TensorBoard scalars
  // to a new events file in `dir` (train/tensorboard.h), at the run's global
  // step: the record's step plus stage_offsets[its stage] (the optimizer
  // steps of the stages before it; a stage not named there is not mirrored).
  // Tags: "train/<field>" for a step's numbers (loss, lr, grad_norm, step_s,
  // tokens), "validation/answer_accuracy", "validation/<kind>",
  // "validation/rule_reader_accuracy", and "<split>/<name>_accuracy" and
  // "<split>/<kind>" for an evaluation record ("stage": "eval"), placed at
  // stage_offsets["eval"]. `start_step`
  // is the global step a resumed run continues from (TensorBoard then hides
  // the earlier file's points past it).
  void mirror_to_tensorboard(const std::string& dir, std::map<std::string, int64_t> stage_offsets,
                             int64_t start_step);

  // For --resume: rewrites `path` atomically, keeping only the records for
  // which keep(record) is true (the trainer drops those newer than the
  // checkpoint). A missing file is left missing. Parse rules as read_all.
  static void truncate_for_resume(const std::string& path,
                                  const std::function<bool(const nlohmann::json&)>& keep);

  // Every record in file order. A torn last line is dropped; any other line
  // that is not a JSON object throws vlmc::Error naming path and line number.
  // Blank lines are skipped.
  static std::vector<nlohmann::json> read_all(const std::string& path);

 private:
  struct FileCloser {
    void operator()(std::FILE* f) const { std::fclose(f); }
  };
  std::string path_;
  std::unique_ptr<std::FILE, FileCloser> file_;
  void mirror(const nlohmann::json& record);

  std::shared_ptr<TensorBoardWriter> tensorboard_;
  std::map<std::string, int64_t> stage_offsets_;
};

}  // namespace vlmc::train
