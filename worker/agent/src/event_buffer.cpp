#include "event_buffer.h"

#include <algorithm>

namespace trm::agent {

void EventBuffer::AddLog(int rank, const std::string& line) {
  std::lock_guard<std::mutex> lock(mu_);
  Bucket& b = buckets_[rank];
  const auto now = std::chrono::steady_clock::now();
  if (b.tokens < 0) {
    b.tokens = lim_.log_burst;
  } else {
    b.tokens = std::min(lim_.log_burst,
                        b.tokens + lim_.log_lines_per_s * std::chrono::duration<double>(now - b.last).count());
  }
  b.last = now;
  if (b.tokens < 1) {
    ++b.dropped;
    return;
  }
  if (b.dropped > 0 && b.tokens >= 2) {
    // Say once that lines are missing and where they are, when there is room again.
    v1::WorkerEvent note;
    note.mutable_log()->set_rank(rank);
    note.mutable_log()->set_text("[trm-worker] " + std::to_string(b.dropped) + " line(s) of rank " +
                                 std::to_string(rank) + " not forwarded (rate limit); see its rank log");
    b.dropped = 0;
    b.tokens -= 1;
    PushLocked(std::move(note));
  }
  b.tokens -= 1;
  v1::WorkerEvent e;
  e.mutable_log()->set_rank(rank);
  if (line.size() > lim_.max_line_bytes) {
    // Cut on a UTF-8 boundary so the text stays a valid proto3 string.
    size_t n = lim_.max_line_bytes;
    while (n > 0 && (static_cast<unsigned char>(line[n]) & 0xC0) == 0x80) --n;
    e.mutable_log()->set_text(line.substr(0, n) + "...");
  } else {
    e.mutable_log()->set_text(line);
  }
  PushLocked(std::move(e));
}

void EventBuffer::Add(v1::WorkerEvent event) {
  std::lock_guard<std::mutex> lock(mu_);
  PushLocked(std::move(event));
}

void EventBuffer::PushLocked(v1::WorkerEvent event) {
  q_.push_back(std::move(event));
  while (q_.size() > lim_.max_events) {
    auto victim = std::find_if(q_.begin(), q_.end(), [](const v1::WorkerEvent& e) { return e.has_log(); });
    if (victim == q_.end())
      victim = std::find_if(q_.begin(), q_.end(), [](const v1::WorkerEvent& e) { return e.has_metrics(); });
    if (victim == q_.end()) break;  // only exits: keep them all
    q_.erase(victim);
    ++dropped_;
  }
}

std::vector<v1::WorkerEvent> EventBuffer::Take(size_t max) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<v1::WorkerEvent> out;
  while (!q_.empty() && out.size() < max) {
    out.push_back(std::move(q_.front()));
    q_.pop_front();
  }
  return out;
}

void EventBuffer::PutBack(std::vector<v1::WorkerEvent> events) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = events.rbegin(); it != events.rend(); ++it) q_.push_front(std::move(*it));
  while (q_.size() > lim_.max_events) {
    auto victim = std::find_if(q_.begin(), q_.end(), [](const v1::WorkerEvent& e) { return !e.has_exit(); });
    if (victim == q_.end()) break;
    q_.erase(victim);
    ++dropped_;
  }
}

size_t EventBuffer::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return q_.size();
}

uint64_t EventBuffer::dropped() const {
  std::lock_guard<std::mutex> lock(mu_);
  return dropped_;
}

}  // namespace trm::agent
