#include "train/run_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "core/error.h"

namespace vlmc::train {

RunLock::RunLock(const std::string& lock_path, const std::string& what) {
  fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  VLMC_CHECK(fd_ >= 0, what, ": cannot open the lock file ", lock_path, ": ", std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char holder[32] = {};
    const ssize_t got = ::pread(fd_, holder, sizeof(holder) - 1, 0);
    ::close(fd_);
    fd_ = -1;
    VLMC_CHECK(err != EWOULDBLOCK, what, " is in use by another vlmc process (pid ",
               got > 0 ? std::string(holder, static_cast<size_t>(got)) : std::string("unknown"), ", lock file ",
               lock_path, "): wait for it to end, or choose another run.name");
    throw Error(str(what, ": cannot lock ", lock_path, ": ", std::strerror(err)));
  }
  // The holder's pid, for the message a second process gets.
  const std::string pid = std::to_string(::getpid());
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    // The lock holds without the pid; only the message would say "unknown".
  }
}

RunLock::~RunLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the flock
}

}  // namespace vlmc::train
