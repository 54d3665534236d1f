// Weights-only checkpoints: what evaluation and generation need of a stored checkpoint
// (model.safetensors, state.json, tokenizer/) and a manifest.json in the checkpoint's own format
// ({"format": 1, "step": N, "files": [{"path", "size", "sha256"}...]}, docs/architecture.md,
// "Checkpoints") listing exactly those, so the checkpoint loader's manifest check verifies them.
// The optimizer state, the raw weights beside EMA ones and the training state stay behind.
#pragma once

#include <cstdint>
#include <string>

#include "trm/coordinator/coordinator.h"

namespace trm::coordinator {

// Whether a checkpoint file belongs to its weights-only form.
bool IsWeightsFile(const std::string& path);

// The weights-only form of `full` (a stored checkpoint of step `step`), built on first use
// into `dir` (every file hard-linked, or copied across filesystems, plus the generated
// manifest.json) with `dir`.manifest beside it as the mark of a complete build; later calls
// read that. The transfer manifest's name is full's (step_N). Throws kDataLoss when `full`
// lacks model.safetensors. Not thread-safe for one `dir`: the caller serialises builds.
FileSet WeightsOnlyFiles(const FileSet& full, int64_t step, const std::string& dir);

// Removes a weights-only form (with its mark); missing is fine.
void RemoveWeightsOnly(const std::string& dir);

}  // namespace trm::coordinator
