// What this process's cgroup grants it: CPU time and memory. Containers and
// schedulers (`docker run --cpus=2 -m 16g`, Kubernetes' limits, Slurm's and
// systemd's cgroups) cap both without changing what the process sees of the
// machine: the affinity mask still names every CPU of the host, and
// /proc/meminfo shows the host's memory. A thread count taken from the mask
// starts a thread per host CPU on a share of two, each throttled at every
// period's end; a memory check against MemAvailable passes a run that the
// cgroup's OOM killer then ends mid-stage. The default thread count
// (core/threads.h) and the memory check before training
// (train/memory_plan.h) read these too.
//
// Both cgroup versions are read: the process's group from /proc/self/cgroup,
// where its hierarchy is mounted from /proc/self/mountinfo, and every group
// from it up to the mount, since a parent's limit binds its children. Nothing
// here throws: an unreadable or unfamiliar file is read as no limit, because
// a limit is a hint and must not stop a run.
//
// `root` is prefixed to every path read, so tests can build a tree of their
// own; "" reads the running system.
#pragma once

#include <optional>
#include <string>

namespace vlmc {

// The smallest CPU quota on the path, in whole CPUs: floor(quota / period),
// at least 1 (a share of 1.5 CPUs runs one thread, as Rust's
// available_parallelism and Go's automaxprocs round). cgroup v2's `cpu.max`
// ("max 100000" or "<quota> <period>"); v1's `cpu.cfs_quota_us` (-1 for
// none) over `cpu.cfs_period_us`. nullopt when no quota is set.
std::optional<int> cgroup_cpu_limit(const std::string& root = "");

// The memory this process's cgroups let it take beyond what is in use: the
// smallest, over the path, of limit - (usage - inactive file cache), the
// page cache the kernel reclaims before it kills (at least 0). v2: `memory.max`
// ("max": none), `memory.current`, `memory.stat`'s inactive_file; v1:
// `memory.limit_in_bytes` (2^60 or more: none), `memory.usage_in_bytes`,
// `memory.stat`'s total_inactive_file. nullopt when no limit is set.
struct CgroupMemory {
  double available_bytes;
  std::string limit_file;  // the file of the limit that binds, as read (root included)
};
std::optional<CgroupMemory> cgroup_memory_available(const std::string& root = "");

}  // namespace vlmc
