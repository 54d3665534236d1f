#include "trm/model/generate.h"

#include <torch/torch.h>

#include <algorithm>
#include <memory>

#include "trm/common/error.h"

namespace trm::model {

Decoder::Decoder(Trm model, bool use_cache, int64_t batch) : model_(std::move(model)), use_cache_(use_cache), batch_(batch) {
  if (use_cache_ && !model_->config().causal) {
    InvalidArgument("cached decoding needs a causal model; this one has arch.causal: false");
  }
  model_->eval();
}

Decoder::~Decoder() = default;

int64_t Decoder::capacity() const { return model_->config().seq_len; }

void Decoder::Reset() {
  length_ = 0;
  tokens_ = at::Tensor();
  caches_.clear();
}

at::Tensor Decoder::Append(const at::Tensor& tokens_in) {
  torch::NoGradGuard no_grad;
  const int64_t n = tokens_in.size(1);
  if (tokens_in.size(0) != batch_ || n < 1) InvalidArgument("Decoder::Append: expected tokens of shape [batch, n >= 1]");
  if (length_ + n > capacity()) {
    ThrowError(Code::kOutOfRange, "sequence of " + std::to_string(length_ + n) + " tokens exceeds the model's context (seq_len " +
                                      std::to_string(capacity()) + ")");
  }
  auto dev = model_->inner->H_init.device();
  at::Tensor tokens = tokens_in.to(dev, torch::kInt32);
  at::Tensor logits;
  if (!use_cache_) {
    tokens_ = tokens_.defined() ? torch::cat({tokens_, tokens}, 1) : tokens;
    logits = model_->Predict(tokens_).select(1, tokens_.size(1) - 1);
  } else {
    const ArchConfig& c = model_->config();
    const auto dt = model_->inner->forward_dtype();
    caches_.resize(static_cast<size_t>(c.halt_max_steps));
    std::vector<int64_t> shape = {batch_, n, c.hidden_size};
    at::Tensor z_H = model_->inner->H_init.to(dt).expand(shape), z_L = model_->inner->L_init.to(dt).expand(shape);
    TrmInnerImpl::Output out;
    for (int64_t k = 0; k < c.halt_max_steps; ++k) {
      out = model_->inner->ForwardCached(z_H, z_L, tokens, length_, &caches_[static_cast<size_t>(k)]);
      z_H = out.z_H;
      z_L = out.z_L;
    }
    logits = out.logits.select(1, n - 1);
  }
  length_ += n;
  return logits.to(torch::kFloat32);
}

struct Sampler::Impl {
  at::Generator gen;
};

Sampler::Sampler(const SamplingOptions& options) : opt_(options), impl_(std::make_unique<Impl>()) {
  if (opt_.temperature < 0) InvalidArgument("--temperature: must not be negative");
  if (opt_.top_k < 0) InvalidArgument("--top-k: must not be negative");
  if (!(opt_.top_p > 0 && opt_.top_p <= 1)) InvalidArgument("--top-p: must be in (0, 1]");
  impl_->gen = at::detail::createCPUGenerator(opt_.seed);
}

Sampler::~Sampler() = default;

int32_t Sampler::Sample(const at::Tensor& logits_in) {
  torch::NoGradGuard no_grad;
  at::Tensor logits = logits_in.reshape({-1}).to(torch::kCPU, torch::kFloat32);
  if (opt_.temperature == 0.0) return static_cast<int32_t>(logits.argmax().item<int64_t>());
  logits = logits / opt_.temperature;
  if (opt_.top_k > 0 && opt_.top_k < logits.size(0)) {
    at::Tensor kth = std::get<0>(logits.topk(opt_.top_k)).select(0, opt_.top_k - 1);
    logits = logits.masked_fill(logits < kth, -std::numeric_limits<float>::infinity());
  }
  at::Tensor probs = logits.softmax(0);
  if (opt_.top_p < 1.0) {
    auto sorted = probs.sort(0, /*descending=*/true);
    at::Tensor p = std::get<0>(sorted), idx = std::get<1>(sorted);
    at::Tensor before = p.cumsum(0) - p;  // mass of the tokens ranked above each one
    p = p.masked_fill(before >= opt_.top_p, 0.0);  // the first token is always kept
    probs = torch::zeros_like(probs).scatter_(0, idx, p);
  }
  return static_cast<int32_t>(at::multinomial(probs, 1, false, impl_->gen).item<int64_t>());
}

std::vector<int32_t> Generate(Decoder& decoder, const std::vector<int32_t>& prompt, const GenerateOptions& options,
                              const std::function<bool(int32_t)>& on_token) {
  if (prompt.empty()) InvalidArgument("generation needs a non-empty prompt");
  Sampler sampler(options.sampling);
  std::vector<int32_t> out;
  at::Tensor p = torch::tensor(prompt, torch::kInt32).view({1, -1});
  at::Tensor logits = decoder.Append(p).select(0, 0);
  for (int64_t i = 0; i < options.max_new_tokens; ++i) {
    int32_t t = sampler.Sample(logits);
    if (options.stop_tokens.count(t)) break;
    out.push_back(t);
    if (on_token && !on_token(t)) break;
    if (decoder.length() >= decoder.capacity()) break;  // context full
    logits = decoder.Append(torch::tensor({t}, torch::kInt32).view({1, 1})).select(0, 0);
  }
  return out;
}

namespace {

// Prompts ok for a lockstep batch on `decoder`; returns the shortest prompt's length.
size_t CheckBatchPrompts(const Decoder& decoder, const std::vector<std::vector<int32_t>>& prompts) {
  if (prompts.empty() || static_cast<int64_t>(prompts.size()) != decoder.batch()) {
    InvalidArgument("GenerateBatch: " + std::to_string(prompts.size()) + " prompts for a decoder of batch " +
                    std::to_string(decoder.batch()));
  }
  size_t shortest = prompts[0].size();
  for (size_t r = 0; r < prompts.size(); ++r) {
    if (prompts[r].empty()) InvalidArgument("generation needs a non-empty prompt (row " + std::to_string(r) + ")");
    if (static_cast<int64_t>(prompts[r].size()) > decoder.capacity()) {
      ThrowError(Code::kOutOfRange, "prompt of row " + std::to_string(r) + " has " + std::to_string(prompts[r].size()) +
                                        " tokens, more than the model's context (seq_len " +
                                        std::to_string(decoder.capacity()) + ")");
    }
    shortest = std::min(shortest, prompts[r].size());
  }
  return shortest;
}

}  // namespace

std::vector<std::vector<int32_t>> GenerateBatch(Decoder& decoder, const std::vector<std::vector<int32_t>>& prompts,
                                                const GenerateOptions& options, uint64_t first_row) {
  torch::NoGradGuard no_grad;
  const size_t prefix = CheckBatchPrompts(decoder, prompts);
  const size_t rows = prompts.size();
  std::vector<std::vector<int32_t>> out(rows);
  if (options.max_new_tokens < 1) return out;
  std::vector<std::unique_ptr<Sampler>> samplers;
  for (size_t r = 0; r < rows; ++r) {
    SamplingOptions s = options.sampling;
    s.seed = options.sampling.seed + first_row + r;
    samplers.push_back(std::make_unique<Sampler>(s));
  }
  decoder.Reset();
  std::vector<int32_t> feed(rows * prefix);
  for (size_t r = 0; r < rows; ++r) std::copy_n(prompts[r].begin(), prefix, feed.begin() + static_cast<int64_t>(r * prefix));
  at::Tensor logits = decoder.Append(torch::tensor(feed, torch::kInt32).view({static_cast<int64_t>(rows), -1})).cpu();
  std::vector<bool> done(rows, false);
  size_t running = rows;
  feed.assign(rows, 0);
  while (running > 0) {
    // Here every row has seen positions [0, length): logits predict position `length`.
    const size_t length = static_cast<size_t>(decoder.length());
    for (size_t r = 0; r < rows; ++r) {
      feed[r] = 0;  // filler for a finished row
      if (done[r]) continue;
      if (length < prompts[r].size()) {
        feed[r] = prompts[r][length];
        continue;
      }
      const int32_t t = samplers[r]->Sample(logits.select(0, static_cast<int64_t>(r)));
      const bool stop = options.stop_tokens.count(t) > 0;
      if (!stop) out[r].push_back(t);
      if (stop || static_cast<int64_t>(out[r].size()) >= options.max_new_tokens ||
          decoder.length() >= decoder.capacity()) {
        done[r] = true;
        --running;
        continue;
      }
      feed[r] = t;
    }
    if (running == 0) break;
    logits = decoder.Append(torch::tensor(feed, torch::kInt32).view({static_cast<int64_t>(rows), 1})).cpu();
  }
  return out;
}

}  // namespace trm::model
