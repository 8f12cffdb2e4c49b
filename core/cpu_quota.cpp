#include "core/cpu_quota.h"

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
std::optional<int> v2_limit(const std::string& dir) {
  const std::optional<std::string> line = first_line(dir + "/cpu.max");
  if (!line) return std::nullopt;
  std::istringstream fields(*line);
  std::string quota, period;
  if (!(fields >> quota >> period) || quota == "max") return std::nullopt;
  const std::optional<int64_t> q = parse_integer(quota), p = parse_integer(period);
  return q && p ? whole_cpus(*q, *p) : std::nullopt;
}

// cgroup v1: cpu.cfs_quota_us (-1: no quota) over cpu.cfs_period_us.
std::optional<int> v1_limit(const std::string& dir) {
  const std::optional<std::string> quota = first_line(dir + "/cpu.cfs_quota_us");
  const std::optional<std::string> period = first_line(dir + "/cpu.cfs_period_us");
  if (!quota || !period) return std::nullopt;
  const std::optional<int64_t> q = parse_integer(*quota), p = parse_integer(*period);
  return q && p ? whole_cpus(*q, *p) : std::nullopt;
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
  bool v2 = false;          // cgroup2; else a v1 hierarchy with the cpu controller
};

std::vector<CgroupMount> cpu_cgroup_mounts(const std::string& mountinfo_path) {
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
    if (!v2 && !(type == "cgroup" && has_item(super_options, "cpu"))) continue;
    mounts.push_back({unescape_octal(fields[3]), unescape_octal(fields[4]), v2});
  }
  return mounts;
}

// This process's cgroup path in the v2 hierarchy ("0::<path>") and in the v1
// hierarchy whose controllers include cpu ("<id>:cpu,cpuacct:<path>").
struct OwnCgroups {
  std::optional<std::string> v2, v1_cpu;
};

OwnCgroups own_cgroups(const std::string& cgroup_path) {
  OwnCgroups own;
  std::ifstream in(cgroup_path);
  for (std::string line; std::getline(in, line);) {
    const size_t first = line.find(':');
    const size_t second = first == std::string::npos ? std::string::npos : line.find(':', first + 1);
    if (second == std::string::npos) continue;
    const std::string id = line.substr(0, first), controllers = line.substr(first + 1, second - first - 1);
    const std::string path = line.substr(second + 1);
    if (id == "0" && controllers.empty()) own.v2 = path;
    else if (has_item(controllers, "cpu")) own.v1_cpu = path;
  }
  return own;
}

// The smallest limit from `group`'s directory up to the mount point. A group
// outside the mounted part of the hierarchy (another namespace's) is not seen.
std::optional<int> limit_up_the_tree(const std::string& prefix, const CgroupMount& mount, const std::string& group) {
  std::string relative;
  if (mount.root == "/") {
    relative = group;
  } else if (group == mount.root || group.rfind(mount.root + "/", 0) == 0) {
    relative = group.substr(mount.root.size());
  } else {
    return std::nullopt;
  }
  while (!relative.empty() && relative.back() == '/') relative.pop_back();
  std::optional<int> smallest;
  for (;;) {
    const std::string dir = prefix + mount.mount_point + relative;
    if (const std::optional<int> here = mount.v2 ? v2_limit(dir) : v1_limit(dir))
      smallest = smallest ? std::min(*smallest, *here) : *here;
    if (relative.empty()) break;
    const size_t slash = relative.rfind('/');
    relative.erase(slash == std::string::npos ? 0 : slash);
  }
  return smallest;
}

}  // namespace

std::optional<int> cgroup_cpu_limit(const std::string& root) {
  const OwnCgroups own = own_cgroups(root + "/proc/self/cgroup");
  std::optional<int> smallest;
  for (const CgroupMount& mount : cpu_cgroup_mounts(root + "/proc/self/mountinfo")) {
    const std::optional<std::string>& group = mount.v2 ? own.v2 : own.v1_cpu;
    if (!group) continue;
    if (const std::optional<int> limit = limit_up_the_tree(root, mount, *group))
      smallest = smallest ? std::min(*smallest, *limit) : *limit;
  }
  return smallest;
}

}  // namespace vlmc
