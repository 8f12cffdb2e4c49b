#include "core/io/json_file.h"

#include <fstream>

#include "core/error.h"

namespace vlmc::io {

nlohmann::json read_json_object(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(str(path, ": cannot open"));
  nlohmann::json root;
  try {
    root = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Error(str(path, ": not valid JSON: ", e.what()));
  }
  if (!root.is_object()) throw Error(str(path, ": is ", root.type_name(), ", not a JSON object"));
  return root;
}

}  // namespace vlmc::io
