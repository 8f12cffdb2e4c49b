// The cgroup CPU quota that bounds the default thread count and the memory
// limit that bounds the check before training (core/cgroup.h), read from
// trees built here the way docker, Kubernetes and systemd lay them out:
// /proc/self/cgroup, /proc/self/mountinfo and the controller files.
#include <catch2/catch.hpp>

#include <filesystem>
#include <string>

#include "core/cgroup.h"
#include "tests/support/temp_dir.h"

using vlmc::cgroup_cpu_limit;
using vlmc::cgroup_memory_available;
using vlmc::test::TempDir;
using vlmc::test::write_file_bytes;

namespace {

// A fake root: `put("a/b/file", "text")` writes <root>/a/b/file.
struct FakeRoot {
  TempDir dir{"cgroup"};
  std::string root() const { return dir.path.string(); }
  void put(const std::string& relative, const std::string& text) const {
    const std::filesystem::path file = dir.path / relative;
    std::filesystem::create_directories(file.parent_path());
    write_file_bytes(file.string(), text);
  }
};

// mountinfo lines as the kernel writes them.
const std::string kV1CpuMount =
    "30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:12 - cgroup cgroup rw,cpu,cpuacct\n";
const std::string kV1MemoryMount =
    "31 25 0:27 / /sys/fs/cgroup/memory rw,nosuid shared:13 - cgroup cgroup rw,memory\n";
const std::string kV2Mount = "29 23 0:25 / /sys/fs/cgroup rw,nosuid,nodev shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";

}  // namespace

TEST_CASE("cgroup v1: docker --cpus=2 is a CFS quota of two periods", "[threads][cgroup]") {
  FakeRoot fake;
  // Without a cgroup namespace the container sees its own path, and the
  // hierarchy's mount inside it is rooted there.
  fake.put("proc/self/cgroup", "5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n");
  fake.put("proc/self/mountinfo",
           "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n" + kV1MemoryMount +
               "30 25 0:26 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro,nosuid - cgroup cgroup rw,cpu,cpuacct\n");
  fake.put("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "200000\n");
  fake.put("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n");
  CHECK(cgroup_cpu_limit(fake.root()) == 2);

  SECTION("-1 is no quota") {
    fake.put("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1\n");
    CHECK(cgroup_cpu_limit(fake.root()) == std::nullopt);
  }
  SECTION("a share of 1.5 CPUs runs one thread, a share below one still runs one") {
    fake.put("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "150000\n");
    CHECK(cgroup_cpu_limit(fake.root()) == 1);
    fake.put("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "20000\n");
    CHECK(cgroup_cpu_limit(fake.root()) == 1);
  }
  SECTION("a file that is not a number is no quota, not an error") {
    fake.put("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "lots\n");
    CHECK(cgroup_cpu_limit(fake.root()) == std::nullopt);
    fake.put("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "200000 extra\n");
    CHECK(cgroup_cpu_limit(fake.root()) == std::nullopt);
  }
  SECTION("a quota on the memory hierarchy's path is not a CPU quota") {
    fake.put("proc/self/mountinfo", kV1MemoryMount);
    CHECK(cgroup_cpu_limit(fake.root()) == std::nullopt);
  }
}

TEST_CASE("cgroup v1 on the host: the quota of a parent group bounds its children", "[threads][cgroup]") {
  FakeRoot fake;
  fake.put("proc/self/cgroup", "4:cpu,cpuacct:/slice/job/step\n");
  fake.put("proc/self/mountinfo", kV1CpuMount);
  const std::string base = "sys/fs/cgroup/cpu,cpuacct";
  for (const std::string dir : {"", "/slice", "/slice/job", "/slice/job/step"}) {
    fake.put(base + dir + "/cpu.cfs_quota_us", "-1\n");
    fake.put(base + dir + "/cpu.cfs_period_us", "100000\n");
  }
  CHECK(cgroup_cpu_limit(fake.root()) == std::nullopt);
  fake.put(base + "/slice/cpu.cfs_quota_us", "400000\n");
  CHECK(cgroup_cpu_limit(fake.root()) == 4);
  fake.put(base + "/slice/job/step/cpu.cfs_quota_us", "600000\n");  // more than the parent allows
  CHECK(cgroup_cpu_limit(fake.root()) == 4);
  fake.put(base + "/slice/job/cpu.cfs_quota_us", "300000\n");
  CHECK(cgroup_cpu_limit(fake.root()) == 3);
}

TEST_CASE("cgroup v2: cpu.max holds quota and period, or max", "[threads][cgroup]") {
  FakeRoot fake;
  fake.put("proc/self/cgroup", "0::/\n");  // a cgroup namespace: the container is the root
  fake.put("proc/self/mountinfo", kV2Mount);
  fake.put("sys/fs/cgroup/cpu.max", "max 100000\n");
  CHECK(cgroup_cpu_limit(fake.root()) == std::nullopt);
  fake.put("sys/fs/cgroup/cpu.max", "800000 100000\n");
  CHECK(cgroup_cpu_limit(fake.root()) == 8);
  fake.put("sys/fs/cgroup/cpu.max", "50000 100000\n");
  CHECK(cgroup_cpu_limit(fake.root()) == 1);
  fake.put("sys/fs/cgroup/cpu.max", "100000\n");  // half a line
  CHECK(cgroup_cpu_limit(fake.root()) == std::nullopt);
}

TEST_CASE("cgroup v2 on the host: systemd's CPUQuota= on a slice above the process", "[threads][cgroup]") {
  FakeRoot fake;
  fake.put("proc/self/cgroup", "0::/user.slice/user-1000.slice/session-3.scope\n");
  fake.put("proc/self/mountinfo", kV2Mount);
  // The root group has no cpu.max; the slice's CPUQuota=300% and the scope's none.
  fake.put("sys/fs/cgroup/user.slice/user-1000.slice/cpu.max", "300000 100000\n");
  fake.put("sys/fs/cgroup/user.slice/user-1000.slice/session-3.scope/cpu.max", "max 100000\n");
  CHECK(cgroup_cpu_limit(fake.root()) == 3);
}

TEST_CASE("cgroup mounts with escaped blanks, groups outside the mount, and both hierarchies", "[threads][cgroup]") {
  FakeRoot fake;
  SECTION("a mount point with a blank is written \\040 in mountinfo") {
    fake.put("proc/self/cgroup", "0::/job\n");
    fake.put("proc/self/mountinfo", "29 23 0:25 / /cg\\040root rw - cgroup2 cgroup2 rw\n");
    fake.put("cg root/job/cpu.max", "200000 100000\n");
    CHECK(cgroup_cpu_limit(fake.root()) == 2);
  }
  SECTION("a group that is not under the mounted part of the hierarchy is not read") {
    fake.put("proc/self/cgroup", "4:cpu:/elsewhere\n");
    fake.put("proc/self/mountinfo", "30 25 0:26 /docker/abc /cg rw - cgroup cgroup rw,cpu\n");
    fake.put("cg/cpu.cfs_quota_us", "100000\n");
    fake.put("cg/cpu.cfs_period_us", "100000\n");
    CHECK(cgroup_cpu_limit(fake.root()) == std::nullopt);
  }
  SECTION("a hybrid host: the smaller of the v1 cpu quota and the v2 one") {
    fake.put("proc/self/cgroup", "4:cpu,cpuacct:/a\n0::/b\n");
    fake.put("proc/self/mountinfo", kV1CpuMount + "28 23 0:24 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n");
    fake.put("sys/fs/cgroup/cpu,cpuacct/a/cpu.cfs_quota_us", "500000\n");
    fake.put("sys/fs/cgroup/cpu,cpuacct/a/cpu.cfs_period_us", "100000\n");
    fake.put("sys/fs/cgroup/unified/b/cpu.max", "200000 100000\n");
    CHECK(cgroup_cpu_limit(fake.root()) == 2);
  }
  SECTION("no /proc files at all") { CHECK(cgroup_cpu_limit(fake.root()) == std::nullopt); }
}

TEST_CASE("cgroup v2 memory: docker -m is memory.max, and the inactive page cache counts as free", "[cgroup]") {
  FakeRoot fake;
  fake.put("proc/self/cgroup", "0::/\n");
  fake.put("proc/self/mountinfo", kV2Mount);
  fake.put("sys/fs/cgroup/memory.max", "max\n");
  fake.put("sys/fs/cgroup/memory.current", "1000000\n");
  CHECK_FALSE(cgroup_memory_available(fake.root()).has_value());

  fake.put("sys/fs/cgroup/memory.max", "16000000000\n");
  fake.put("sys/fs/cgroup/memory.current", "6000000000\n");
  fake.put("sys/fs/cgroup/memory.stat", "anon 3000000000\nfile 3000000000\nactive_file 1000000000\n"
                                        "inactive_file 2000000000\n");
  const auto memory = cgroup_memory_available(fake.root());
  REQUIRE(memory.has_value());
  CHECK(memory->available_bytes == 12e9);  // 16 GB - (6 GB in use - 2 GB reclaimable)
  CHECK(memory->limit_file == fake.root() + "/sys/fs/cgroup/memory.max");

  SECTION("usage past the limit leaves nothing, not a negative size") {
    fake.put("sys/fs/cgroup/memory.current", "17000000000\n");
    fake.put("sys/fs/cgroup/memory.stat", "inactive_file 0\n");
    CHECK(cgroup_memory_available(fake.root())->available_bytes == 0);
  }
  SECTION("a limit without a usage file is not read as a limit") {
    std::filesystem::remove(fake.dir.path / "sys/fs/cgroup/memory.current");
    CHECK_FALSE(cgroup_memory_available(fake.root()).has_value());
  }
}

TEST_CASE("cgroup v1 memory: the tightest headroom over the path, unlimited near 2^63", "[cgroup]") {
  FakeRoot fake;
  fake.put("proc/self/cgroup", "4:cpu:/\n3:memory:/slurm/job_7/step_0\n");
  fake.put("proc/self/mountinfo", kV1CpuMount + "31 25 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n");
  const std::string base = "sys/fs/cgroup/memory";
  for (const std::string dir : {"", "/slurm", "/slurm/job_7", "/slurm/job_7/step_0"}) {
    fake.put(base + dir + "/memory.limit_in_bytes", "9223372036854771712\n");  // no limit
    fake.put(base + dir + "/memory.usage_in_bytes", "500000000\n");
    fake.put(base + dir + "/memory.stat", "cache 100\ninactive_file 7\ntotal_inactive_file 100000000\n");
  }
  CHECK_FALSE(cgroup_memory_available(fake.root()).has_value());
  // The job's 8 GB with 0.4 GB used (0.5 GB less the reclaimable 0.1 GB).
  fake.put(base + "/slurm/job_7/memory.limit_in_bytes", "8000000000\n");
  REQUIRE(cgroup_memory_available(fake.root()).has_value());
  CHECK(cgroup_memory_available(fake.root())->available_bytes == 7.6e9);
  CHECK(cgroup_memory_available(fake.root())->limit_file ==
        fake.root() + "/" + base + "/slurm/job_7/memory.limit_in_bytes");
  // The step's own, looser limit does not loosen the job's.
  fake.put(base + "/slurm/job_7/step_0/memory.limit_in_bytes", "9000000000\n");
  CHECK(cgroup_memory_available(fake.root())->available_bytes == 7.6e9);
  // A tighter one binds.
  fake.put(base + "/slurm/job_7/step_0/memory.limit_in_bytes", "2000000000\n");
  CHECK(cgroup_memory_available(fake.root())->available_bytes == 1.6e9);
  // The cpu hierarchy's files are not memory's.
  CHECK(cgroup_cpu_limit(fake.root()) == std::nullopt);
}
