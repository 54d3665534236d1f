// The Tiny Recursive Model: the inner recursion, the ACT wrapper with its carry, and the loss
// head (TRM_SPEC.md). Parameter names follow the reference state dict (prefix "model.inner.").
//
// Thread safety: not thread-safe; one thread drives a model (and its carry) at a time.
// Ownership: Carry and StepOutput hold tensors by value (ref-counted); nothing aliases the model.
#pragma once

#include <ATen/core/Generator.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "trm/model/config.h"
#include "trm/model/layers.h"

namespace trm::model {

// A batch: inputs / labels [B, S] int32 (labels -100 = ignore), puzzle_identifiers [B].
struct Batch {
  at::Tensor inputs;
  at::Tensor labels;
  at::Tensor puzzle_identifiers;  // may be undefined (chat data has none); treated as zeros
};

// State carried across ACT calls, and across training batches.
struct Carry {
  at::Tensor z_H, z_L;   // [B, S, D] in the forward dtype
  at::Tensor steps;      // [B] int32
  at::Tensor halted;     // [B] bool
  Batch data;            // the rows each batch position is working on
};

class TrmInnerImpl : public torch::nn::Module {
 public:
  explicit TrmInnerImpl(const ArchConfig& cfg);

  struct Output {
    at::Tensor z_H, z_L;  // detached new latents
    at::Tensor hidden;    // z_H still attached to the graph (input of the LM head)
    at::Tensor logits;    // [B, S, V] forward dtype; undefined when not asked for
    at::Tensor q_halt_logits, q_continue_logits;  // [B] float32
  };
  // One inner call: H_cycles x (L_cycles z_L updates + one z_H update), the first H_cycles-1
  // without autograd. with_logits=false skips the LM head (a fused loss computes it itself).
  Output forward(const at::Tensor& z_H, const at::Tensor& z_L, const at::Tensor& inputs, bool with_logits = true);

  // Incremental evaluation for decoding: the new positions [offset, offset + S) of `inputs`
  // (z_H, z_L [B, S, D] for those positions), with one KV cache list per reasoning-module call of
  // the recursion (CallsPerInner() of them, each with L_layers entries) holding the earlier
  // positions. Causal models only; no autograd.
  Output ForwardCached(const at::Tensor& z_H, const at::Tensor& z_L, const at::Tensor& inputs, int64_t offset,
                       std::vector<std::vector<KvCache>>* call_caches);
  int64_t CallsPerInner() const { return cfg_.H_cycles * (cfg_.L_cycles + 1); }

  // Input embedding: scaled token (+ learned position) embedding in the forward dtype, for
  // positions [offset, offset + S).
  at::Tensor InputEmbedding(const at::Tensor& inputs, int64_t offset = 0);

  const ArchConfig& config() const { return cfg_; }
  at::ScalarType forward_dtype() const { return dtype_; }
  const RotaryTables* rope();  // nullptr unless pos_encodings == rope; moved to the model's device

  CastedEmbedding embed_tokens{nullptr};
  CastedLinear lm_head{nullptr};
  CastedLinear q_head{nullptr};
  CastedEmbedding embed_pos{nullptr};  // learned positions only
  ReasoningModule L_level{nullptr};
  at::Tensor H_init, L_init;           // persistent buffers [D], float32

 private:
  ArchConfig cfg_;
  at::ScalarType dtype_;
  RotaryTables rope_;
};
TORCH_MODULE(TrmInner);

// Loss-head metrics, as 0-d tensors (no host sync until read): count, accuracy, exact_accuracy,
// q_halt_accuracy, steps, lm_loss, q_halt_loss, and q_continue_loss when it is computed. In eval
// mode also token_loss_sum and tokens: the summed token losses and the number of label tokens,
// over every row.
using Metrics = std::map<std::string, at::Tensor>;

struct StepOutput {
  Carry carry;                  // the new carry
  at::Tensor loss;              // lm_loss + 0.5 * (q_halt_loss + q_continue_loss), with graph
  Metrics metrics;
  at::Tensor logits;            // [B, S, V]
  at::Tensor q_halt_logits;     // [B] float32
  at::Tensor q_continue_logits; // [B] float32
  at::Tensor target_q_continue; // [B], only when training with no_ACT_continue == false
};

// Model + ACT wrapper + loss head. Training vs evaluation follows Module::is_training().
struct LinearCrossEntropyWorkspace;

class TrmImpl : public torch::nn::Module {
 public:
  explicit TrmImpl(const ArchConfig& cfg);

  // All rows halted, steps 0, zero latents and data shaped like `batch`.
  Carry InitialCarry(const Batch& batch);
  // One ACT call (TRM_SPEC.md "ACT wrapper") followed by the loss head.
  StepOutput forward(const Carry& carry, const Batch& batch);

  // Evaluation-mode logits [B, S, V] for `inputs` [B, S]: halt_max_steps inner calls from the
  // initial latents, as evaluation and generation run the model (no loss, no autograd).
  at::Tensor Predict(const at::Tensor& inputs);

  // Re-draws every parameter and buffer with the reference initialisation from a private
  // generator seeded with `seed`: the same weights whatever else uses the global generator
  // (several trainers in one process, for instance).
  void ResetParameters(uint64_t seed);

  // Parameters and persistent buffers under the reference names ("model.inner.…").
  std::vector<std::pair<std::string, at::Tensor>> StateDict();
  // Copies tensors from `lookup(name)` into every entry of StateDict(); throws InvalidArgument
  // naming the first missing tensor or shape mismatch. `source` names the origin in errors.
  void LoadStateDict(const std::map<std::string, at::Tensor>& tensors, const std::string& source);

  const ArchConfig& config() const { return cfg_; }
  TrmInner inner{nullptr};

  // Training speed: compute the LM head together with a softmax cross-entropy in row blocks
  // (linear_cross_entropy.h) instead of materialising [B, S, V] logits. Same loss and gradients
  // up to float rounding; StepOutput::logits is then undefined. No effect with stablemax.
  void SetFusedHead(bool on) { fused_head_ = on; }
  // The fused head's logits block, in bytes (default 128 MB); tests set it small to run several
  // blocks on a small batch.
  void SetFusedHeadBlockBytes(int64_t bytes);
  // Training mode on the CPU in float32: the blocks' fused kernels (true, the default: faster,
  // rounding differs from the reference's op sequence at ~1e-6 a step) or the reference's ops,
  // whose forward is bitwise the PyTorch reference's (false; trm-parity replays with these).
  void SetFusedCpuKernels(bool on);

  // Training's ACT exploration draws come from `gen` (a CPU generator, not owned exclusively:
  // the caller saves and restores its state) for a global batch of `global_rows`, of which this
  // model's batch is rows [offset, offset + B). Every rank holds a generator in the same state,
  // so each row draws the same numbers whatever the number of ranks, and on any device: a run
  // resumed on another world size stays the same run. Until this is called the draws come from
  // LibTorch's default CPU generator and the batch is the whole global batch.
  void SetExploration(at::Generator gen, int64_t global_rows, int64_t offset) {
    explore_gen_ = std::move(gen);
    global_rows_ = global_rows;
    row_offset_ = offset;
  }

 private:
  std::pair<at::Tensor, Metrics> LossHead(const Carry& carry, const TrmInnerImpl::Output& out,
                                          const at::Tensor& target_q_continue);
  ArchConfig cfg_;
  bool fused_head_ = false;
  at::Generator explore_gen_;  // undefined: the default CPU generator
  int64_t global_rows_ = 0;    // 0: the batch is the global batch
  int64_t row_offset_ = 0;
  // The fused head's reusable buffers (linear_cross_entropy.h); this model's alone.
  std::shared_ptr<LinearCrossEntropyWorkspace> head_ws_;
};
TORCH_MODULE(Trm);

constexpr const char* kStateDictPrefix = "model.inner.";

}  // namespace trm::model
