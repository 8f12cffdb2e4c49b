// Compares every op against values PyTorch computed (tests/golden/*.safetensors,
// written by tests/golden/make_golden.py; see tests/golden/README.md).
//
// Each file holds one op family. A case is named by its "<case>.args" metadata
// entry, a JSON object whose "op" picks the vlmc call below and whose other
// fields are the op's parameters. The case's tensors are
//   <case>.in.<name>    inputs (float ones become leaves that require grad)
//   <case>.out[.<key>]  outputs; <case>.proj[.<key>] projects each float output
//   <case>.grad.<name>  d sum(out * proj) / d input
// Float outputs and gradients must match to a relative error (in norm) of
// 1e-5; integer outputs must match exactly.
#include <catch2/catch.hpp>

#include <algorithm>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/io/tensor_io.h"
#include "core/ops.h"
#include "tests/support/check.h"

using namespace vlmc;
using json = nlohmann::json;

namespace {

constexpr double kTolerance = 1e-5;

using Tensors = std::map<std::string, Tensor>;
// Outputs keyed "" for a single output, else by the golden file's key.
using Outputs = std::map<std::string, Tensor>;
using OpFn = std::function<Outputs(const Tensors& in, const json& args)>;

bool is_float(DType t) { return t == DType::f32 || t == DType::f64; }

const Tensor& input(const Tensors& in, const std::string& name) {
  const auto it = in.find(name);
  VLMC_CHECK(it != in.end(), "golden: the case has no input \"", name, "\"");
  return it->second;
}

Tensor optional_input(const Tensors& in, const std::string& name) {
  const auto it = in.find(name);
  return it == in.end() ? Tensor() : it->second;
}

std::vector<int64_t> dims_arg(const json& args, const char* key) {
  return args.at(key).get<std::vector<int64_t>>();
}
int64_t int_arg(const json& args, const char* key) { return args.at(key).get<int64_t>(); }
double real_arg(const json& args, const char* key) { return args.at(key).get<double>(); }
bool bool_arg(const json& args, const char* key) { return args.at(key).get<bool>(); }

std::vector<Tensor> listed(const Tensors& in, const json& args) {
  std::vector<Tensor> ts;
  for (int i = 0; i < args.at("n").get<int>(); ++i) ts.push_back(input(in, "t" + std::to_string(i)));
  return ts;
}

Outputs one(const Tensor& t) { return {{"", t}}; }

// Binary ops take inputs "a" and "b"; scalar ops take "x" and the scalar "s";
// unary ops take "x".
OpFn binary(Tensor (*fn)(const Tensor&, const Tensor&)) {
  return [fn](const Tensors& in, const json&) { return one(fn(input(in, "a"), input(in, "b"))); };
}
OpFn unary(Tensor (*fn)(const Tensor&)) {
  return [fn](const Tensors& in, const json&) { return one(fn(input(in, "x"))); };
}
OpFn scalar(std::function<Tensor(const Tensor&, double)> fn) {
  return [fn](const Tensors& in, const json& args) {
    return one(fn(input(in, "x"), real_arg(args, "s")));
  };
}

// sum and mean: "dims" absent means over all elements.
OpFn reduction(Tensor (*all)(const Tensor&),
               Tensor (*over)(const Tensor&, const std::vector<int64_t>&, bool)) {
  return [all, over](const Tensors& in, const json& args) {
    const Tensor& x = input(in, "x");
    if (!args.contains("dims")) return one(all(x));
    return one(over(x, dims_arg(args, "dims"), args.value("keepdim", false)));
  };
}

const std::map<std::string, OpFn>& op_table() {
  using TT = Tensor (*)(const Tensor&, const Tensor&);
  using T1 = Tensor (*)(const Tensor&);
  using In = Tensors;
  static const std::map<std::string, OpFn> table = {
      // ---- elementwise
      {"add", binary(static_cast<TT>(&add))},
      {"sub", binary(static_cast<TT>(&sub))},
      {"mul", binary(static_cast<TT>(&mul))},
      {"div", binary(static_cast<TT>(&div))},
      {"pow", binary(static_cast<TT>(&pow))},
      {"maximum", binary(&maximum)},
      {"minimum", binary(&minimum)},
      {"add_scalar", scalar([](const Tensor& x, double s) { return add(x, s); })},
      {"sub_scalar", scalar([](const Tensor& x, double s) { return sub(x, s); })},
      {"rsub_scalar", scalar([](const Tensor& x, double s) { return rsub(s, x); })},
      {"mul_scalar", scalar([](const Tensor& x, double s) { return mul(x, s); })},
      {"div_scalar", scalar([](const Tensor& x, double s) { return div(x, s); })},
      {"rdiv_scalar", scalar([](const Tensor& x, double s) { return rdiv(s, x); })},
      {"pow_scalar", scalar([](const Tensor& x, double s) { return pow(x, s); })},
      // In place on a copy that does not require grad (add_ and mul_ are never recorded).
      {"add_",
       [](const In& in, const json& args) {
         Tensor self = input(in, "self").detach().clone();
         add_(self, input(in, "other").detach(), real_arg(args, "alpha"));
         return one(self);
       }},
      {"mul_",
       [](const In& in, const json& args) {
         Tensor self = input(in, "self").detach().clone();
         mul_(self, real_arg(args, "value"));
         return one(self);
       }},
      // ---- unary
      {"neg", unary(static_cast<T1>(&neg))},
      {"exp", unary(static_cast<T1>(&exp))},
      {"log", unary(static_cast<T1>(&log))},
      {"sqrt", unary(static_cast<T1>(&sqrt))},
      {"rsqrt", unary(static_cast<T1>(&rsqrt))},
      {"abs", unary(static_cast<T1>(&abs))},
      {"tanh", unary(static_cast<T1>(&tanh))},
      {"sigmoid", unary(static_cast<T1>(&sigmoid))},
      {"relu", unary(static_cast<T1>(&relu))},
      {"silu", unary(static_cast<T1>(&silu))},
      {"gelu",
       [](const In& in, const json& args) {
         const std::string approx = args.at("approximate").get<std::string>();
         VLMC_CHECK(approx == "none" || approx == "tanh", "golden: unknown gelu approximation ", approx);
         return one(gelu(input(in, "x"), approx == "tanh" ? GeluApprox::tanh : GeluApprox::none));
       }},
      // ---- reductions
      {"sum", reduction(&sum, &sum)},
      {"mean", reduction(&mean, &mean)},
      {"max_dim",
       [](const In& in, const json& args) {
         MaxResult r = max(input(in, "x"), int_arg(args, "dim"), bool_arg(args, "keepdim"));
         return Outputs{{"values", r.values}, {"indices", r.indices}};
       }},
      {"max_all", [](const In& in, const json&) { return one(max(input(in, "x"))); }},
      {"argmax",
       [](const In& in, const json& args) {
         return one(argmax(input(in, "x"), int_arg(args, "dim"), bool_arg(args, "keepdim")));
       }},
      {"sum_to",
       [](const In& in, const json& args) {
         return one(sum_to(input(in, "x"), dims_arg(args, "shape")));
       }},
      // ---- linear algebra
      {"matmul", binary(&matmul)},
      {"linear",
       [](const In& in, const json&) {
         return one(linear(input(in, "x"), input(in, "weight"), optional_input(in, "bias")));
       }},
      // ---- neural-network functions
      {"softmax",
       [](const In& in, const json& args) {
         return one(softmax(input(in, "x"), int_arg(args, "dim")));
       }},
      {"log_softmax",
       [](const In& in, const json& args) {
         return one(log_softmax(input(in, "x"), int_arg(args, "dim")));
       }},
      {"layer_norm",
       [](const In& in, const json& args) {
         return one(layer_norm(input(in, "x"), dims_arg(args, "normalized_shape"),
                               optional_input(in, "weight"), optional_input(in, "bias"),
                               real_arg(args, "eps")));
       }},
      {"rms_norm",
       [](const In& in, const json& args) {
         return one(rms_norm(input(in, "x"), dims_arg(args, "normalized_shape"),
                             optional_input(in, "weight"), real_arg(args, "eps")));
       }},
      {"embedding",
       [](const In& in, const json&) {
         return one(embedding(input(in, "weight"), input(in, "indices")));
       }},
      {"cross_entropy",
       [](const In& in, const json& args) {
         return one(cross_entropy(input(in, "logits"), input(in, "targets"),
                                  int_arg(args, "ignore_index")));
       }},
      // ---- joining, splitting and indexing
      {"cat",
       [](const In& in, const json& args) {
         return one(cat(listed(in, args), int_arg(args, "dim")));
       }},
      {"stack",
       [](const In& in, const json& args) {
         return one(stack(listed(in, args), int_arg(args, "dim")));
       }},
      {"split",
       [](const In& in, const json& args) {
         const Tensor& x = input(in, "x");
         const int64_t dim = int_arg(args, "dim");
         const std::vector<Tensor> pieces = args.contains("sizes")
                                                ? split(x, dims_arg(args, "sizes"), dim)
                                                : split(x, int_arg(args, "split_size"), dim);
         Outputs out;
         for (size_t i = 0; i < pieces.size(); ++i) out[std::to_string(i)] = pieces[i];
         return out;
       }},
      {"index_select",
       [](const In& in, const json& args) {
         return one(index_select(input(in, "x"), int_arg(args, "dim"), input(in, "index")));
       }},
      {"gather",
       [](const In& in, const json& args) {
         return one(gather(input(in, "x"), int_arg(args, "dim"), input(in, "index")));
       }},
      {"where",
       [](const In& in, const json&) {
         return one(where(input(in, "cond"), input(in, "a"), input(in, "b")));
       }},
      {"masked_fill",
       [](const In& in, const json& args) {
         return one(masked_fill(input(in, "x"), input(in, "mask"), real_arg(args, "value")));
       }},
      {"adaptive_avg_pool2d",
       [](const In& in, const json& args) {
         return one(adaptive_avg_pool2d(input(in, "x"), int_arg(args, "out_h"), int_arg(args, "out_w")));
       }},
  };
  return table;
}

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The stored tensors of one case whose names start with "<case>.<part>.", keyed by the rest.
Tensors part(const Tensors& file, const std::string& name, const std::string& which) {
  const std::string prefix = name + "." + which + ".";
  Tensors out;
  for (const auto& [key, t] : file)
    if (starts_with(key, prefix)) out[key.substr(prefix.size())] = t;
  return out;
}

const Tensor* find(const Tensors& file, const std::string& key) {
  const auto it = file.find(key);
  return it == file.end() ? nullptr : &it->second;
}

// Runs one case and checks its outputs and gradients.
void run_case(const Tensors& file, const std::string& name, const std::string& args_text) {
  const json args = json::parse(args_text);
  const std::string op = args.at("op").get<std::string>();
  INFO("case " << name << ": " << args_text);
  const auto fn = op_table().find(op);
  INFO("op \"" << op << "\"" << (fn == op_table().end() ? " has no entry in op_table()" : ""));
  REQUIRE(fn != op_table().end());

  // Fresh leaves: float inputs require grad, integer inputs (indices, masks) do not.
  Tensors inputs;
  for (const auto& [in_name, stored] : part(file, name, "in")) {
    Tensor t = stored.clone();
    if (is_float(t.dtype())) t.set_requires_grad(true);
    inputs[in_name] = t;
  }
  REQUIRE(!inputs.empty());

  const Outputs outputs = fn->second(inputs, args);

  // Outputs: every one the op returns has a golden value, and vice versa.
  std::vector<std::pair<Tensor, Tensor>> projected;  // float outputs and their projections
  size_t golden_outputs = 0;
  for (const auto& [key, t] : file)
    if (key == name + ".out" || starts_with(key, name + ".out.")) ++golden_outputs;
  CHECK(outputs.size() == golden_outputs);
  for (const auto& [key, out] : outputs) {
    const std::string suffix = key.empty() ? "" : "." + key;
    INFO("output " << name << ".out" << suffix << ": " << describe(out));
    const Tensor* golden = find(file, name + ".out" + suffix);
    REQUIRE(golden != nullptr);
    REQUIRE(out.shape() == golden->shape());
    REQUIRE(out.dtype() == golden->dtype());
    if (is_float(out.dtype())) {
      CHECK_REL(out, *golden, kTolerance);
    } else {
      CHECK(out.to_vector<int64_t>() == golden->to_vector<int64_t>());
    }
    if (const Tensor* proj = find(file, name + ".proj" + suffix)) {
      REQUIRE(out.requires_grad());
      projected.emplace_back(out, *proj);
    }
  }

  const Tensors grads = part(file, name, "grad");
  if (projected.empty()) {
    CHECK(grads.empty());
    return;
  }
  // d sum_k sum(out_k * proj_k): a lone output takes proj as its gradient
  // directly, so only the op under test is in the graph.
  if (projected.size() == 1) {
    projected[0].first.backward(projected[0].second);
  } else {
    Tensor loss;
    for (const auto& [out, proj] : projected) {
      const Tensor term = sum(mul(out, proj));
      loss = loss.defined() ? add(loss, term) : term;
    }
    loss.backward();
  }
  for (const auto& [in_name, t] : inputs) {
    if (!is_float(t.dtype())) continue;
    INFO("gradient of " << name << ".in." << in_name);
    const auto golden = grads.find(in_name);
    REQUIRE(golden != grads.end());
    REQUIRE(t.grad().defined());
    REQUIRE(t.grad().shape() == golden->second.shape());
    CHECK_REL(t.grad(), golden->second, kTolerance);
  }
  const auto float_inputs = std::count_if(inputs.begin(), inputs.end(),
                                          [](const auto& kv) { return is_float(kv.second.dtype()); });
  CHECK(grads.size() == static_cast<size_t>(float_inputs));
}

// What is wrong with a golden file's metadata, or "" when it is a version-1
// golden file of the expected family.
std::string header_problem(const std::map<std::string, std::string>& meta, const std::string& family) {
  const std::pair<const char*, std::string> expected[] = {
      {"format", "vlmc-golden"}, {"version", "1"}, {"family", family}};
  for (const auto& [key, want] : expected) {
    const auto it = meta.find(key);
    if (it == meta.end()) return str("metadata has no \"", key, "\" (want \"", want, "\")");
    if (it->second != want)
      return str("metadata \"", key, "\" is \"", it->second, "\", want \"", want, "\"");
  }
  return "";
}

// Checks the file's header, then runs each of its cases in its own section.
void run_family(const std::string& family) {
  const std::string path = std::string(VLMC_GOLDEN_DIR) + "/" + family + ".safetensors";
  INFO("golden file " << path);
  const std::map<std::string, std::string> meta = io::load_safetensors_metadata(path);
  const std::string problem = header_problem(meta, family);
  INFO(problem);
  REQUIRE(problem.empty());
  const Tensors file = io::load_safetensors(path);

  const std::string suffix = ".args";
  size_t cases = 0;
  for (const auto& [key, value] : meta) {
    if (!ends_with(key, suffix) || key.size() == suffix.size()) continue;
    ++cases;
    const std::string name = key.substr(0, key.size() - suffix.size());
    DYNAMIC_SECTION(name) { run_case(file, name, value); }
  }
  REQUIRE(cases > 0);
}

}  // namespace

TEST_CASE("golden: elementwise ops match PyTorch", "[golden]") { run_family("elementwise"); }
TEST_CASE("golden: unary ops match PyTorch", "[golden]") { run_family("unary"); }
TEST_CASE("golden: reductions match PyTorch", "[golden]") { run_family("reduce"); }
TEST_CASE("golden: linear algebra matches PyTorch", "[golden]") { run_family("linalg"); }
TEST_CASE("golden: nn functions match PyTorch", "[golden]") { run_family("nn"); }
TEST_CASE("golden: indexing ops match PyTorch", "[golden]") { run_family("index"); }
TEST_CASE("golden: adaptive average pooling matches PyTorch", "[golden]") { run_family("pool"); }

TEST_CASE("golden: files with a wrong magic, version or family are refused", "[golden]") {
  const std::map<std::string, std::string> good = {
      {"format", "vlmc-golden"}, {"version", "1"}, {"family", "nn"}, {"torch", "1.13.1"}};
  CHECK(header_problem(good, "nn").empty());
  auto with = [&](const char* key, const char* value) {
    auto meta = good;
    meta[key] = value;
    return meta;
  };
  CHECK_THAT(header_problem(with("format", "safetensors"), "nn"),
             Catch::Contains("\"format\" is \"safetensors\""));
  CHECK_THAT(header_problem(with("version", "2"), "nn"), Catch::Contains("\"version\" is \"2\""));
  CHECK_THAT(header_problem(good, "index"), Catch::Contains("\"family\" is \"nn\", want \"index\""));
  CHECK_THAT(header_problem({}, "nn"), Catch::Contains("no \"format\""));
}
