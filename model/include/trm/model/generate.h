// Token generation with a TRM: the evaluation-mode model (full ACT depth) predicts the next
// token of a growing sequence. Two decoders give the same logits up to float rounding:
//  - recompute: every step runs the whole sequence again (what the reference generate.py does);
//  - cached: every reasoning-module call of every ACT step keeps the keys/values of the positions
//    it has seen. The recursion is causal, so the states of earlier positions never change when a
//    token is appended, and each step only computes the new position: per-token cost grows with
//    the attention span only, not with a full forward over the prompt.
// Thread safety: a Decoder (and its model) is used by one thread at a time.
#pragma once

#include <ATen/Tensor.h>

#include <functional>
#include <memory>
#include <set>
#include <vector>

#include "trm/model/trm.h"

namespace trm::model {

class Decoder {
 public:
  // `model` must outlive the decoder; it is switched to eval mode. use_cache needs a causal model.
  Decoder(Trm model, bool use_cache, int64_t batch = 1);
  ~Decoder();

  // Appends tokens [B, n] (n >= 1) and returns the float32 logits of the last position [B, V].
  // Throws OutOfRange when the sequence would exceed the model's seq_len (see Reset).
  at::Tensor Append(const at::Tensor& tokens);
  void Reset();  // forget the sequence (and the caches)
  int64_t length() const { return length_; }
  int64_t capacity() const;  // seq_len: the longest sequence the position encodings cover
  int64_t batch() const { return batch_; }

 private:
  Trm model_;
  bool use_cache_;
  int64_t batch_;
  int64_t length_ = 0;
  at::Tensor tokens_;  // [B, length] (recompute mode)
  std::vector<std::vector<std::vector<KvCache>>> caches_;  // [ACT step][module call][layer]
};

struct SamplingOptions {
  double temperature = 0.8;  // 0 = greedy (argmax)
  int64_t top_k = 0;         // 0 = off
  double top_p = 1.0;        // 1 = off
  uint64_t seed = 0;
};

// Draws token ids from logits [V] (float32, CPU or device). Deterministic for a seed.
class Sampler {
 public:
  explicit Sampler(const SamplingOptions& options);
  ~Sampler();
  int32_t Sample(const at::Tensor& logits);

 private:
  SamplingOptions opt_;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct GenerateOptions {
  int64_t max_new_tokens = 128;
  SamplingOptions sampling;
  std::set<int32_t> stop_tokens;  // generation ends on one of these (it is not returned)
};

// Feeds `prompt` (all of it must fit in the context) and samples until a stop token,
// max_new_tokens or the context is full. on_token (optional) sees each token as it is chosen and
// may return false to stop. Returns the new tokens.
std::vector<int32_t> Generate(Decoder& decoder, const std::vector<int32_t>& prompt, const GenerateOptions& options,
                              const std::function<bool(int32_t)>& on_token = {});

// Generate for several prompts at once, each row giving the tokens Generate gives for its prompt
// alone (the same up to float rounding of batched arithmetic). No padding: padding would shift
// positions and change the results. The rows run in lockstep over positions instead: the prefix
// every prompt has (the shortest prompt's length) goes in one Append, then one position per step,
// where a row still inside its prompt is fed its next prompt token and a row past it its sampled
// token; a finished row is fed a filler whose logits are ignored. A row ends at a stop token,
// max_new_tokens or the context end. Row r samples with its own Sampler seeded
// options.sampling.seed + first_row + r, so a prompt's tokens do not depend on the batch it is in
// (first_row: the index of row 0 among all prompts). `decoder` has batch prompts.size() and is
// Reset first. Every prompt must be non-empty and fit in the context. Returns the new tokens of
// each row.
std::vector<std::vector<int32_t>> GenerateBatch(Decoder& decoder, const std::vector<std::vector<int32_t>>& prompts,
                                                const GenerateOptions& options, uint64_t first_row = 0);

}  // namespace trm::model
