#include "trm/model/trm.h"

#include <torch/torch.h>

#include <cmath>

#include "trm/common/error.h"
#include "linear_cross_entropy.h"
#include "trm/model/init.h"

namespace trm::model {
namespace {

constexpr int64_t kIgnoreLabel = -100;

at::ScalarType ToScalarType(ForwardDtype d) {
  return d == ForwardDtype::kBfloat16 ? torch::kBFloat16 : torch::kFloat32;
}

// Replaces the rows of `old` where `halted` is set by the rows of `fresh`.
at::Tensor ReplaceRows(const at::Tensor& halted, const at::Tensor& fresh, const at::Tensor& old) {
  std::vector<int64_t> shape(static_cast<size_t>(fresh.dim()), 1);
  shape[0] = halted.size(0);
  return torch::where(halted.view(shape), fresh, old);
}

// Token losses [B, S] (TRM_SPEC.md "Loss head") on float32 logits [B, S, V]: softmax or
// stablemax cross-entropy, ignored labels contributing 0.
at::Tensor TokenLosses(const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& mask, LossType type) {
  if (type == LossType::kStablemaxCrossEntropy) {
    at::Tensor s = torch::where(logits < 0, 1.0 / (1.0 - logits + 1e-30), logits + 1.0);
    at::Tensor logp = torch::log(s / s.sum(-1, /*keepdim=*/true));
    at::Tensor safe = torch::where(mask, labels, torch::zeros_like(labels));
    at::Tensor picked = logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1);
    return -torch::where(mask, picked, torch::zeros_like(picked));
  }
  return torch::nn::functional::cross_entropy(
             logits.reshape({-1, logits.size(-1)}), labels.reshape({-1}),
             torch::nn::functional::CrossEntropyFuncOptions().ignore_index(kIgnoreLabel).reduction(torch::kNone))
      .view(labels.sizes());
}

}  // namespace

TrmInnerImpl::TrmInnerImpl(const ArchConfig& cfg) : cfg_(cfg), dtype_(ToScalarType(cfg.forward_dtype)) {
  cfg_.Validate();
  const int64_t D = cfg.hidden_size;
  const double embed_std = 1.0 / std::sqrt(static_cast<double>(D));
  // Construction order follows the reference so the default generator is consumed alike.
  embed_tokens = register_module("embed_tokens", CastedEmbedding(cfg.vocab_size, D, embed_std));
  lm_head = register_module("lm_head", CastedLinear(D, cfg.vocab_size, false));
  q_head = register_module("q_head", CastedLinear(D, 2, true));
  {
    // Q head starts at "don't halt yet": zero weight, bias -5.
    torch::NoGradGuard no_grad;
    q_head->weight.zero_();
    q_head->bias.fill_(-5.0);
  }
  if (cfg.pos_encodings == PosEncoding::kRope) {
    rope_ = RotaryTables::Make(cfg.seq_len, cfg.head_dim(), cfg.rope_theta);
  } else if (cfg.pos_encodings == PosEncoding::kLearned) {
    embed_pos = register_module("embed_pos", CastedEmbedding(cfg.seq_len, D, embed_std));
  }
  L_level = register_module("L_level", ReasoningModule(cfg));
  H_init = torch::empty({D});
  L_init = torch::empty({D});
  TruncNormalInit(H_init, 1.0);
  TruncNormalInit(L_init, 1.0);
  H_init = register_buffer("H_init", H_init);
  L_init = register_buffer("L_init", L_init);
}

const RotaryTables* TrmInnerImpl::rope() {
  if (!rope_.cos.defined()) return nullptr;
  auto dev = H_init.device();
  if (rope_.cos.device() != dev) rope_ = {rope_.cos.to(dev), rope_.sin.to(dev)};
  return &rope_;
}

at::Tensor TrmInnerImpl::InputEmbedding(const at::Tensor& inputs, int64_t offset) {
  at::Tensor e = embed_tokens(inputs, dtype_);
  if (embed_pos) {
    const int64_t S = inputs.size(1);
    at::Tensor pos = embed_pos->embedding_weight.narrow(0, offset, S).to(dtype_);
    e = 0.707106781 * (e + pos);
  }
  return std::sqrt(static_cast<double>(cfg_.hidden_size)) * e;
}

TrmInnerImpl::Output TrmInnerImpl::forward(const at::Tensor& z_H_in, const at::Tensor& z_L_in,
                                           const at::Tensor& inputs, bool with_logits) {
  const RotaryTables* rp = rope();
  at::Tensor e = InputEmbedding(inputs);
  at::Tensor z_H = z_H_in, z_L = z_L_in;
  {
    // The deep-recursion trick: only the last H cycle is differentiated.
    torch::NoGradGuard no_grad;
    for (int64_t h = 0; h + 1 < cfg_.H_cycles; ++h) {
      for (int64_t l = 0; l < cfg_.L_cycles; ++l) z_L = L_level(z_L, z_H + e, rp);
      z_H = L_level(z_H, z_L, rp);
    }
  }
  for (int64_t l = 0; l < cfg_.L_cycles; ++l) z_L = L_level(z_L, z_H + e, rp);
  z_H = L_level(z_H, z_L, rp);
  Output out;
  if (with_logits) out.logits = lm_head(z_H);
  at::Tensor q = q_head(z_H.select(1, 0)).to(torch::kFloat32);
  out.q_halt_logits = q.select(1, 0);
  out.q_continue_logits = q.select(1, 1);
  out.hidden = z_H;
  out.z_H = z_H.detach();
  out.z_L = z_L.detach();
  return out;
}

TrmInnerImpl::Output TrmInnerImpl::ForwardCached(const at::Tensor& z_H_in, const at::Tensor& z_L_in,
                                                 const at::Tensor& inputs, int64_t offset,
                                                 std::vector<std::vector<KvCache>>* call_caches) {
  if (!cfg_.causal) InvalidArgument("incremental decoding needs a causal model (arch.causal: true)");
  torch::NoGradGuard no_grad;
  if (static_cast<int64_t>(call_caches->size()) != CallsPerInner()) {
    call_caches->assign(static_cast<size_t>(CallsPerInner()), std::vector<KvCache>(static_cast<size_t>(cfg_.L_layers)));
  }
  const RotaryTables* rp = rope();
  at::Tensor e = InputEmbedding(inputs, offset);
  at::Tensor z_H = z_H_in, z_L = z_L_in;
  size_t call = 0;
  // The same call sequence as forward(); each call keeps its own keys/values.
  for (int64_t h = 0; h < cfg_.H_cycles; ++h) {
    for (int64_t l = 0; l < cfg_.L_cycles; ++l) z_L = L_level(z_L, z_H + e, rp, &(*call_caches)[call++]);
    z_H = L_level(z_H, z_L, rp, &(*call_caches)[call++]);
  }
  Output out;
  out.logits = lm_head(z_H);
  at::Tensor q = q_head(z_H.select(1, 0)).to(torch::kFloat32);
  out.q_halt_logits = q.select(1, 0);
  out.q_continue_logits = q.select(1, 1);
  out.z_H = z_H;
  out.z_L = z_L;
  return out;
}

void TrmImpl::SetFusedHeadBlockBytes(int64_t bytes) { head_ws_->block_bytes = bytes; }

void TrmImpl::SetFusedCpuKernels(bool on) {
  for (const auto& m : modules()) {
    if (auto* block = m->as<BlockImpl>()) block->SetFusedCpu(on);
    if (auto* linear = m->as<CastedLinearImpl>()) linear->SetFusedCpu(on);
    if (auto* embedding = m->as<CastedEmbeddingImpl>()) embedding->SetFusedCpu(on);
  }
}

TrmImpl::TrmImpl(const ArchConfig& cfg) : cfg_(cfg), head_ws_(std::make_shared<LinearCrossEntropyWorkspace>()) {
  inner = register_module("inner", TrmInner(cfg));
}

at::Tensor TrmImpl::Predict(const at::Tensor& inputs) {
  torch::NoGradGuard no_grad;
  const auto dt = inner->forward_dtype();
  std::vector<int64_t> shape = {inputs.size(0), inputs.size(1), cfg_.hidden_size};
  at::Tensor z_H = inner->H_init.to(dt).expand(shape), z_L = inner->L_init.to(dt).expand(shape);
  TrmInnerImpl::Output out;
  for (int64_t k = 0; k < cfg_.halt_max_steps; ++k) {
    out = inner(z_H, z_L, inputs);
    z_H = out.z_H;
    z_L = out.z_L;
  }
  return out.logits;
}

Carry TrmImpl::InitialCarry(const Batch& batch) {
  const int64_t B = batch.inputs.size(0), S = batch.inputs.size(1);
  auto dev = batch.inputs.device();
  auto zopts = torch::TensorOptions().dtype(inner->forward_dtype()).device(dev);
  Carry c;
  c.z_H = torch::zeros({B, S, cfg_.hidden_size}, zopts);
  c.z_L = torch::zeros({B, S, cfg_.hidden_size}, zopts);
  c.steps = torch::zeros({B}, torch::TensorOptions().dtype(torch::kInt32).device(dev));
  c.halted = torch::ones({B}, torch::TensorOptions().dtype(torch::kBool).device(dev));
  c.data.inputs = torch::zeros_like(batch.inputs);
  c.data.labels = torch::zeros_like(batch.labels);
  c.data.puzzle_identifiers = batch.puzzle_identifiers.defined()
                                  ? torch::zeros_like(batch.puzzle_identifiers)
                                  : torch::zeros({B}, torch::TensorOptions().dtype(torch::kInt32).device(dev));
  return c;
}

StepOutput TrmImpl::forward(const Carry& carry, const Batch& batch) {
  const at::Tensor& h = carry.halted;
  const auto dt = inner->forward_dtype();
  // 1. Halted rows restart from the initial latents on the new batch's rows.
  at::Tensor z_H = torch::where(h.view({-1, 1, 1}), inner->H_init.to(dt), carry.z_H);
  at::Tensor z_L = torch::where(h.view({-1, 1, 1}), inner->L_init.to(dt), carry.z_L);
  at::Tensor steps = torch::where(h, torch::zeros_like(carry.steps), carry.steps);
  Batch data;
  data.inputs = ReplaceRows(h, batch.inputs, carry.data.inputs);
  data.labels = ReplaceRows(h, batch.labels, carry.data.labels);
  data.puzzle_identifiers = batch.puzzle_identifiers.defined()
                                ? ReplaceRows(h, batch.puzzle_identifiers, carry.data.puzzle_identifiers)
                                : carry.data.puzzle_identifiers;

  // 2. Inner call.
  const bool fused = fused_head_ && cfg_.loss_type == LossType::kSoftmaxCrossEntropy;
  TrmInnerImpl::Output out = inner(z_H, z_L, data.inputs, !fused);

  // 3-4. Step count and halting.
  at::Tensor halted, target_q_continue;
  {
    torch::NoGradGuard no_grad;
    steps = steps + 1;
    const at::Tensor is_last_step = steps >= cfg_.halt_max_steps;
    halted = is_last_step;
    if (is_training() && cfg_.halt_max_steps > 1) {
      const at::Tensor& qh = out.q_halt_logits;
      const at::Tensor& qc = out.q_continue_logits;
      halted = cfg_.no_ACT_continue ? (halted | (qh > 0)) : (halted | (qh > qc));
      // Exploration: a row may be forced to run at least U{2..halt_max_steps} steps.
      // Drawn for the whole global batch, in the reference's order (uniforms, then step counts),
      // and sliced to this model's rows (SetExploration).
      const int64_t rows = qh.size(0);
      const int64_t global = global_rows_ > 0 ? global_rows_ : rows;
      TORCH_CHECK(row_offset_ + rows <= global, "rows [", row_offset_, ", ", row_offset_ + rows,
                  ") outside a global batch of ", global);
      c10::optional<at::Generator> gen;
      if (explore_gen_.defined()) gen = explore_gen_;
      const auto on_cpu = [](const at::Tensor& like) { return like.options().device(torch::kCPU); };
      at::Tensor u = at::rand({global}, gen, on_cpu(qh)).narrow(0, row_offset_, rows).to(qh.device());
      at::Tensor k = at::randint(2, cfg_.halt_max_steps + 1, {global}, gen, on_cpu(steps))
                         .narrow(0, row_offset_, rows)
                         .to(steps.device());
      at::Tensor explore = u < cfg_.halt_exploration_prob;
      at::Tensor min_steps = explore.to(torch::kInt32) * k;
      halted = halted & (steps >= min_steps);
      if (!cfg_.no_ACT_continue) {
        // Bootstrap target for Q-continue from the next call's Q values (no replay buffer or
        // target network, as in the reference).
        TrmInnerImpl::Output next = inner(out.z_H, out.z_L, data.inputs, /*with_logits=*/false);
        target_q_continue = torch::sigmoid(torch::where(
            is_last_step, next.q_halt_logits, torch::maximum(next.q_halt_logits, next.q_continue_logits)));
      }
    }
  }

  StepOutput r;
  r.carry.z_H = out.z_H;
  r.carry.z_L = out.z_L;
  r.carry.steps = steps;
  r.carry.halted = halted;
  r.carry.data = data;
  std::tie(r.loss, r.metrics) = LossHead(r.carry, out, target_q_continue);
  r.logits = out.logits;
  r.q_halt_logits = out.q_halt_logits;
  r.q_continue_logits = out.q_continue_logits;
  r.target_q_continue = target_q_continue;
  return r;
}

std::pair<at::Tensor, Metrics> TrmImpl::LossHead(const Carry& carry, const TrmInnerImpl::Output& out,
                                                 const at::Tensor& target_q_continue) {
  const at::Tensor labels = carry.data.labels.to(torch::kLong);
  const at::Tensor mask = labels != kIgnoreLabel;
  const at::Tensor counts = mask.sum(-1);
  const at::Tensor div = counts.clamp_min(1).unsqueeze(-1);
  at::Tensor lm_loss, predicted;  // predicted: argmax token [B, S]
  Metrics m;
  if (!out.logits.defined()) {
    // Fused LM head + softmax cross-entropy: the same sum, without [B, S, V] logits.
    const int64_t D = out.hidden.size(-1);
    at::Tensor row_weight = (mask.to(torch::kFloat32) / div).reshape({-1});
    LinearCrossEntropyResult r =
        LinearCrossEntropy(out.hidden.reshape({-1, D}), inner->lm_head->weight, labels.reshape({-1}), row_weight,
                           head_ws_.get());
    lm_loss = r.loss;
    predicted = r.argmax.view(labels.sizes());
    if (!is_training() && r.token_loss.defined()) {
      m["token_loss_sum"] = r.token_loss.sum();
      m["tokens"] = mask.sum();
    }
  } else {
    const at::Tensor logits = out.logits.to(torch::kFloat32);
    const at::Tensor tokens = TokenLosses(logits, labels, mask, cfg_.loss_type);
    lm_loss = (tokens / div).sum();  // the per-sequence mean, summed over the batch
    predicted = logits.argmax(-1);
    if (!is_training()) {  // evaluation also reports the mean over all label tokens (perplexity)
      m["token_loss_sum"] = tokens.detach().sum();
      m["tokens"] = mask.sum();
    }
  }

  const at::Tensor& q_halt = out.q_halt_logits;
  at::Tensor seq_correct;
  {
    torch::NoGradGuard no_grad;
    at::Tensor correct = mask & (predicted == labels);
    seq_correct = correct.sum(-1) == counts;
    at::Tensor valid = carry.halted & (counts > 0);
    at::Tensor zero = torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat32).device(labels.device()));
    m["count"] = valid.sum();
    m["accuracy"] = torch::where(valid, (correct.to(torch::kFloat32) / div).sum(-1), zero).sum();
    m["exact_accuracy"] = (valid & seq_correct).sum();
    m["q_halt_accuracy"] = (valid & ((q_halt >= 0) == seq_correct)).sum();
    m["steps"] = torch::where(valid, carry.steps, torch::zeros_like(carry.steps)).sum();
  }
  namespace F = torch::nn::functional;
  at::Tensor q_halt_loss = F::binary_cross_entropy_with_logits(
      q_halt, seq_correct.to(q_halt.scalar_type()), F::BinaryCrossEntropyWithLogitsFuncOptions().reduction(torch::kSum));
  m["lm_loss"] = lm_loss.detach();
  m["q_halt_loss"] = q_halt_loss.detach();
  at::Tensor loss_q = q_halt_loss;
  if (target_q_continue.defined()) {
    at::Tensor q_continue_loss = F::binary_cross_entropy_with_logits(
        out.q_continue_logits, target_q_continue, F::BinaryCrossEntropyWithLogitsFuncOptions().reduction(torch::kSum));
    m["q_continue_loss"] = q_continue_loss.detach();
    loss_q = loss_q + q_continue_loss;
  }
  return {lm_loss + 0.5 * loss_q, m};
}

void TrmImpl::ResetParameters(uint64_t seed) {
  torch::NoGradGuard no_grad;
  at::Generator gen = at::detail::createCPUGenerator(seed);
  const double embed_std = 1.0 / std::sqrt(static_cast<double>(cfg_.hidden_size));
  for (auto& [name, t] : StateDict()) {
    // Drawn on the CPU so the values do not depend on the device.
    at::Tensor v = torch::empty(t.sizes(), torch::kFloat32);
    const std::string leaf = name.substr(name.rfind('.') + 1);
    if (name == std::string(kStateDictPrefix) + "q_head.weight") v.zero_();
    else if (name == std::string(kStateDictPrefix) + "q_head.bias") v.fill_(-5.0);
    else if (leaf == "H_init" || leaf == "L_init") TruncNormalInit(v, 1.0, gen);
    else if (leaf == "embedding_weight") TruncNormalInit(v, embed_std, gen);
    else if (leaf == "weight") TruncNormalInit(v, 1.0 / std::sqrt(static_cast<double>(t.size(1))), gen);
    else if (leaf == "bias") v.zero_();
    else Internal("ResetParameters: no initialisation rule for " + name);
    t.copy_(v);
  }
}

std::vector<std::pair<std::string, at::Tensor>> TrmImpl::StateDict() {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& p : inner->named_parameters(/*recurse=*/true)) out.emplace_back(kStateDictPrefix + p.key(), p.value());
  for (const auto& b : inner->named_buffers(/*recurse=*/true)) out.emplace_back(kStateDictPrefix + b.key(), b.value());
  return out;
}

void TrmImpl::LoadStateDict(const std::map<std::string, at::Tensor>& tensors, const std::string& source) {
  torch::NoGradGuard no_grad;
  for (auto& [name, t] : StateDict()) {
    auto it = tensors.find(name);
    if (it == tensors.end()) InvalidArgument(source + ": missing tensor '" + name + "'");
    if (it->second.sizes() != t.sizes()) {
      InvalidArgument(source + ": tensor '" + name + "' has shape " + c10::str(it->second.sizes()) +
                      ", the model expects " + c10::str(t.sizes()));
    }
    t.copy_(it->second);
  }
}

}  // namespace trm::model
