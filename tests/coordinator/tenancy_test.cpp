// One coordinator shared by several users (docs/control-plane.md#security): owners, private
// reads, dataset namespaces (and a fuzzed resolver), keys the service owns, data paths confined
// to the workers' roots, slot quotas and the audit log. No server: the Coordinator directly,
// with the caller it would get from the gRPC edge.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <random>
#include <set>

#include "coordinator_fixture.h"
#include "tenancy.h"

namespace trm::coordinator {
namespace {

const Principal kAlice{"alice", Role::kSubmit};
const Principal kBob{"bob", Role::kSubmit};
const Principal kRoot{"root", Role::kAdmin};

class TenancyTest : public CoordinatorTest {
 protected:
  // A one-file dataset whose content is `text`.
  fs::path Data(const std::string& text) {
    const fs::path dir = root_ / ("data_" + std::to_string(std::hash<std::string>()(text)));
    fs::create_directories(dir / "train");
    std::ofstream(dir / "train" / "rows.txt") << text;
    return dir;
  }
  std::string HashOf(const std::string& text) { return rpc::ContentHash(rpc::BuildManifest(Data(text).string(), "x")); }
  // The content hash a job submitted by `who` with --dataset `ref` trains on.
  std::string Trains(const std::string& ref, const Principal& who) {
    v1::JobSpec s = Spec(1);
    s.clear_data_path();
    s.set_dataset(ref);
    return c_->GetJob(c_->SubmitJob(s, who), who).dataset_hash();
  }
  void Reopen(const std::function<void(CoordinatorOptions*)>& set) {
    c_.reset();
    set(&options_);
    Open();
  }
};

TEST_F(TenancyTest, OnlyTheOwnerOrAnAdminCancels) {
  AddWorker("w1", 4);
  const std::string job = c_->SubmitJob(Spec(1), kAlice);
  EXPECT_EQ(c_->GetJob(job, kBob).owner(), "alice");
  Code code{};
  const std::string why = ErrorOf([&] { c_->CancelJob(job, kBob); }, &code);
  EXPECT_EQ(code, Code::kPermissionDenied);
  EXPECT_NE(why.find("belongs to alice"), std::string::npos) << why;
  EXPECT_NE(c_->GetJob(job).state(), v1::JOB_CANCELLED);
  EXPECT_EQ(c_->CancelJob(job, kAlice).state(), v1::JOB_CANCELLED);
  const std::string other = c_->SubmitJob(Spec(1), kBob);
  EXPECT_EQ(c_->CancelJob(other, kRoot).state(), v1::JOB_CANCELLED);
  // Evaluating someone's checkpoints writes onto their records: theirs (or an admin's) to ask.
  const std::string trained = c_->SubmitJob(Spec(1), kAlice);
  Beat("w1");  // its port, then the placement
  c_->Tick();
  Upload(trained, 1, 5);
  Push(Data("eval rows"), "evalset", kBob);
  v1::JobSpec eval;
  eval.mutable_eval()->set_source_job(trained);
  eval.mutable_eval()->set_dataset("evalset");
  eval.mutable_eval()->set_split("train");
  EXPECT_NE(ErrorOf([&] { c_->SubmitJob(eval, kBob); }, &code).find("belongs to alice"), std::string::npos);
  EXPECT_EQ(code, Code::kPermissionDenied);
  eval.mutable_eval()->set_dataset("bob/evalset");
  EXPECT_EQ(c_->GetJob(c_->SubmitJob(eval, kAlice)).owner(), "alice");
}

TEST_F(TenancyTest, ListsFilterByOwnerAndPrivateReadsHideOthers) {
  AddWorker("w1", 4);
  const std::string a = c_->SubmitJob(Spec(1), kAlice), b = c_->SubmitJob(Spec(1), kBob);
  auto ids = [](const std::vector<v1::Job>& jobs) {
    std::set<std::string> out;
    for (const auto& j : jobs) out.insert(j.id());
    return out;
  };
  EXPECT_EQ(ids(c_->ListJobs({}, 0, kBob)), (std::set<std::string>{a, b}));  // reads are open by default
  EXPECT_EQ(ids(c_->ListJobs({}, 0, kBob, "alice")), (std::set<std::string>{a}));
  Push(Data("alice's"), "ex", kAlice);
  EXPECT_EQ(c_->ListDatasets(kBob).size(), 1u);

  Reopen([](CoordinatorOptions* o) { o->private_reads = true; });
  EXPECT_EQ(ids(c_->ListJobs({}, 0, kBob)), (std::set<std::string>{b}));
  EXPECT_EQ(ids(c_->ListJobs({}, 0, kRoot)), (std::set<std::string>{a, b}));
  Code code{};
  for (const auto& call : std::vector<std::function<void()>>{
           [&] { c_->GetJob(a, kBob); }, [&] { c_->ReadEvents(a, 0, false, 10, kBob); },
           [&] { c_->GetMetrics(a, 0, 0, kBob); }, [&] { c_->ListCheckpoints(a, kBob); },
           [&] { c_->ResolveCheckpoint(a, "latest", false, kBob); }, [&] { c_->CancelJob(a, kBob); }}) {
    const std::string why = ErrorOf(call, &code);
    EXPECT_EQ(code, Code::kNotFound) << why;  // absent, not "someone else's"
    EXPECT_EQ(why.find("alice"), std::string::npos) << why;
  }
  EXPECT_TRUE(c_->ListDatasets(kBob).empty());
  EXPECT_EQ(c_->ListDatasets(kRoot).size(), 1u);
  EXPECT_EQ(ErrorOf([&] { Trains("alice/ex", kBob); }, &code).find("alice's"), std::string::npos);
  EXPECT_EQ(code, Code::kNotFound);
  EXPECT_EQ(Trains("alice/ex", kRoot), HashOf("alice's"));
}

TEST_F(TenancyTest, DatasetNamesLivePerOwner) {
  AddWorker("w1", 4);
  Push(Data("alice v1"), "ex", kAlice);
  Push(Data("bob's"), "ex", kBob);  // must not change what alice's ex means
  EXPECT_EQ(Trains("ex", kAlice), HashOf("alice v1"));
  EXPECT_EQ(Trains("ex", kBob), HashOf("bob's"));
  EXPECT_EQ(Trains("alice/ex", kBob), HashOf("alice v1"));
  Code code{};
  std::string why = ErrorOf([&] { Push(Data("bob's evil"), "alice/ex", kBob); }, &code);
  EXPECT_EQ(code, Code::kPermissionDenied);
  EXPECT_NE(why.find("belongs to alice"), std::string::npos) << why;
  EXPECT_EQ(Trains("ex", kAlice), HashOf("alice v1"));
  EXPECT_EQ(Push(Data("alice v2"), "alice/ex", kRoot).owner(), "alice");  // an admin may
  EXPECT_EQ(Trains("ex", kAlice), HashOf("alice v2"));
  // The same content under two owners' names: both keep resolving (one row per content would
  // let the second name replace the first).
  Push(Data("shared"), "one", kAlice);
  Push(Data("shared"), "two", kBob);
  EXPECT_EQ(Trains("one", kAlice), HashOf("shared"));
  EXPECT_EQ(Trains("two", kBob), HashOf("shared"));
  EXPECT_EQ(Trains(HashOf("shared"), kAlice), HashOf("shared"));
  EXPECT_EQ(Trains(HashOf("alice v1").substr(0, 16), kBob), HashOf("alice v1"));
  why = ErrorOf([&] { Trains("one", kBob); }, &code);
  EXPECT_EQ(code, Code::kNotFound);
  EXPECT_NE(why.find("alice/one"), std::string::npos) << why;  // says where the name exists
  // A hex-looking name is its owner's before it is a hash prefix: pushing content whose hash
  // starts with it does not take it over.
  const std::string taken = HashOf("bob's").substr(0, 12);
  Push(Data("alice's hexname"), taken, kAlice);
  EXPECT_EQ(Trains(taken, kAlice), HashOf("alice's hexname"));
  EXPECT_EQ(Trains(taken, kBob), HashOf("bob's"));  // for others it is the content it prefixes
  for (const char* bad : {"a/b/c", "/ex", "alice/", "../ex", "al ice/ex"}) {
    ErrorOf([&] { Trains(bad, kAlice); }, &code);
    EXPECT_EQ(code, Code::kInvalidArgument) << bad;
  }
}

// Random pushes by random users under random names (OWNER/NAME forms included, refused ones
// too) against a model of what each reference must mean after every push.
TEST_F(TenancyTest, FuzzedResolverMatchesTheModel) {
  AddWorker("w1", 1000);
  const std::vector<Principal> users = {kAlice, kBob, kRoot};
  const std::vector<std::string> names = {"ex", "chat", "0123456789abcdef"};  // the last looks like a hash
  std::map<std::pair<std::string, std::string>, std::string> newest;        // (owner, name) -> content
  std::mt19937 rng(7);
  for (int i = 0; i < 40; ++i) {
    const Principal& who = users[rng() % users.size()];
    const std::string name = names[rng() % names.size()];
    const std::string owner = rng() % 3 == 0 ? users[rng() % users.size()].name : who.name;
    const std::string content = "content " + std::to_string(rng() % 8);  // repeats on purpose
    const std::string ref = owner == who.name && rng() % 2 ? name : owner + "/" + name;
    Code code{};
    const std::string why = ErrorOf([&] { Push(Data(content), ref, who); }, &code);
    if (owner != who.name && !who.admin()) {
      EXPECT_EQ(code, Code::kPermissionDenied) << ref << " by " << who.name << ": " << why;
    } else {
      ASSERT_EQ(why, "") << ref << " by " << who.name;
      newest[{owner, name}] = content;
    }
    {
      const Principal& reader = users[rng() % users.size()];
      for (const std::string& n : names) {
        for (const Principal& o : users) {
          auto it = newest.find({o.name, n});
          const std::string qualified = o.name + "/" + n;
          if (it == newest.end()) {
            ErrorOf([&] { Trains(qualified, reader); }, &code);
            EXPECT_EQ(code, Code::kNotFound) << qualified;
            continue;
          }
          EXPECT_EQ(Trains(qualified, reader), HashOf(it->second)) << qualified << " for " << reader.name;
          if (o.name == reader.name) EXPECT_EQ(Trains(n, reader), HashOf(it->second)) << n;
          EXPECT_EQ(Trains(HashOf(it->second), reader), HashOf(it->second));
        }
      }
    }
  }
}

TEST_F(TenancyTest, KeysTheServiceOwnsAreRefusedByName) {
  AddWorker("w1", 4);
  for (const char* ov : {"run_dir=/tmp/elsewhere", "checkpoint_path=/tmp/elsewhere", "load_checkpoint=/x",
                         "resume=true", "data_paths=[/etc]", "data_paths_test=[/etc]", "device=cuda", "~run_dir",
                         "+project_name=p", "run_name=r", "hydra.run.dir=/x", "evaluators=[]", "puzzle_emb_lr=1"}) {
    v1::JobSpec s = Spec(1);
    s.add_overrides(ov);
    Code code{};
    const std::string why = ErrorOf([&] { c_->SubmitJob(s, kAlice); }, &code);
    EXPECT_EQ(code, Code::kInvalidArgument) << ov;
    std::string key = std::string(ov).substr(std::string(ov)[0] == '~' || std::string(ov)[0] == '+' ? 1 : 0);
    key = key.substr(0, std::min(key.find('='), key.find('.')));
    EXPECT_NE(why.find("'" + key + "' is managed by the service"), std::string::npos) << why;
  }
  v1::JobSpec body = Spec(1);
  body.clear_config_name();
  body.set_config_yaml("arch: {hidden_size: 32, num_heads: 2}\nload_checkpoint: /tmp/elsewhere\n");
  Code code{};
  EXPECT_NE(ErrorOf([&] { c_->SubmitJob(body, kAlice); }, &code).find("'load_checkpoint' is managed"), std::string::npos);
  body.set_config_yaml("arch: {hidden_size: 32, num_heads: 2}\ndata_paths_test: [/etc]\n");
  EXPECT_NE(ErrorOf([&] { c_->SubmitJob(body, kAlice); }, &code).find("'data_paths_test' is managed"), std::string::npos);
  // The shipped configs carry them at their neutral values, reference configs the keys the trainer
  // ignores: accepted.
  body.set_config_yaml("arch: {hidden_size: 32, num_heads: 2}\nrun_dir: checkpoints/trm/x\nresume: false\n"
                       "device: auto\ndata_paths: [somewhere]\ndata_paths_test: []\nhydra: {run: {dir: x}}\n"
                       "evaluators: []\n");
  EXPECT_FALSE(c_->SubmitJob(body, kAlice).empty());
}

TEST_F(TenancyTest, DataPathsStayInsideTheWorkersRoots) {
  Reopen([](CoordinatorOptions* o) { o->require_data_roots = true; });
  AddWorker("open", 2);  // no --data-root: takes no data_path job here
  v1::RegisterRequest r;
  r.set_worker_id("rooted");
  r.set_host("127.0.0.1");
  r.set_slots(2);
  r.set_device_kind("cpu");
  for (const char* root : {"/srv/data", "/srv/data", "/mnt/link", "/real/target"}) r.add_data_roots(root);
  c_->Register(r);
  auto submit = [&](const std::string& path, int world = 1) {
    v1::JobSpec s = Spec(world);
    s.set_data_path(path);
    return c_->SubmitJob(s, kAlice);
  };
  Code code{};
  for (const char* outside : {"/etc", "/srv/data/../../etc", "/srv/database", "/srv"}) {
    const std::string why = ErrorOf([&] { submit(outside); }, &code);
    EXPECT_EQ(code, Code::kFailedPrecondition) << outside << ": " << why;
    EXPECT_NE(why.find("--data-root"), std::string::npos) << why;
  }
  ErrorOf([&] { submit("relative/path"); }, &code);
  EXPECT_EQ(code, Code::kInvalidArgument);
  ErrorOf([&] { submit("/srv/data/chat", 4); }, &code);  // the rooted worker has 2 slots
  EXPECT_EQ(code, Code::kFailedPrecondition);
  const std::string in = submit("/srv/data/./chat/");
  EXPECT_EQ(c_->GetJob(in).spec().data_path(), "/srv/data/chat");  // what the worker is sent
  const std::string resolved = submit("/real/target/chat");         // the root as resolved
  for (int i = 0; i < 2; ++i) {  // a heartbeat offers one rendezvous port: one placement each
    Beat("open");
    Beat("rooted");
    c_->Tick();
  }
  for (const std::string& id : {in, resolved}) {
    const v1::Job j = c_->GetJob(id);
    ASSERT_EQ(j.state(), v1::JOB_RUNNING) << id;
    EXPECT_EQ(j.placement(0).worker_id(), "rooted") << id;
  }
  // Without auth (require_data_roots off) a worker without roots reads any path, as before.
  Reopen([](CoordinatorOptions* o) { o->require_data_roots = false; });
  EXPECT_FALSE(submit("/etc").empty());
}

TEST_F(TenancyTest, QuotasHoldJobsBackAndSaySo) {
  Reopen([](CoordinatorOptions* o) {
    o->quota_slots = {{"alice", 2}};
    o->default_quota_slots = 1;
  });
  AddWorker("w1", 8);
  const std::string a1 = c_->SubmitJob(Spec(2), kAlice);
  const std::string a2 = c_->SubmitJob(Spec(1), kAlice);
  const std::string b1 = c_->SubmitJob(Spec(1), kBob), b2 = c_->SubmitJob(Spec(1), kBob);
  for (int i = 0; i < 3; ++i) {  // a heartbeat offers one rendezvous port: one placement each
    Beat("w1");
    c_->Tick();
  }
  EXPECT_EQ(c_->GetJob(a1).state(), v1::JOB_RUNNING);
  EXPECT_EQ(c_->GetJob(b1).state(), v1::JOB_RUNNING);  // alice waiting does not hold bob up
  for (const auto& [id, who, held, of] : std::vector<std::tuple<std::string, std::string, int, int>>{
           {a2, "alice", 2, 2}, {b2, "bob", 1, 1}}) {
    const v1::Job j = c_->GetJob(id);
    EXPECT_EQ(j.state(), v1::JOB_QUEUED) << id;
    EXPECT_NE(j.queue_reason().find(who + " holds " + std::to_string(held) + " of " + std::to_string(of) + " slots"),
              std::string::npos)
        << j.queue_reason();
  }
  Code code{};
  EXPECT_NE(ErrorOf([&] { c_->SubmitJob(Spec(4), kAlice); }, &code).find("could never start"), std::string::npos);
  EXPECT_EQ(code, Code::kFailedPrecondition);
  c_->CancelJob(a1, kAlice);
  Beat("w1", {{b1, 1}});
  c_->Tick();
  EXPECT_EQ(c_->GetJob(a2).state(), v1::JOB_RUNNING);
  EXPECT_EQ(c_->GetJob(a2).queue_reason(), "");
  EXPECT_EQ(c_->GetJob(b2).state(), v1::JOB_QUEUED);
}

TEST_F(TenancyTest, AuditKeepsEntriesUntilTheyAge) {
  auto entry = [](const std::string& who, const std::string& method, const std::string& result) {
    v1::AuditEntry e;
    e.set_principal(who);
    e.set_peer("ipv4:127.0.0.1:1234");
    e.set_method(method);
    e.set_target("job-000001");
    e.set_result(result);
    return e;
  };
  c_->RecordAudit(entry("alice", "SubmitJob", "OK"));
  now_ += 1000;
  c_->RecordAudit(entry("bob", "CancelJob", "PERMISSION_DENIED: job job-000001 belongs to alice"));
  now_ += 1000;
  c_->RecordAudit(entry("", "SubmitJob", "UNAUTHENTICATED: unknown token"));
  auto all = c_->ListAudit(0, "", 0, kRoot);
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[1].principal(), "bob");
  EXPECT_EQ(all[1].time_unix_ms(), 1001000);
  EXPECT_EQ(c_->ListAudit(0, "bob", 0, kRoot).size(), 1u);
  EXPECT_EQ(c_->ListAudit(1001000, "", 0, kRoot).size(), 2u);
  EXPECT_EQ(c_->ListAudit(0, "", 1, kRoot).at(0).principal(), "");  // the newest
  Code code{};
  ErrorOf([&] { c_->ListAudit(0, "", 0, kBob); }, &code);
  EXPECT_EQ(code, Code::kPermissionDenied);
  // Survives a restart; pruned once older than the retention.
  Reopen([](CoordinatorOptions* o) { o->audit_retention_ms = 10 * 60 * 1000 + 1500; });
  EXPECT_EQ(c_->ListAudit(0, "", 0, kRoot).size(), 3u);
  now_ += 10 * 60 * 1000;
  c_->Tick();
  all = c_->ListAudit(0, "", 0, kRoot);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].principal(), "bob");
}

TEST(QuotaFlagTest, ParsesUsersAndTheDefault) {
  const QuotaPolicy q = ParseQuotaSlots("--quota-slots", "alice=4,bob=0,*=2");
  EXPECT_EQ(q.For("alice"), 4);
  EXPECT_EQ(q.For("bob"), 0);
  EXPECT_EQ(q.For("carol"), 2);
  for (const char* bad : {"alice", "alice=", "=3", "alice=-1", "alice=x"})
    EXPECT_THROW(ParseQuotaSlots("--quota-slots", bad), Error) << bad;
}

}  // namespace
}  // namespace trm::coordinator
