// The one whole-file reader for files vlmc reads back in full (metrics logs,
// TensorBoard event files): errors name the path and the file's role.
#pragma once

#include <string>

namespace vlmc::io {

// The bytes of `path`. Throws vlmc::Error "<path>: cannot open <what>: <why>"
// or "<path>: reading <what> failed".
std::string read_file(const std::string& path, const std::string& what);

}  // namespace vlmc::io
