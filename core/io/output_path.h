// What every writer of a user-named output checks before it writes: vlmc
// writes beside the target and renames over it, which would silently replace
// a symlink, a device node or a FIFO with a regular file (run as root, once
// the system's "full" device). Such targets are refused instead.
#pragma once

#include <string>

namespace vlmc::io {

// Throws vlmc::Error, starting with `who`, when `path` is empty, or names
// something that exists and is not a regular file (symlinks are not
// followed: a symlink is refused too). A missing path is fine: it is created.
void check_output_path(const std::string& path, const std::string& who);

}  // namespace vlmc::io
