#include "trm/worker/trainer.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>

#include <fmt/ranges.h>

#include "checkpoint_sync.h"
#include "grad_reducer.h"
#include "model_batch.h"
#include "progress.h"
#include "rank_agreement.h"
#include "trm/common/cpu_features.h"
#include "trm/common/error.h"
#include "trm/common/file_util.h"
#include "trm/data/batch_iterator.h"
#include "trm/data/build_info.h"
#include "trm/model/trm.h"
#include "trm/worker/checkpoint.h"
#include "trm/worker/collective.h"
#include "trm/worker/evaluation.h"
#include "trm/worker/flat_params.h"
#include "trm/worker/optimizer.h"

namespace trm::worker {
namespace {

namespace fs = std::filesystem;
namespace key = metric_key;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

// Order of the per-step metric sums kept on the device (one host sync per optimiser step).
// The last two entries ride along in the same all-reduce: rows processed, and how many ranks
// were asked to stop (so every rank stops after the same step).
enum MetricIndex { kLmLoss, kQHaltLoss, kQContinueLoss, kCount, kAccuracy, kExact, kQHaltAcc, kSteps, kRows, kStop, kNumMetrics };
// The model's names for them (model::Metrics).
const char* const kMetricNames[kNumMetrics] = {"lm_loss",         "q_halt_loss", "q_continue_loss", "count",
                                               "accuracy",        "exact_accuracy", "q_halt_accuracy", "steps",
                                               "rows",            "stop"};

torch::Device PickDevice(const std::string& want, int index) {
  if (want == "cuda" || (want == "auto" && torch::cuda::is_available())) {
    if (!torch::cuda::is_available()) InvalidArgument("config key device: cuda requested but no CUDA device is available");
    return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  return torch::Device(torch::kCPU);
}

at::Tensor StackMetrics(const model::Metrics& m, const at::Tensor& like) {
  std::vector<at::Tensor> v;
  v.reserve(kNumMetrics);
  for (int i = 0; i < kNumMetrics; ++i) {
    auto it = m.find(kMetricNames[i]);
    v.push_back(it == m.end() ? torch::zeros({}, like.options()) : it->second.to(like.options()));
  }
  return torch::stack(v);
}

void WriteLine(std::ofstream* file, const json& line) {
  *file << line.dump() << "\n";
  file->flush();
}

// Evaluation runs the EMA weights (when enabled) with the model in eval mode. The guard puts the
// training weights and train mode back however evaluation ends, an exception included: training
// on after a failed evaluation must not continue from the EMA weights. (Copying back into the
// existing buffer does not allocate; if it failed anyway, nothing could be trusted to continue.)
class EvalWeightsSwap {
 public:
  EvalWeightsSwap(FlatParams* flat, const at::Tensor& ema, model::Trm model) : flat_(flat), model_(std::move(model)) {
    if (ema.defined()) {
      backup_ = flat_->params().clone();
      flat_->params().copy_(ema);
    }
    model_->eval();
  }
  ~EvalWeightsSwap() {
    model_->train();
    if (backup_.defined()) flat_->params().copy_(backup_);
  }
  EvalWeightsSwap(const EvalWeightsSwap&) = delete;
  EvalWeightsSwap& operator=(const EvalWeightsSwap&) = delete;

 private:
  FlatParams* flat_;
  model::Trm model_;
  at::Tensor backup_;  // the training weights while the EMA's are in; undefined without EMA
};

// What one Run() keeps besides the trainer's own state.
struct RunLoop {
  RunLoop(int progress_mode, int64_t log_interval, bool leader) : progress(progress_mode, log_interval, leader) {}
  ProgressReporter progress;
  std::ofstream metrics_file;            // rank 0 only
  std::unique_ptr<GradReducer> reducer;  // data parallel with allreduce_bucket_mb > 0
  data::Batch batch;                     // reused: its buffers are filled in place
  int64_t stop_at = 0;                   // max_steps, or the schedule's end
  int64_t eval_interval = 0;             // epochs; 0 = no evaluation (none asked, or no test rows)
  bool stop = false;                     // cancelled (every rank stops after the same step)
  bool evaluated_last = false;           // the last step was followed by an evaluation
  TrainResult result;
};

}  // namespace

struct Trainer::Impl {
  TrainConfig cfg;
  TrainerOptions opt;
  Collective* comm = nullptr;  // nullptr: one rank
  int rank = 0, world = 1;
  bool leader = true;          // rank 0: writes checkpoints, metrics and logs
  torch::Device device{torch::kCPU};
  std::unique_ptr<data::BatchIterator> train_it;
  model::ArchConfig arch;
  model::Trm model{nullptr};
  std::unique_ptr<FlatParams> flat;
  std::unique_ptr<Optimizer> optimizer;
  at::Tensor ema;  // flat EMA shadow, undefined without EMA
  // ACT exploration's draws (Trm::SetExploration): seeded alike on every rank, saved in checkpoints.
  at::Generator explore_gen;
  model::Carry carry;
  bool have_carry = false;
  int64_t step = 0;
  int64_t skipped = 0;
  int64_t total_steps = 0;
  int64_t batches_consumed = 0;  // micro-batches since the start of training
  std::string tokenizer_dir;
  std::vector<std::string> test_paths;

  // Process-wide settings (seeds, deterministic algorithms) are made before, once per process:
  // ConfigureTrainingProcess (trainer.h).
  Impl(TrainConfig c, TrainerOptions o) : cfg(std::move(c)), opt(std::move(o)) {
    comm = opt.collective;
    if (comm) {
      rank = comm->rank();
      world = comm->world();
      leader = rank == 0;
    }
    device = PickDevice(cfg.device, opt.device_index);
    data::BatchConfig bc;
    bc.global_batch = cfg.global_batch_size;
    bc.seed = static_cast<uint64_t>(cfg.seed);
    bc.rank = rank;
    bc.world = world;
    train_it = std::make_unique<data::BatchIterator>(data::BatchIterator::Open(cfg.data_paths, "train", bc));
    arch = ResolveArch();
    if (comm) RequireSameOnEveryRank(*comm, device, Agreement(), "the run's config or dataset");
    BuildModel();
    total_steps = ScheduleSteps(cfg, train_it->total_rows());
    if (total_steps <= 0) {
      InvalidArgument("config: epochs x training rows (" + std::to_string(train_it->total_rows()) +
                      ") is less than one optimiser step of " +
                      std::to_string(cfg.global_batch_size * cfg.gradient_accumulation_steps) +
                      " rows; lower global_batch_size or raise epochs");
    }
    tokenizer_dir = (fs::path(cfg.data_paths.front()) / "tokenizer").string();
    test_paths = cfg.data_paths_test.empty() ? cfg.data_paths : cfg.data_paths_test;
    if (!cfg.load_checkpoint.empty() || cfg.resume) ResumeOrLoad();
  }

  // The config's arch with what the dataset decides (vocabulary, sequence length) and the batch.
  model::ArchConfig ResolveArch() const {
    const data::DatasetMeta& meta = train_it->meta();
    json a = cfg.arch;
    for (const auto& [key, value] : {std::pair<const char*, int64_t>{"vocab_size", meta.vocab_size},
                                     {"seq_len", meta.seq_len}}) {
      if (a.contains(key) && !a[key].is_null() && a[key] != value) {
        InvalidArgument(std::string("config key arch.") + key + ": " + a[key].dump() + " disagrees with the dataset (" +
                        std::to_string(value) + ", " + cfg.data_paths.front() + ")");
      }
      a[key] = value;
    }
    a["batch_size"] = cfg.global_batch_size;
    if (device.is_cpu() && a.value("forward_dtype", "bfloat16") == "bfloat16" && !HostCpu().native_bf16()) {
      // Without hardware bfloat16 (AVX512_BF16 / AMX) oneDNN emulates it, slower than float32.
      // With it the config's bfloat16 forward runs as on a GPU (float32 master weights,
      // optimizer and loss); docs/performance.md has both dtypes side by side.
      if (leader)
        spdlog::info("forward_dtype bfloat16: this CPU ({}) has no native bfloat16; training in float32",
                     HostCpu().isa());
      a["forward_dtype"] = "float32";
    }
    return model::ArchConfig::FromJson(a, "config arch");
  }

  // The model from the seed alone (on every rank, then rank 0's wins), its flat parameters, the
  // optimiser and the EMA shadow.
  void BuildModel() {
    {
      // The modules' own initialisation draws from LibTorch's default generator, then
      // ResetParameters replaces it from the seed. Building must not consume the training
      // randomness the process seeded (ConfigureTrainingProcess), so the generator is put back.
      auto gen = at::detail::getDefaultCPUGenerator();
      at::Tensor before;
      {
        std::lock_guard<std::mutex> lock(gen.mutex());
        before = gen.get_state();
      }
      model = model::Trm(arch);  // draws, taking the generator's lock
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(before);
    }
    model->ResetParameters(static_cast<uint64_t>(cfg.seed));
    model->SetFusedHead(true);  // no [B, S, V] logits: the trainer only needs the loss and metrics
    model->SetFusedCpuKernels(cfg.fused_cpu_kernels);
    explore_gen = at::detail::createCPUGenerator(static_cast<uint64_t>(cfg.seed));
    const int64_t local = cfg.global_batch_size / world;
    model->SetExploration(explore_gen, cfg.global_batch_size, rank * local);
    model->to(device);
    flat = std::make_unique<FlatParams>(ParamList());
    OptimizerOptions oo;
    oo.kind = cfg.optimizer;
    oo.beta1 = cfg.beta1;
    oo.beta2 = cfg.beta2;
    oo.eps = cfg.adam_eps;
    oo.weight_decay = cfg.weight_decay;
    optimizer = std::make_unique<Optimizer>(flat.get(), oo);
    if (comm) {
      // Every rank starts from rank 0's parameters and buffers, whatever its own init did.
      comm->Broadcast(flat->params(), 0);
      for (auto& [name, t] : model->StateDict())
        if (!t.requires_grad()) comm->Broadcast(t, 0);
    }
    if (cfg.ema) ema = flat->params().clone();
  }

  // resume=true or load_checkpoint=DIR. Rank 0 chooses; every rank loads that same checkpoint,
  // from its own storage when it holds an identical copy, else received from rank 0 (run_dir
  // need not be shared storage).
  void ResumeOrLoad() {
    const bool explicit_load = !cfg.load_checkpoint.empty();
    SyncedCheckpoint ck = SyncCheckpoint(
        comm, device,
        [&] {
          if (explicit_load) {
            VerifyCheckpoint(cfg.load_checkpoint);  // an explicit choice: a failed verification is an error
            return cfg.load_checkpoint;
          }
          // The newest committed checkpoint that verifies; rank 0 owns run_dir, so it quarantines
          // the ones that fail and removes a crashed save's temporary directory.
          return ResumeCheckpoint(cfg.run_dir, /*repair=*/true);
        },
        [&](const std::string& name) {
          return explicit_load ? cfg.load_checkpoint : (fs::path(cfg.run_dir) / name).string();
        },
        cfg.run_dir);
    if (!ck.dir.empty()) Restore(ck.dir);
    if (!ck.scratch.empty()) {
      std::error_code ec;
      fs::remove_all(ck.scratch, ec);
    }
  }

  // What must be alike on every rank (rank_agreement.h): keys that shape the collectives or the
  // result, the resolved model, and the dataset's identity. Paths, threads and logging may differ
  // per machine.
  json Agreement() const {
    const json c = cfg.ToJson();
    json same;
    for (const char* k : {"global_batch_size", "gradient_accumulation_steps", "epochs", "eval_interval",
                          "min_eval_interval", "checkpoint_every_eval", "lr", "lr_min_ratio", "lr_warmup_steps", "beta1",
                          "beta2", "weight_decay", "adam_eps", "optimizer", "ema", "ema_rate", "seed", "grad_clip_norm",
                          "max_steps", "allreduce_bucket_mb", "checkpoint_interval_steps", "fused_cpu_kernels"}) {
      same[k] = c[k];
    }
    same["resumes"] = cfg.resume || !cfg.load_checkpoint.empty();
    same["device"] = device.is_cuda() ? "cuda" : "cpu";
    json content = json::array();
    for (const auto& path : cfg.data_paths) {
      // build.json's digest of the arrays (shards carry their dataset's); "" for reference-built data.
      const std::string digest = data::ContentDigest(path);
      content.push_back(digest);
    }
    const data::DatasetMeta& m = train_it->meta();
    return {{"config", same},
            {"arch", arch.ToJson()},
            {"data",
             {{"train_rows", train_it->total_rows()},
              {"seq_len", m.seq_len},
              {"vocab_size", m.vocab_size},
              {"pad_id", m.pad_id},
              {"content_sha256", content}}}};
  }

  std::vector<std::pair<std::string, at::Tensor>> ParamList() {
    std::vector<std::pair<std::string, at::Tensor>> out;
    for (auto& [name, t] : model->StateDict())
      if (t.requires_grad()) out.emplace_back(name, t);
    return out;
  }

  // Checkpoint I/O ------------------------------------------------------------------------
  // The training randomness is the exploration generator alone (Trm::SetExploration), in the
  // same state on every rank: one state, whatever the world size.
  at::Tensor RngState() {
    std::lock_guard<std::mutex> lock(explore_gen.mutex());
    return explore_gen.get_state();
  }

  void SetRngState(const std::map<std::string, at::Tensor>& t, const std::string& src) {
    auto it = t.find("rng.exploration");
    // Checkpoints written before the exploration generator held each rank's default generator;
    // rank 0's is the exploration stream of a one-rank run (nothing else drew from it).
    if (it == t.end()) it = t.find("rng.rank0.torch_cpu");
    if (it == t.end()) {
      spdlog::warn("{}: no RNG state saved; ACT exploration continues from a fresh seed", src);
      return;
    }
    std::lock_guard<std::mutex> lock(explore_gen.mutex());
    explore_gen.set_state(it->second);
  }

  // Concatenates each rank's `local` (same shape on every rank) along dim 0 in rank order, on
  // every rank: a zero-padded all-reduce, so no shared filesystem is needed.
  at::Tensor GatherRows(const at::Tensor& local) {
    if (!comm) return local;
    const auto type = local.scalar_type();
    at::Tensor wide = local.scalar_type() == torch::kBool || local.scalar_type() == torch::kUInt8 ? local.to(torch::kInt32)
                                                                                                   : local;
    std::vector<int64_t> shape = wide.sizes().vec();
    const int64_t rows = shape[0];
    shape[0] = rows * world;
    at::Tensor full = torch::zeros(shape, wide.options());
    full.narrow(0, rank * rows, rows).copy_(wide);
    comm->AllReduceSum(full);
    return full.to(type);
  }

  CheckpointContents Contents() {
    CheckpointContents c;
    for (auto& [name, t] : model->StateDict()) c.model.emplace_back(name, t);
    if (ema.defined()) {
      // EMA shadow for parameters; buffers (H_init/L_init) are not trained, so they are shared.
      std::map<std::string, at::Tensor> shadow;
      for (size_t i = 0; i < flat->slots().size(); ++i) shadow[flat->slots()[i].name] = flat->View(ema, i);
      for (auto& [name, t] : model->StateDict()) c.ema.emplace_back(name, shadow.count(name) ? shadow[name] : t);
    }
    c.optimizer = optimizer->StateTensors();
    if (have_carry) {
      // The carry of the whole global batch (ranks hold contiguous slices in rank order), so a
      // checkpoint does not depend on how many ranks wrote it.
      c.train_state = {{"carry.z_H", GatherRows(carry.z_H)},
                       {"carry.z_L", GatherRows(carry.z_L)},
                       {"carry.steps", GatherRows(carry.steps)},
                       {"carry.halted", GatherRows(carry.halted)},
                       {"carry.inputs", GatherRows(carry.data.inputs)},
                       {"carry.labels", GatherRows(carry.data.labels)},
                       {"carry.puzzle_identifiers", GatherRows(carry.data.puzzle_identifiers)}};
    }
    c.train_state.emplace_back("rng.exploration", RngState());
    data::IteratorState it = train_it->state();
    c.state = {{"format", "trm-checkpoint-v1"},
               {"step", step},
               {"total_steps", total_steps},
               {"skipped_steps", skipped},
               {"batches_consumed", batches_consumed},
               {"optimizer_step", optimizer->step()},
               {"iterator", {{"epoch", it.epoch}, {"position", it.position}}},
               {"config", cfg.ToJson()},
               // What the model's inputs mean, so an evaluation can refuse a dataset that differs.
               {"data",
                {{"vocab_size", train_it->meta().vocab_size},
                 {"seq_len", train_it->meta().seq_len},
                 {"pad_id", train_it->meta().pad_id},
                 {"ignore_label_id", train_it->meta().ignore_label_id}}}};
    c.arch = arch.ToJson();
    c.tokenizer_dir = tokenizer_dir;
    return c;
  }

  // `dir` was verified already (SyncCheckpoint).
  void Restore(const std::string& dir) {
    LoadedCheckpoint ck = LoadCheckpoint(dir, /*inference_only=*/false, /*verify=*/false);
    const json& st = ck.state;
    CheckResumable(ck, dir);
    model->LoadStateDict(ck.weights, dir + "/weights");
    if (ema.defined()) {
      torch::NoGradGuard g;
      for (size_t i = 0; i < flat->slots().size(); ++i) {
        auto f = ck.model.find(flat->slots()[i].name);
        if (f == ck.model.end()) DataLoss(dir + ": model.safetensors lacks " + flat->slots()[i].name);
        flat->View(ema, i).copy_(f->second);
      }
    }
    optimizer->LoadState(ck.optimizer, st.at("optimizer_step").get<int64_t>(), dir + "/optimizer.safetensors");
    step = st.at("step").get<int64_t>();
    skipped = st.value("skipped_steps", int64_t{0});
    batches_consumed = st.value("batches_consumed", int64_t{0});
    data::IteratorState is;
    is.epoch = st.at("iterator").at("epoch").get<uint64_t>();
    is.position = st.at("iterator").at("position").get<uint64_t>();
    train_it->Restore(is);
    RestoreCarry(ck.train_state, dir);
    SetRngState(ck.train_state, dir);
    if (leader) spdlog::info("resumed from {} at step {}/{}", dir, step, total_steps);
  }

  // The checkpoint's arch must be this run's (but for the batch and exploration); config keys
  // that make the continuation differ from the uninterrupted run are allowed, but said.
  void CheckResumable(const LoadedCheckpoint& ck, const std::string& dir) const {
    model::ArchConfig saved = model::ArchConfig::FromJson(ck.arch, dir + ": arch");
    json mine = arch.ToJson(), theirs = saved.ToJson();
    for (auto it = mine.begin(); it != mine.end(); ++it) {
      if (it.key() == "batch_size" || it.key() == "halt_exploration_prob") continue;
      if (theirs[it.key()] != it.value()) {
        InvalidArgument(dir + ": checkpoint arch." + it.key() + " = " + theirs[it.key()].dump() +
                        " differs from the config's " + it.value().dump());
      }
    }
    if (!ck.state.contains("config")) return;
    const json before = ck.state["config"], now = cfg.ToJson();
    for (const char* k : {"data_paths", "global_batch_size", "gradient_accumulation_steps", "epochs", "lr",
                          "lr_min_ratio", "lr_warmup_steps", "beta1", "beta2", "weight_decay", "optimizer", "ema",
                          "ema_rate", "seed", "grad_clip_norm", "fused_cpu_kernels"}) {
      if (before.contains(k) && before[k] != now[k]) {
        spdlog::warn("resuming with {} = {} (the checkpoint was trained with {}): not an exact continuation", k,
                     now[k].dump(), before[k].dump());
      }
    }
  }

  // This rank's slice of the saved global-batch carry; a fresh carry when there is none or the
  // global batch changed.
  void RestoreCarry(const std::map<std::string, at::Tensor>& ts, const std::string& dir) {
    have_carry = ts.count("carry.z_H") != 0;
    if (have_carry && ts.at("carry.z_H").size(0) != cfg.global_batch_size) {
      spdlog::warn("{}: the saved ACT carry holds {} rows, the global batch is now {}: starting a fresh carry", dir,
                   ts.at("carry.z_H").size(0), cfg.global_batch_size);
      have_carry = false;
    }
    if (!have_carry) return;
    const int64_t local = cfg.global_batch_size / world;
    auto get = [&](const char* n) {
      auto it = ts.find(n);
      if (it == ts.end()) DataLoss(dir + ": train_state lacks " + std::string(n));
      return it->second.narrow(0, rank * local, local).contiguous().to(device);
    };
    carry.z_H = get("carry.z_H").to(model->inner->forward_dtype());
    carry.z_L = get("carry.z_L").to(model->inner->forward_dtype());
    carry.steps = get("carry.steps");
    carry.halted = get("carry.halted");
    carry.data.inputs = get("carry.inputs");
    carry.data.labels = get("carry.labels");
    carry.data.puzzle_identifiers = get("carry.puzzle_identifiers");
  }

  // Collective: every rank calls it; rank 0 writes, the others wait until the checkpoint is
  // durable (so none runs ahead of a checkpoint that may yet fail).
  std::string Save() {
    // Gathering every rank's carry into rank 0's checkpoint is a collective: waiting for peers.
    if (comm) Enter(Phase::kAllReduce);
    CheckpointContents c = Contents();
    Enter(Phase::kCheckpoint);
    std::string dir = (fs::path(cfg.run_dir) / ("step_" + std::to_string(step))).string();
    if (leader) {
      dir = SaveCheckpoint(cfg.run_dir, c, cfg.keep_checkpoints);
      if (opt.hooks.on_checkpoint) opt.hooks.on_checkpoint(dir, step);
    }
    // Waiting for peers is the collective phase, whose budget is short: a peer that hangs here
    // is found as fast as one that hangs in the gradient all-reduce, not after checkpoint's.
    if (comm) {
      Enter(Phase::kAllReduce);
      comm->Barrier();
    }
    return dir;
  }

  // What the rank does now, for the worker's hang detection (trainer.h: on_phase).
  void Enter(Phase phase) {
    if (opt.hooks.on_phase) opt.hooks.on_phase(phase, step);
  }

  // Metrics file (step_metrics.h): one JSON line per step / evaluation. On resume, lines past the
  // checkpoint's step are dropped so the file reads as one uninterrupted run.
  std::ofstream OpenMetricsFile() {
    std::error_code ec;
    fs::create_directories(cfg.run_dir, ec);
    const std::string path = (fs::path(cfg.run_dir) / "metrics.jsonl").string();
    if (fs::exists(path)) {
      std::ifstream in(path);
      std::string line, kept;
      while (std::getline(in, line)) {
        try {
          if (ParseMetricsLine(line, path).step <= step) kept += line + "\n";
        } catch (const Error&) {  // a torn last line from a crash
        }
      }
      WriteFileAtomic(path, kept);
    }
    std::ofstream out(path, std::ios::app);
    if (!out) FileError(path + ": cannot open for appending", errno);
    return out;
  }

  at::Tensor MetricSums() const {
    return torch::zeros({kNumMetrics}, torch::TensorOptions().dtype(torch::kFloat64).device(device));
  }

  // Evaluation -----------------------------------------------------------------------------
  // Test splits that exist and hold rows; evaluation is skipped (and said so once) without any.
  std::vector<std::string> TestPaths() {
    std::vector<std::string> out;
    for (const auto& path : test_paths) {
      if (fs::exists(fs::path(path) / "test" / "dataset.json") && data::DatasetSplit::Open(path, "test").rows() > 0) {
        out.push_back(path);
      }
    }
    return out;
  }

  EvalMetrics Evaluate() {
    Enter(Phase::kEval);
    at::Tensor sums = MetricSums();
    {
      EvalWeightsSwap swap(flat.get(), ema, model);
      torch::NoGradGuard no_grad;
      for (const auto& path : TestPaths()) AddEvalSums(path, &sums);
      if (comm) {
        Enter(Phase::kAllReduce);  // waiting for peers (Save() says why)
        comm->AllReduceSum(sums);
      }
    }
    at::Tensor h = sums.cpu();
    EvalMetrics em;
    em.step = step;
    const double count = std::max(1.0, h[kCount].item<double>());
    em.values[key::kCount] = h[kCount].item<double>();
    em.values[key::kRows] = h[kRows].item<double>();
    for (const auto& [i, name] : {std::pair<int, const char*>{kLmLoss, key::kLmLoss},
                                  {kQHaltLoss, key::kQHaltLoss},
                                  {kAccuracy, key::kAccuracy},
                                  {kExact, key::kExactAccuracy},
                                  {kQHaltAcc, key::kQHaltAccuracy},
                                  {kSteps, key::kActSteps}}) {
      em.values[name] = h[i].item<double>() / count;
    }
    return em;
  }

  // This rank's share of one test split at full ACT depth, added to `sums`.
  void AddEvalSums(const std::string& path, at::Tensor* sums) {
    data::BatchConfig bc;
    bc.global_batch = cfg.global_batch_size;
    bc.shuffle = false;
    bc.drop_last = false;
    bc.rank = rank;
    bc.world = world;
    data::BatchIterator it = data::BatchIterator::Open({path}, "test", bc);
    data::Batch b;
    for (int64_t i = 0; i < it.batches_per_epoch(); ++i) {
      it.Next(&b);
      if (b.rows == 0) continue;  // a short last batch may leave a rank without rows
      *sums += StackMetrics(EvaluateBatch(model, ToModelBatch(b, device)), *sums);
      (*sums)[kRows] += static_cast<double>(b.rows);
    }
  }

  void EvaluateAndLog(RunLoop* loop) {
    EvalMetrics em = Evaluate();
    std::string line = "eval at step " + std::to_string(em.step) + ":";
    for (const auto& [k, v] : em.values) line += fmt::format(" {} {:.4f}", k, v);
    loop->progress.Message(line);
    if (leader) WriteLine(&loop->metrics_file, em.ToJson());
    if (opt.hooks.on_eval) opt.hooks.on_eval(em);
    loop->result.evals.push_back(std::move(em));
  }

  // Training -------------------------------------------------------------------------------
  TrainResult Run() {
    RunLoop loop(opt.progress, cfg.log_interval, leader);
    StartRun(&loop);
    while (step < loop.stop_at && !loop.stop) {
      if (!comm && opt.cancel && opt.cancel->load()) {  // one rank: stop at once
        loop.stop = true;
        break;
      }
      Report(TrainStep(&loop), &loop);
      bool checkpoint = cfg.checkpoint_interval_steps > 0 && step % cfg.checkpoint_interval_steps == 0;
      loop.evaluated_last = EvaluationDue(loop);
      if (loop.evaluated_last) {
        EvaluateAndLog(&loop);
        checkpoint = checkpoint || cfg.checkpoint_every_eval;
      }
      if (checkpoint) loop.result.last_checkpoint = Save();
    }
    return FinishRun(&loop);
  }

  int64_t BatchesPerEpoch() const { return std::max<int64_t>(1, train_it->batches_per_epoch()); }

  void StartRun(RunLoop* loop) {
    if (leader) loop->metrics_file = OpenMetricsFile();
    loop->stop_at = StepsToRun(cfg, train_it->total_rows());
    loop->progress.Message(fmt::format(
        "training {} parameters for {} steps ({} epochs of {} rows, batch {} x {} accumulation, {} rank{}) on {}",
        flat->numel(), total_steps, cfg.epochs, train_it->total_rows(), cfg.global_batch_size,
        cfg.gradient_accumulation_steps, world, world > 1 ? "s" : "", device.str()));
    if (comm && cfg.allreduce_bucket_mb > 0) {
      loop->reducer =
          std::make_unique<GradReducer>(flat.get(), comm, static_cast<int64_t>(cfg.allreduce_bucket_mb * (1 << 20)));
      if (loop->reducer->buckets() > 1)
        loop->progress.Message(fmt::format("gradients summed in {} buckets of up to {} MiB, overlapped with backward",
                                           loop->reducer->buckets(), cfg.allreduce_bucket_mb));
    }
    model->train();
    loop->eval_interval = cfg.eval_interval;
    if (loop->eval_interval > 0 && TestPaths().empty()) {
      loop->progress.Message("no test rows in " + fmt::format("{}", fmt::join(test_paths, ", ")) +
                             ": evaluation skipped");
      loop->eval_interval = 0;
    }
  }

  // One optimiser step: the micro-batches' gradients, their sums over ranks, the update.
  StepMetrics TrainStep(RunLoop* loop) {
    const auto t0 = Clock::now();
    flat->ZeroGrad();
    at::Tensor sums = AccumulateGradients(loop);
    if (opt.cancel && opt.cancel->load()) sums[kStop] += 1.0;
    StepMetrics m;
    if (comm) SumOverRanks(loop->reducer.get(), &sums, &m);
    m.grad_norm = flat->grads().norm().item<double>();
    m.lr = CosineScheduleLr(step + 1, cfg.lr, cfg.lr_warmup_steps, total_steps, cfg.lr_min_ratio);
    m.skipped = !Update(m.grad_norm, m.lr);
    ++step;
    at::Tensor h = sums.cpu();
    loop->stop = h[kStop].item<double>() > 0;
    FillFromSums(h, &m);
    m.step_s = std::chrono::duration<double>(Clock::now() - t0).count();
    m.tokens_per_s = h[kRows].item<double>() / std::max(m.step_s, 1e-9);
    return m;
  }

  // gradient_accumulation_steps micro-batches forward and backward, the ACT carry kept across
  // batches; returns their metric sums.
  at::Tensor AccumulateGradients(RunLoop* loop) {
    const int64_t accum = cfg.gradient_accumulation_steps;
    // The reference scales the summed loss by 1 / global batch; with every rank's gradients
    // summed, N ranks of b rows equal one rank of N*b rows.
    const double loss_scale = 1.0 / static_cast<double>(cfg.global_batch_size * accum);
    at::Tensor sums = MetricSums();
    data::Batch& batch = loop->batch;
    for (int64_t micro = 0; micro < accum; ++micro) {
      if (loop->reducer && micro == accum - 1) loop->reducer->Arm();  // this backward's gradients are final
      Enter(Phase::kData);
      train_it->Next(&batch);
      ++batches_consumed;
      Enter(Phase::kCompute);
      model::Batch mb = ToModelBatch(batch, device);
      if (!have_carry) {
        carry = model->InitialCarry(mb);
        have_carry = true;
      }
      model::StepOutput out = model->forward(carry, mb);
      (out.loss * loss_scale).backward();
      carry = out.carry;
      sums += StackMetrics(out.metrics, sums);
      sums[kRows] += static_cast<double>(batch.rows * batch.seq_len);
    }
    return sums;
  }

  // Data parallel: the gradients and the metric sums over every rank.
  void SumOverRanks(GradReducer* reducer, at::Tensor* sums, StepMetrics* m) {
    Enter(Phase::kAllReduce);
    const auto a0 = Clock::now();
    if (reducer) {
      reducer->Finish();  // the buckets backward did not already start, then all of them
      m->allreduce_overlapped = static_cast<int64_t>(reducer->overlapped());
    } else {
      comm->AllReduceSum(flat->grads());  // one flat bucket: every gradient in a single call
    }
    comm->AllReduceSum(*sums);
    m->allreduce_s = std::chrono::duration<double>(Clock::now() - a0).count();
    Enter(Phase::kCompute);
  }

  // Clipping, the optimiser and the EMA; false (and nothing changed) when the gradients are not
  // finite.
  bool Update(double grad_norm, double lr) {
    if (!std::isfinite(grad_norm)) {
      ++skipped;
      return false;
    }
    at::Tensor& grads = flat->grads();
    if (cfg.grad_clip_norm > 0 && grad_norm > cfg.grad_clip_norm) grads.mul_(cfg.grad_clip_norm / (grad_norm + 1e-6));
    optimizer->Step(lr);
    if (ema.defined()) ema.lerp_(flat->params(), 1.0 - cfg.ema_rate);
    return true;
  }

  // The step's metrics from its sums over every row of the global batch (h on the host).
  void FillFromSums(const at::Tensor& h, StepMetrics* m) const {
    const double rows = static_cast<double>(cfg.global_batch_size * cfg.gradient_accumulation_steps);
    const double count = std::max(1.0, h[kCount].item<double>());
    m->step = step;
    m->total_steps = total_steps;
    m->epoch = static_cast<double>(batches_consumed) / static_cast<double>(BatchesPerEpoch());
    m->lm_loss = h[kLmLoss].item<double>() / rows;
    m->q_halt_loss = h[kQHaltLoss].item<double>() / rows;
    m->q_continue_loss = h[kQContinueLoss].item<double>() / rows;
    m->accuracy = h[kAccuracy].item<double>() / count;
    m->exact_accuracy = h[kExact].item<double>() / count;
    m->q_halt_accuracy = h[kQHaltAcc].item<double>() / count;
    m->act_steps = h[kSteps].item<double>() / count;
    m->halted_rows = h[kCount].item<double>();
    m->skipped_total = skipped;
  }

  // The step's metrics to the progress display, metrics.jsonl (rank 0) and the hook.
  void Report(const StepMetrics& m, RunLoop* loop) {
    loop->result.last = m;
    loop->progress.Step(m);
    if (leader) WriteLine(&loop->metrics_file, m.ToJson());
    if (opt.hooks.on_step) opt.hooks.on_step(m);
  }

  // Evaluation every eval_interval epochs (the reference's cadence), checkpoints with it.
  bool EvaluationDue(const RunLoop& loop) const {
    const int64_t bpe = BatchesPerEpoch();
    const int64_t epochs_before = (batches_consumed - cfg.gradient_accumulation_steps) / bpe;
    const int64_t epochs_now = batches_consumed / bpe;
    return loop.eval_interval > 0 && epochs_now != epochs_before && epochs_now % loop.eval_interval == 0 &&
           epochs_now >= cfg.min_eval_interval;
  }

  // After the loop: the final evaluation when the schedule ended without one, and a checkpoint
  // of the last step unless it has one (or a cancel asked for none).
  TrainResult FinishRun(RunLoop* loop) {
    TrainResult& result = loop->result;
    result.cancelled = loop->stop && step < loop->stop_at;
    loop->progress.Finish();
    const bool finished = step >= total_steps;
    if (finished && loop->eval_interval > 0 && !loop->evaluated_last && !result.cancelled) EvaluateAndLog(loop);
    const bool saved_now = !result.last_checkpoint.empty() &&
                           result.last_checkpoint == (fs::path(cfg.run_dir) / ("step_" + std::to_string(step))).string();
    if (step > 0 && !saved_now && (!result.cancelled || opt.checkpoint_on_cancel)) result.last_checkpoint = Save();
    result.steps = step;
    result.skipped_steps = skipped;
    if (leader) {
      spdlog::info("{} at step {}/{}; checkpoint {}", result.cancelled ? "cancelled" : "stopped", step, total_steps,
                   result.last_checkpoint.empty() ? "(none)" : result.last_checkpoint);
    }
    return std::move(result);
  }
};

Trainer::Trainer(TrainConfig config, TrainerOptions options)
    : impl_(std::make_unique<Impl>(std::move(config), std::move(options))) {}
Trainer::~Trainer() = default;
TrainResult Trainer::Run() { return impl_->Run(); }
EvalMetrics Trainer::Evaluate() { return impl_->Evaluate(); }
std::string Trainer::SaveCheckpointNow() { return impl_->Save(); }
std::vector<std::pair<std::string, at::Tensor>> Trainer::Weights() const { return impl_->model->StateDict(); }
int64_t Trainer::step() const { return impl_->step; }
int64_t Trainer::total_steps() const { return impl_->total_steps; }
const TrainConfig& Trainer::config() const { return impl_->cfg; }

}  // namespace trm::worker
