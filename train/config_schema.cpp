// ConfigSchema: TOML, CLI11 and JSON binding of registered settings fields.
// See config_schema.h for the contract; the comments here say why.
#include "train/config_schema.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <toml++/toml.h>
#include <utility>

#include "core/error.h"
#include "core/text.h"

namespace vlmc::train {

namespace {

// Value/Field variant positions, shared by both variants.
constexpr size_t kInt = 0, kDouble = 1, kBool = 2, kString = 3;

const char* type_name(size_t index) {
  switch (index) {
    case kInt: return "integer";
    case kDouble: return "float";
    case kBool: return "boolean";
    default: return "string";
  }
}

// Shortest text that reads back to exactly d (std::to_chars guarantees the
// round trip), in TOML float syntax: "1" would read back as an integer, so a
// float always carries a '.' or an exponent; non-finite values use TOML's words.
std::string format_double(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, d);
  std::string s(buf, end);
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
  return s;
}

// A TOML basic string: quotes, backslashes and control characters escaped.
std::string quote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\t': out += "\\t"; break;
      case '\n': out += "\\n"; break;
      case '\f': out += "\\f"; break;
      case '\r': out += "\\r"; break;
      default:
        if (c < 0x20 || c == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

// The TOML literal of a value: used by to_toml() and the --help defaults, so
// both show what a config file would say.
std::string format_value(const std::variant<int64_t, double, bool, std::string>& v) {
  switch (v.index()) {
    case kInt: return std::to_string(std::get<kInt>(v));
    case kDouble: return format_double(std::get<kDouble>(v));
    case kBool: return std::get<kBool>(v) ? "true" : "false";
    default: return quote(std::get<kString>(v));
  }
}

// A double that is a whole number inside int64's range (e.g. 1e4 for a step
// count); anything else would silently lose information.
std::optional<int64_t> integral_int64(double d) {
  if (!std::isfinite(d) || d != std::trunc(d)) return std::nullopt;
  if (d < -9223372036854775808.0 || d >= 9223372036854775808.0) return std::nullopt;
  return static_cast<int64_t>(d);
}

std::optional<double> parse_double(const std::string& s) {
  double d = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), d);
  if (ec != std::errc{} || end != s.data() + s.size() || s.empty()) return std::nullopt;
  return d;
}

std::optional<int64_t> parse_int64(const std::string& s) {
  int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec == std::errc{} && end == s.data() + s.size() && !s.empty()) return v;
  if (auto d = parse_double(s)) return integral_int64(*d);  // "1e4", as TOML allows
  return std::nullopt;
}

std::optional<bool> parse_bool(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  if (s == "true" || s == "1" || s == "yes") return true;
  if (s == "false" || s == "0" || s == "no") return false;
  return std::nullopt;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

std::string first_component(const std::string& key) { return key.substr(0, key.find('.')); }

// Components are bare TOML keys, and the key must be a CLI11 long-option name
// (no leading '-'), so each component starts with a letter, digit or '_'.
bool valid_key(const std::string& key) {
  if (key.empty() || key.front() == '.' || key.back() == '.') return false;
  bool component_start = true;
  for (char c : key) {
    bool word = std::isalnum(static_cast<unsigned char>(c)) || c == '_';
    if (c == '.') {
      if (component_start) return false;  // empty component ("a..b")
      component_start = true;
    } else if (component_start) {
      if (!word) return false;
      component_start = false;
    } else if (!word && c != '-') {
      return false;
    }
  }
  return true;
}

}  // namespace

// ---- registration -----------------------------------------------------------------

void ConfigSchema::add(const std::string& key, int64_t* field, std::string help) {
  add_entry(key, field, std::move(help));
}
void ConfigSchema::add(const std::string& key, double* field, std::string help) {
  add_entry(key, field, std::move(help));
}
void ConfigSchema::add(const std::string& key, bool* field, std::string help) {
  add_entry(key, field, std::move(help));
}
void ConfigSchema::add(const std::string& key, std::string* field, std::string help) {
  add_entry(key, field, std::move(help));
}

void ConfigSchema::add_entry(const std::string& key, Field field, std::string help) {
  VLMC_CHECK(valid_key(key), "config key '", key,
             "': expected dot-separated components of letters, digits, '_' and '-'");
  VLMC_CHECK(std::visit([](auto* p) { return p != nullptr; }, field), "config key '", key,
             "': null field pointer");
  VLMC_CHECK(!index_.count(key), "config key '", key, "' is registered twice");
  // A key that is also a table would need to be a value and a table in TOML.
  for (const auto& [other, i] : index_) {
    VLMC_CHECK(!other.starts_with(key + "."), "config key '", key, "' is a table prefix of key '",
               other, "'");
    VLMC_CHECK(!key.starts_with(other + "."), "config key '", key, "' lies under key '", other,
               "', which is a value, not a table");
  }
  Value current = std::visit([](auto* p) -> Value { return *p; }, field);
  index_[key] = entries_.size();
  entries_.push_back(Entry{key, field, std::move(help), std::move(current), {}, {}, std::nullopt});
}

void ConfigSchema::set_choices(const std::string& key, std::vector<std::string> choices) {
  Entry* e = find(key);
  VLMC_CHECK(e, "set_choices: ", unknown_key_message(key));
  VLMC_CHECK(e->field.index() == kString, "set_choices: config key '", key, "' is a ",
             type_name(e->field.index()), ", not a string");
  VLMC_CHECK(!choices.empty(), "set_choices: config key '", key, "': empty list of choices");
  const std::string& current = *std::get<kString>(e->field);
  VLMC_CHECK(std::find(choices.begin(), choices.end(), current) != choices.end(), "set_choices: config key '",
             key, "': its current value ", quote(current), " is not one of: ", join(choices, ", "));
  e->choices = std::move(choices);
}

void ConfigSchema::add_alias(const std::string& key, const std::string& flag) {
  Entry* e = find(key);
  VLMC_CHECK(e, "add_alias: ", unknown_key_message(key));
  VLMC_CHECK(flag.size() > 2 && flag.compare(0, 2, "--") == 0 && flag.find_first_of(", =") == std::string::npos,
             "add_alias: flag ", quote(flag), " for config key '", key, "' must look like --name");
  for (const Entry& other : entries_) {
    VLMC_CHECK("--" + other.key != flag, "add_alias: flag ", quote(flag), " is already config key '", other.key,
               "'");
    for (const std::string& a : other.aliases)
      VLMC_CHECK(a != flag, "add_alias: flag ", quote(flag), " is already an alias of '", other.key, "'");
  }
  e->aliases.push_back(flag);
}

std::vector<std::string> ConfigSchema::keys() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const Entry& e : entries_) out.push_back(e.key);
  return out;
}

const ConfigSchema::Entry* ConfigSchema::find(const std::string& key) const {
  auto it = index_.find(key);
  return it == index_.end() ? nullptr : &entries_[it->second];
}
ConfigSchema::Entry* ConfigSchema::find(const std::string& key) {
  auto it = index_.find(key);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

std::string ConfigSchema::unknown_key_message(const std::string& key) const {
  std::string msg = str("unknown key '", key, "'");
  const Entry* best = nullptr;
  size_t best_distance = std::max<size_t>(2, key.size() / 4) + 1;  // "small" edits only
  for (const Entry& e : entries_) {
    size_t d = edit_distance(key, e.key);
    if (d < best_distance) best = &e, best_distance = d;
  }
  if (best) msg += str(" (did you mean '", best->key, "'?)");
  return msg;
}

std::string ConfigSchema::check_choice(const Entry& e, const std::string& value) const {
  if (e.choices.empty() || std::find(e.choices.begin(), e.choices.end(), value) != e.choices.end())
    return "";
  return str(quote(value), " is not one of: ", join(e.choices, ", "));
}

void ConfigSchema::apply(const std::vector<Pending>& pending) {
  for (const Pending& p : pending) {
    Field& f = entries_[p.entry].field;
    switch (f.index()) {
      case kInt: *std::get<kInt>(f) = std::get<kInt>(p.value); break;
      case kDouble: *std::get<kDouble>(f) = std::get<kDouble>(p.value); break;
      case kBool: *std::get<kBool>(f) = std::get<kBool>(p.value); break;
      default: *std::get<kString>(f) = std::get<kString>(p.value); break;
    }
  }
}

// ---- TOML ---------------------------------------------------------------------------

namespace {

const char* toml_type_name(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::table: return "table";
    case toml::node_type::array: return "array";
    case toml::node_type::string: return "string";
    case toml::node_type::integer: return "integer";
    case toml::node_type::floating_point: return "float";
    case toml::node_type::boolean: return "boolean";
    case toml::node_type::date: return "date";
    case toml::node_type::time: return "time";
    case toml::node_type::date_time: return "date-time";
    default: return "nothing";
  }
}

// The actual type and, for scalars, the value, for "expected X, got Y" errors.
std::string describe(const toml::node& n) {
  std::string s = toml_type_name(n);
  if (auto v = n.as_integer()) s += " " + std::to_string(v->get());
  if (auto v = n.as_floating_point()) s += " " + format_double(v->get());
  if (auto v = n.as_boolean()) s += v->get() ? " true" : " false";
  if (auto v = n.as_string()) s += " " + quote(v->get());
  return s;
}

}  // namespace

void ConfigSchema::load_toml_file(const std::string& path) {
  std::error_code ec;
  VLMC_CHECK(!std::filesystem::is_directory(path, ec), "config file '", path, "' is a directory");
  std::ifstream in(path, std::ios::binary);
  VLMC_CHECK(in, "cannot open config file '", path, "': ", std::strerror(errno));
  std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  VLMC_CHECK(!in.bad(), "cannot read config file '", path, "': ", std::strerror(errno));
  load_toml_string(text, path);
}

void ConfigSchema::load_toml_string(std::string_view text, const std::string& source) {
  toml::table doc;
  try {
    doc = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    throw Error(str(source, ":", e.source().begin.line, ":", e.source().begin.column,
                    ": TOML syntax error: ", e.description()));
  }

  // Collect every problem (with its line, to report them in file order) and
  // every value, then apply only if there was no problem.
  std::vector<std::pair<uint32_t, std::string>> errors;
  std::vector<Pending> pending;
  auto error = [&](const toml::node& n, const std::string& msg) {
    errors.emplace_back(n.source().begin.line, str(source, ":", n.source().begin.line, ": ", msg));
  };
  auto is_table_prefix = [&](const std::string& path) {
    auto it = index_.lower_bound(path + ".");
    return it != index_.end() && it->first.starts_with(path + ".");
  };

  auto convert = [&](const Entry& e, const toml::node& n) {
    std::optional<Value> v;
    std::string why;
    switch (e.field.index()) {
      case kInt:
        if (auto i = n.as_integer()) {
          v = i->get();
        } else if (auto d = n.as_floating_point()) {
          if (auto i = integral_int64(d->get())) v = *i;
          else why = " (not a whole number in the int64 range)";
        }
        break;
      case kDouble:
        if (auto i = n.as_integer()) {
          v = static_cast<double>(i->get());
        } else if (auto d = n.as_floating_point()) {
          // TOML spells inf and nan; no setting means them (an lr of inf once trained).
          if (std::isfinite(d->get())) v = d->get();
          else why = " (not a finite number)";
        }
        break;
      case kBool:
        if (auto b = n.as_boolean()) v = b->get();
        break;
      default:
        if (auto s = n.as_string()) {
          why = check_choice(e, s->get());
          if (why.empty()) v = s->get();
          else return error(n, str("key '", e.key, "': ", why));
        }
    }
    if (v) pending.push_back(Pending{index_.at(e.key), std::move(*v)});
    else error(n, str("key '", e.key, "': expected ", type_name(e.field.index()), ", got ", describe(n), why));
  };

  std::function<void(const toml::table&, const std::string&)> walk = [&](const toml::table& table,
                                                                        const std::string& prefix) {
    for (auto&& [k, node] : table) {
      std::string path = prefix + std::string(k.str());
      if (const Entry* e = find(path)) {
        convert(*e, node);
      } else if (auto sub = node.as_table()) {
        // Recurse even into unknown tables, so each unknown leaf is reported
        // with a suggestion ([stag1] lr -> did you mean 'stage1.lr'?).
        if (sub->empty() && !is_table_prefix(path)) error(node, unknown_key_message(path));
        walk(*sub, path + ".");
      } else if (is_table_prefix(path)) {
        error(node, str("'", path, "' is a table of settings (e.g. '", index_.lower_bound(path + ".")->first,
                        "'), got ", describe(node)));
      } else {
        error(node, unknown_key_message(path));
      }
    }
  };
  walk(doc, "");

  if (!errors.empty()) {
    std::stable_sort(errors.begin(), errors.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    std::vector<std::string> lines;
    for (auto& [line, msg] : errors) lines.push_back(std::move(msg));
    throw Error(join(lines, "\n"));
  }
  apply(pending);
}

std::string ConfigSchema::to_toml() const {
  // Keys without a table go first (TOML puts them before any [table]); the
  // tables follow in the order their first key was registered.
  std::vector<std::string> groups{""};
  std::map<std::string, std::vector<const Entry*>> by_group;
  for (const Entry& e : entries_) {
    std::string g = e.key.find('.') == std::string::npos ? "" : first_component(e.key);
    if (std::find(groups.begin(), groups.end(), g) == groups.end()) groups.push_back(g);
    by_group[g].push_back(&e);
  }
  std::string out;
  for (const std::string& g : groups) {
    auto& list = by_group[g];
    if (list.empty()) continue;
    std::sort(list.begin(), list.end(), [](const Entry* a, const Entry* b) { return a->key < b->key; });
    if (!g.empty()) out += (out.empty() ? "[" : "\n[") + g + "]\n";
    for (const Entry* e : list) {
      std::string rest = g.empty() ? e->key : e->key.substr(g.size() + 1);
      Value v = std::visit([](auto* p) -> Value { return *p; }, e->field);
      out += rest + " = " + format_value(v) + "\n";
    }
  }
  return out;
}

// ---- command line -------------------------------------------------------------------

void ConfigSchema::add_to_cli(CLI::App& app) {
  for (size_t i = 0; i < entries_.size(); ++i) {
    const Entry& e = entries_[i];
    std::string desc = e.help;
    if (!e.choices.empty()) desc += str("; one of: ", join(e.choices, ", "));
    desc += " (default: " + format_value(e.default_value) + ")";
    // Capture by index: entries_ may grow (and move) after this call.
    auto capture = [this, i](const std::string& v) { entries_[i].cli_value = v; };
    std::string names = "--" + e.key;
    for (const std::string& a : e.aliases) names += "," + a;
    CLI::Option* opt = app.add_option_function<std::string>(names, capture, desc);
    static const char* const kTypeNames[] = {"INT", "FLOAT", "BOOL", "TEXT"};
    opt->type_name(kTypeNames[e.field.index()]);
    opt->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);  // the last of repeated flags wins
    if (e.key.find('.') != std::string::npos) opt->group(first_component(e.key));
  }
}

void ConfigSchema::apply_cli() {
  std::vector<std::string> errors;
  std::vector<Pending> pending;
  for (size_t i = 0; i < entries_.size(); ++i) {
    const Entry& e = entries_[i];
    if (!e.cli_value) continue;
    const std::string& text = *e.cli_value;
    std::optional<Value> v;
    std::string why;
    switch (e.field.index()) {
      case kInt:
        if (auto x = parse_int64(text)) v = *x;
        break;
      case kDouble:
        if (auto x = parse_double(text)) {
          if (std::isfinite(*x)) v = *x;
          else why = " (not a finite number)";
        }
        break;
      case kBool:
        if (auto x = parse_bool(text)) v = *x;
        else why = " (use true/false, 1/0 or yes/no)";
        break;
      default:
        why = check_choice(e, text);
        if (why.empty()) v = text;
    }
    if (v) {
      pending.push_back(Pending{i, std::move(*v)});
    } else if (e.field.index() == kString) {
      errors.push_back(str("flag --", e.key, ": ", why));
    } else {
      errors.push_back(str("flag --", e.key, ": expected ", type_name(e.field.index()), ", got '", text, "'", why));
    }
  }
  // The captures are consumed either way, so a corrected command line parsed
  // next does not inherit this one's flags.
  for (Entry& e : entries_) e.cli_value.reset();
  VLMC_CHECK(errors.empty(), join(errors, "\n"));
  apply(pending);
}

// ---- JSON ---------------------------------------------------------------------------

nlohmann::json ConfigSchema::to_json() const {
  nlohmann::json out = nlohmann::json::object();
  for (const Entry& e : entries_) {
    switch (e.field.index()) {
      case kInt: out[e.key] = *std::get<kInt>(e.field); break;
      case kDouble: {
        // JSON has no inf/nan (nlohmann would write null); spell them as TOML does.
        double d = *std::get<kDouble>(e.field);
        if (std::isfinite(d)) out[e.key] = d;
        else out[e.key] = format_double(d);
        break;
      }
      case kBool: out[e.key] = *std::get<kBool>(e.field); break;
      default: out[e.key] = *std::get<kString>(e.field);
    }
  }
  return out;
}

void ConfigSchema::load_json(const nlohmann::json& values, const std::string& source) {
  VLMC_CHECK(values.is_object(), source, ": expected a JSON object of config keys, got ", values.type_name());
  std::vector<std::string> errors;
  std::vector<Pending> pending;
  for (const auto& [key, j] : values.items()) {
    const Entry* e = find(key);
    if (!e) {
      errors.push_back(str(source, ": ", unknown_key_message(key)));
      continue;
    }
    std::optional<Value> v;
    std::string why;
    switch (e->field.index()) {
      case kInt:
        if (j.is_number_integer() && !(j.is_number_unsigned() && j.get<uint64_t>() > INT64_MAX))
          v = j.get<int64_t>();
        else if (j.is_number_float())
          if (auto i = integral_int64(j.get<double>())) v = *i;
        break;
      case kDouble:
        if (j.is_number()) v = j.get<double>();
        else if (j.is_string())
          if (auto d = parse_double(j.get<std::string>()); d && !std::isfinite(*d)) v = *d;
        break;
      case kBool:
        if (j.is_boolean()) v = j.get<bool>();
        break;
      default:
        if (j.is_string()) {
          why = check_choice(*e, j.get<std::string>());
          if (why.empty()) v = j.get<std::string>();
        }
    }
    if (v) pending.push_back(Pending{index_.at(key), std::move(*v)});
    else if (!why.empty()) errors.push_back(str(source, ": key '", key, "': ", why));
    else errors.push_back(str(source, ": key '", key, "': expected ", type_name(e->field.index()), ", got ",
                              j.type_name(), " ", j.dump()));
  }
  VLMC_CHECK(errors.empty(), join(errors, "\n"));
  apply(pending);
}

}  // namespace vlmc::train
