// Helpers shared by the data tests.
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace trm::data::testing {

inline std::string SharedDir() { return TRM_SHARED_DIR; }
inline std::string SourceDir() { return TRM_SOURCE_DIR; }
inline std::string BinDir() { return TRM_BIN_DIR; }

inline std::vector<nlohmann::json> ReadJsonLines(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::vector<nlohmann::json> out;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  }
  return out;
}

// A fresh directory under the system temp dir, removed with everything in it at scope exit.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "trm_data_test_XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline void WriteText(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

inline std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

struct RunResult {
  int exit_code;
  std::string out, err;
};

// Runs `command` through the shell with `stdin_text` on its standard input.
inline RunResult RunCommand(const std::string& command, const std::string& stdin_text = "") {
  TempDir dir;
  WriteText(dir / "in", stdin_text);
  const std::string full = command + " < " + (dir / "in") + " > " + (dir / "out") + " 2> " + (dir / "err");
  const int status = std::system(full.c_str());
  RunResult r{WIFEXITED(status) ? WEXITSTATUS(status) : -1, ReadText(dir / "out"), ReadText(dir / "err")};
  return r;
}

}  // namespace trm::data::testing
