#include "trm/data/build_info.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "trm/common/error.h"
#include "trm/common/file_util.h"

namespace trm::data {

std::string ContentDigest(const std::string& dataset_dir) {
  const std::string path = (std::filesystem::path(dataset_dir) / "build.json").string();
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    if (ec) FileError(path + ": cannot stat", ec);
    return "";
  }
  nlohmann::json b;
  try {
    b = nlohmann::json::parse(ReadFile(path));
  } catch (const nlohmann::json::exception& e) {
    DataLoss(path + ": not valid JSON (" + e.what() + "); rebuild the dataset with trm-data build");
  }
  const auto it = b.is_object() ? b.find("content_sha256") : b.end();
  const bool hex64 = it != b.end() && it->is_string() && it->get<std::string>().size() == 64 &&
                     it->get<std::string>().find_first_not_of("0123456789abcdef") == std::string::npos;
  if (!hex64) {
    DataLoss(path + ": field content_sha256: expected 64 lower-case hex digits, got " +
             (it == b.end() ? std::string("nothing") : it->dump()));
  }
  return it->get<std::string>();
}

}  // namespace trm::data
