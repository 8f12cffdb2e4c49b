#include "core/io/output_folder.h"

#include <unistd.h>

#include <fstream>

#include "core/error.h"

namespace vlmc::io {

namespace fs = std::filesystem;

fs::path check_new_folder(const std::string& dir, const std::string& who) {
  VLMC_CHECK(!dir.empty(), who, ": the output folder is empty");
  fs::path path(dir);
  if (!path.has_filename()) path = path.parent_path();
  VLMC_CHECK(!path.empty() && path.filename() != "." && path.filename() != "..", who, ": ", dir,
             " does not name a new folder");
  std::error_code ec;
  VLMC_CHECK(!fs::exists(fs::symlink_status(path, ec)), who, ": ", path.string(),
             " already exists; choose a new folder (an export never replaces one)");
  return path;
}

void write_new_folder(const std::string& dir, const std::string& who,
                      const std::function<void(const fs::path& tmp)>& fill) {
  const fs::path out = check_new_folder(dir, who);
  const fs::path tmp = out.string() + ".tmp." + std::to_string(::getpid());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  try {
    fs::create_directories(tmp);
    fill(tmp);
    fs::rename(tmp, out);
  } catch (const fs::filesystem_error& e) {
    fs::remove_all(tmp, ec);
    throw Error(str(who, ": ", out.string(), ": ", e.what()));
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
}

void write_file(const fs::path& path, std::string_view bytes, const std::string& who) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.flush();
  VLMC_CHECK(out.good(), who, ": writing ", path.string(), " failed");
}

}  // namespace vlmc::io
