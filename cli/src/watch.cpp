// trmctl watch / logs: a job's events as a human follows them (state lines, one live progress
// line, checkpoints, logs) or as JSON lines for scripts.
#include <google/protobuf/util/json_util.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <optional>

#include "format.h"
#include "internal.h"
#include "trm/cli/commands.h"
#include "trm/rpc/client.h"
#include "trm/worker/step_metrics.h"

namespace trm::cli {

namespace {

using Clock = std::chrono::steady_clock;

// Permanent lines plus one progress line: redrawn in place on a terminal, else printed at most
// once per interval (the newest one held back is printed before the next notable line / at the
// end, so the last state is never lost).
class ProgressView {
 public:
  ProgressView(const Io& io, milliseconds interval, int64_t log_interval)
      : io_(io), interval_(interval), log_interval_(log_interval) {}

  void Line(const std::string& text, bool flush_progress = true) {
    std::ostream& out = *io_.out;
    if (io_.out_is_tty) {
      if (!shown_.empty()) out << "\r\033[K";
      out << text << '\n';
      if (!shown_.empty()) out << shown_;
    } else {
      if (flush_progress) FlushPending();
      out << text << '\n';
    }
    out.flush();
  }

  void Progress(const std::string& text, int64_t step) {
    std::ostream& out = *io_.out;
    if (io_.out_is_tty) {
      shown_ = text;
      out << '\r' << text << "\033[K";
      out.flush();
      return;
    }
    const auto now = Clock::now();
    const bool hold = log_interval_ > 0 ? step % log_interval_ != 0 : last_ && now - *last_ < interval_;
    if (hold) {
      pending_ = text;
      return;
    }
    last_ = now;
    pending_.clear();
    out << text << '\n';
    out.flush();
  }

  void Finish() {
    if (io_.out_is_tty && !shown_.empty()) {
      *io_.out << '\n';
      shown_.clear();
    }
    FlushPending();
    io_.out->flush();
  }

 private:
  void FlushPending() {
    if (pending_.empty()) return;
    *io_.out << pending_ << '\n';
    pending_.clear();
    last_ = Clock::now();
  }

  Io io_;
  milliseconds interval_;
  int64_t log_interval_;
  std::string shown_;    // the progress line currently on the terminal
  std::string pending_;  // a throttled progress line not printed yet
  std::optional<Clock::time_point> last_;
};

// Steps per second from the event timestamps (server clock, so replayed history gives the rate
// the job really had), measured from the first metrics of the current attempt.
class RateMeter {
 public:
  void Reset() { first_ = false; }
  std::optional<double> Add(int64_t step, int64_t time_ms) {
    if (!first_) {
      first_ = true;
      step0_ = step;
      t0_ = time_ms;
      return std::nullopt;
    }
    if (time_ms <= t0_ || step <= step0_) return std::nullopt;
    return (step - step0_) * 1000.0 / static_cast<double>(time_ms - t0_);
  }

 private:
  bool first_ = false;
  int64_t step0_ = 0, t0_ = 0;
};

std::string ProgressText(const v1::StepMetrics& m, std::optional<double> steps_per_s) {
  std::string s = "step " + std::to_string(m.step());
  if (m.total_steps() > 0) {
    char pct[16];
    std::snprintf(pct, sizeof pct, " (%.0f%%)", 100.0 * m.step() / m.total_steps());
    s += "/" + std::to_string(m.total_steps()) + pct;
  }
  const auto& v = m.values();
  if (auto it = v.find(worker::metric_key::kLmLoss); it != v.end()) s += "  loss " + FormatNumber(it->second);
  if (auto it = v.find(worker::metric_key::kTokensPerS); it != v.end()) s += "  " + FormatNumber(it->second) + " tok/s";
  if (!steps_per_s) {
    if (auto it = v.find(worker::metric_key::kStepS); it != v.end() && it->second > 0) steps_per_s = 1.0 / it->second;
  }
  if (m.total_steps() > m.step() && steps_per_s && *steps_per_s > 0)
    s += "  ETA " + FormatDuration((m.total_steps() - m.step()) / *steps_per_s);
  return s;
}

std::string StripNewline(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

std::string LogText(const v1::LogLine& l) { return "[rank " + std::to_string(l.rank()) + "] " + StripNewline(l.text()); }

}  // namespace

std::string EventJson(const v1::JobEvent& event) {
  google::protobuf::util::JsonPrintOptions opt;
  opt.preserve_proto_field_names = true;
  std::string text;
  google::protobuf::util::MessageToJsonString(event, &text, opt);
  // proto3 JSON writes 64-bit integers as strings; scripts compare seq numerically.
  nlohmann::json j = nlohmann::json::parse(text);
  j["seq"] = event.seq();
  j["time_unix_ms"] = event.time_unix_ms();
  return j.dump();
}

int Watch(v1::JobService::StubInterface* jobs, const WatchOptions& o, const Io& io) {
  ProgressView view(io, o.progress_interval, o.log_interval);
  RateMeter rate;
  v1::StateChange final_state;
  bool ended = false;
  FollowJobEvents(jobs, o.job_id, o.follow, [&](const v1::JobEvent& ev) {
    if (ev.has_state() && IsTerminal(ev.state().state())) {
      final_state = ev.state();
      ended = true;
    }
    if (o.events_json) {
      *io.out << EventJson(ev) << '\n';
      io.out->flush();
      return !ended;
    }
    const std::string when = FormatTime(ev.time_unix_ms());
    if (ev.has_state()) {
      const auto& st = ev.state();
      rate.Reset();
      std::string line = when + "  " + StateName(st.state());
      if (st.attempt() > 0) line += " (attempt " + std::to_string(st.attempt()) + ")";
      if (!st.message().empty()) line += ": " + st.message();
      view.Line(line);
    } else if (ev.has_metrics()) {
      const auto& m = ev.metrics();
      if (m.eval()) view.Line(when + "  eval at step " + std::to_string(m.step()) + ": " + CompactMetrics(m.values()));
      else view.Progress(ProgressText(m, rate.Add(m.step(), ev.time_unix_ms())), m.step());
    } else if (ev.has_checkpoint()) {
      const auto& c = ev.checkpoint();
      view.Line(when + "  checkpoint " + c.name() + " (" + FormatBytes(c.size_bytes()) + ") " +
                CompactMetrics(c.metrics()));
    } else if (ev.has_log()) {
      view.Line(LogText(ev.log()), /*flush_progress=*/false);
    }
    return !ended;
  });
  view.Finish();
  if (!ended) return 1;  // only reachable with follow = false
  if (final_state.state() == v1::JOB_SUCCEEDED) return 0;
  *io.err << "job " << o.job_id << " " << StateName(final_state.state())
          << (final_state.message().empty() ? "" : ": " + final_state.message()) << '\n';
  return 1;
}

void Logs(v1::JobService::StubInterface* jobs, const std::string& job_id, const FollowOptions& options,
          const Io& io) {
  FollowOptions o = options;
  o.include_logs = true;
  FollowJobEvents(jobs, job_id, o, [&](const v1::JobEvent& ev) {
    if (ev.has_log()) *io.out << LogText(ev.log()) << '\n';
    if (ev.has_state() && IsTerminal(ev.state().state())) return false;
    return true;
  });
  io.out->flush();
}

// The job's log_interval from its resolved config; 0 when the job cannot be read or has none
// (the watch then paces its lines by time, and reports a missing job itself).
int64_t JobLogInterval(const Context& ctx, const std::string& job_id) {
  v1::GetJobRequest req;
  req.set_job_id(job_id);
  grpc::ClientContext c;
  rpc::SetDeadline(&c, ctx.timeout);
  v1::Job j;
  if (!ctx.jobs()->GetJob(&c, req, &j).ok()) return 0;
  const nlohmann::json cfg = nlohmann::json::parse(j.resolved_config_json(), nullptr, /*allow_exceptions=*/false);
  if (!cfg.is_object()) return 0;
  const nlohmann::json& v = cfg.value("log_interval", nlohmann::json());
  return v.is_number_integer() && v.get<int64_t>() > 0 ? v.get<int64_t>() : 0;
}

int RunWatch(const Args& args, const Context& ctx) {
  args.ExpectPositional(1, "JOB");
  WatchOptions o;
  o.job_id = args.positional()[0];
  o.follow.include_logs = args.Has("--logs");
  o.follow.after_seq = static_cast<uint64_t>(args.GetInt("--after-seq", 0, 0, 2147483647));
  o.follow.reconnect = std::chrono::seconds(args.GetInt("--reconnect-s", 120, 0, 86400));
  o.events_json = args.Has("--events");
  if (!ctx.io.out_is_tty && !o.events_json) o.log_interval = JobLogInterval(ctx, o.job_id);
  return Watch(ctx.jobs(), o, ctx.io);
}

int RunLogs(const Args& args, const Context& ctx) {
  args.ExpectPositional(1, "JOB");
  FollowOptions o;
  o.follow = args.Has("--follow");
  o.reconnect = std::chrono::seconds(args.GetInt("--reconnect-s", 120, 0, 86400));
  if (!o.follow) o.stream_deadline = std::max<milliseconds>(ctx.timeout, std::chrono::minutes(10));
  Logs(ctx.jobs(), args.positional()[0], o, ctx.io);
  return 0;
}

}  // namespace trm::cli
