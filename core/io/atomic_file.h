// The one way vlmc writes a whole file: the bytes go to a temporary file
// beside the target (`<path>.tmp.<pid>`), which is flushed, fsync'ed, closed
// and renamed over the target, and then the directory is fsync'ed. Readers
// see the old file or the complete new one, never a part, and after commit()
// returns a power loss cannot leave a directory entry pointing at data that
// never reached the disk. On any failure the temporary file is removed and
// the target is left as it was. (Checkpoint folders are renamed as whole
// directories by train/checkpoint.cpp, with the same fsyncs.)
#pragma once

#include <cstddef>
#include <cstdio>
#include <string>
#include <string_view>

namespace vlmc::io {

// fsync of a file or (directory = true) a directory; an error names the path.
void fsync_path(const std::string& path, bool directory);

class AtomicFile {
 public:
  // Creates the temporary file. `who` starts every error message (the
  // operation or the file's role); the messages name the target, the
  // temporary file and the system's reason.
  AtomicFile(std::string path, std::string who);
  ~AtomicFile();  // removes the temporary file unless commit() succeeded
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t bytes);
  void write(std::string_view bytes) { write(bytes.data(), bytes.size()); }
  // Flush, fsync, close, rename onto the target, fsync its directory.
  void commit();

  const std::string& path() const { return path_; }
  const std::string& temporary_path() const { return tmp_; }

 private:
  [[noreturn]] void fail(const std::string& what);

  std::string path_, tmp_, who_;
  std::FILE* file_ = nullptr;
  bool committed_ = false;
};

// An AtomicFile written in one call.
void write_file_atomically(const std::string& path, std::string_view bytes, const std::string& who);

}  // namespace vlmc::io
