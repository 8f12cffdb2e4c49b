// libFuzzer target for the training config (train/config_schema.cpp over
// toml++, then TrainConfig::validate): the input is a TOML file given to
// `vlmc train --config`, and, when it happens to be JSON, a run's saved
// config being restored (ConfigSchema::load_json).
//
// Every input must be applied or refused with vlmc::Error. A config that
// loads must survive the round trip vlmc itself relies on (to_toml() loads
// back to the same values), and a refused one must leave the settings as
// they were. Any other exception, crash or sanitizer report is a bug.
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string_view>

#include "core/error.h"
#include "train/config_schema.h"
#include "train/train_config.h"

namespace {

using vlmc::train::ConfigSchema;
using vlmc::train::TrainConfig;

// A TrainConfig bound to its schema, registered once (92 keys: registering is
// most of an input's time otherwise) and put back to its defaults per input.
struct Bound {
  TrainConfig config;
  ConfigSchema schema;
  nlohmann::json defaults;
  Bound() {
    vlmc::train::register_train_config(schema, config);
    defaults = schema.to_json();
  }
  void reset() { schema.load_json(defaults, "<defaults>"); }
};

Bound& bound(int which) {
  static Bound* both[2] = {new Bound, new Bound};
  return *both[which];
}

void check_round_trip(const ConfigSchema& schema) {
  Bound& again = bound(1);
  again.reset();
  again.schema.load_toml_string(schema.to_toml(), "<to_toml>");  // an Error here escapes: a bug
  if (again.schema.to_json() != schema.to_json()) std::abort();
}

void load_and_check(std::string_view text, bool as_json) {
  Bound& b = bound(0);
  b.reset();
  try {
    if (as_json) {
      const nlohmann::json values = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
      if (values.is_discarded()) return;
      b.schema.load_json(values, "<fuzz.json>");
    } else {
      b.schema.load_toml_string(text, "<fuzz.toml>");
    }
  } catch (const vlmc::Error&) {
    // All or nothing: a refused document changes no setting.
    if (b.schema.to_json() != b.defaults) std::abort();
    return;
  }
  check_round_trip(b.schema);
  try {
    b.config.validate();
  } catch (const vlmc::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  load_and_check(text, /*as_json=*/false);
  load_and_check(text, /*as_json=*/true);
  return 0;
}
