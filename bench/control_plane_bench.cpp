// trm-bench control-plane: the coordinator under load, as a separate process on loopback
// (its CPU and memory are read from /proc, apart from the load generator's):
//   1. submit latency: N jobs submitted one after another (p50 / p99);
//   2. W simulated workers heartbeating once a second each (coordinator CPU share, heartbeat
//      latency);
//   3. checkpoint transfer: an M MiB checkpoint uploaded by a worker, then downloaded (MB/s,
//      SHA-256 checked as trmctl pull does);
//   4. load: a job reporting 10 steps (metrics + a log line each) per second while 50 clients
//      watch it and 200 poll its status every second (status latency, events delivered,
//      coordinator CPU and memory).
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "bench.h"
#include "trm/common/error.h"
#include "trm/common/file_util.h"
#include "trm/common/rank_process.h"
#include "trm/common/sha256.h"
#include "trm/rpc/client.h"
#include "trm/rpc/status.h"
#include "trm/rpc/transfer.h"
#include "trm/v1/trm.grpc.pb.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace trm::bench {
namespace {

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

// CPU seconds (user + system) and resident MiB of a process, from /proc.
struct ProcUsage {
  double cpu_s = 0;
  double rss_mb = 0;
};
ProcUsage ReadUsage(pid_t pid) {
  ProcUsage u;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const auto close = s.rfind(')');
  if (close == std::string::npos) return u;
  std::vector<std::string> f;
  std::string tok;
  for (size_t i = close + 2; i <= s.size(); ++i) {
    if (i == s.size() || s[i] == ' ') {
      f.push_back(tok);
      tok.clear();
    } else {
      tok += s[i];
    }
  }
  const double hz = static_cast<double>(::sysconf(_SC_CLK_TCK));
  if (f.size() > 22) {
    u.cpu_s = (std::stod(f[11]) + std::stod(f[12])) / hz;  // utime, stime (fields 14, 15)
    u.rss_mb = std::stod(f[21]) * static_cast<double>(::sysconf(_SC_PAGESIZE)) / (1 << 20);
  }
  return u;
}

template <class Ctx>
void Deadline(Ctx* ctx, int seconds) {
  rpc::SetDeadline(ctx, std::chrono::seconds(seconds));
}

void RegisterWorker(v1::WorkerService::Stub* workers, const std::string& id, int slots) {
  v1::RegisterRequest r;
  r.set_worker_id(id);
  r.set_host("127.0.0.1");
  r.set_slots(slots);
  r.set_device_kind("cpu");
  v1::RegisterResponse resp;
  grpc::ClientContext ctx;
  Deadline(&ctx, 10);
  rpc::ThrowIfFailed(workers->Register(&ctx, r, &resp), "Register");
}

v1::SubmitJobRequest TinyJob(int priority, const std::string& name = "") {
  v1::SubmitJobRequest req;
  req.mutable_spec()->set_config_name("cfg_tiny");
  req.mutable_spec()->set_data_path("/data/bench");
  req.mutable_spec()->set_world_size(1);
  req.mutable_spec()->set_priority(priority);
  req.mutable_spec()->set_name(name);
  return req;
}

std::string Submit(v1::JobService::Stub* jobs, const v1::SubmitJobRequest& req) {
  v1::SubmitJobResponse resp;
  grpc::ClientContext ctx;
  Deadline(&ctx, 10);
  rpc::ThrowIfFailed(jobs->SubmitJob(&ctx, req, &resp), "SubmitJob");
  return resp.job_id();
}

// Heartbeats as `worker` (offering a port so the job can be placed) until the coordinator
// assigns it `job_id`; returns the attempt number.
int AwaitAssignment(v1::WorkerService::Stub* workers, const std::string& worker, const std::string& job_id) {
  for (int i = 0; i < 100; ++i) {
    v1::HeartbeatRequest h;
    h.set_worker_id(worker);
    h.add_free_ports(1);
    v1::HeartbeatResponse resp;
    grpc::ClientContext ctx;
    Deadline(&ctx, 5);
    rpc::ThrowIfFailed(workers->Heartbeat(&ctx, h, &resp), "Heartbeat");
    for (const auto& a : resp.start())
      if (a.job_id() == job_id) return a.attempt();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ThrowError(Code::kDeadlineExceeded, "job " + job_id + " was never placed on " + worker);
}

// Phase 4: one job making progress, many watchers and status pollers.
nlohmann::json LoadPhase(grpc::Channel* ch_raw, pid_t coord_pid, int n_watchers, int n_pollers, int seconds) {
  std::shared_ptr<grpc::Channel> ch(ch_raw, [](grpc::Channel*) {});
  auto jobs = v1::JobService::NewStub(ch);
  auto workers = v1::WorkerService::NewStub(ch);
  RegisterWorker(workers.get(), "bench-load", 1);
  const std::string job_id = Submit(jobs.get(), TinyJob(200));
  const int attempt = AwaitAssignment(workers.get(), "bench-load", job_id);

  std::atomic<bool> stop{false};
  std::atomic<int64_t> emitted{0};
  std::vector<int64_t> received(static_cast<size_t>(n_watchers), 0);
  std::vector<std::thread> threads;
  for (int w = 0; w < n_watchers; ++w) {
    threads.emplace_back([&, w] {
      auto stub = v1::JobService::NewStub(ch);
      grpc::ClientContext ctx;
      Deadline(&ctx, seconds + 60);
      v1::WatchJobRequest q;
      q.set_job_id(job_id);
      q.set_follow(true);
      q.set_include_logs(true);
      auto rd = stub->WatchJob(&ctx, q);
      v1::JobEvent e;
      while (rd->Read(&e)) {
        ++received[static_cast<size_t>(w)];
        if (e.has_state() && e.state().state() == v1::JOB_CANCELLED) break;
      }
      ctx.TryCancel();
      rd->Finish();
    });
  }
  std::mutex mu;
  std::vector<double> lat;
  std::atomic<int64_t> poll_failures{0};
  const auto start = Clock::now();
  for (int p = 0; p < n_pollers; ++p) {
    threads.emplace_back([&, p] {
      auto stub = v1::JobService::NewStub(ch);
      std::vector<double> mine;
      for (int k = 0; !stop.load(); ++k) {
        std::this_thread::sleep_until(start + std::chrono::duration_cast<Clock::duration>(
                                                  std::chrono::duration<double>(k + static_cast<double>(p) / n_pollers)));
        if (stop.load()) break;
        v1::GetJobRequest q;
        q.set_job_id(job_id);
        v1::Job j;
        grpc::ClientContext ctx;
        Deadline(&ctx, 5);
        const auto t0 = Clock::now();
        if (stub->GetJob(&ctx, q, &j).ok()) mine.push_back(Seconds(Clock::now() - t0) * 1000);
        else ++poll_failures;
      }
      std::lock_guard<std::mutex> l(mu);
      lat.insert(lat.end(), mine.begin(), mine.end());
    });
  }
  const ProcUsage u0 = ReadUsage(coord_pid);
  const auto t0 = Clock::now();
  int64_t step = 0;
  double peak_rss = 0;
  while (Clock::now() - t0 < std::chrono::seconds(seconds)) {
    v1::ReportEventsRequest r;
    r.set_worker_id("bench-load");
    r.set_job_id(job_id);
    r.set_attempt(attempt);
    auto* m = r.add_events()->mutable_metrics();
    m->set_step(++step);
    m->set_total_steps(1000000);
    (*m->mutable_values())["lm_loss"] = 1.0 / static_cast<double>(step);
    r.add_events()->mutable_log()->set_text("step " + std::to_string(step) + " done");
    v1::ReportEventsResponse resp;
    grpc::ClientContext ctx;
    Deadline(&ctx, 5);
    if (workers->ReportEvents(&ctx, r, &resp).ok()) emitted += 2;
    if (step % 10 == 0) {
      v1::HeartbeatRequest h;
      h.set_worker_id("bench-load");
      auto* a = h.add_attempts();
      a->set_job_id(job_id);
      a->set_attempt(attempt);
      v1::HeartbeatResponse hr;
      grpc::ClientContext hctx;
      Deadline(&hctx, 5);
      workers->Heartbeat(&hctx, h, &hr);
      peak_rss = std::max(peak_rss, ReadUsage(coord_pid).rss_mb);
    }
    std::this_thread::sleep_until(t0 + std::chrono::milliseconds(100 * step));
  }
  const double wall = Seconds(Clock::now() - t0);
  const ProcUsage u1 = ReadUsage(coord_pid);
  stop = true;
  {
    v1::CancelJobRequest c;
    c.set_job_id(job_id);
    v1::Job j;
    grpc::ClientContext ctx;
    Deadline(&ctx, 10);
    jobs->CancelJob(&ctx, c, &j);
  }
  for (auto& t : threads) t.join();
  // Every watcher must have seen every event the job had when it was cancelled (all of them:
  // submit, start, the reported ones, the cancel).
  int64_t min_rx = received.empty() ? 0 : *std::min_element(received.begin(), received.end());
  std::fprintf(stderr, "load: GetJob p50 %.2f ms p99 %.2f ms under %d watchers, %d pollers; CPU %.1f%%\n",
               Percentile(lat, 0.5), Percentile(lat, 0.99), n_watchers, n_pollers, 100 * (u1.cpu_s - u0.cpu_s) / wall);
  return {{"watchers", n_watchers},
          {"pollers", n_pollers},
          {"seconds", wall},
          {"events_reported", emitted.load()},
          {"min_events_per_watcher", min_rx},
          {"status_polls", lat.size()},
          {"status_failures", poll_failures.load()},
          {"status_p50_ms", Percentile(lat, 0.5)},
          {"status_p99_ms", Percentile(lat, 0.99)},
          {"coordinator_cpu_share", (u1.cpu_s - u0.cpu_s) / wall},
          {"coordinator_rss_mb", std::max(peak_rss, u1.rss_mb)}};
}

}  // namespace

int RunControlPlane(const std::vector<std::string>& args) {
  CheckFlags(args, {"jobs", "workers", "seconds", "mb", "threads", "watchers", "pollers", "load-seconds"});
  const int n_watchers = std::stoi(FlagValue(args, "watchers", "50"));
  const int n_pollers = std::stoi(FlagValue(args, "pollers", "200"));
  const int load_seconds = std::stoi(FlagValue(args, "load-seconds", "15"));
  const int n_jobs = std::stoi(FlagValue(args, "jobs", "1000"));
  const int n_workers = std::stoi(FlagValue(args, "workers", "1000"));
  const int seconds = std::stoi(FlagValue(args, "seconds", "20"));
  const int mb = std::stoi(FlagValue(args, "mb", "256"));
  const int threads = std::stoi(FlagValue(args, "threads", "16"));
  if (n_jobs < 1 || n_workers < 1 || seconds < 1 || mb < 1 || threads < 1) InvalidArgument("all options must be >= 1");

  const fs::path root = fs::temp_directory_path() / ("trm_cp_bench_" + std::to_string(::getpid()));
  fs::remove_all(root);
  fs::create_directories(root);
  SpawnSpec spec;
  spec.path = ExecutableDir() + "/trm-coordinator";
  spec.argv = {spec.path, "--listen", "127.0.0.1:0", "--data-dir", (root / "state").string(), "--port-file",
               (root / "port").string(), "--heartbeat-timeout-s", "600"};
  for (char** e = environ; *e; ++e) spec.env.push_back(*e);
  RankProcess coord(spec);
  std::thread drain_out([fd = coord.TakeStdout()] {
    char b[4096];
    while (::read(fd.get(), b, sizeof(b)) > 0) {
    }
  });
  std::thread drain_err([fd = coord.TakeStderr()] {
    char b[4096];
    while (::read(fd.get(), b, sizeof(b)) > 0) {
    }
  });
  nlohmann::json out;
  try {
    for (int i = 0; i < 300 && !fs::exists(root / "port"); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (!fs::exists(root / "port")) ThrowError(Code::kUnavailable, "trm-coordinator did not start");
    const std::string addr = "127.0.0.1:" + std::to_string(std::stoi(ReadFile((root / "port").string())));
    auto channel = rpc::MakeChannel(addr);
    auto jobs = v1::JobService::NewStub(channel);
    auto workers = v1::WorkerService::NewStub(channel);

    // A worker without free ports gives the jobs slots to be valid against but never runs them.
    RegisterWorker(workers.get(), "bench-holder", 1);

    // 1. Submit latency.
    std::vector<double> lat;
    const ProcUsage u0 = ReadUsage(coord.pid());
    const auto s0 = Clock::now();
    for (int i = 0; i < n_jobs; ++i) {
      const v1::SubmitJobRequest req = TinyJob(0, "bench-" + std::to_string(i));
      const auto t0 = Clock::now();
      Submit(jobs.get(), req);
      lat.push_back(Seconds(Clock::now() - t0) * 1000);
    }
    const double submit_wall = Seconds(Clock::now() - s0);
    const ProcUsage u1 = ReadUsage(coord.pid());
    out["submit"] = {{"jobs", n_jobs},
                     {"p50_ms", Percentile(lat, 0.5)},
                     {"p99_ms", Percentile(lat, 0.99)},
                     {"max_ms", Percentile(lat, 1.0)},
                     {"jobs_per_s", n_jobs / submit_wall},
                     {"coordinator_cpu_s", u1.cpu_s - u0.cpu_s}};
    std::fprintf(stderr, "submit: p50 %.2f ms, p99 %.2f ms\n", Percentile(lat, 0.5), Percentile(lat, 0.99));

    // 2. Heartbeats: each simulated worker once a second, spread evenly over the second.
    for (int i = 0; i < n_workers; ++i) RegisterWorker(workers.get(), "sim-" + std::to_string(i), 1);
    std::atomic<bool> stop{false};
    std::mutex mu;
    std::vector<double> hb_lat;
    std::atomic<int64_t> beats{0}, failures{0};
    const ProcUsage h0 = ReadUsage(coord.pid());
    const auto start = Clock::now();
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        auto stub = v1::WorkerService::NewStub(channel);
        std::vector<double> mine;
        for (int64_t k = 0; !stop.load(); ++k) {
          // Worker w beats at w/n + k seconds; this thread owns workers t, t+threads, ...
          for (int w = t; w < n_workers && !stop.load(); w += threads) {
            const auto due = start + std::chrono::duration_cast<Clock::duration>(
                                         std::chrono::duration<double>(k + static_cast<double>(w) / n_workers));
            std::this_thread::sleep_until(due);
            if (Clock::now() - start > std::chrono::seconds(seconds)) {
              stop = true;
              break;
            }
            v1::HeartbeatRequest h;
            h.set_worker_id("sim-" + std::to_string(w));
            v1::HeartbeatResponse resp;
            grpc::ClientContext ctx;
            Deadline(&ctx, 5);
            const auto t0 = Clock::now();
            if (stub->Heartbeat(&ctx, h, &resp).ok()) {
              mine.push_back(Seconds(Clock::now() - t0) * 1000);
              ++beats;
            } else {
              ++failures;
            }
          }
        }
        std::lock_guard<std::mutex> l(mu);
        hb_lat.insert(hb_lat.end(), mine.begin(), mine.end());
      });
    }
    for (auto& th : pool) th.join();
    const double hb_wall = Seconds(Clock::now() - start);
    const ProcUsage h1 = ReadUsage(coord.pid());
    out["heartbeats"] = {{"workers", n_workers},
                         {"seconds", hb_wall},
                         {"beats_per_s", static_cast<double>(beats) / hb_wall},
                         {"failures", failures.load()},
                         {"p50_ms", Percentile(hb_lat, 0.5)},
                         {"p99_ms", Percentile(hb_lat, 0.99)},
                         {"coordinator_cpu_share", (h1.cpu_s - h0.cpu_s) / hb_wall},
                         {"coordinator_rss_mb", h1.rss_mb},
                         {"queued_jobs", n_jobs}};
    std::fprintf(stderr, "heartbeats: %.0f/s, coordinator CPU %.1f%% of one core\n",
                 static_cast<double>(beats) / hb_wall, 100 * (h1.cpu_s - h0.cpu_s) / hb_wall);

    // 3. Checkpoint upload and download.
    RegisterWorker(workers.get(), "bench-ckpt", 1);
    const std::string job_id = Submit(jobs.get(), TinyJob(100));
    const int attempt = AwaitAssignment(workers.get(), "bench-ckpt", job_id);
    const fs::path ck = root / "step_1";
    fs::create_directories(ck);
    {
      std::mt19937_64 rng(1);
      std::vector<uint64_t> buf((size_t{1} << 20) / 8);
      std::ofstream f(ck / "model.safetensors", std::ios::binary);
      for (int i = 0; i < mb; ++i) {
        for (auto& x : buf) x = rng();
        f.write(reinterpret_cast<const char*>(buf.data()), static_cast<std::streamsize>(buf.size() * 8));
      }
    }
    v1::CheckpointUpload head;
    auto* hdr = head.mutable_header();
    hdr->set_worker_id("bench-ckpt");
    hdr->set_job_id(job_id);
    hdr->set_attempt(attempt);
    hdr->mutable_info()->set_name("step_1");
    hdr->mutable_info()->set_step(1);
    *hdr->mutable_manifest() = rpc::BuildManifest(ck.string(), "step_1");
    const double bytes = static_cast<double>(hdr->manifest().total_bytes());
    auto up0 = Clock::now();
    {
      grpc::ClientContext ctx;
      Deadline(&ctx, 600);
      v1::UploadCheckpointResponse resp;
      auto w = workers->UploadCheckpoint(&ctx, &resp);
      w->Write(head);
      rpc::SendChunks(ck.string(), hdr->manifest(), 0, [&](const v1::Chunk& c) {
        v1::CheckpointUpload m;
        *m.mutable_chunk() = c;
        return w->Write(m);
      });
      w->WritesDone();
      rpc::ThrowIfFailed(w->Finish(), "UploadCheckpoint");
    }
    const double up_s = Seconds(Clock::now() - up0);
    std::vector<double> down;
    for (int rep = 0; rep < 3; ++rep) {
      grpc::ClientContext ctx;
      Deadline(&ctx, 600);
      v1::DownloadCheckpointRequest d;
      d.set_job_id(job_id);
      d.set_selector("latest");
      const auto t0 = Clock::now();
      auto r = jobs->DownloadCheckpoint(&ctx, d);
      v1::TransferMessage msg;
      Sha256 h;
      std::string want;
      uint64_t got = 0;
      while (r->Read(&msg)) {
        if (msg.has_manifest()) want = msg.manifest().files(0).sha256();
        if (msg.has_chunk()) {
          h.Update(msg.chunk().data());
          got += msg.chunk().data().size();
        }
      }
      rpc::ThrowIfFailed(r->Finish(), "DownloadCheckpoint");
      if (got != static_cast<uint64_t>(bytes) || h.HexDigest() != want) DataLoss("download: checksum mismatch");
      down.push_back(bytes / (1 << 20) / Seconds(Clock::now() - t0));
    }
    out["checkpoint"] = {{"mib", bytes / (1 << 20)},
                         {"upload_mib_per_s", bytes / (1 << 20) / up_s},
                         {"download_mib_per_s", Percentile(down, 0.5)},
                         {"download_mib_per_s_runs", down}};
    out["load"] = LoadPhase(channel.get(), coord.pid(), n_watchers, n_pollers, load_seconds);
    out["coordinator_peak_rss_mb"] = ReadUsage(coord.pid()).rss_mb;
  } catch (...) {
    coord.SignalGroup(SIGKILL);
    while (!coord.PollExit()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    coord.Reap();
    drain_out.join();
    drain_err.join();
    fs::remove_all(root);
    throw;
  }
  coord.SignalGroup(SIGTERM);
  for (int i = 0; i < 200 && !coord.PollExit(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  if (!coord.exited()) coord.SignalGroup(SIGKILL);
  while (!coord.PollExit()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  coord.Reap();
  drain_out.join();
  drain_err.join();
  fs::remove_all(root);
  out["bench"] = "control-plane";
  std::printf("%s\n", out.dump().c_str());
  return 0;
}

}  // namespace trm::bench
