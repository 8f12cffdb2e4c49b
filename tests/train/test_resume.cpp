// Choosing and checking the checkpoint `vlmc train --resume` continues from
// (train/resume.h): state.json cross-checked against the directory name, the
// stage order and the optimizer's own step counters; a corrupt newest
// checkpoint passed over for the previous one unless a path names it.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "train/resume.h"
#include "tests/support/temp_dir.h"

using namespace vlmc;
using namespace vlmc::train;
namespace fs = std::filesystem;

namespace {

const std::map<std::string, int> kStages = {{"stage0-vision", 0}, {"stage0-language", 1}, {"stage1", 2}, {"stage2", 3}};

// A stage-2 checkpoint named for `name_step`, whose state.json says `state_step`
// and whose optimizer took `updates` steps.
std::string write(const test::TempDir& tmp, int64_t name_step, nlohmann::json state, int64_t updates) {
  Checkpoint c;
  c.model["connector.0.weight"] = Tensor::ones({2, 2});
  c.optimizer["state.0.step"] = Tensor::scalar(static_cast<double>(updates), DType::i64);
  c.optimizer["state.0.exp_avg"] = Tensor::zeros({2, 2});
  c.state = std::move(state);
  char name[64];
  std::snprintf(name, sizeof name, "3-stage2-step%06lld", static_cast<long long>(name_step));
  save_checkpoint(tmp.path.string(), name, c);
  return (tmp.path / name).string();
}

nlohmann::json good_state(int64_t step, int64_t skipped = 0) {
  return {{"stage", "stage2"}, {"stage_index", 3}, {"step", step}, {"steps", 10}, {"skipped_steps", skipped},
          {"world_size", 1}};
}

}  // namespace

TEST_CASE("resume: a consistent checkpoint is accepted, with its skipped steps", "[resume]") {
  test::TempDir tmp("resume_ok");
  const std::string dir = write(tmp, 5, good_state(5, 1), 4);
  const ResumePoint p = check_resume_checkpoint(dir, load_checkpoint(dir), kStages, 1);
  CHECK(p.stage_index == 3);
  CHECK(p.step == 5);
  CHECK(p.skipped_steps == 1);
  // Checkpoints from before skipped_steps was recorded: only the upper bound is checked.
  nlohmann::json old = good_state(5);
  old.erase("skipped_steps");
  const std::string old_dir = write(tmp, 6, [&] { auto s = old; s["step"] = 6; return s; }(), 4);
  CHECK(check_resume_checkpoint(old_dir, load_checkpoint(old_dir), kStages, 1).step == 6);
  // Checkpoints from before the stage index was named so: the key "rank".
  nlohmann::json legacy = good_state(7);
  legacy.erase("stage_index");
  legacy["rank"] = 3;
  const std::string legacy_dir = write(tmp, 7, legacy, 7);
  CHECK(check_resume_checkpoint(legacy_dir, load_checkpoint(legacy_dir), kStages, 1).stage_index == 3);
}

TEST_CASE("resume: a hand-edited state.json is refused, naming the field", "[resume]") {
  test::TempDir tmp("resume_edited");
  SECTION("stage index 7 (the issue's edit)") {
    nlohmann::json s = good_state(5);
    s["stage_index"] = 7;
    const std::string dir = write(tmp, 5, s, 5);
    REQUIRE_THROWS_WITH(check_resume_checkpoint(dir, load_checkpoint(dir), kStages, 1),
                        Catch::Contains("\"stage_index\" is 7 but stage \"stage2\" is stage 3 of the run"));
  }
  SECTION("a step the directory name does not have") {
    const std::string dir = write(tmp, 5, good_state(6), 6);
    REQUIRE_THROWS_WITH(check_resume_checkpoint(dir, load_checkpoint(dir), kStages, 1),
                        Catch::Contains("3-stage2-step000006, not 3-stage2-step000005"));
  }
  SECTION("a step the optimizer disagrees with") {
    const std::string dir = write(tmp, 5, good_state(5), 3);
    REQUIRE_THROWS_WITH(check_resume_checkpoint(dir, load_checkpoint(dir), kStages, 1),
                        Catch::Contains("the optimizer state has taken 3 steps") && Catch::Contains("step 5"));
    const std::string ahead = write(tmp, 4, [] { auto s = good_state(4); s.erase("skipped_steps"); return s; }(), 9);
    REQUIRE_THROWS_WITH(check_resume_checkpoint(ahead, load_checkpoint(ahead), kStages, 1),
                        Catch::Contains("has taken 9 steps but state.json says step 4"));
  }
  SECTION("an unknown stage, a step past the stage's steps") {
    nlohmann::json s = good_state(5);
    s["stage"] = "stage9";
    std::string dir = write(tmp, 5, s, 5);
    REQUIRE_THROWS_WITH(check_resume_checkpoint(dir, load_checkpoint(dir), kStages, 1),
                        Catch::Contains("\"stage9\", not a stage of this run"));
    s = good_state(12);
    dir = write(tmp, 12, s, 12);
    REQUIRE_THROWS_WITH(check_resume_checkpoint(dir, load_checkpoint(dir), kStages, 1),
                        Catch::Contains("\"step\" 12 is outside 1..10"));
  }
}

TEST_CASE("resume: fields of the wrong JSON type are errors naming the field, not exceptions of the JSON library",
          "[resume]") {
  test::TempDir tmp("resume_types");
  SECTION("world_size as a string, as a float") {
    nlohmann::json s = good_state(5);
    s["world_size"] = "1";
    std::string dir = write(tmp, 5, s, 5);
    REQUIRE_THROWS_MATCHES(check_resume_checkpoint(dir, load_checkpoint(dir), kStages, 1), Error,
                           Catch::Matchers::Message(dir + "/state.json: \"world_size\" is missing or not an integer"));
    s["world_size"] = 1e300;
    dir = write(tmp, 5, s, 5);
    REQUIRE_THROWS_WITH(check_resume_checkpoint(dir, load_checkpoint(dir), kStages, 1),
                        Catch::Contains("\"world_size\" is missing or not an integer"));
  }
  SECTION("a stage index no int holds") {
    nlohmann::json s = good_state(5);
    s["stage_index"] = (int64_t{1} << 32) + 3;  // would truncate to 3 and pass
    const std::string dir = write(tmp, 5, s, 5);
    REQUIRE_THROWS_WITH(check_resume_checkpoint(dir, load_checkpoint(dir), kStages, 1),
                        Catch::Contains("\"stage_index\" is 4294967299, not a stage's place in a run"));
  }
  SECTION("an optimizer step counter that is not a whole number") {
    Checkpoint c;
    c.model["connector.0.weight"] = Tensor::ones({2, 2});
    c.optimizer["state.0.step"] = Tensor::scalar(1e300, DType::f64);
    c.state = good_state(5);
    save_checkpoint(tmp.path.string(), "3-stage2-step000005", c);
    const std::string dir = (tmp.path / "3-stage2-step000005").string();
    REQUIRE_THROWS_WITH(check_resume_checkpoint(dir, load_checkpoint(dir), kStages, 1),
                        Catch::Contains("tensor 'state.0.step' is 1e+300, not a step count"));
  }
}

TEST_CASE("resume: the llava loader's place is read from state.json, each field checked", "[resume]") {
  const nlohmann::json good = {{"data", {{"loaders", {{{"step", 4}, {"epoch", 1}, {"cursor", 7}, {"skipped", 2}}}}}}};
  const data::LoaderState s = loader_state_from(good, "ck", 0, 1);
  CHECK(s.step == 4);
  CHECK(s.epoch == 1);
  CHECK(s.cursor == 7);
  CHECK(s.skipped == 2);
  CHECK_THROWS_WITH(loader_state_from(good, "ck", 0, 2), Catch::Contains("holds the places of 1 processes"));
  CHECK_THROWS_WITH(loader_state_from({{"data", 3}}, "ck", 0, 1), Catch::Contains("has no \"data\""));
  nlohmann::json bad = good;
  bad["data"]["loaders"][0]["cursor"] = 1e300;  // no int64_t holds it
  CHECK_THROWS_MATCHES(loader_state_from(bad, "ck", 0, 1), Error,
                       Catch::Matchers::Message("--resume: ck/state.json: data.loaders[0].cursor is missing or not an "
                                                "integer"));
  bad["data"]["loaders"][0] = "x";
  CHECK_THROWS_WITH(loader_state_from(bad, "ck", 0, 1), Catch::Contains("data.loaders[0] is not an object"));
}

TEST_CASE("resume: a corrupt newest checkpoint falls back to the previous one, saying so", "[resume]") {
  test::TempDir tmp("resume_fallback");
  write(tmp, 4, good_state(4), 4);
  const std::string newest = write(tmp, 6, good_state(6), 6);
  {  // one flipped bit in the newest model file: its CRC-32 no longer matches
    std::fstream f(newest + "/" + kCheckpointModelFile, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(-3, std::ios::end);
    char byte = 0;
    f.read(&byte, 1);
    byte ^= 0x10;
    f.seekp(-3, std::ios::end);
    f.write(&byte, 1);
  }
  const std::vector<std::string> names = list_checkpoints(tmp.path.string());
  REQUIRE(names.size() == 2);
  std::vector<std::string> warnings;
  const ResumePoint p = choose_resume_checkpoint(tmp.path.string(), names, "", kStages, 1,
                                                 [&](const std::string& w) { warnings.push_back(w); });
  CHECK(p.step == 4);
  REQUIRE(warnings.size() == 1);
  CHECK_THAT(warnings[0], Catch::Contains("passing over") && Catch::Contains("3-stage2-step000006"));
  // Named explicitly, the corrupt one is an error: no fallback.
  REQUIRE_THROWS_WITH(choose_resume_checkpoint(tmp.path.string(), names, newest, kStages, 1, [](const std::string&) {}),
                      Catch::Contains("3-stage2-step000006"));
  // Nothing usable: one error listing each refusal.
  const std::vector<std::string> only_newest = {names.back()};
  REQUIRE_THROWS_WITH(
      choose_resume_checkpoint(tmp.path.string(), only_newest, "", kStages, 1, [](const std::string&) {}),
      Catch::Contains("no usable checkpoint") && Catch::Contains("3-stage2-step000006"));
}
