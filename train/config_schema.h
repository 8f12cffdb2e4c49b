// ConfigSchema: binds the fields of a settings struct to dotted config keys
// ("stage1.lr"), so one registration gives a TOML file key, a command-line
// flag (--stage1.lr), a --help line with the default, and a TOML/JSON dump.
//
// The schema owns no settings: the trainer's struct does, and registers
// pointers to its fields. The struct must outlive the schema's use.
//
// Precedence: registered defaults < the TOML file < flags on the command line.
// Every load validates the whole input before touching any field, so a bad
// config or flag leaves the settings exactly as they were.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace CLI {
class App;
}

namespace vlmc::train {

class ConfigSchema {
 public:
  // Keys are dotted ("run.name", "model.vision.hidden_size"); each component is
  // [A-Za-z0-9_-]+, so every key is a bare TOML key and a valid flag name.
  // The field's current value becomes the key's default. A duplicate key, or
  // one that is a table prefix of another ("a" and "a.b"), is an Error.
  void add(const std::string& key, int64_t* field, std::string help);
  void add(const std::string& key, double* field, std::string help);
  void add(const std::string& key, bool* field, std::string help);
  void add(const std::string& key, std::string* field, std::string help);
  // Restricts a string key to these values (its current value must be one).
  void set_choices(const std::string& key, std::vector<std::string> choices);
  // A second, short flag for a key ("--device" for "run.device"); the TOML key
  // stays the dotted one. The alias must start with "--" and be unused.
  void add_alias(const std::string& key, const std::string& flag);

  // Applies a TOML document; [stage1] lr = 1e-3 and stage1.lr = 1e-3 both set
  // "stage1.lr". Errors name "<source>:<line>:" and the key; all problems in
  // the document are reported together and nothing is applied.
  void load_toml_file(const std::string& path);
  void load_toml_string(std::string_view text, const std::string& source);

  // One option per key, spelled as the dotted key ("--stage1.lr"), grouped in
  // --help under the key's first component. Values are captured as strings
  // during app.parse and applied by apply_cli(), so the caller can load the
  // TOML file (named by another flag) in between.
  void add_to_cli(CLI::App& app);
  // Applies the flags captured since the last apply_cli() (normally: those of
  // the one parse), all or nothing; bad values are an Error naming the flag.
  // The captures are consumed, also when it throws.
  void apply_cli();

  // Current values: a TOML document (tables per first component, keys sorted
  // within a table, doubles in shortest round-trip form) that
  // load_toml_string accepts, and a JSON object keyed by dotted key.
  std::string to_toml() const;
  nlohmann::json to_json() const;
  // Applies a to_json() object (restoring a run's config); unknown keys and
  // wrong types are an Error, and nothing is applied then.
  void load_json(const nlohmann::json& values, const std::string& source);

  std::vector<std::string> keys() const;  // in registration order

 private:
  using Field = std::variant<int64_t*, double*, bool*, std::string*>;
  using Value = std::variant<int64_t, double, bool, std::string>;

  struct Entry {
    std::string key;
    Field field;
    std::string help;
    Value default_value;  // the field's value at registration, for --help
    std::vector<std::string> choices;
    std::vector<std::string> aliases;  // extra flags, "--device"
    std::optional<std::string> cli_value;  // captured by the last parse
  };
  // A validated value waiting to be stored: loads apply all or none.
  struct Pending {
    size_t entry;
    Value value;
  };

  void add_entry(const std::string& key, Field field, std::string help);
  const Entry* find(const std::string& key) const;
  Entry* find(const std::string& key);
  // "unknown key 'x'" plus "did you mean 'y'?" when a registered key is close.
  std::string unknown_key_message(const std::string& key) const;
  // "" when value is allowed for the entry, else why not (lists the choices).
  std::string check_choice(const Entry& e, const std::string& value) const;
  void apply(const std::vector<Pending>& pending);

  std::vector<Entry> entries_;
  std::map<std::string, size_t> index_;  // key -> position in entries_
};

}  // namespace vlmc::train
