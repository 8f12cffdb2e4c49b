// An exclusive lock on a run directory or a stage-0 cache entry, held for
// the life of the object: two `vlmc train` with the same run.name started
// together must not both write the same checkpoints, metrics and results.
//
// flock(2) on a lock file: the kernel releases it when the process ends, also
// by kill -9, so a crashed run never leaves a stale lock; the file keeps the
// holder's pid for the refusal message. Advisory: it binds vlmc processes
// (on one machine; flock over NFS is not relied on).
#pragma once

#include <string>

namespace vlmc::train {

class RunLock {
 public:
  // Takes the lock on `lock_path` (created if missing) or throws vlmc::Error
  // naming `what`, the lock file and the holder's pid.
  RunLock(const std::string& lock_path, const std::string& what);
  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace vlmc::train
