#include "trm/worker/phase_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "trm/common/error.h"

namespace trm::worker {
namespace {

// "trm-phase2 PHASE STEP SINCE LAST_STEP DATA_US COMPUTE_US ALLREDUCE_US CHECK\n", space-padded
// to a fixed size so that every write replaces the whole record. CHECK lets the reader tell a
// record torn by a concurrent write.
constexpr size_t kRecordSize = 160;

// The record before step times: "trm-phase PHASE STEP SINCE CHECK\n" in 96 bytes.
constexpr size_t kOldRecordSize = 96;

uint64_t OldCheck(int phase, int64_t step, int64_t since) {
  return (static_cast<uint64_t>(phase) * 0x9E3779B97F4A7C15ull) ^ (static_cast<uint64_t>(step) * 0xC2B2AE3D27D4EB4Full) ^
         static_cast<uint64_t>(since);
}

uint64_t Check(int phase, int64_t step, int64_t since, const StepTiming& t) {
  uint64_t h = OldCheck(phase, step, since);
  for (int64_t v : {t.step, t.data_us, t.compute_us, t.allreduce_us}) h = (h ^ static_cast<uint64_t>(v)) * 0x100000001B3ull;
  return h;
}

}  // namespace

const char* PhaseName(Phase phase) {
  switch (phase) {
    case Phase::kStarting: return "starting";
    case Phase::kData: return "data";
    case Phase::kCompute: return "compute";
    case Phase::kAllReduce: return "allreduce";
    case Phase::kCheckpoint: return "checkpoint";
    case Phase::kEval: return "eval";
  }
  return "unknown";
}

PhaseWriter::PhaseWriter(const std::string& path)
    : fd_(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) {
  if (!fd_.valid()) FileError(path + ": cannot create the phase file", errno);
}

void PhaseWriter::Enter(Phase phase, int64_t step) {
  Enter(phase, step,
        std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch()).count());
}

void PhaseWriter::Enter(Phase phase, int64_t step, int64_t now_us) {
  const int64_t spent = std::max<int64_t>(0, now_us - entered_us_);
  if (step_ >= 0 && !outside_step_) {
    if (phase_ == Phase::kData) current_.data_us += spent;
    if (phase_ == Phase::kCompute) current_.compute_us += spent;
    if (phase_ == Phase::kAllReduce) current_.allreduce_us += spent;
  }
  if (step > step_) {
    // A step that did work ends here (a resumed run's first report only starts one).
    if (step_ >= 0 && current_.total_us() > 0) {
      last_ = current_;
      last_.step = step_;
    }
    current_ = StepTiming{};
    step_ = step;
  }
  if (phase == Phase::kCheckpoint || phase == Phase::kEval || phase == Phase::kStarting) outside_step_ = true;
  if (phase == Phase::kData) outside_step_ = false;
  phase_ = phase;
  entered_us_ = now_us;
  const int64_t since = now_us / 1000;
  char rec[kRecordSize];
  std::memset(rec, ' ', sizeof(rec));
  const int n = std::snprintf(rec, sizeof(rec),
                              "trm-phase2 %d %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64 " %" PRIu64,
                              static_cast<int>(phase), step, since, last_.step, last_.data_us, last_.compute_us,
                              last_.allreduce_us, Check(static_cast<int>(phase), step, since, last_));
  if (n > 0 && static_cast<size_t>(n) < sizeof(rec)) rec[n] = ' ';
  rec[sizeof(rec) - 1] = '\n';
  [[maybe_unused]] const ssize_t w = ::pwrite(fd_.get(), rec, sizeof(rec), 0);
}

std::unique_ptr<PhaseWriter> PhaseWriterFromEnv() {
  const char* path = std::getenv("TRM_PHASE_FILE");
  if (path == nullptr || *path == '\0') return nullptr;
  return std::make_unique<PhaseWriter>(path);
}

std::optional<PhaseRecord> ReadPhaseFile(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return std::nullopt;
  char rec[kRecordSize + 1] = {};
  const ssize_t n = ::pread(fd.get(), rec, kRecordSize, 0);
  int phase = -1;
  int64_t step = 0, since = 0;
  StepTiming t;
  uint64_t check = 0;
  if (n == static_cast<ssize_t>(kOldRecordSize)) {
    // A trm-train from before step times (an upgrade in progress): its phase still counts.
    if (std::sscanf(rec, "trm-phase %d %" SCNd64 " %" SCNd64 " %" SCNu64, &phase, &step, &since, &check) != 4 ||
        phase < 0 || phase > static_cast<int>(Phase::kEval) || step < 0 || check != OldCheck(phase, step, since))
      return std::nullopt;
    return PhaseRecord{static_cast<Phase>(phase), step, since, {}};
  }
  if (n != static_cast<ssize_t>(kRecordSize)) return std::nullopt;
  if (std::sscanf(rec, "trm-phase2 %d %" SCNd64 " %" SCNd64 " %" SCNd64 " %" SCNd64 " %" SCNd64 " %" SCNd64 " %" SCNu64,
                  &phase, &step, &since, &t.step, &t.data_us, &t.compute_us, &t.allreduce_us, &check) != 8)
    return std::nullopt;
  if (phase < 0 || phase > static_cast<int>(Phase::kEval) || step < 0 || check != Check(phase, step, since, t))
    return std::nullopt;
  return PhaseRecord{static_cast<Phase>(phase), step, since, t};
}

}  // namespace trm::worker
