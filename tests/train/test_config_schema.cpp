// ConfigSchema: a small settings struct bound to TOML keys and CLI11 flags.
// Checks the precedence (defaults < TOML < flags), that every bad input is
// rejected with a message naming the source/line/key and leaves the settings
// untouched, and that to_toml()/to_json() round-trip every value exactly.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>

#include "core/error.h"
#include "train/config_schema.h"
#include "tests/support/temp_dir.h"

using namespace vlmc;
using namespace vlmc::train;
namespace fs = std::filesystem;
using vlmc::test::TempDir;

namespace {

struct Settings {
  std::string run_name = "smoke";
  int64_t seed = 7;
  double lr1 = 1e-3;
  double lr2 = 2e-5;
  double warmup = 0.1;
  int64_t steps = 100;
  bool freeze = true;
  std::string projector = "mlp";
  int64_t hidden = 64;
};

// Registers every field of s; the schema holds pointers into s.
void bind(ConfigSchema& schema, Settings& s) {
  schema.add("run.name", &s.run_name, "run name");
  schema.add("seed", &s.seed, "random seed");
  schema.add("stage1.lr", &s.lr1, "stage 1 learning rate");
  schema.add("stage1.steps", &s.steps, "stage 1 steps");
  schema.add("stage1.freeze", &s.freeze, "freeze the language model");
  schema.add("stage2.lr", &s.lr2, "stage 2 learning rate");
  schema.add("stage2.warmup", &s.warmup, "warmup fraction");
  schema.add("model.projector", &s.projector, "connector type");
  schema.add("model.vision.hidden_size", &s.hidden, "vision width");
  schema.set_choices("model.projector", {"linear", "mlp", "downsample"});
}

bool same(const Settings& a, const Settings& b) {
  return a.run_name == b.run_name && a.seed == b.seed && a.lr1 == b.lr1 && a.lr2 == b.lr2 &&
         a.warmup == b.warmup && a.steps == b.steps && a.freeze == b.freeze && a.projector == b.projector &&
         a.hidden == b.hidden;
}


void parse(CLI::App& app, std::vector<std::string> args) {
  std::reverse(args.begin(), args.end());  // CLI11 takes a vector in reverse order
  app.parse(args);
}

}  // namespace

TEST_CASE("config: defaults are kept when nothing is loaded", "[config]") {
  Settings s;
  ConfigSchema schema;
  bind(schema, s);
  CHECK(same(s, Settings{}));
  CHECK(schema.keys() == std::vector<std::string>{"run.name", "seed", "stage1.lr", "stage1.steps",
                                                 "stage1.freeze", "stage2.lr", "stage2.warmup",
                                                 "model.projector", "model.vision.hidden_size"});
}

TEST_CASE("config: registration rejects duplicates, table prefixes and bad keys", "[config]") {
  Settings s;
  ConfigSchema schema;
  bind(schema, s);
  int64_t x = 0;
  std::string t;
  REQUIRE_THROWS_WITH(schema.add("seed", &x, ""), Catch::Contains("'seed' is registered twice"));
  REQUIRE_THROWS_WITH(schema.add("stage1", &x, ""), Catch::Contains("table prefix of key 'stage1."));
  REQUIRE_THROWS_WITH(schema.add("seed.low", &x, ""), Catch::Contains("lies under key 'seed'"));
  REQUIRE_THROWS_WITH(schema.add("a..b", &x, ""), Catch::Contains("config key 'a..b'"));
  REQUIRE_THROWS_WITH(schema.add("-a", &x, ""), Catch::Contains("config key '-a'"));
  REQUIRE_THROWS_WITH(schema.add("a b", &x, ""), Catch::Contains("config key 'a b'"));
  REQUIRE_THROWS_WITH(schema.set_choices("seed", {"1"}), Catch::Contains("not a string"));
  REQUIRE_THROWS_WITH(schema.set_choices("run.nam", {"x"}), Catch::Contains("did you mean 'run.name'?"));
  REQUIRE_THROWS_WITH(schema.set_choices("run.name", {"a", "b"}), Catch::Contains("\"smoke\" is not one of: a, b"));
  schema.add("other", &t, "");
  CHECK(schema.keys().back() == "other");
}

TEST_CASE("config: TOML tables and dotted keys set fields", "[config]") {
  Settings s;
  ConfigSchema schema;
  bind(schema, s);
  schema.load_toml_string(R"(
seed = 42
stage2.lr = 3e-4          # dotted key at the top level
[run]
name = "fashion"
[stage1]
lr = 5                    # an integer into a double field
steps = 1e4               # an integral float into an int64 field
freeze = false
[model]
projector = "linear"
vision.hidden_size = 128
)",
                          "test.toml");
  CHECK(s.seed == 42);
  CHECK(s.lr2 == 3e-4);
  CHECK(s.run_name == "fashion");
  CHECK(s.lr1 == 5.0);
  CHECK(s.steps == 10000);
  CHECK(s.freeze == false);
  CHECK(s.projector == "linear");
  CHECK(s.hidden == 128);
  CHECK(s.warmup == 0.1);  // absent from the document: untouched
}

TEST_CASE("config: TOML type errors name source, line, key and types", "[config]") {
  Settings s;
  ConfigSchema schema;
  bind(schema, s);
  REQUIRE_THROWS_WITH(schema.load_toml_string("[stage1]\nsteps = 1.5\n", "a.toml"),
                      Catch::Contains("a.toml:2: key 'stage1.steps': expected integer, got float 1.5"));
  REQUIRE_THROWS_WITH(schema.load_toml_string("stage1.lr = \"abc\"\n", "a.toml"),
                      Catch::Contains("a.toml:1: key 'stage1.lr': expected float, got string \"abc\""));
  REQUIRE_THROWS_WITH(schema.load_toml_string("\n[stage1]\nfreeze = 1\n", "a.toml"),
                      Catch::Contains("a.toml:3: key 'stage1.freeze': expected boolean, got integer 1"));
  REQUIRE_THROWS_WITH(schema.load_toml_string("seed = [1, 2]\n", "a.toml"),
                      Catch::Contains("a.toml:1: key 'seed': expected integer, got array"));
  REQUIRE_THROWS_WITH(schema.load_toml_string("stage1 = 3\n", "a.toml"),
                      Catch::Contains("a.toml:1: 'stage1' is a table of settings"));
  CHECK(same(s, Settings{}));
}

TEST_CASE("config: unknown TOML keys are rejected with a suggestion", "[config]") {
  Settings s;
  ConfigSchema schema;
  bind(schema, s);
  REQUIRE_THROWS_WITH(schema.load_toml_string("[stage1]\n\nlrr = 0.5\n", "b.toml"),
                      Catch::Contains("b.toml:3: unknown key 'stage1.lrr' (did you mean 'stage1.lr'?)"));
  REQUIRE_THROWS_WITH(schema.load_toml_string("[stag1]\nlr = 0.5\n", "b.toml"),
                      Catch::Contains("unknown key 'stag1.lr' (did you mean 'stage1.lr'?)"));
  REQUIRE_THROWS_WITH(schema.load_toml_string("[empty]\n", "b.toml"),
                      Catch::Contains("b.toml:1: unknown key 'empty'"));
  try {
    schema.load_toml_string("completely_unrelated = 1\n", "b.toml");
    FAIL("expected an error");
  } catch (const Error& e) {
    CHECK_THAT(e.what(), Catch::Contains("unknown key 'completely_unrelated'"));
    CHECK_THAT(e.what(), !Catch::Contains("did you mean"));
  }
}

TEST_CASE("config: a document with one bad key applies nothing", "[config]") {
  Settings s;
  ConfigSchema schema;
  bind(schema, s);
  try {
    schema.load_toml_string("seed = 1\n[stage1]\nlr = 0.5\nsteps = 3\nbogus = 1\n[stage2]\nlr = \"x\"\n", "c.toml");
    FAIL("expected an error");
  } catch (const Error& e) {
    // Every problem is reported, in file order.
    std::string what = e.what();
    CHECK_THAT(what, Catch::Contains("c.toml:5: unknown key 'stage1.bogus'"));
    CHECK_THAT(what, Catch::Contains("c.toml:7: key 'stage2.lr'"));
    CHECK(what.find("c.toml:5") < what.find("c.toml:7"));
  }
  CHECK(same(s, Settings{}));
}

TEST_CASE("config: TOML syntax errors name the line and column", "[config]") {
  Settings s;
  ConfigSchema schema;
  bind(schema, s);
  REQUIRE_THROWS_WITH(schema.load_toml_string("seed = 1\n[stage1\nlr = 2\n", "d.toml"),
                      Catch::Contains("d.toml:2:") && Catch::Contains("TOML syntax error"));
  REQUIRE_THROWS_WITH(schema.load_toml_string("seed = 1\nseed = 2\n", "d.toml"),
                      Catch::Contains("d.toml:2:"));
  CHECK(same(s, Settings{}));
}

TEST_CASE("config: TOML files are read, and a missing file names its path", "[config]") {
  Settings s;
  ConfigSchema schema;
  bind(schema, s);
  TempDir dir("config");
  schema.load_toml_file(dir.write("ok.toml", "[stage1]\nsteps = 9\n"));
  CHECK(s.steps == 9);
  std::string missing = (dir.path / "nope.toml").string();
  REQUIRE_THROWS_WITH(schema.load_toml_file(missing), Catch::Contains("'" + missing + "'"));
  REQUIRE_THROWS_WITH(schema.load_toml_file(dir.path.string()), Catch::Contains("is a directory"));
  std::string bad = dir.write("bad.toml", "seed = 1\nstage1.steps = 2.5\n");
  REQUIRE_THROWS_WITH(schema.load_toml_file(bad), Catch::Contains(bad + ":2: key 'stage1.steps'"));
}

TEST_CASE("config: string choices are enforced", "[config]") {
  Settings s;
  ConfigSchema schema;
  bind(schema, s);
  REQUIRE_THROWS_WITH(schema.load_toml_string("model.projector = \"qformer\"\n", "e.toml"),
                      Catch::Contains("e.toml:1: key 'model.projector': \"qformer\" is not one of: linear, mlp, "
                                      "downsample"));
  schema.load_toml_string("model.projector = \"downsample\"\n", "e.toml");
  CHECK(s.projector == "downsample");
}

TEST_CASE("config: command-line flags override the TOML file", "[config]") {
  Settings s;
  ConfigSchema schema;
  bind(schema, s);
  CLI::App app{"test"};
  std::string config_path;
  app.add_option("--config", config_path, "config file");
  schema.add_to_cli(app);
  parse(app, {"--config", "x.toml", "--stage1.lr", "0.25", "--stage1.freeze=no", "--seed=-3",
              "--model.projector", "linear", "--run.name", "cli", "--stage1.steps", "5", "--stage1.steps", "6"});
  CHECK(config_path == "x.toml");
  CHECK(same(s, Settings{}));  // flags are captured, not applied, by the parse
  schema.load_toml_string("seed = 1\n[stage1]\nlr = 0.5\nfreeze = true\n[stage2]\nlr = 0.75\n", "x.toml");
  schema.apply_cli();
  CHECK(s.lr1 == 0.25);
  CHECK(s.freeze == false);
  CHECK(s.seed == -3);
  CHECK(s.projector == "linear");
  CHECK(s.run_name == "cli");
  CHECK(s.steps == 6);     // the last of a repeated flag wins
  CHECK(s.lr2 == 0.75);    // from the file: no flag given
  CHECK(s.warmup == 0.1);  // neither: the default
}

TEST_CASE("config: bool flags take explicit values", "[config]") {
  for (auto [text, want] : std::vector<std::pair<std::string, bool>>{
           {"true", true}, {"false", false}, {"1", true}, {"0", false}, {"yes", true}, {"no", false}}) {
    Settings s;
    s.freeze = !want;
    ConfigSchema schema;
    bind(schema, s);
    CLI::App app{"test"};
    schema.add_to_cli(app);
    parse(app, {"--stage1.freeze=" + text});
    schema.apply_cli();
    CHECK(s.freeze == want);
  }
  Settings s;
  ConfigSchema schema;
  bind(schema, s);
  CLI::App app{"test"};
  schema.add_to_cli(app);
  CHECK_THROWS_AS(parse(app, {"--stage1.freeze"}), CLI::ParseError);  // a value is required
}

TEST_CASE("config: bad flag values name the flag and apply nothing", "[config]") {
  Settings s;
  ConfigSchema schema;
  bind(schema, s);
  CLI::App app{"test"};
  schema.add_to_cli(app);
  parse(app, {"--seed", "5", "--stage1.lr", "abc"});
  REQUIRE_THROWS_WITH(schema.apply_cli(), Catch::Contains("flag --stage1.lr: expected float, got 'abc'"));
  CHECK(s.seed == 7);
  parse(app, {"--stage1.steps", "1.5"});
  REQUIRE_THROWS_WITH(schema.apply_cli(), Catch::Contains("flag --stage1.steps: expected integer, got '1.5'"));
  parse(app, {"--stage1.freeze", "maybe"});
  REQUIRE_THROWS_WITH(schema.apply_cli(), Catch::Contains("flag --stage1.freeze: expected boolean, got 'maybe'"));
  parse(app, {"--model.projector", "qformer"});
  REQUIRE_THROWS_WITH(schema.apply_cli(), Catch::Contains("flag --model.projector: \"qformer\" is not one of"));
  parse(app, {"--stage1.steps", "2e3"});
  schema.apply_cli();
  CHECK(s.steps == 2000);
  CHECK(same(s, [] { Settings d; d.steps = 2000; return d; }()));
}

TEST_CASE("config: --help lists every key with its default, grouped by table", "[config]") {
  Settings s;
  ConfigSchema schema;
  bind(schema, s);
  s.seed = 99;  // after registration: the registered default is what --help shows
  CLI::App app{"test"};
  schema.add_to_cli(app);
  std::string help = app.help();
  for (const std::string& key : schema.keys()) CHECK_THAT(help, Catch::Contains("--" + key));
  CHECK_THAT(help, Catch::Contains("run name (default: \"smoke\")"));
  CHECK_THAT(help, Catch::Contains("random seed (default: 7)"));
  CHECK_THAT(help, Catch::Contains("stage 1 learning rate (default: 0.001)"));
  CHECK_THAT(help, Catch::Contains("stage 2 learning rate (default: 2e-05)"));
  CHECK_THAT(help, Catch::Contains("(default: 0.1)"));
  CHECK_THAT(help, Catch::Contains("stage 1 steps (default: 100)"));
  CHECK_THAT(help, Catch::Contains("freeze the language model (default: true)"));
  CHECK_THAT(help, Catch::Contains("one of: linear, mlp, downsample (default: \"mlp\")"));
  CHECK_THAT(help, Catch::Contains("(default: 64)"));
  for (const char* group : {"stage1:", "stage2:", "model:", "run:"}) CHECK_THAT(help, Catch::Contains(group));
}

TEST_CASE("config: a short alias sets the same key, and bad aliases are refused", "[config]") {
  Settings s;
  ConfigSchema schema;
  bind(schema, s);
  schema.add_alias("model.projector", "--projector");
  REQUIRE_THROWS_WITH(schema.add_alias("model.projector", "projector"), Catch::Contains("must look like --name"));
  REQUIRE_THROWS_WITH(schema.add_alias("seed", "--projector"), Catch::Contains("already an alias of 'model.projector'"));
  REQUIRE_THROWS_WITH(schema.add_alias("seed", "--stage1.lr"), Catch::Contains("already config key 'stage1.lr'"));
  REQUIRE_THROWS_WITH(schema.add_alias("nope", "--nope"), Catch::Contains("unknown key 'nope'"));
  CLI::App app{"test"};
  schema.add_to_cli(app);
  CHECK_THAT(app.help(), Catch::Contains("--projector"));
  parse(app, {"--projector", "linear"});
  schema.apply_cli();
  CHECK(s.projector == "linear");
  parse(app, {"--projector", "qformer"});  // the key's choices still apply, named by its key
  REQUIRE_THROWS_WITH(schema.apply_cli(), Catch::Contains("\"qformer\" is not one of"));
  CHECK(s.projector == "linear");
  // The TOML file knows only the dotted key.
  CHECK_THAT(schema.to_toml(), Catch::Contains("projector = \"linear\""));
}

TEST_CASE("config: to_toml round-trips every value exactly", "[config]") {
  Settings s;
  ConfigSchema schema;
  bind(schema, s);
  s.run_name = "quote \" backslash \\ tab \t newline \n done";
  s.seed = -9223372036854775807LL - 1;
  s.warmup = 1.0;  // must stay a float, not become the integer 1
  s.hidden = 9223372036854775807LL;
  std::string text = schema.to_toml();
  // Tables per first component, keys sorted within each.
  CHECK(text.find("seed = ") < text.find("[run]"));
  CHECK(text.find("[stage1]\nfreeze = true\nlr = 0.001\nsteps = 100\n") != std::string::npos);
  CHECK_THAT(text, Catch::Contains("[stage2]\nlr = 2e-05\nwarmup = 1.0\n"));
  CHECK_THAT(text, Catch::Contains("[model]\nprojector = \"mlp\"\nvision.hidden_size = 9223372036854775807\n"));

  Settings t{"", 0, 0.0, 0.0, 0.0, 0, false, "linear", 0};
  ConfigSchema other;
  bind(other, t);
  other.load_toml_string(text, "dump.toml");
  CHECK(same(s, t));
  CHECK(t.lr1 == 1e-3);
  CHECK(t.lr2 == 2e-5);
  CHECK(other.to_toml() == text);

  // Values whose shortest decimal form needs all 17 digits still round-trip.
  for (double d : {0.1 + 0.2, 1.0 / 3.0, 5e-324, 1.7976931348623157e308, -0.0, 1e22, 123456789.125}) {
    s.lr1 = d;
    other.load_toml_string(schema.to_toml(), "dump.toml");
    CHECK(std::signbit(t.lr1) == std::signbit(d));
    CHECK(t.lr1 == d);
  }
}

TEST_CASE("config: to_json and load_json round-trip", "[config]") {
  Settings s;
  ConfigSchema schema;
  bind(schema, s);
  s.lr1 = 0.1 + 0.2;
  s.steps = 123456789012345LL;
  s.freeze = false;
  s.projector = "downsample";
  s.warmup = std::numeric_limits<double>::infinity();
  nlohmann::json j = schema.to_json();
  CHECK(j["stage1.lr"].get<double>() == 0.1 + 0.2);
  CHECK(j["model.vision.hidden_size"].get<int64_t>() == 64);
  CHECK(j["stage2.warmup"] == "inf");
  CHECK(j.size() == schema.keys().size());

  Settings t;
  ConfigSchema other;
  bind(other, t);
  other.load_json(nlohmann::json::parse(j.dump()), "ckpt.json");  // through text, as a checkpoint stores it
  CHECK(same(s, t));

  REQUIRE_THROWS_WITH(other.load_json({{"stage1.lrr", 1.0}}, "ckpt.json"),
                      Catch::Contains("ckpt.json: unknown key 'stage1.lrr' (did you mean 'stage1.lr'?)"));
  REQUIRE_THROWS_WITH(other.load_json({{"seed", 1}, {"stage1.steps", 1.5}}, "ckpt.json"),
                      Catch::Contains("ckpt.json: key 'stage1.steps': expected integer, got number 1.5"));
  CHECK(t.seed == s.seed);  // nothing applied
  REQUIRE_THROWS_WITH(other.load_json({{"stage1.freeze", "no"}}, "ckpt.json"),
                      Catch::Contains("key 'stage1.freeze': expected boolean, got string"));
  REQUIRE_THROWS_WITH(other.load_json(nlohmann::json::array(), "ckpt.json"),
                      Catch::Contains("ckpt.json: expected a JSON object"));
}
