// The CPU time a cgroup grants this process, in whole CPUs. `docker run
// --cpus=2`, Kubernetes' CPU limits and systemd's CPUQuota= set a CFS
// bandwidth quota, not a cpuset: the affinity mask still names every CPU of
// the host, and a thread count taken from it starts a thread per host CPU on
// a share of two, each preempted at every period's end. The default thread
// count (core/threads.h) is therefore also bounded by this.
#pragma once

#include <optional>
#include <string>

namespace vlmc {

// The smallest quota on the path from this process's cgroup up to its
// hierarchy's mount, in whole CPUs: floor(quota / period), at least 1 (a
// share of 1.5 CPUs runs one thread, as Rust's available_parallelism and Go's
// automaxprocs round). Both hierarchies are read: cgroup v2's `cpu.max`
// ("max 100000" or "<quota> <period>") and cgroup v1's `cpu.cfs_quota_us`
// (-1 for none) over `cpu.cfs_period_us`. nullopt when no quota is set or
// nothing can be read: the limit is a hint, and an unreadable or unfamiliar
// file must not stop a run.
//
// `root` is prefixed to every path read (/proc/self/cgroup,
// /proc/self/mountinfo and the files under the mounts), so tests can build a
// tree of their own; "" reads the running system.
std::optional<int> cgroup_cpu_limit(const std::string& root = "");

}  // namespace vlmc
