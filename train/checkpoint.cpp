#include "train/checkpoint.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <system_error>
#include <vector>

#include "core/error.h"
#include "core/io/atomic_file.h"
#include "core/io/tensor_io.h"
#include "core/autograd.h"
#include "core/ops.h"

namespace vlmc::train {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr const char* kFiles[] = {kCheckpointModelFile, kCheckpointOptimizerFile, kCheckpointStateFile};
// Suffixes of the hidden directories a writer makes: the one being written,
// the one being replaced, the one being pruned.
constexpr const char* kTmp = "tmp";
constexpr const char* kOld = "old";
constexpr const char* kDel = "del";

std::string hidden_name(const std::string& name, const char* kind) {
  return str(".", name, ".", kind, "-", ::getpid());
}

// fsync of a file or directory. Without it a power loss after the rename could
// leave a directory entry pointing at data that never reached the disk.
void fsync_path(const fs::path& p, bool directory) { io::fsync_path(p.string(), directory); }

void check_name(const std::string& name) {
  VLMC_CHECK(!name.empty() && name != "." && name != ".." && name[0] != '.' &&
                 name.find('/') == std::string::npos && name.find('\0') == std::string::npos,
             "save_checkpoint: invalid checkpoint name '", name,
             "' (must be a plain directory name not starting with '.')");
}

// A hidden writer directory ".<name>.<kind>-<pid>", taken apart.
struct Hidden {
  std::string name;
  std::string kind;
  pid_t pid = 0;
};

std::optional<Hidden> parse_hidden(const std::string& entry) {
  if (entry.size() < 2 || entry[0] != '.') return std::nullopt;
  const size_t dash = entry.rfind('-');
  if (dash == std::string::npos || dash + 1 == entry.size() || dash < 5) return std::nullopt;
  const std::string digits = entry.substr(dash + 1);
  if (digits.size() > 9 || !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  const std::string kind = entry.substr(dash - 3, 3);
  if (entry[dash - 4] != '.' || (kind != kTmp && kind != kOld && kind != kDel)) return std::nullopt;
  Hidden h{entry.substr(1, dash - 5), kind, static_cast<pid_t>(std::stol(digits))};
  if (h.name.empty()) return std::nullopt;
  return h;
}

// Another live process may be writing this very directory right now.
bool owned_by_live_writer(pid_t pid) {
  if (pid == ::getpid()) return false;  // ours: saves in one process do not overlap
  return ::kill(pid, 0) == 0 || errno == EPERM;
}

// Removes what crashed writers left under root. An "old" directory whose
// checkpoint name no longer exists is the only complete copy (the crash fell
// between the two renames of the fallback path), so it is put back instead.
void clean_stale(const fs::path& root) {
  std::vector<fs::path> entries;
  for (const auto& e : fs::directory_iterator(root)) entries.push_back(e.path());
  for (const fs::path& p : entries) {
    const auto h = parse_hidden(p.filename().string());
    if (!h || owned_by_live_writer(h->pid)) continue;
    const fs::path target = root / h->name;
    std::error_code ec;
    if (h->kind == kOld && !fs::exists(target, ec) && is_checkpoint(p.string())) {
      fs::rename(p, target, ec);
      if (!ec) continue;
    }
    fs::remove_all(p, ec);
    if (ec) throw Error(str(p.string(), ": cannot remove stale checkpoint directory: ", ec.message()));
  }
}

void write_state(const fs::path& path, const json& state) {
  std::string text;
  try {
    text = state.dump(2) + "\n";
  } catch (const json::exception& e) {
    throw Error(str(path.string(), ": state cannot be written as JSON: ", e.what()));
  }
  errno = 0;
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) throw Error(str(path.string(), ": cannot create: ", errno_text()));
  errno = 0;
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size() && std::fflush(f) == 0;
  const std::string why = errno_text();
  if (std::fclose(f) != 0 || !ok) throw Error(str(path.string(), ": write failed: ", why));
}

// Moves the complete `fresh` directory to `target`, never leaving `target`
// absent if it existed. Returns the directory now holding the replaced
// checkpoint (to delete), or empty if there was none.
fs::path install(const fs::path& fresh, const fs::path& target, const fs::path& root, const std::string& name) {
  std::error_code ec;
  if (!fs::exists(fs::symlink_status(target, ec))) {
    errno = 0;
    if (std::rename(fresh.c_str(), target.c_str()) != 0)
      throw Error(str(target.string(), ": cannot rename '", fresh.string(), "' into place: ", errno_text()));
    return {};
  }
  errno = 0;
  if (::renameat2(AT_FDCWD, fresh.c_str(), AT_FDCWD, target.c_str(), RENAME_EXCHANGE) == 0) return fresh;
  if (errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP)
    throw Error(str(target.string(), ": cannot exchange with '", fresh.string(), "': ", errno_text()));
  // No atomic exchange here: move the old aside first. A crash before the
  // second rename is repaired by clean_stale() on the next save.
  const fs::path old = root / hidden_name(name, kOld);
  errno = 0;
  if (std::rename(target.c_str(), old.c_str()) != 0)
    throw Error(str(target.string(), ": cannot move the old checkpoint aside to '", old.string(), "': ", errno_text()));
  errno = 0;
  if (std::rename(fresh.c_str(), target.c_str()) != 0) {
    const std::string why = errno_text();
    std::rename(old.c_str(), target.c_str());  // put the old one back
    throw Error(str(target.string(), ": cannot rename '", fresh.string(), "' into place: ", why));
  }
  return old;
}

// CRC-32 (zlib's) of a whole file, as 8 hex digits, streamed in 1 MiB reads.
std::string file_crc32(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  VLMC_CHECK(in, "cannot open ", path.string(), " to checksum it");
  std::vector<char> buf(size_t(1) << 20);
  uLong crc = ::crc32(0L, Z_NULL, 0);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const std::streamsize got = in.gcount();
    if (got > 0) crc = ::crc32(crc, reinterpret_cast<const Bytef*>(buf.data()), static_cast<uInt>(got));
  }
  VLMC_CHECK(in.eof(), "reading ", path.string(), " to checksum it failed");
  char hex[9];
  std::snprintf(hex, sizeof hex, "%08lx", static_cast<unsigned long>(crc));
  return hex;
}

// The tensor files whose CRC-32 state.json records.
constexpr const char* kChecksummed[] = {kCheckpointModelFile, kCheckpointOptimizerFile};

}  // namespace

void save_checkpoint(const std::string& root, const std::string& name, const Checkpoint& ckpt) {
  check_name(name);
  const fs::path root_path(root);
  const fs::path target = root_path / name;
  std::error_code ec;
  fs::create_directories(root_path, ec);
  if (ec) throw Error(str(root, ": cannot create checkpoint root: ", ec.message()));
  clean_stale(root_path);

  const fs::path tmp = root_path / hidden_name(name, kTmp);
  fs::create_directory(tmp, ec);
  if (ec) throw Error(str(tmp.string(), ": cannot create temporary checkpoint directory: ", ec.message()));
  try {
    io::save_safetensors((tmp / kCheckpointModelFile).string(), ckpt.model);
    io::save_safetensors((tmp / kCheckpointOptimizerFile).string(), ckpt.optimizer);
    // state.json, written last, records the CRC-32 of the tensor files, which
    // every load checks: a flipped bit is an error, not a silent change.
    json state = ckpt.state;
    json& sums = state["checksums"] = json::object();
    for (const char* f : kChecksummed) sums[f] = "crc32:" + file_crc32(tmp / f);
    write_state(tmp / kCheckpointStateFile, state);
    for (const char* f : kFiles) fsync_path(tmp / f, false);
    fsync_path(tmp, true);
    const fs::path replaced = install(tmp, target, root_path, name);
    fsync_path(root_path, true);
    if (!replaced.empty()) fs::remove_all(replaced, ec);  // a leftover is cleaned by the next save
  } catch (const Error& e) {
    fs::remove_all(tmp, ec);
    throw Error(str("saving checkpoint '", target.string(), "': ", e.what()));
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
}

namespace {
Tensor zero_unless_nonfinite(const Tensor& t) {
  const Tensor x = t.dtype() == DType::f32 || t.dtype() == DType::f64 ? t.detach() : t.detach().to(DType::f32);
  return sum(mul(x, 0.0)).to(DType::f64);
}
}  // namespace

std::string first_nonfinite(const std::map<std::string, Tensor>& tensors) {
  NoGradGuard no_grad;
  Tensor total;
  for (const auto& [name, t] : tensors) {
    if (!is_floating(t.dtype()) || t.numel() == 0) continue;
    const Tensor z = zero_unless_nonfinite(t);
    total = total.defined() ? add(total, z.to(total.device())) : z;
  }
  if (!total.defined() || std::isfinite(total.item())) return "";
  for (const auto& [name, t] : tensors)  // the rare failure: find which one
    if (is_floating(t.dtype()) && t.numel() > 0 && !std::isfinite(zero_unless_nonfinite(t).item())) return name;
  return "?";
}

std::string nonfinite_in(const Checkpoint& ckpt) {
  if (std::string bad = first_nonfinite(ckpt.model); !bad.empty()) return str(kCheckpointModelFile, " tensor '", bad, "'");
  if (std::string bad = first_nonfinite(ckpt.optimizer); !bad.empty())
    return str(kCheckpointOptimizerFile, " tensor '", bad, "'");
  return "";
}

bool is_checkpoint(const std::string& dir) {
  std::error_code ec;
  for (const char* f : kFiles)
    if (!fs::is_regular_file(fs::path(dir) / f, ec)) return false;
  return true;
}

Checkpoint load_checkpoint(const std::string& dir) {
  std::error_code ec;
  VLMC_CHECK(fs::is_directory(dir, ec), "load_checkpoint: '", dir, "' is not a checkpoint directory (",
             fs::exists(dir, ec) ? "not a directory" : "does not exist", ")");
  for (const char* f : kFiles)
    VLMC_CHECK(fs::is_regular_file(fs::path(dir) / f, ec), "load_checkpoint: '", dir, "' is incomplete: ", f,
               " is missing");
  Checkpoint out;
  const fs::path state_path = fs::path(dir) / kCheckpointStateFile;
  std::ifstream in(state_path, std::ios::binary);
  VLMC_CHECK(in, "load_checkpoint: '", dir, "': cannot open ", kCheckpointStateFile);
  std::ostringstream ss;
  ss << in.rdbuf();
  out.state = json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  VLMC_CHECK(!out.state.is_discarded() && out.state.is_object(), "load_checkpoint: '", dir, "': ",
             kCheckpointStateFile, " is corrupt (not a valid JSON object)");
  // The tensor files against the checksums state.json recorded when they were
  // written (checkpoints from before checksums have none and are read as they are).
  if (const auto sums = out.state.find("checksums"); sums != out.state.end()) {
    VLMC_CHECK(sums->is_object(), "load_checkpoint: '", dir, "': ", kCheckpointStateFile,
               ": \"checksums\" is not an object");
    for (const char* f : kChecksummed) {
      const auto want = sums->find(f);
      VLMC_CHECK(want != sums->end() && want->is_string(), "load_checkpoint: '", dir, "': ", kCheckpointStateFile,
                 " has no checksum for ", f);
      const std::string got = "crc32:" + file_crc32(fs::path(dir) / f);
      VLMC_CHECK(want->get<std::string>() == got, "load_checkpoint: '", dir, "': ", f, " is corrupt: its checksum is ",
                 got, ", state.json recorded ", want->get<std::string>());
    }
    out.state.erase("checksums");  // the file's own bookkeeping: the caller gets the state it saved
  }
  try {
    out.model = io::load_safetensors((fs::path(dir) / kCheckpointModelFile).string());
    out.optimizer = io::load_safetensors((fs::path(dir) / kCheckpointOptimizerFile).string());
  } catch (const Error& e) {
    throw Error(str("load_checkpoint: '", dir, "': ", e.what()));
  }
  return out;
}

std::vector<std::string> list_checkpoints(const std::string& root) {
  std::vector<std::string> names;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return names;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    const std::string n = e.path().filename().string();
    if (n.empty() || n[0] == '.') continue;
    if (e.is_directory(ec) && is_checkpoint(e.path().string())) names.push_back(n);
  }
  if (ec) throw Error(str(root, ": cannot list checkpoints: ", ec.message()));
  std::sort(names.begin(), names.end());
  return names;
}

void prune_checkpoints(const std::string& root, const std::string& prefix, size_t keep_last) {
  std::vector<std::string> matching;
  for (const std::string& n : list_checkpoints(root))
    if (n.compare(0, prefix.size(), prefix) == 0) matching.push_back(n);
  if (matching.size() <= keep_last) return;
  matching.resize(matching.size() - keep_last);  // the oldest ones
  for (const std::string& n : matching) {
    const fs::path from = fs::path(root) / n;
    const fs::path doomed = fs::path(root) / hidden_name(n, kDel);
    errno = 0;
    if (std::rename(from.c_str(), doomed.c_str()) != 0)
      throw Error(str(from.string(), ": cannot move aside for pruning: ", errno_text()));
    std::error_code ec;
    fs::remove_all(doomed, ec);
    if (ec) throw Error(str(doomed.string(), ": cannot remove pruned checkpoint: ", ec.message()));
  }
}

}  // namespace vlmc::train
