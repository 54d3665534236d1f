// The commands behind `trmctl`, callable without a command line (tests, other tools). Each takes
// the stubs it needs and writes its human output to the given streams.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "trm/cli/cli.h"
#include "trm/v1/trm.grpc.pb.h"

namespace trm::cli {

using std::chrono::milliseconds;

// Throws RpcError("<what>: <server message>") when `s` failed.
void CheckRpc(const grpc::Status& s, const std::string& what);
// True for what a restarting or unreachable coordinator answers (streams reconnect then).
bool Retryable(const grpc::Status& s);

// ---------------------------------------------------------------- submit
struct SubmitOptions {
  std::string config_name;  // compose configs/<name>.yaml locally, or
  std::string config_dir;   //   from here (default: worker::DefaultConfigDir())
  std::string config_file;  // send this file's text
  std::string name;         // default: the config's name
  std::string dataset;
  std::string data_path;
  int world_size = 1;
  int min_world_size = 0;  // elastic down to it (0: not elastic)
  int priority = 0;
  int max_restarts = 0;
  std::vector<std::string> overrides;  // key=value, sent verbatim
  std::string eval_dataset;            // evaluate every uploaded checkpoint on it
  bool no_preempt = false;             // never preempted (admins only)
};
// Composes / reads the config, checks it with the overrides applied (so a typo fails here, exit
// 2, before anything is sent) and builds the request. Throws UsageError.
v1::SubmitJobRequest BuildSubmitRequest(const SubmitOptions& options);

// ---------------------------------------------------------------- eval
struct EvalOptions {
  std::string job_id;
  std::string selector = "latest";  // latest | best:<metric> | step:N | step_N | all
  std::string dataset;              // reference evaluation on this dataset's split
  std::string split;                // default test
  std::string prompts;              // generation on this pushed prompts file
  int priority = 0;                 // among evaluation runs (all run after training jobs)
  int max_restarts = 2;
};
// One SubmitJob request per selected checkpoint and kind (dataset, prompts); `checkpoints` are
// the job's (ListCheckpoints), used for selector "all". Throws UsageError / RpcError.
std::vector<v1::SubmitJobRequest> BuildEvalRequests(const EvalOptions& options,
                                                    const std::vector<v1::CheckpointInfo>& checkpoints);

// ---------------------------------------------------------------- watch / logs
struct FollowOptions {
  bool follow = true;
  bool include_logs = false;
  uint64_t after_seq = 0;                     // start after this event (a watcher's resume point)
  std::chrono::seconds reconnect{120};        // give up after this long without progress
  milliseconds initial_backoff{200};
  milliseconds max_backoff{5000};
  milliseconds stream_deadline{24 * 3600 * 1000};
};
// Streams the job's events from the start, reconnecting after a broken stream with after_seq =
// the last seq seen, so `on_event` sees every event exactly once and in order. Stops when
// on_event returns false, or (follow = false) at the end of the history. Returns the last seq.
uint64_t FollowJobEvents(v1::JobService::StubInterface* jobs, const std::string& job_id,
                         const FollowOptions& options, const std::function<bool(const v1::JobEvent&)>& on_event);

struct WatchOptions {
  std::string job_id;
  FollowOptions follow;
  bool events_json = false;               // one JSON object per event on stdout
  milliseconds progress_interval{1000};   // off a terminal: at most one progress line per this
  // Off a terminal, when > 0 (the job's log_interval): a progress line at every multiple of this
  // step instead, so a log of the watch has one line per logged interval whatever the timing.
  int64_t log_interval = 0;
};
// Returns 0 when the job succeeded, 1 when it failed or was cancelled.
int Watch(v1::JobService::StubInterface* jobs, const WatchOptions& options, const Io& io);
// Prints "[rank N] text" lines; follows until the job ends when options.follow.follow.
void Logs(v1::JobService::StubInterface* jobs, const std::string& job_id, const FollowOptions& options,
          const Io& io);

// One event as a single JSON line (proto field names; seq as a number).
std::string EventJson(const v1::JobEvent& event);

// ---------------------------------------------------------------- pull
struct PullOptions {
  std::string job_id;
  std::string selector = "latest";  // latest | best:<metric> | step:N | step_N
  std::string out_dir;
  bool force = false;
  bool weights_only = false;        // model.safetensors, state.json, tokenizer/, manifest.json
  int retries = 5;                  // consecutive broken streams without progress
  milliseconds initial_backoff{200};
  milliseconds stream_deadline{6 * 3600 * 1000};
  uint64_t max_bytes = uint64_t{1} << 42;
};
struct PullResult {
  std::string name;
  uint64_t bytes = 0;
  double seconds = 0;
  int reconnects = 0;
};
// Downloads into out_dir + ".partial", resuming after broken streams, verifies every file's
// SHA-256 and renames into out_dir. Nothing is left at out_dir on failure.
PullResult Pull(v1::JobService::StubInterface* jobs, const PullOptions& options);

// ---------------------------------------------------------------- datasets
v1::DatasetInfo PushDataset(v1::DatasetService::StubInterface* datasets, const std::string& dir,
                            const std::string& name, milliseconds stream_deadline);

}  // namespace trm::cli
