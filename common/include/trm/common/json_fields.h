// Typed reads of JSON values (configs arrive as JSON trees from YAML files, overrides, safetensors
// metadata and RPCs). Each throws trm::Error(kInvalidArgument) "<key>: expected ..., got <value>",
// so a wrong type is reported with the key the user wrote.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace trm {

// Integers; a float is accepted only when it is an exact integer (YAML writers emit 4.0).
int64_t JsonInt(const nlohmann::json& v, const std::string& key);
double JsonNumber(const nlohmann::json& v, const std::string& key);
bool JsonBool(const nlohmann::json& v, const std::string& key);
std::string JsonString(const nlohmann::json& v, const std::string& key);
// A list of strings; a single string is a one-element list and null an empty one.
std::vector<std::string> JsonStringList(const nlohmann::json& v, const std::string& key);

}  // namespace trm
