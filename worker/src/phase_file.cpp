#include "trm/worker/phase_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "trm/common/error.h"

namespace trm::worker {
namespace {

// "trm-phase PHASE STEP SINCE CHECK\n", space-padded to a fixed size so that every write replaces
// the whole record. CHECK lets the reader tell a record torn by a concurrent write.
constexpr size_t kRecordSize = 96;

uint64_t Check(int phase, int64_t step, int64_t since) {
  return (static_cast<uint64_t>(phase) * 0x9E3779B97F4A7C15ull) ^ (static_cast<uint64_t>(step) * 0xC2B2AE3D27D4EB4Full) ^
         static_cast<uint64_t>(since);
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
  const int64_t since = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
  char rec[kRecordSize];
  std::memset(rec, ' ', sizeof(rec));
  const int n = std::snprintf(rec, sizeof(rec), "trm-phase %d %" PRId64 " %" PRId64 " %" PRIu64,
                              static_cast<int>(phase), step, since, Check(static_cast<int>(phase), step, since));
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
  if (::pread(fd.get(), rec, kRecordSize, 0) != static_cast<ssize_t>(kRecordSize)) return std::nullopt;
  int phase = -1;
  int64_t step = 0, since = 0;
  uint64_t check = 0;
  if (std::sscanf(rec, "trm-phase %d %" SCNd64 " %" SCNd64 " %" SCNu64, &phase, &step, &since, &check) != 4)
    return std::nullopt;
  if (phase < 0 || phase > static_cast<int>(Phase::kEval) || step < 0 || check != Check(phase, step, since))
    return std::nullopt;
  return PhaseRecord{static_cast<Phase>(phase), step, since};
}

}  // namespace trm::worker
