// Writing a whole file so that readers see the old file or the new one, never
// a part: the bytes go to a temporary file beside the target, which is
// renamed over it (atomic within a filesystem). On any failure the temporary
// file is removed and the target is left as it was.
#pragma once

#include <string>
#include <string_view>

namespace vlmc::train {

// `who` starts every error message (the operation, e.g. "write_line_plot_png");
// the messages name the target, the temporary file and the system's reason.
void write_file_atomically(const std::string& path, std::string_view bytes, const std::string& who);

}  // namespace vlmc::train
