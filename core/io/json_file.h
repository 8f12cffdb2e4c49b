// A JSON object read from a file (config.json, model.safetensors.index.json),
// with errors that name the file: "<path>: cannot open", "<path>: not valid
// JSON: ...", "<path>: is array, not a JSON object".
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace vlmc::io {

nlohmann::json read_json_object(const std::string& path);

}  // namespace vlmc::io
