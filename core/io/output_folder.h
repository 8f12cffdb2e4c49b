// New output folders that appear whole or not at all: what every exporter
// writes (save_pretrained, `vlmc export --checkpoint`, `vlmc data
// export-mosaics`). The files go into DIR.tmp.<pid>, which is renamed to DIR
// once complete; on any failure it is removed. An existing DIR is never
// replaced.
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

namespace vlmc::io {

// `dir` without a trailing separator ("out/" -> "out"), after checking that it
// names a new folder: an empty path, ".", ".." or anything that exists (a
// symlink included) is a vlmc::Error starting with `who`. Callers may call it
// first to fail before doing any work; write_new_folder calls it again.
std::filesystem::path check_new_folder(const std::string& dir, const std::string& who);

// Fills DIR.tmp.<pid> with fill(tmp) and renames it to `dir`. Filesystem
// errors become vlmc::Errors naming `who` and `dir`.
void write_new_folder(const std::string& dir, const std::string& who,
                      const std::function<void(const std::filesystem::path& tmp)>& fill);

// A plain write of `bytes` to `path` (inside a folder being built), checked:
// a failure is a vlmc::Error naming `who` and the file.
void write_file(const std::filesystem::path& path, std::string_view bytes, const std::string& who);

}  // namespace vlmc::io
