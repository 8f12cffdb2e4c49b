// Projector weights in LLaVA's and Hugging Face's namings: round trips,
// checkpoints with other tensors, and the errors for keys and shapes.
#include <catch2/catch.hpp>

#include <filesystem>
#include <random>
#include <unistd.h>

#include "core/io/tensor_io.h"
#include "modules/connectors.h"
#include "modules/llava.h"
#include "modules/projector_io.h"
#include "tests/support/check.h"

using namespace vlmc;
using Catch::Contains;
namespace fs = std::filesystem;

namespace {

// A fresh file path under the system temp dir; the file is removed afterwards.
struct TempFile {
  fs::path path;
  TempFile() {
    std::random_device rd;
    path = fs::temp_directory_path() /
           ("vlmc_projector_" + std::to_string(::getpid()) + "_" + std::to_string(rd()) + ".safetensors");
  }
  ~TempFile() {
    std::error_code ec;
    fs::remove(path, ec);
  }
  std::string str() const { return path.string(); }
};

std::vector<std::string> keys(const std::map<std::string, Tensor>& m) {
  std::vector<std::string> out;
  for (const auto& [name, t] : m) out.push_back(name);
  return out;
}

// Every parameter of b equals a's, name by name.
void check_same_parameters(const nn::Module& a, const nn::Module& b) {
  const auto pa = a.named_parameters(), pb = b.named_parameters();
  REQUIRE(pa.size() == pb.size());
  for (size_t i = 0; i < pa.size(); ++i) {
    INFO(pa[i].first);
    CHECK(pa[i].first == pb[i].first);
    CHECK(pa[i].second.to_vector<float>() == pb[i].second.to_vector<float>());
  }
}

std::map<std::string, Tensor> rename_prefix(const std::map<std::string, Tensor>& m, const std::string& from,
                                            const std::string& to) {
  std::map<std::string, Tensor> out;
  for (const auto& [name, t] : m) out[name.compare(0, from.size(), from) == 0 ? to + name.substr(from.size()) : name] = t;
  return out;
}

}  // namespace

TEST_CASE("projector export uses LLaVA's and Hugging Face's names", "[modules][projector_io]") {
  Generator gen(1);
  // LLaVA-1.5 7B's shapes.
  const auto big = nn::export_projector(nn::MLPConnector(1024, 4096, std::nullopt, gen), nn::ProjectorNaming::llava);
  CHECK(keys(big) == std::vector<std::string>{"model.mm_projector.0.bias", "model.mm_projector.0.weight",
                                              "model.mm_projector.2.bias", "model.mm_projector.2.weight"});
  CHECK(big.at("model.mm_projector.0.weight").shape() == Shape{4096, 1024});
  CHECK(big.at("model.mm_projector.2.weight").shape() == Shape{4096, 4096});

  const auto hf = nn::export_projector(*nn::make_projector("mlp2x_gelu", 5, 7, {}, gen), nn::ProjectorNaming::hugging_face);
  CHECK(keys(hf) == std::vector<std::string>{"multi_modal_projector.linear_1.bias", "multi_modal_projector.linear_1.weight",
                                             "multi_modal_projector.linear_2.bias", "multi_modal_projector.linear_2.weight"});
  CHECK(hf.at("multi_modal_projector.linear_1.weight").shape() == Shape{7, 5});

  CHECK(keys(nn::export_projector(nn::LinearProjection(5, 7, gen), nn::ProjectorNaming::llava)) ==
        std::vector<std::string>{"model.mm_projector.bias", "model.mm_projector.weight"});
  REQUIRE_THROWS_WITH(nn::export_projector(nn::LinearProjection(5, 7, gen), nn::ProjectorNaming::hugging_face),
                      Contains("Hugging Face's LLaVA has no linear projector (proj.weight)"));
  REQUIRE_THROWS_WITH(nn::export_projector(nn::TinyLanguageModel(5, 7, gen), nn::ProjectorNaming::llava),
                      Contains("embed_tokens.weight, lm_head.weight) are not a projector's"));
}

TEST_CASE("projectors round-trip through safetensors in both namings", "[modules][projector_io]") {
  Generator gen(2);
  for (auto naming : {nn::ProjectorNaming::llava, nn::ProjectorNaming::hugging_face}) {
    INFO((naming == nn::ProjectorNaming::llava ? "llava" : "hugging face"));
    TempFile file;
    // Ours (the seed's MLPConnector) -> file -> LLaVA's mlp2x_gelu, and back.
    nn::MLPConnector ours(5, 7, std::nullopt, gen);
    nn::save_projector(ours, file.str(), naming);
    CHECK(io::load_safetensors_metadata(file.str()).at("format") == "pt");
    const auto llava = nn::make_projector("mlp2x_gelu", 5, 7, {}, gen);
    nn::load_projector(*llava, file.str());
    const Tensor x = Tensor::randn({2, 3, 5}, gen);
    CHECK_REL(llava->forward(x), ours.forward(x), 1e-6);

    TempFile back;
    nn::save_projector(*llava, back.str(), naming);
    nn::MLPConnector again(5, 7, std::nullopt, gen);
    nn::load_projector(again, back.str());
    check_same_parameters(ours, again);

    // A deeper projector keeps its third layer.
    const auto deep = nn::make_projector("mlp3x_gelu", 5, 7, {}, gen);
    TempFile deep_file;
    nn::save_projector(*deep, deep_file.str(), naming);
    const auto deep_again = nn::make_projector("mlp3x_gelu", 5, 7, {}, gen);
    nn::load_projector(*deep_again, deep_file.str());
    check_same_parameters(*deep, *deep_again);
  }
  // LinearProjection under LLaVA's naming.
  TempFile file;
  nn::LinearProjection lin(5, 7, gen), lin_again(5, 7, gen);
  nn::save_projector(lin, file.str(), nn::ProjectorNaming::llava);
  nn::load_projector(lin_again, file.str());
  check_same_parameters(lin, lin_again);
}

TEST_CASE("load_projector takes the projector out of a full checkpoint", "[modules][projector_io]") {
  Generator gen(3);
  nn::MLPConnector ours(5, 7, std::nullopt, gen);
  const auto exported = nn::export_projector(ours, nn::ProjectorNaming::llava);
  for (const std::string prefix : {"model.mm_projector.", "mm_projector."}) {
    INFO(prefix);
    auto file_tensors = rename_prefix(exported, "model.mm_projector.", prefix);
    // What else a LLaVA checkpoint holds: the language model and the vision tower.
    file_tensors["model.embed_tokens.weight"] = Tensor::randn({11, 7}, gen);
    file_tensors["model.layers.0.self_attn.q_proj.weight"] = Tensor::randn({7, 7}, gen);
    file_tensors["model.vision_tower.vision_tower.vision_model.embeddings.class_embedding"] = Tensor::randn({5}, gen);
    file_tensors["lm_head.weight"] = Tensor::randn({11, 7}, gen);
    TempFile file;
    io::save_safetensors(file.str(), file_tensors);
    nn::MLPConnector loaded(5, 7, std::nullopt, gen);
    nn::load_projector(loaded, file.str());
    check_same_parameters(ours, loaded);
  }
  // Hugging Face's newer layout nests the projector under "model.".
  auto hf = rename_prefix(nn::export_projector(ours, nn::ProjectorNaming::hugging_face), "multi_modal_projector.",
                          "model.multi_modal_projector.");
  hf["model.language_model.embed_tokens.weight"] = Tensor::randn({11, 7}, gen);
  nn::MLPConnector loaded(5, 7, std::nullopt, gen);
  nn::load_projector(loaded, hf);
  check_same_parameters(ours, loaded);
}

TEST_CASE("load_projector converts F16 and BF16 tensors", "[modules][projector_io]") {
  Generator gen(4);
  nn::MLPConnector ours(5, 7, std::nullopt, gen);
  for (DType dtype : {DType::f16, DType::bf16}) {
    std::map<std::string, Tensor> half;
    for (const auto& [name, t] : nn::export_projector(ours, nn::ProjectorNaming::hugging_face)) half[name] = t.to(dtype);
    TempFile file;
    io::save_safetensors(file.str(), half);
    nn::MLPConnector loaded(5, 7, std::nullopt, gen);
    nn::load_projector(loaded, file.str());
    const auto pa = ours.named_parameters(), pb = loaded.named_parameters();
    for (size_t i = 0; i < pa.size(); ++i) {
      CHECK(pb[i].second.dtype() == DType::f32);
      CHECK_REL(pb[i].second, pa[i].second, 1e-2);
    }
  }
}

TEST_CASE("load_projector names missing, mis-shaped and unexpected keys", "[modules][projector_io]") {
  Generator gen(5);
  nn::MLPConnector ours(5, 7, std::nullopt, gen);
  const auto exported = nn::export_projector(ours, nn::ProjectorNaming::llava);
  nn::MLPConnector target(5, 7, std::nullopt, gen);
  const auto before = target.state_dict().at("mlp.0.weight").to_vector<float>();

  auto missing = exported;
  missing.erase("model.mm_projector.2.bias");
  REQUIRE_THROWS_WITH(nn::load_projector(target, missing),
                      Contains("missing keys: model.mm_projector.2.bias (for mlp.2.bias [7])"));

  nn::MLPConnector wider(5, 9, std::nullopt, gen);
  REQUIRE_THROWS_WITH(nn::load_projector(wider, exported),
                      Contains("shape mismatch: model.mm_projector.0.weight is [7,5] but mlp.0.weight is [9,5]"));

  const auto deep = nn::export_projector(*nn::make_projector("mlp3x_gelu", 5, 7, {}, gen), nn::ProjectorNaming::llava);
  REQUIRE_THROWS_WITH(nn::load_projector(target, deep),
                      Contains("unexpected keys: model.mm_projector.4.bias [7], model.mm_projector.4.weight [7,7]"));

  auto both = exported;
  for (const auto& [name, t] : nn::export_projector(ours, nn::ProjectorNaming::hugging_face)) both[name] = t;
  REQUIRE_THROWS_WITH(nn::load_projector(target, both),
                      Contains("several namings (model.mm_projector., multi_modal_projector.)"));

  REQUIRE_THROWS_WITH(nn::load_projector(target, std::map<std::string, Tensor>{{"lm_head.weight", Tensor::zeros({3, 7})}}),
                      Contains("holds no projector tensor"));

  TempFile file;
  io::save_safetensors(file.str(), missing);
  REQUIRE_THROWS_WITH(nn::load_projector(target, file.str()), Contains(file.str() + " does not fit the projector"));

  // A refused load changes nothing.
  CHECK(target.state_dict().at("mlp.0.weight").to_vector<float>() == before);
}
