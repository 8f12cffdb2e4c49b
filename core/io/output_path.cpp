#include "core/io/output_path.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace vlmc::io {

void check_output_path(const std::string& path, const std::string& who) {
  VLMC_CHECK(!path.empty(), who, ": the output path is empty");
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    VLMC_CHECK(errno == ENOENT, who, ": cannot inspect output '", path, "': ", std::strerror(errno));
    return;  // created by the write
  }
  const char* kind = S_ISLNK(st.st_mode)    ? "a symbolic link"
                     : S_ISDIR(st.st_mode)  ? "a directory"
                     : S_ISFIFO(st.st_mode) ? "a FIFO"
                     : S_ISCHR(st.st_mode)  ? "a character device"
                     : S_ISBLK(st.st_mode)  ? "a block device"
                     : S_ISSOCK(st.st_mode) ? "a socket"
                                            : nullptr;
  VLMC_CHECK(kind == nullptr, who, ": output '", path, "' is ", kind,
             ", not a regular file: refusing to replace it (name a file path)");
}

}  // namespace vlmc::io
