// What a rank is doing right now, for hang detection. trm-train writes its phase and step to a
// small file (path in TRM_PHASE_FILE, set by trm-worker) on every phase change; the worker agent
// reads it for its heartbeats and the coordinator compares the time in a phase with that
// phase's budget. A file and not a pipe: writing never blocks the rank on a slow reader, and
// reading never blocks the agent on a stopped rank. Torch-free.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "trm/common/unique_fd.h"

namespace trm::worker {

enum class Phase : int {
  kStarting = 0,    // process start, rendezvous, loading, first broadcast
  kData = 1,        // waiting for the next batch
  kCompute = 2,     // forward / backward / optimiser
  kAllReduce = 3,   // gradient and metric all-reduce
  kCheckpoint = 4,  // saving
  kEval = 5,        // evaluation (its own all-reduce included)
};
const char* PhaseName(Phase phase);  // "data", "compute", ...

// Where one rank's last full step went, in microseconds: the dashboard's per-rank step times.
// In data parallel every rank's step takes as long as the slowest one's (they meet in the
// all-reduce), so the slow rank is the one that waits least there and computes (or loads) most.
struct StepTiming {
  int64_t step = -1;  // the step these times are of (-1: no step finished yet)
  int64_t data_us = 0, compute_us = 0, allreduce_us = 0;
  int64_t total_us() const { return data_us + compute_us + allreduce_us; }
};

struct PhaseRecord {
  Phase phase = Phase::kStarting;
  int64_t step = 0;           // optimiser steps done when the phase began
  int64_t since_unix_ms = 0;  // wall clock when the phase began
  StepTiming last_step;       // the newest step this rank finished
};

// Thread safety: one writer per file, used from one thread.
class PhaseWriter {
 public:
  // Creates or truncates `path`. Throws trm::Error (kIoError) naming it.
  explicit PhaseWriter(const std::string& path);
  // One pwrite of a fixed-size record, no fsync (a few microseconds): the reader is on the same
  // machine and a crash ends the phase anyway. A failed write is ignored: losing a phase report
  // must not fail training (the coordinator then sees an older phase, which only errs late).
  // The time since the previous Enter counts to the previous phase; the first Enter with a
  // larger step ends the step before it. Checkpoints, evaluations and the start, with their
  // waits for peers, count to no step: from entering one of them until the next kData.
  void Enter(Phase phase, int64_t step);
  void Enter(Phase phase, int64_t step, int64_t now_unix_us);  // the clock given (tests)

 private:
  UniqueFd fd_;
  Phase phase_ = Phase::kStarting;
  int64_t step_ = -1, entered_us_ = 0;
  // From a checkpoint, an evaluation or the start until the next batch is read: not step time
  // (their waits for peers report allreduce too).
  bool outside_step_ = true;
  StepTiming current_, last_;
};

// The writer of the file trm-worker named in TRM_PHASE_FILE, or nullptr when it is unset (a
// process started by hand). Throws as PhaseWriter.
std::unique_ptr<PhaseWriter> PhaseWriterFromEnv();

// The latest record, or nullopt when the file is missing, empty, torn by a concurrent write or
// not a phase record. Never throws.
std::optional<PhaseRecord> ReadPhaseFile(const std::string& path);

}  // namespace trm::worker
