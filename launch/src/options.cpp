#include "trm/launch/options.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "trm/common/error.h"
#include "trm/common/net.h"

namespace trm::launch {
namespace {

long ParseInt(const std::string& flag, const std::string& text, long min, long max) {
  errno = 0;
  char* end = nullptr;
  const long v = text.empty() ? 0 : std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno == ERANGE) {
    InvalidArgument(flag + ": expected an integer, got '" + text + "'");
  }
  if (v < min || v > max) {
    InvalidArgument(flag + ": expected an integer in [" + std::to_string(min) + ", " + std::to_string(max) +
                    "], got " + text);
  }
  return v;
}

double ParseSeconds(const std::string& flag, const std::string& text, bool allow_zero) {
  errno = 0;
  char* end = nullptr;
  const double v = text.empty() ? 0 : std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || errno == ERANGE || !std::isfinite(v) || v < 0 || (!allow_zero && v == 0) ||
      v > 86400) {
    InvalidArgument(flag + ": expected a number of seconds " + (allow_zero ? ">= 0" : "> 0") +
                    " (at most 86400), got '" + text + "'");
  }
  return v;
}

void ParseEndpoint(const std::string& text, LaunchOptions& o) {
  const HostPort hp = SplitHostPort(text, "--rdzv-endpoint");
  o.rdzv_host = hp.host;
  if (hp.port != 0) o.rdzv_port = hp.port;
}

}  // namespace

LaunchOptions ParseLaunchArgs(const std::vector<std::string>& args) {
  LaunchOptions o;
  bool endpoint_given = false;
  size_t i = 0;
  for (; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") {
      ++i;
      break;
    }
    if (a == "-h" || a == "--help") {
      o.help = true;
      return o;
    }
    if (a.size() < 2 || a.compare(0, 2, "--") != 0) {
      if (!a.empty() && a[0] == '-' && a != "-") InvalidArgument("unknown option '" + a + "' (see --help)");
      break;  // PROGRAM
    }
    // torchrun spells every flag both ways (--nproc-per-node, --nproc_per_node).
    std::string name = a.substr(0, a.find('='));
    for (char& c : name) c = c == '_' ? '-' : c;
    const bool inline_value = a.find('=') != std::string::npos;
    auto value = [&]() -> std::string {
      if (inline_value) return a.substr(a.find('=') + 1);
      if (i + 1 >= args.size()) InvalidArgument(name + ": missing value");
      return args[++i];
    };
    auto flag_only = [&]() {
      if (inline_value) InvalidArgument(name + ": takes no value, got '" + a + "'");
    };
    if (name == "--nnodes") {
      const std::string v = value();
      if (const auto colon = v.find(':'); colon != std::string::npos) {
        o.min_nnodes = static_cast<int>(ParseInt(name + " (MIN of MIN:MAX)", v.substr(0, colon), 1, 4096));
        o.nnodes = static_cast<int>(ParseInt(name + " (MAX of MIN:MAX)", v.substr(colon + 1), 1, 4096));
        if (o.min_nnodes > o.nnodes)
          InvalidArgument("--nnodes: MIN must not exceed MAX, got '" + v + "'");
      } else {
        o.nnodes = o.min_nnodes = static_cast<int>(ParseInt(name, v, 1, 4096));
      }
    } else if (name == "--nproc-per-node") {
      o.nproc_per_node = static_cast<int>(ParseInt(name, value(), 1, 1024));
    } else if (name == "--node-rank") {
      o.node_rank = static_cast<int>(ParseInt(name, value(), 0, 4095));
    } else if (name == "--rdzv-endpoint") {
      ParseEndpoint(value(), o);
      endpoint_given = true;
    } else if (name == "--rdzv-id") {
      o.rdzv_id = value();
      if (o.rdzv_id.empty()) InvalidArgument("--rdzv-id: expected a non-empty run id");
    } else if (name == "--rdzv-backend") {
      const std::string v = value();
      if (v != "c10d") InvalidArgument("--rdzv-backend: only 'c10d' is supported, got '" + v + "'");
    } else if (name == "--standalone") {
      flag_only();
      o.standalone = true;
    } else if (name == "--max-restarts") {
      o.max_restarts = static_cast<int>(ParseInt(name, value(), 0, 1000000));
    } else if (name == "--log-dir") {
      o.log_dir = value();
      if (o.log_dir.empty()) InvalidArgument("--log-dir: expected a directory, got ''");
    } else if (name == "--tee") {
      flag_only();
      o.tee = true;
    } else if (name == "--grace-period-s") {
      o.grace_period_s = ParseSeconds(name, value(), /*allow_zero=*/true);
    } else if (name == "--rdzv-timeout-s") {
      o.rdzv_timeout_s = ParseSeconds(name, value(), /*allow_zero=*/false);
    } else if (name == "--rdzv-last-call-s") {
      o.rdzv_last_call_s = ParseSeconds(name, value(), /*allow_zero=*/true);
    } else {
      InvalidArgument("unknown option '" + name + "' (see --help)");
    }
  }
  if (i >= args.size()) InvalidArgument("PROGRAM: missing; usage: trm-launch [OPTIONS] PROGRAM [ARGS...]");
  o.program = args[i];
  if (o.program.empty()) InvalidArgument("PROGRAM: expected a program name or path, got ''");
  o.args.assign(args.begin() + static_cast<long>(i) + 1, args.end());

  if (o.node_rank >= o.nnodes) {
    InvalidArgument("--node-rank: expected a value in [0, " + std::to_string(o.nnodes - 1) + "] (--nnodes " +
                    (o.elastic() ? std::to_string(o.min_nnodes) + ":" : "") + std::to_string(o.nnodes) + "), got " +
                    std::to_string(o.node_rank));
  }
  if (o.standalone) {
    if (o.nnodes != 1) InvalidArgument("--standalone runs a single node: --nnodes must be 1, got " + std::to_string(o.nnodes));
    if (endpoint_given) InvalidArgument("--standalone picks its own endpoint: drop --rdzv-endpoint");
  }
  if (o.nnodes > 1 && !endpoint_given) {
    InvalidArgument(std::string("--rdzv-endpoint: required when ") +
                    (o.elastic() ? "--nnodes is a range" : "--nnodes > 1") + " (HOST:PORT of the node-rank-0 launcher)");
  }
  return o;
}

std::string LaunchUsage() {
  return "usage: trm-launch [--nnodes N|MIN:MAX] [--nproc-per-node K] [--node-rank R] [--rdzv-endpoint HOST:PORT]\n"
         "                  [--rdzv-id ID] [--standalone] [--max-restarts M] [--log-dir D] [--tee]\n"
         "                  [--grace-period-s S] [--rdzv-timeout-s S] [--rdzv-last-call-s S] PROGRAM [ARGS...]\n"
         "Runs K copies of PROGRAM on this node (N*K in all), with torchrun's environment (RANK,\n"
         "LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, GROUP_RANK, MASTER_ADDR, MASTER_PORT) plus\n"
         "TRM_RESTART_COUNT. When a rank fails, every rank of every node is stopped and the group is\n"
         "restarted while restarts remain. See docs/launch.md.\n"
         "  --nnodes N            nodes in the run (default 1)\n"
         "  --nnodes MIN:MAX      elastic: each attempt runs on the nodes present (MIN to MAX); a lost node\n"
         "                        restarts the rest (a restart), a node that joins restarts all with it (not one)\n"
         "  --nproc-per-node K    ranks on this node (default 1)\n"
         "  --node-rank R         this node's index in [0, N) (default 0); node 0 hosts the rendezvous\n"
         "  --rdzv-endpoint H:P   rendezvous store, served by the node-rank-0 launcher (required when N > 1;\n"
         "                        port 29400 when omitted); MASTER_ADDR is H\n"
         "  --rdzv-id ID          run id shared by every node (default 'none'); TORCHELASTIC_RUN_ID\n"
         "  --standalone          single node on 127.0.0.1 with a free port\n"
         "  --max-restarts M      group restarts after a failure (default 0)\n"
         "  --log-dir D           each rank's stdout+stderr to D/attempt_<restart>/rank_<RANK>.log\n"
         "  --tee                 also copy each rank's output to the console, lines prefixed '[rank N] '\n"
         "  --grace-period-s S    SIGTERM to SIGKILL delay when stopping ranks (default 5)\n"
         "  --rdzv-timeout-s S    limit of every wait on another node (default 60)\n"
         "  --rdzv-last-call-s S  elastic: once MIN nodes joined, how long the first attempt waits for more (30)\n";
}

}  // namespace trm::launch
