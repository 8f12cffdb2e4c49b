// Waiting with a deadline: how every collective of a process group waits.
//
// A blocking MPI or NCCL call waits forever when another rank has died or
// hangs; polling the operation instead lets the rank give up after timeout_s
// and stop the whole job with a message (timeout_message) rather than hang.
#pragma once

#include <functional>
#include <string>

namespace vlmc::dist {

enum class Poll {
  // Waiting for other ranks to arrive, which may take seconds (a slower rank,
  // rank 0 writing a checkpoint): sleep between polls, 200 us at first,
  // doubling up to 5 ms, so a waiting rank does not burn a core.
  backoff,
  // Moving data once every rank is known to be there: poll without sleeping
  // (yielding only). MPI's non-blocking collectives progress only inside MPI
  // calls, so sleeping here would stall a many-round transfer.
  spin,
};

// Calls done() until it returns true (then returns true) or timeout_s seconds
// have passed since the call (then returns false). done() is called at least
// once, even with a timeout of zero.
bool poll_until(const std::function<bool()>& done, double timeout_s, Poll mode);

// "vlmc rank R/P: <what> did not complete within T s: another rank failed or
// hangs; stopping the job", the line a rank prints before it aborts the job.
std::string timeout_message(int rank, int world_size, const std::string& what, double timeout_s);

}  // namespace vlmc::dist
