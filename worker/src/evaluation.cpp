#include "trm/worker/evaluation.h"

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <filesystem>

#include "model_batch.h"
#include "trm/common/error.h"
#include "trm/common/exit_codes.h"
#include "trm/data/batch_iterator.h"
#include "trm/data/dataset_reader.h"  // DatasetMeta
#include "trm/worker/chat.h"
#include "trm/worker/step_metrics.h"

namespace trm::worker {
namespace {

namespace fs = std::filesystem;
namespace key = metric_key;
using nlohmann::json;

// The loss head's sums (model::Metrics names) added up over a split, in float64 in batch order as
// the trainer adds them.
const char* const kSummed[] = {"lm_loss", "q_halt_loss", "count", "accuracy", "exact_accuracy",
                               "q_halt_accuracy", "steps", "token_loss_sum", "tokens"};

int64_t DefaultBatch(const json& state) {
  if (state.contains("config") && state["config"].is_object()) {
    const json& g = state["config"].value("global_batch_size", json());
    if (g.is_number_integer() && g.get<int64_t>() > 0) return g.get<int64_t>();
  }
  return 64;
}

void CheckSplitExists(const std::string& data, const std::string& split) {
  if (!fs::is_directory(data)) NotFound(data + ": dataset directory not found");
  const fs::path meta = fs::path(data) / split / "dataset.json";
  if (!fs::exists(meta)) NotFound(data + ": no '" + split + "' split (" + meta.string() + " not found)");
}

}  // namespace

model::Metrics EvaluateBatch(model::Trm& model, const model::Batch& batch) {
  torch::NoGradGuard no_grad;
  model::Carry carry = model->InitialCarry(batch);
  model::StepOutput out;
  for (int64_t k = 0; k < model->config().halt_max_steps; ++k) {
    out = model->forward(carry, batch);
    carry = out.carry;
  }
  return out.metrics;
}

void CheckDatasetFits(const data::DatasetMeta& meta, const std::string& split_dir, const model::ArchConfig& arch,
                      const json& state, const std::string& checkpoint_dir) {
  auto mismatch = [&](const std::string& field, int64_t dataset_value, int64_t checkpoint_value) {
    InvalidArgument(split_dir + ": " + field + " " + std::to_string(dataset_value) + " does not match the checkpoint's " +
                    std::to_string(checkpoint_value) + " (" + checkpoint_dir + "): evaluate on data built with the " +
                    "tokenizer and row length the model was trained with");
  };
  if (meta.vocab_size != arch.vocab_size) mismatch("vocab_size", meta.vocab_size, arch.vocab_size);
  if (meta.seq_len != arch.seq_len) mismatch("seq_len", meta.seq_len, arch.seq_len);
  if (state.contains("data") && state["data"].is_object()) {
    const json& pad = state["data"].value("pad_id", json());
    if (pad.is_number_integer() && pad.get<int64_t>() != meta.pad_id) mismatch("pad_id", meta.pad_id, pad.get<int64_t>());
  }
}

int EvalExitCode(const Error& e) {
  const Code c = e.code();
  const bool bad_input = c == Code::kInvalidArgument || c == Code::kNotFound || c == Code::kDataLoss ||
                         c == Code::kOutOfRange || c == Code::kFailedPrecondition;
  return bad_input ? kExitBadInput : kExitError;
}

json CheckpointEvalResult::ToJson() const {
  return {{"checkpoint", checkpoint}, {"data", data}, {"split", split}, {"rows", rows}, {"metrics", metrics}};
}

CheckpointEvalResult EvaluateCheckpoint(const CheckpointEvalOptions& o) {
  if (o.batch_size < 0) InvalidArgument("batch size: must be positive, got " + std::to_string(o.batch_size));
  CheckSplitExists(o.data, o.split);
  InferenceModel m = LoadInferenceModel(o.checkpoint, o.device, o.dtype);
  // The LM head and its loss in row blocks, as the trainer evaluates: no [B, S, V] logits (400 MB
  // for a batch of 8 chat rows), same sums up to float rounding.
  m.model->SetFusedHead(true);
  data::BatchConfig bc;
  bc.global_batch = o.batch_size > 0 ? o.batch_size : DefaultBatch(m.state);
  bc.shuffle = false;
  bc.drop_last = false;
  data::BatchIterator it = data::BatchIterator::Open({o.data}, o.split, bc);
  const std::string split_dir = (fs::path(o.data) / o.split).string();
  CheckDatasetFits(it.meta(), split_dir, m.model->config(), m.state, m.checkpoint_dir);
  if (it.total_rows() == 0) InvalidArgument(split_dir + ": the split has no rows");
  const torch::Device dev = m.model->parameters().front().device();
  std::map<std::string, double> sums;
  int64_t rows = 0;
  data::Batch b;
  const auto start = std::chrono::steady_clock::now();
  if (o.on_progress) o.on_progress(0, it.total_rows());
  for (int64_t i = 0; i < it.batches_per_epoch(); ++i) {
    it.Next(&b);
    const model::Metrics metrics = EvaluateBatch(m.model, ToModelBatch(b, dev));
    for (const char* name : kSummed) {
      auto found = metrics.find(name);
      if (found != metrics.end()) sums[name] += found->second.to(torch::kFloat64).item<double>();
    }
    rows += b.rows;
    if (o.on_progress) o.on_progress(rows, it.total_rows());
  }

  CheckpointEvalResult r;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  r.checkpoint = m.checkpoint_dir;
  r.data = o.data;
  r.split = o.split;
  r.rows = rows;
  const double count = sums["count"];
  const double divisor = std::max(1.0, count);  // as the trainer divides
  for (const auto& [name, out] : {std::pair<const char*, const char*>{"lm_loss", key::kLmLoss},
                                  {"q_halt_loss", key::kQHaltLoss},
                                  {"accuracy", key::kAccuracy},
                                  {"exact_accuracy", key::kExactAccuracy},
                                  {"q_halt_accuracy", key::kQHaltAccuracy},
                                  {"steps", "steps"}}) {
    r.metrics[out] = sums[name] / divisor;
  }
  r.metrics[key::kCount] = count;
  r.metrics["token_loss"] = sums["token_loss_sum"] / std::max(1.0, sums["tokens"]);
  r.metrics["perplexity"] = std::exp(r.metrics["token_loss"]);
  return r;
}

}  // namespace trm::worker
