// Scratch files for the libFuzzer targets whose parser reads a path (a
// config.json, a checkpoint folder, a gzip file): each process gets one
// private directory under $TMPDIR (default /tmp), removed at exit, and each
// input is written there before the parser reads it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace vlmc::fuzz {

// The process's scratch directory (created on first use).
const std::string& scratch_dir();

// Writes bytes to scratch_dir()/name (replacing it) and returns the path.
std::string write_scratch(const std::string& name, const uint8_t* data, size_t size);
std::string write_scratch(const std::string& name, std::string_view text);

// The file's bytes (for the fixed files a harness keeps beside the input).
std::string read_whole_file(const std::string& path);

// Where the checked-in seed files are (tests/fuzz/, or $VLMC_SOURCE_DIR/tests/fuzz).
std::string source_path(const std::string& relative);

}  // namespace vlmc::fuzz
