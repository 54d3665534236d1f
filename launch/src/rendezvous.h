// How the launchers of one run agree on each generation (attempt of the whole group): its
// MASTER_PORT, whether any rank failed anywhere, when everyone is done, and the barrier before a
// restart. Single node: all in-process. Several nodes: through a store served by node 0.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "trm/launch/launcher.h"
#include "trm/launch/options.h"

namespace trm::launch {

struct GenerationView {
  std::optional<Failure> failure;  // the generation's first failure, from any node
  bool all_done = false;           // every node reported that all its ranks exited 0
};

// Who runs generation `generation`: the node ranks taking part (ascending; every node of a run
// that is not elastic), this node's place among them (its GROUP_RANK), and the ranks' own
// MASTER_PORT. `run_over`: the run ended before a generation included this node.
struct GenerationInfo {
  int generation = 0;
  int master_port = 0;
  std::vector<int> members;
  int group_rank = 0;
  int restarts = 0;  // restarts the run has used before it (node 0 counts; a late node adopts it)
  bool run_over = false;
  bool run_succeeded = false;  // with run_over: how it ended
};

struct GenerationEnd {
  std::optional<Failure> failure;
  bool abort = false;  // some launcher was told to stop: no restart
};

// Not thread-safe: one supervision loop drives it. Blocking calls are bounded by
// --rdzv-timeout-s and give up early (kCancelled) when `give_up` returns true; they throw
// kDeadlineExceeded / kUnavailable when other nodes do not answer.
class Rendezvous {
 public:
  using GiveUp = std::function<bool()>;
  virtual ~Rendezvous() = default;

  // MASTER_ADDR for every rank: the rendezvous host (127.0.0.1 when none).
  virtual std::string master_addr() const = 0;
  // The first generation from `from` on that includes this node: node 0 picks its members (in
  // an elastic run, the nodes present once MIN are, waiting up to --rdzv-last-call-s for MAX
  // before the first) and a free port and publishes them; the others wait for them.
  // `restarts`: node 0's count of restarts used so far, published for the others.
  virtual GenerationInfo StartGeneration(int from, int restarts, const GiveUp& give_up) = 0;
  // Whether this node takes part in the generation it waits for or runs (false while an
  // elastic run's late node waits to be taken in: its signal stops only itself).
  virtual bool in_run() const { return true; }
  // Publishes a failure of f.generation; the first one published wins. f.abort also forbids a
  // restart, whichever failure wins.
  virtual void ReportFailure(const Failure& f) = 0;
  // Every rank of this node exited 0.
  virtual void ReportDone(int generation) = 0;
  // Non-blocking, cheap to call every loop iteration (it talks to the store every ~150 ms and
  // keeps heartbeats). A store that stopped answering shows up as a failure, not a throw.
  virtual GenerationView Poll(int generation) = 0;
  // Barrier of all nodes after their ranks are gone; then the generation's verdict, the same on
  // every node.
  virtual GenerationEnd EndGeneration(int generation, const GiveUp& give_up) = 0;
  // The run is over for this launcher. Node 0 waits (bounded) until the others have left, so
  // the store it serves outlives their last call.
  // `succeeded`: the run's verdict, for a node still waiting to take part.
  virtual void Finish(const GiveUp& give_up, bool succeeded) = 0;
};

std::unique_ptr<Rendezvous> MakeLocalRendezvous(const LaunchOptions& options);

// Joins the run at --rdzv-endpoint: node 0 serves the store there, the others connect (waiting
// up to the rdzv timeout for it to come up). Checks that every node passed the same --nnodes,
// --nproc-per-node, --max-restarts and --rdzv-id and that no node rank is taken twice
// (kInvalidArgument), and (not elastic) waits until all nodes joined (kDeadlineExceeded naming
// how many did); an elastic run gathers its nodes in StartGeneration.
std::unique_ptr<Rendezvous> JoinStoreRendezvous(const LaunchOptions& options);

}  // namespace trm::launch
