#include "train/metrics_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "core/error.h"
#include "core/io/atomic_file.h"
#include "core/io/read_file.h"
#include "train/tensorboard.h"

namespace vlmc::train {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// JSON has no NaN or infinity; nlohmann would print them as null anyway, but
// doing it explicitly keeps the rule visible and independent of the library.
json sanitize(const json& v) {
  if (v.is_number_float()) return std::isfinite(v.get<double>()) ? v : json(nullptr);
  if (v.is_object()) {
    json out = json::object();
    for (const auto& [k, x] : v.items()) out[k] = sanitize(x);
    return out;
  }
  if (v.is_array()) {
    json out = json::array();
    for (const auto& x : v) out.push_back(sanitize(x));
    return out;
  }
  return v;
}

std::vector<json> parse_lines(const std::string& text, const std::string& path) {
  // Split on '\n'; a final piece with no newline after it is the last line too.
  std::vector<std::string> lines;
  size_t begin = 0;
  while (begin < text.size()) {
    size_t end = text.find('\n', begin);
    if (end == std::string::npos) end = text.size();
    lines.push_back(text.substr(begin, end - begin));
    begin = end + 1;
  }
  size_t last_nonblank = lines.size();
  for (size_t i = lines.size(); i-- > 0;)
    if (lines[i].find_first_not_of(" \t\r") != std::string::npos) {
      last_nonblank = i;
      break;
    }

  std::vector<json> records;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (lines[i].find_first_not_of(" \t\r") == std::string::npos) continue;
    json rec = json::parse(lines[i], nullptr, /*allow_exceptions=*/false);
    if (rec.is_object()) {
      records.push_back(std::move(rec));
      continue;
    }
    if (i == last_nonblank) break;  // torn by a crash mid-write: drop it
    throw Error(str(path, ":", i + 1, ": not a JSON object (", rec.is_discarded() ? "does not parse" : rec.type_name(),
                    "), and it is not the last line, so it is not a torn write"));
  }
  return records;
}

}  // namespace

MetricsLog::MetricsLog(const std::string& path) : path_(path) {
  const fs::path parent = fs::path(path).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    fs::create_directories(parent, ec);
    if (ec) throw Error(str(path, ": cannot create directory '", parent.string(), "': ", ec.message()));
  }
  errno = 0;
  file_.reset(std::fopen(path.c_str(), "a+b"));
  if (!file_) throw Error(str(path, ": cannot open metrics log for appending: ", errno_text()));
  // A file that ends mid-line (a crash during the last write) gets its newline
  // now; otherwise the next record would be glued to the torn one and lost too.
  std::FILE* f = file_.get();
  if (std::fseek(f, 0, SEEK_END) == 0 && std::ftell(f) > 0 && std::fseek(f, -1, SEEK_END) == 0) {
    const int c = std::fgetc(f);
    std::fseek(f, 0, SEEK_END);
    if (c != '\n' && c != EOF) {
      std::fputc('\n', f);
      std::fflush(f);
    }
  }
}

void MetricsLog::write(const json& record) {
  VLMC_CHECK(record.is_object(), path_, ": a metrics record must be a JSON object, got ", record.type_name());
  // dump() without indentation escapes control characters, so the line never
  // contains a newline of its own.
  std::string text = sanitize(record).dump(-1, ' ', false, json::error_handler_t::replace);
  text += '\n';
  errno = 0;
  if (std::fwrite(text.data(), 1, text.size(), file_.get()) != text.size() || std::fflush(file_.get()) != 0)
    throw Error(str(path_, ": writing metrics record failed: ", errno_text()));
  if (tensorboard_) mirror(record);
}

void MetricsLog::mirror_to_tensorboard(const std::string& dir, std::map<std::string, int64_t> stage_offsets,
                                       int64_t start_step) {
  tensorboard_ = std::make_shared<TensorBoardWriter>(dir, start_step);
  stage_offsets_ = std::move(stage_offsets);
}

void MetricsLog::mirror(const json& record) {
  const auto offset = stage_offsets_.find(record.value("stage", ""));
  if (offset == stage_offsets_.end()) return;
  TensorBoardWriter& tb = *tensorboard_;
  const bool numbered = record.contains("step") && record["step"].is_number_integer();
  const int64_t step = offset->second + (numbered ? record["step"].get<int64_t>() : 0);
  const auto scalars = [&](const std::string& prefix, const json& object) {
    for (const auto& [key, value] : object.items())
      if (value.is_number() && key != "step") tb.add_scalar(prefix + key, step, value.get<double>());
  };
  if (record.value("stage", "") == "eval") {
    // The accuracies; the record's counts and seeds are not curves.
    const std::string split = record.value("split", "test");
    for (const auto& [key, value] : record.items())
      if (value.is_number() && key.size() > 9 && key.compare(key.size() - 9, 9, "_accuracy") == 0)
        tb.add_scalar(split + "/" + key, step, value.get<double>());
    if (record.contains("kinds"))
      for (const auto& [kind, score] : record["kinds"].items())
        if (score.is_object() && score.value("total", 0) > 0)
          tb.add_scalar(split + "/" + kind, step, score.value("correct", 0.0) / score.value("total", 1.0));
  } else if (record.contains("validation") && record["validation"].is_object()) {
    scalars("validation/", record["validation"]);
    if (record["validation"].contains("kinds")) scalars("validation/", record["validation"]["kinds"]);
  } else {
    scalars("train/", record);
  }
}

// The whole file: logs are small (one line per logged step).
std::vector<json> MetricsLog::read_all(const std::string& path) {
  return parse_lines(io::read_file(path, "metrics log"), path);
}

void MetricsLog::truncate_for_resume(const std::string& path, const std::function<bool(const json&)>& keep) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return;
  std::string kept;
  for (const json& rec : read_all(path))
    if (keep(rec)) kept += rec.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";

  // A crash leaves the old file or the new one, never a mix.
  io::write_file_atomically(path, kept, "metrics log");
}

}  // namespace vlmc::train
