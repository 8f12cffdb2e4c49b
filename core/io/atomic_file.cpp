#include "core/io/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "core/io/output_path.h"

namespace vlmc::io {

void fsync_path(const std::string& path, bool directory) {
  errno = 0;
  const int fd = ::open(path.c_str(), O_RDONLY | (directory ? O_DIRECTORY : 0));
  if (fd < 0) throw Error(str(path, ": cannot open to fsync: ", errno_text()));
  const int rc = ::fsync(fd);
  const std::string why = errno_text();
  ::close(fd);
  if (rc != 0) throw Error(str(path, ": fsync failed: ", why));
}

AtomicFile::AtomicFile(std::string path, std::string who)
    : path_(std::move(path)), tmp_(str(path_, ".tmp.", ::getpid())), who_(std::move(who)) {
  check_output_path(path_, who_);
  errno = 0;
  file_ = std::fopen(tmp_.c_str(), "wb");
  if (!file_) {
    committed_ = true;  // nothing was created; never remove a file this did not make
    throw Error(str(who_, ": cannot create temporary file '", tmp_, "' for '", path_, "': ", errno_text()));
  }
}

AtomicFile::~AtomicFile() {
  if (file_) std::fclose(file_);
  if (!committed_) std::remove(tmp_.c_str());
}

void AtomicFile::fail(const std::string& what) {
  const std::string why = errno_text();
  if (file_) std::fclose(file_);
  file_ = nullptr;
  std::remove(tmp_.c_str());
  committed_ = true;  // removed already
  throw Error(str(who_, ": ", what, " '", path_, "' (temporary file '", tmp_, "') failed: ", why));
}

void AtomicFile::write(const void* data, size_t bytes) {
  VLMC_CHECK(file_ != nullptr, who_, ": '", path_, "' was already committed or failed");
  errno = 0;
  if (bytes != 0 && std::fwrite(data, 1, bytes, file_) != bytes) fail("writing");
}

void AtomicFile::commit() {
  VLMC_CHECK(file_ != nullptr, who_, ": '", path_, "' was already committed or failed");
  errno = 0;
  if (std::fflush(file_) != 0 || std::ferror(file_)) fail("flushing");
  errno = 0;
  if (::fsync(::fileno(file_)) != 0) fail("fsync of");
  errno = 0;
  const int closed = std::fclose(file_);
  file_ = nullptr;
  if (closed != 0) fail("closing");
  errno = 0;
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0) fail("renaming the temporary file onto");
  committed_ = true;
  // The rename is in place; the directory's fsync makes it survive a power loss.
  const std::filesystem::path parent = std::filesystem::path(path_).parent_path();
  fsync_path(parent.empty() ? "." : parent.string(), true);
}

void write_file_atomically(const std::string& path, std::string_view bytes, const std::string& who) {
  AtomicFile file(path, who);
  file.write(bytes);
  file.commit();
}

}  // namespace vlmc::io
