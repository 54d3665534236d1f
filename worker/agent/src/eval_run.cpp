#include "eval_run.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "trm/common/error.h"

namespace fs = std::filesystem;

namespace trm::agent {

std::vector<std::string> EvalCommand(const EvalLaunch& l) {
  const std::string device = l.device_kind == "cuda" ? "cuda" : "cpu";
  if (!l.prompts_file.empty())
    return {l.eval_binary, "generate", "--checkpoint", l.checkpoint_dir, "--prompts", l.prompts_file,
            "--output", l.output_file, "--device", device, "--no-progress"};
  return {l.eval_binary, "--checkpoint", l.checkpoint_dir, "--data", l.dataset_dir, "--split", l.split,
          "--device", device, "--no-progress"};
}

std::string FindPromptsFile(const std::string& dir) {
  std::vector<std::string> found;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string ext = it->path().extension().string();
    if (it->is_regular_file() && (ext == ".jsonl" || ext == ".json")) found.push_back(it->path().string());
  }
  if (ec) FileError(dir + ": cannot list the prompts dataset", ec);
  if (found.size() != 1)
    InvalidArgument(dir + ": a prompts dataset holds exactly one .jsonl or .json file, this one " +
                    std::to_string(found.size()));
  return found.front();
}

v1::EvalResult ParseEvalOutput(const std::string& line) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(line);
  } catch (const std::exception& e) {
    InvalidArgument(std::string("trm-eval's output is not JSON: ") + e.what());
  }
  if (!j.is_object() || !j.contains("metrics") || !j["metrics"].is_object())
    InvalidArgument("trm-eval's output has no \"metrics\" object");
  v1::EvalResult r;
  for (const auto& [name, value] : j["metrics"].items()) {
    if (!value.is_number()) InvalidArgument("trm-eval's output: metrics." + name + " is not a number");
    (*r.mutable_metrics())[name] = value.get<double>();
  }
  if (r.metrics().empty()) InvalidArgument("trm-eval's output: \"metrics\" is empty");
  return r;
}

void EvalOutput::OnStdout(const std::string& line) {
  const size_t start = line.find_first_not_of(" \t\r");
  if (start == std::string::npos || line[start] != '{') return;
  std::lock_guard<std::mutex> lock(mu_);
  last_ = line.substr(start);
}

std::string EvalOutput::last() const {
  std::lock_guard<std::mutex> lock(mu_);
  return last_;
}

std::vector<v1::WorkerEvent> EvalExitEvents(const std::string& output_line, v1::WorkerEvent exit) {
  std::vector<v1::WorkerEvent> out;
  try {
    if (output_line.empty()) InvalidArgument("trm-eval exited 0 without its JSON line on stdout");
    v1::WorkerEvent result;
    *result.mutable_eval_result() = ParseEvalOutput(output_line);
    out.push_back(std::move(result));
  } catch (const Error& e) {
    auto* x = exit.mutable_exit();
    x->set_exit_code(1);
    x->set_failure_kind("bad_output");
    x->set_message(e.what());
  }
  out.push_back(std::move(exit));
  return out;
}

}  // namespace trm::agent
