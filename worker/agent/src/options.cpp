#include "trm/agent/options.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <filesystem>
#include <random>
#include <sstream>

#include "trm/common/error.h"
#include "trm/common/file_util.h"
#include "trm/common/flag_values.h"
#include "trm/common/net.h"
#include "trm/rpc/transfer.h"

namespace trm::agent {
namespace fs = std::filesystem;

const char* const kWorkerUsage =
    "usage: trm-worker --coordinator HOST:PORT [--id ID] [--host ADDR] [--cpu-slots N | --gpus 0,1,...]\n"
    "                  [--work-dir DIR] [--metrics-listen HOST:PORT] [--train-binary PATH] [--heartbeat-ms MS]\n"
    "                  [--eval-binary PATH]   (trm-eval for evaluation runs; default beside this executable)\n"
    "                  [--data-root DIR ...]  (a job's --data-path must lie inside one; repeatable)\n";

namespace {

// The address ranks on other machines reach this worker at (the MASTER_ADDR of jobs whose rank 0
// runs here), when --host is not given: the one this machine talks to the coordinator from, so
// on the network the coordinator and the workers share; loopback when the coordinator is local.
// Not the host name's address, which is often 127.0.0.1 or 127.0.1.1.
std::string DefaultHost(const std::string& coordinator) {
  try {
    const HostPort hp = SplitHostPort(coordinator, "--coordinator");
    return LocalAddressToward(hp.host, hp.port != 0 ? hp.port : 50051);
  } catch (const Error& e) {
    spdlog::warn("--host not given and no route to the coordinator's host was found ({}): ranks on other machines "
                 "cannot reach this worker's; it advertises 127.0.0.1 (pass --host ADDR for multi-machine jobs)",
                 e.what());
    return "127.0.0.1";
  }
}

}  // namespace

std::string PersistentWorkerId(const std::string& work_dir) {
  const fs::path file = fs::path(work_dir) / "worker_id";
  std::error_code ec;
  if (fs::exists(file, ec)) {
    std::string id = ReadFile(file.string());
    while (!id.empty() && (id.back() == '\n' || id.back() == ' ')) id.pop_back();
    rpc::CheckName(id, file.string());
    return id;
  }
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0 || host[0] == '\0') std::snprintf(host, sizeof host, "worker");
  std::string h = host;
  for (char& c : h) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' && c != '_') c = '-';
  }
  std::random_device rd;
  char suffix[8];
  std::snprintf(suffix, sizeof suffix, "%06x", rd() & 0xFFFFFFu);
  const std::string id = h.substr(0, 100) + "-" + suffix;
  fs::create_directories(work_dir, ec);
  if (ec) FileError(work_dir + ": cannot create", ec);
  WriteFileAtomic(file.string(), id + "\n");
  return id;
}

WorkerCommandLine ParseWorkerCommandLine(const std::vector<std::string>& args) {
  WorkerCommandLine cl;
  AgentOptions& o = cl.agent;
  int64_t cpu_slots = -1;
  std::string gpus;
  std::vector<std::string> roots;  // --data-root, repeatable
  bool host_given = false, eval_given = false;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string flag = args[i], value;
    const bool has_eq = flag.rfind("--", 0) == 0 && flag.find('=') != std::string::npos;
    if (has_eq) {
      value = flag.substr(flag.find('=') + 1);
      flag = flag.substr(0, flag.find('='));
    }
    auto next = [&]() -> std::string {
      if (has_eq) return value;
      if (i + 1 >= args.size()) InvalidArgument(flag + ": missing value");
      return args[++i];
    };
    if (flag == "--coordinator") cl.coordinator = next();
    else if (flag == "--id") o.worker_id = next();
    else if (flag == "--host") o.host = next(), host_given = true;
    else if (flag == "--cpu-slots") cpu_slots = IntFlag(flag, next(), 1);
    else if (flag == "--gpus") gpus = next();
    else if (flag == "--work-dir") o.work_dir = next();
    else if (flag == "--metrics-listen") cl.metrics_listen = next();
    else if (flag == "--train-binary") o.train_binary = next();
    else if (flag == "--eval-binary") o.eval_binary = next(), eval_given = true;
    else if (flag == "--heartbeat-ms") o.heartbeat_ms = IntFlag(flag, next(), 10);
    else if (flag == "--data-root") roots.push_back(next());
    else InvalidArgument(flag + ": unknown flag");
  }
  if (cl.coordinator.empty()) InvalidArgument("--coordinator: required (HOST:PORT)");
  if (!host_given) o.host = DefaultHost(cl.coordinator);
  if (cpu_slots > 0 && !gpus.empty()) InvalidArgument("--cpu-slots and --gpus: give one of them");
  if (!gpus.empty()) {
    o.device_kind = "cuda";
    std::stringstream ss(gpus);
    for (std::string g; std::getline(ss, g, ',');) {
      IntFlag("--gpus", g, 0);
      o.devices.push_back(g);
    }
  } else {
    o.device_kind = "cpu";
    for (int64_t i = 0; i < std::max<int64_t>(cpu_slots, 1); ++i) o.devices.push_back("cpu" + std::to_string(i));
  }
  o.work_dir = fs::absolute(o.work_dir).lexically_normal().string();
  if (o.worker_id.empty()) o.worker_id = PersistentWorkerId(o.work_dir);
  rpc::CheckName(o.worker_id, "--id");
  if (o.train_binary.empty()) o.train_binary = ExecutableDir() + "/trm-train";
  if (::access(o.train_binary.c_str(), X_OK) != 0)
    NotFound("--train-binary: '" + o.train_binary + "' is not an executable file");
  o.train_binary = fs::absolute(o.train_binary).string();
  // Evaluation runs only: a worker without trm-eval still trains (its evaluation runs fail as
  // "setup", naming the path), unless the flag names a file that is not there.
  if (o.eval_binary.empty()) o.eval_binary = ExecutableDir() + "/trm-eval";
  if (eval_given && ::access(o.eval_binary.c_str(), X_OK) != 0)
    NotFound("--eval-binary: '" + o.eval_binary + "' is not an executable file");
  o.eval_binary = fs::absolute(o.eval_binary).string();
  o.metrics_endpoint = cl.metrics_listen;
  o.data_roots = ResolveDataRoots(roots);
  return cl;
}

}  // namespace trm::agent
