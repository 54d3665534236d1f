// Single node: nothing to agree with anyone, so every call answers at once.
#include "net.h"
#include "rendezvous.h"

namespace trm::launch {
namespace {

class LocalRendezvous final : public Rendezvous {
 public:
  explicit LocalRendezvous(const LaunchOptions& o) : addr_(o.rdzv_host.empty() ? "127.0.0.1" : o.rdzv_host) {}

  std::string master_addr() const override { return addr_; }
  GenerationInfo StartGeneration(int from, int restarts, const GiveUp&) override {
    failure_.reset();
    done_ = false;
    GenerationInfo g;
    g.generation = from;
    g.master_port = PickFreePort();
    g.members = {0};
    g.restarts = restarts;
    return g;
  }
  void ReportFailure(const Failure& f) override {
    if (f.abort) abort_ = true;
    if (!failure_) failure_ = f;
  }
  void ReportDone(int) override { done_ = true; }
  GenerationView Poll(int) override { return {failure_, done_ && !failure_}; }
  GenerationEnd EndGeneration(int, const GiveUp&) override { return {failure_, abort_}; }
  void Finish(const GiveUp&, bool) override {}

 private:
  std::string addr_;
  std::optional<Failure> failure_;
  bool done_ = false;
  bool abort_ = false;
};

}  // namespace

std::unique_ptr<Rendezvous> MakeLocalRendezvous(const LaunchOptions& options) {
  return std::make_unique<LocalRendezvous>(options);
}

}  // namespace trm::launch
