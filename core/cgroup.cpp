#include "core/cgroup.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace vlmc {
namespace {

// A file's first line, or nullopt when it cannot be opened.
std::optional<std::string> first_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) return std::nullopt;
  return line;
}

// A whole decimal integer (surrounding blanks allowed), else nullopt.
std::optional<int64_t> parse_integer(const std::string& text) {
  const size_t begin = text.find_first_not_of(" \t\n");
  if (begin == std::string::npos) return std::nullopt;
  const char* start = text.c_str() + begin;
  char* end = nullptr;
  const long long value = std::strtoll(start, &end, 10);
  if (end == start) return std::nullopt;
  for (const char* rest = end; *rest != '\0'; ++rest)
    if (*rest != ' ' && *rest != '\t' && *rest != '\n') return std::nullopt;
  return value;
}

std::optional<int> whole_cpus(int64_t quota, int64_t period) {
  if (quota <= 0 || period <= 0) return std::nullopt;
  return static_cast<int>(std::clamp<int64_t>(quota / period, 1, 1 << 20));
}

// cgroup v2: "max <period>" (no quota) or "<quota> <period>".
std::optional<int> v2_cpu_limit(const std::string& dir) {
  const std::optional<std::string> line = first_line(dir + "/cpu.max");
  if (!line) return std::nullopt;
  std::istringstream fields(*line);
  std::string quota, period;
  if (!(fields >> quota >> period) || quota == "max") return std::nullopt;
  const std::optional<int64_t> q = parse_integer(quota), p = parse_integer(period);
  return q && p ? whole_cpus(*q, *p) : std::nullopt;
}

// cgroup v1: cpu.cfs_quota_us (-1: no quota) over cpu.cfs_period_us.
std::optional<int> v1_cpu_limit(const std::string& dir) {
  const std::optional<std::string> quota = first_line(dir + "/cpu.cfs_quota_us");
  const std::optional<std::string> period = first_line(dir + "/cpu.cfs_period_us");
  if (!quota || !period) return std::nullopt;
  const std::optional<int64_t> q = parse_integer(*quota), p = parse_integer(*period);
  return q && p ? whole_cpus(*q, *p) : std::nullopt;
}

// A "key value" line's value in a stat file (memory.stat), else nullopt.
std::optional<int64_t> stat_value(const std::string& path, const std::string& key) {
  std::ifstream in(path);
  std::string name, value;
  while (in >> name >> value)
    if (name == key) return parse_integer(value);
  return std::nullopt;
}

// limit - (usage - inactive file cache), at least 0; nullopt without a limit.
std::optional<double> headroom(std::optional<int64_t> limit, std::optional<int64_t> usage,
                               std::optional<int64_t> inactive_file) {
  if (!limit || !usage || *limit < 0) return std::nullopt;
  const int64_t used = std::max<int64_t>(*usage - inactive_file.value_or(0), 0);
  return std::max(static_cast<double>(*limit) - static_cast<double>(used), 0.0);
}

// cgroup v2: memory.max ("max": none), memory.current, memory.stat's inactive_file.
std::optional<double> v2_memory_headroom(const std::string& dir) {
  const std::optional<std::string> max = first_line(dir + "/memory.max");
  if (!max || max->rfind("max", 0) == 0) return std::nullopt;
  const std::optional<std::string> current = first_line(dir + "/memory.current");
  return headroom(parse_integer(*max), current ? parse_integer(*current) : std::nullopt,
                  stat_value(dir + "/memory.stat", "inactive_file"));
}

// cgroup v1: memory.limit_in_bytes (none is PAGE_COUNTER_MAX, near 2^63),
// memory.usage_in_bytes, memory.stat's total_inactive_file (this group and
// those below it, as the usage counts them).
std::optional<double> v1_memory_headroom(const std::string& dir) {
  const std::optional<std::string> limit = first_line(dir + "/memory.limit_in_bytes");
  const std::optional<int64_t> bytes = limit ? parse_integer(*limit) : std::nullopt;
  if (!bytes || *bytes >= (int64_t(1) << 60)) return std::nullopt;
  const std::optional<std::string> usage = first_line(dir + "/memory.usage_in_bytes");
  std::optional<int64_t> inactive = stat_value(dir + "/memory.stat", "total_inactive_file");
  if (!inactive) inactive = stat_value(dir + "/memory.stat", "inactive_file");
  return headroom(bytes, usage ? parse_integer(*usage) : std::nullopt, inactive);
}

// mountinfo escapes a blank in a path as \040 (three octal digits), and so on.
std::string unescape_octal(const std::string& field) {
  const auto octal = [](char c) { return c >= '0' && c <= '7'; };
  std::string out;
  for (size_t i = 0; i < field.size(); ++i) {
    if (field[i] == '\\' && i + 3 < field.size() && octal(field[i + 1]) && octal(field[i + 2]) && octal(field[i + 3])) {
      out += static_cast<char>((field[i + 1] - '0') * 64 + (field[i + 2] - '0') * 8 + (field[i + 3] - '0'));
      i += 3;
    } else {
      out += field[i];
    }
  }
  return out;
}

bool has_item(const std::string& comma_list, const std::string& item) {
  std::istringstream items(comma_list);
  for (std::string each; std::getline(items, each, ',');)
    if (each == item) return true;
  return false;
}

struct CgroupMount {
  std::string root;         // the hierarchy's path that is mounted (mountinfo's 4th field)
  std::string mount_point;  // where it is mounted
  bool v2 = false;          // cgroup2; else a v1 hierarchy with the controller
};

// The cgroup2 mounts and the v1 mounts of the hierarchy with `controller`.
std::vector<CgroupMount> cgroup_mounts(const std::string& mountinfo_path, const std::string& controller) {
  std::vector<CgroupMount> mounts;
  std::ifstream in(mountinfo_path);
  for (std::string line; std::getline(in, line);) {
    std::istringstream words(line);
    std::vector<std::string> fields;
    for (std::string word; words >> word;) fields.push_back(word);
    // id parent major:minor root mount-point options [optional...] - fstype source super-options
    const auto dash = std::find(fields.begin(), fields.end(), "-");
    if (fields.size() < 5 || dash == fields.end() || fields.end() - dash < 4) continue;
    const std::string& type = dash[1];
    const std::string& super_options = dash[3];
    const bool v2 = type == "cgroup2";
    if (!v2 && !(type == "cgroup" && has_item(super_options, controller))) continue;
    mounts.push_back({unescape_octal(fields[3]), unescape_octal(fields[4]), v2});
  }
  return mounts;
}

// This process's cgroup path in the v2 hierarchy ("0::<path>") and in the v1
// hierarchy whose controllers include `controller` ("<id>:cpu,cpuacct:<path>").
struct OwnCgroups {
  std::optional<std::string> v2, v1;
};

OwnCgroups own_cgroups(const std::string& cgroup_path, const std::string& controller) {
  OwnCgroups own;
  std::ifstream in(cgroup_path);
  for (std::string line; std::getline(in, line);) {
    const size_t first = line.find(':');
    const size_t second = first == std::string::npos ? std::string::npos : line.find(':', first + 1);
    if (second == std::string::npos) continue;
    const std::string id = line.substr(0, first), controllers = line.substr(first + 1, second - first - 1);
    const std::string path = line.substr(second + 1);
    if (id == "0" && controllers.empty()) own.v2 = path;
    else if (has_item(controllers, controller)) own.v1 = path;
  }
  return own;
}

// Calls visit(directory, v2) for every group of the process's hierarchies with
// `controller`, from its own up to the mount point. A group outside the
// mounted part of the hierarchy (another namespace's) is not seen.
template <typename Visit>
void for_each_level(const std::string& root, const std::string& controller, Visit&& visit) {
  const OwnCgroups own = own_cgroups(root + "/proc/self/cgroup", controller);
  for (const CgroupMount& mount : cgroup_mounts(root + "/proc/self/mountinfo", controller)) {
    const std::optional<std::string>& group = mount.v2 ? own.v2 : own.v1;
    if (!group) continue;
    std::string relative;
    if (mount.root == "/") {
      relative = *group;
    } else if (*group == mount.root || group->rfind(mount.root + "/", 0) == 0) {
      relative = group->substr(mount.root.size());
    } else {
      continue;
    }
    while (!relative.empty() && relative.back() == '/') relative.pop_back();
    for (;;) {
      visit(root + mount.mount_point + relative, mount.v2);
      if (relative.empty()) break;
      const size_t slash = relative.rfind('/');
      relative.erase(slash == std::string::npos ? 0 : slash);
    }
  }
}

}  // namespace

std::optional<int> cgroup_cpu_limit(const std::string& root) {
  std::optional<int> smallest;
  for_each_level(root, "cpu", [&](const std::string& dir, bool v2) {
    if (const std::optional<int> here = v2 ? v2_cpu_limit(dir) : v1_cpu_limit(dir))
      smallest = smallest ? std::min(*smallest, *here) : *here;
  });
  return smallest;
}

std::optional<CgroupMemory> cgroup_memory_available(const std::string& root) {
  std::optional<CgroupMemory> smallest;
  for_each_level(root, "memory", [&](const std::string& dir, bool v2) {
    const std::optional<double> here = v2 ? v2_memory_headroom(dir) : v1_memory_headroom(dir);
    if (here && (!smallest || *here < smallest->available_bytes))
      smallest = CgroupMemory{*here, dir + (v2 ? "/memory.max" : "/memory.limit_in_bytes")};
  });
  return smallest;
}

}  // namespace vlmc
