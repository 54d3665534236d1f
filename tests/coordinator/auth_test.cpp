// Authentication and TLS at the gRPC edge: every RPC without credentials, with a read-only
// token, with the wrong kind of credential, and over TLS / mutual TLS.
#include "trm/coordinator/auth.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>

#include "trm/common/error.h"
#include "trm/common/sha256.h"
#include "trm/coordinator/server.h"
#include "trm/rpc/client.h"
#include "trm/v1/trm.grpc.pb.h"

namespace fs = std::filesystem;

namespace trm::coordinator {
namespace {

const char* kAdmin = "admin-token-0123456789";
const char* kSubmit = "submit-token-0123456789";
const char* kRead = "read-token-0123456789";
const char* kSecret = "worker-secret-0123456789";

fs::path TempRoot() {
  return fs::temp_directory_path() / ("trm_auth_" + std::to_string(::getpid()) + "_" +
                                      ::testing::UnitTest::GetInstance()->current_test_info()->name());
}

TEST(TokenFileTest, ParsesRolesAndNamesBadLines) {
  const fs::path root = TempRoot();
  fs::create_directories(root);
  const std::string path = (root / "tokens").string();
  std::ofstream(path) << "# users\n" << kAdmin << " admin alice\n\n" << kRead << " read  # bob\n";
  AuthConfig c = LoadTokenFile(path);
  EXPECT_TRUE(c.enabled);
  EXPECT_EQ(c.tokens.at(kAdmin), Role::kAdmin);
  EXPECT_EQ(c.tokens.at(kRead), Role::kRead);
  EXPECT_EQ(c.names.at(kAdmin), "alice");
  std::ofstream(path) << kAdmin << " admin\n" << kRead << " superuser\n";
  try {
    LoadTokenFile(path);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path + ":2"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("superuser"), std::string::npos);
  }
  std::ofstream(path) << "short admin\n";
  EXPECT_THROW(LoadTokenFile(path), Error);
  fs::remove_all(root);
}

// Each RPC once, with whatever request makes it get past authentication.
struct Rpc {
  const char* name;
  bool mutating;  // needs the submit role
  bool worker;    // a WorkerService call
  std::function<grpc::StatusCode(grpc::Channel*)> call;
  bool admin = false;  // needs the admin role
};

template <class Stub>
std::unique_ptr<Stub> Make(grpc::Channel* ch) {
  return std::make_unique<Stub>(std::shared_ptr<grpc::ChannelInterface>(ch, [](grpc::ChannelInterface*) {}));
}

std::vector<Rpc> AllRpcs() {
  auto ctx = [] {
    auto c = std::make_unique<grpc::ClientContext>();
    rpc::SetDeadline(c.get(), std::chrono::seconds(10));
    return c;
  };
  using JS = v1::JobService::Stub;
  using DS = v1::DatasetService::Stub;
  using WS = v1::WorkerService::Stub;
  std::vector<Rpc> r;
  r.push_back({"SubmitJob", true, false, [=](grpc::Channel* ch) {
                 v1::SubmitJobRequest q;
                 v1::SubmitJobResponse a;
                 return Make<JS>(ch)->SubmitJob(ctx().get(), q, &a).error_code();
               }});
  r.push_back({"GetJob", false, false, [=](grpc::Channel* ch) {
                 v1::GetJobRequest q;
                 q.set_job_id("job-000001");
                 v1::Job a;
                 return Make<JS>(ch)->GetJob(ctx().get(), q, &a).error_code();
               }});
  r.push_back({"ListJobs", false, false, [=](grpc::Channel* ch) {
                 v1::ListJobsResponse a;
                 return Make<JS>(ch)->ListJobs(ctx().get(), v1::ListJobsRequest(), &a).error_code();
               }});
  r.push_back({"CancelJob", true, false, [=](grpc::Channel* ch) {
                 v1::CancelJobRequest q;
                 q.set_job_id("job-000001");
                 v1::Job a;
                 return Make<JS>(ch)->CancelJob(ctx().get(), q, &a).error_code();
               }});
  r.push_back({"WatchJob", false, false, [=](grpc::Channel* ch) {
                 v1::WatchJobRequest q;
                 q.set_job_id("job-000001");
                 auto c = ctx();
                 auto rd = Make<JS>(ch)->WatchJob(c.get(), q);
                 v1::JobEvent e;
                 while (rd->Read(&e)) {
                 }
                 return rd->Finish().error_code();
               }});
  r.push_back({"GetMetrics", false, false, [=](grpc::Channel* ch) {
                 v1::GetMetricsRequest q;
                 q.set_job_id("job-000001");
                 v1::GetMetricsResponse a;
                 return Make<JS>(ch)->GetMetrics(ctx().get(), q, &a).error_code();
               }});
  r.push_back({"ListCheckpoints", false, false, [=](grpc::Channel* ch) {
                 v1::ListCheckpointsRequest q;
                 q.set_job_id("job-000001");
                 v1::ListCheckpointsResponse a;
                 return Make<JS>(ch)->ListCheckpoints(ctx().get(), q, &a).error_code();
               }});
  r.push_back({"DownloadCheckpoint", false, false, [=](grpc::Channel* ch) {
                 v1::DownloadCheckpointRequest q;
                 q.set_job_id("job-000001");
                 auto c = ctx();
                 auto rd = Make<JS>(ch)->DownloadCheckpoint(c.get(), q);
                 v1::TransferMessage m;
                 while (rd->Read(&m)) {
                 }
                 return rd->Finish().error_code();
               }});
  r.push_back({"ListWorkers", false, false, [=](grpc::Channel* ch) {
                 v1::ListWorkersResponse a;
                 return Make<JS>(ch)->ListWorkers(ctx().get(), v1::ListWorkersRequest(), &a).error_code();
               }});
  r.push_back({"PushDataset", true, false, [=](grpc::Channel* ch) {
                 v1::DatasetInfo a;
                 auto c = ctx();
                 auto w = Make<DS>(ch)->PushDataset(c.get(), &a);
                 w->WritesDone();
                 return w->Finish().error_code();
               }});
  r.push_back({"ListDatasets", false, false, [=](grpc::Channel* ch) {
                 v1::ListDatasetsResponse a;
                 return Make<DS>(ch)->ListDatasets(ctx().get(), v1::ListDatasetsRequest(), &a).error_code();
               }});
  r.push_back({"Register", false, true, [=](grpc::Channel* ch) {
                 v1::RegisterRequest q;
                 v1::RegisterResponse a;
                 return Make<WS>(ch)->Register(ctx().get(), q, &a).error_code();
               }});
  r.push_back({"Heartbeat", false, true, [=](grpc::Channel* ch) {
                 v1::HeartbeatRequest q;
                 q.set_worker_id("nobody");
                 v1::HeartbeatResponse a;
                 return Make<WS>(ch)->Heartbeat(ctx().get(), q, &a).error_code();
               }});
  r.push_back({"ReportEvents", false, true, [=](grpc::Channel* ch) {
                 v1::ReportEventsRequest q;
                 v1::ReportEventsResponse a;
                 return Make<WS>(ch)->ReportEvents(ctx().get(), q, &a).error_code();
               }});
  r.push_back({"UploadCheckpoint", false, true, [=](grpc::Channel* ch) {
                 v1::UploadCheckpointResponse a;
                 auto c = ctx();
                 auto w = Make<WS>(ch)->UploadCheckpoint(c.get(), &a);
                 w->WritesDone();
                 return w->Finish().error_code();
               }});
  r.push_back({"FetchDataset", false, true, [=](grpc::Channel* ch) {
                 v1::FetchDatasetRequest q;
                 auto c = ctx();
                 auto rd = Make<WS>(ch)->FetchDataset(c.get(), q);
                 v1::TransferMessage m;
                 while (rd->Read(&m)) {
                 }
                 return rd->Finish().error_code();
               }});
  r.push_back({"FetchCheckpoint", false, true, [=](grpc::Channel* ch) {
                 v1::FetchCheckpointRequest q;
                 auto c = ctx();
                 auto rd = Make<WS>(ch)->FetchCheckpoint(c.get(), q);
                 v1::TransferMessage m;
                 while (rd->Read(&m)) {
                 }
                 return rd->Finish().error_code();
               }});
  r.push_back({"ListAudit", true, false,
               [=](grpc::Channel* ch) {
                 v1::ListAuditResponse a;
                 return Make<JS>(ch)->ListAudit(ctx().get(), v1::ListAuditRequest(), &a).error_code();
               },
               true});
  r.push_back({"ReloadTokens", true, false,
               [=](grpc::Channel* ch) {
                 v1::ReloadTokensResponse a;
                 return Make<JS>(ch)->ReloadTokens(ctx().get(), v1::ReloadTokensRequest(), &a).error_code();
               },
               true});
  r.push_back({"Backup", true, false,
               [=](grpc::Channel* ch) {
                 auto c = ctx();
                 auto rd = Make<JS>(ch)->Backup(c.get(), v1::BackupRequest());
                 v1::TransferMessage m;
                 while (rd->Read(&m)) {
                 }
                 return rd->Finish().error_code();
               },
               true});
  return r;
}

class AuthServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = TempRoot();
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void Start(ServerOptions o) {
    o.listen = "127.0.0.1:0";
    o.coordinator.data_dir = (root_ / "state").string();
    o.coordinator.config_dir = std::string(TRM_SOURCE_DIR) + "/configs";
    server_ = std::make_unique<CoordinatorServer>(o);
    address_ = "127.0.0.1:" + std::to_string(server_->port());
  }
  void TearDown() override {
    server_.reset();
    fs::remove_all(root_);
  }
  AuthConfig Tokens() {
    AuthConfig a;
    a.enabled = true;
    a.tokens = {{kAdmin, Role::kAdmin}, {kSubmit, Role::kSubmit}, {kRead, Role::kRead}};
    a.names = {{kAdmin, "admin"}, {kSubmit, "submitter"}, {kRead, "reader"}};
    a.worker_secret = kSecret;
    return a;
  }
  std::shared_ptr<grpc::Channel> Channel(const std::string& token, const rpc::ClientSecurity& tls = {}) {
    rpc::ClientSecurity s = tls;
    s.token = token;
    return rpc::MakeChannel(address_, s);
  }
  std::string Cert(const std::string& name) {
    const std::string key = (root_ / (name + ".key")).string(), crt = (root_ / (name + ".crt")).string();
    const std::string cmd = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=" + name + " -addext "
                            "subjectAltName=IP:127.0.0.1,DNS:localhost -keyout " + key + " -out " + crt +
                            " >/dev/null 2>&1";
    if (std::system(cmd.c_str()) != 0) ADD_FAILURE() << "openssl failed: " << cmd;
    return (root_ / name).string();
  }

  fs::path root_;
  std::unique_ptr<CoordinatorServer> server_;
  std::string address_;
};

bool Denied(grpc::StatusCode c) {
  return c == grpc::StatusCode::UNAUTHENTICATED || c == grpc::StatusCode::PERMISSION_DENIED;
}

TEST_F(AuthServerTest, EveryRpcChecksCredentialsAndRoles) {
  ServerOptions o;
  o.auth = Tokens();
  Start(o);
  auto none = Channel(""), bogus = Channel("not-a-known-token-xyz"), reader = Channel(kRead),
       submitter = Channel(kSubmit), admin = Channel(kAdmin), worker = Channel(kSecret);
  for (const Rpc& r : AllRpcs()) {
    SCOPED_TRACE(r.name);
    EXPECT_EQ(r.call(none.get()), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(r.call(bogus.get()), grpc::StatusCode::UNAUTHENTICATED);
    if (r.worker) {
      EXPECT_EQ(r.call(admin.get()), grpc::StatusCode::UNAUTHENTICATED);  // user tokens are not worker secrets
      EXPECT_FALSE(Denied(r.call(worker.get())));                         // past auth (then bad fields)
    } else {
      EXPECT_EQ(r.call(worker.get()), grpc::StatusCode::UNAUTHENTICATED);
      EXPECT_EQ(r.call(reader.get()), r.mutating ? grpc::StatusCode::PERMISSION_DENIED : r.call(admin.get()));
      if (r.admin) EXPECT_EQ(r.call(submitter.get()), grpc::StatusCode::PERMISSION_DENIED);
      else EXPECT_FALSE(Denied(r.call(submitter.get())));
      EXPECT_FALSE(Denied(r.call(admin.get())));
    }
  }
  // Still up and answering.
  v1::ListJobsResponse jobs;
  grpc::ClientContext ctx;
  rpc::SetDeadline(&ctx, std::chrono::seconds(5));
  EXPECT_TRUE(v1::JobService::NewStub(reader)->ListJobs(&ctx, v1::ListJobsRequest(), &jobs).ok());
}

TEST_F(AuthServerTest, TlsAndMutualTlsForWorkers) {
  const std::string server = Cert("server"), client = Cert("worker");
  ServerOptions o;
  o.tls_cert = server + ".crt";
  o.tls_key = server + ".key";
  o.tls_client_ca = client + ".crt";
  o.auth.require_worker_cert = true;
  Start(o);
  const auto list = [](grpc::Channel* ch) {
    v1::ListJobsResponse a;
    grpc::ClientContext ctx;
    rpc::SetDeadline(&ctx, std::chrono::seconds(5));
    return v1::JobService::NewStub(std::shared_ptr<grpc::ChannelInterface>(ch, [](grpc::ChannelInterface*) {}))
        ->ListJobs(&ctx, v1::ListJobsRequest(), &a)
        .error_code();
  };
  rpc::ClientSecurity tls;
  tls.ca_file = server + ".crt";
  EXPECT_EQ(list(Channel("", tls).get()), grpc::StatusCode::OK);
  EXPECT_EQ(list(Channel("").get()), grpc::StatusCode::UNAVAILABLE);  // plaintext to a TLS port
  rpc::ClientSecurity wrong_ca;
  wrong_ca.ca_file = client + ".crt";
  EXPECT_EQ(list(Channel("", wrong_ca).get()), grpc::StatusCode::UNAVAILABLE);  // server not trusted

  const Rpc heartbeat = AllRpcs()[12];
  ASSERT_STREQ(heartbeat.name, "Heartbeat");
  EXPECT_EQ(heartbeat.call(Channel("", tls).get()), grpc::StatusCode::UNAUTHENTICATED);  // no client cert
  rpc::ClientSecurity mtls = tls;
  mtls.cert_file = client + ".crt";
  mtls.key_file = client + ".key";
  EXPECT_EQ(heartbeat.call(Channel("", mtls).get()), grpc::StatusCode::OK);  // reregister answer
}

TEST(TokenFileTest, HashedTokensAuthenticateByTheirDigest) {
  const fs::path root = TempRoot();
  fs::create_directories(root);
  const std::string path = (root / "tokens").string();
  std::ofstream(path) << kAdmin << " admin root\nsha256:" << Sha256Hex(kSubmit) << " submit carol\n";
  Authorizer auth(LoadTokenFile(path));
  const Principal carol = auth.RequireUser(std::string("Bearer ") + kSubmit, Role::kRead, "GetJob");
  EXPECT_EQ(carol.name, "carol");
  EXPECT_EQ(carol.role, Role::kSubmit);
  try {
    auth.RequireUser(std::string("Bearer ") + kSubmit, Role::kAdmin, "ListAudit");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Code::kPermissionDenied);
    EXPECT_NE(std::string(e.what()).find("carol has submit"), std::string::npos) << e.what();
  }
  // The digest itself is not a token.
  EXPECT_THROW(auth.RequireUser("Bearer " + Sha256Hex(kSubmit), Role::kRead, "GetJob"), Error);
  for (const std::string bad : {std::string("sha256:abc submit carol"), "sha256:" + std::string(64, 'G') + " read x",
                                std::string(kRead) + " read bob extra", std::string(kRead) + " read b/ob",
                                std::string(kRead) + " read local", std::string(kRead) + " read .hidden"}) {
    std::ofstream(path) << kAdmin << " admin root\n" << bad << "\n";
    try {
      LoadTokenFile(path);
      FAIL() << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(path + ":2"), std::string::npos) << e.what();
    }
  }
  fs::remove_all(root);
}

// Owners at the gRPC edge, the audit log of mutating calls (refusals included), and a token
// reload that revokes a removed token at once, an open watch included.
TEST_F(AuthServerTest, ReloadRevokesTokensAndTheAuditLogRecordsCalls) {
  const std::string file = (root_ / "tokens").string();
  auto write = [&](bool with_bob) {
    std::ofstream(file) << kAdmin << " admin root\n"
                        << "sha256:" << Sha256Hex(kRead) << " submit alice\n"
                        << (with_bob ? std::string(kSubmit) + " submit bob\n" : "");
  };
  write(true);
  ServerOptions o;
  o.auth = LoadTokenFile(file);
  Start(o);
  v1::RegisterRequest w;
  w.set_worker_id("w1");
  w.set_host("127.0.0.1");
  w.set_slots(2);
  w.set_device_kind("cpu");
  w.add_data_roots("/data");
  w.add_data_roots("/data");
  server_->coordinator().Register(w);
  v1::SubmitJobRequest submit;
  submit.mutable_spec()->set_config_name("cfg_tiny");
  submit.mutable_spec()->set_data_path("/data/chat");
  submit.mutable_spec()->add_overrides("global_batch_size=4");
  auto alice = v1::JobService::NewStub(Channel(kRead)), bob = v1::JobService::NewStub(Channel(kSubmit)),
       admin = v1::JobService::NewStub(Channel(kAdmin)), nobody = v1::JobService::NewStub(Channel(""));
  auto call = [](auto&& fn) {
    grpc::ClientContext c;
    rpc::SetDeadline(&c, std::chrono::seconds(10));
    return fn(&c);
  };
  v1::SubmitJobResponse job;
  ASSERT_TRUE(call([&](grpc::ClientContext* c) { return alice->SubmitJob(c, submit, &job); }).ok());
  v1::Job j;
  v1::CancelJobRequest cancel;
  cancel.set_job_id(job.job_id());
  const grpc::Status denied = call([&](grpc::ClientContext* c) { return bob->CancelJob(c, cancel, &j); });
  EXPECT_EQ(denied.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(denied.error_message().find("belongs to alice"), std::string::npos) << denied.error_message();
  v1::SubmitJobResponse none;
  EXPECT_EQ(call([&](grpc::ClientContext* c) { return nobody->SubmitJob(c, submit, &none); }).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);

  // bob watches; his token is removed and the tokens reloaded: the watch ends, refused.
  grpc::ClientContext watch_ctx;
  rpc::SetDeadline(&watch_ctx, std::chrono::seconds(60));
  v1::WatchJobRequest wq;
  wq.set_job_id(job.job_id());
  wq.set_follow(true);
  auto watch = bob->WatchJob(&watch_ctx, wq);
  v1::JobEvent first;
  ASSERT_TRUE(watch->Read(&first));  // the stream is open
  write(false);
  v1::ReloadTokensResponse reloaded;
  ASSERT_TRUE(call([&](grpc::ClientContext* c) {
                return admin->ReloadTokens(c, v1::ReloadTokensRequest(), &reloaded);
              }).ok());
  EXPECT_EQ(reloaded.tokens(), 2);
  v1::JobEvent e;
  while (watch->Read(&e)) {
  }
  EXPECT_EQ(watch->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  v1::ListJobsResponse jobs;
  EXPECT_EQ(call([&](grpc::ClientContext* c) { return bob->ListJobs(c, v1::ListJobsRequest(), &jobs); }).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  // A bad file is refused and changes nothing.
  std::ofstream(file) << "garbage line\n";
  EXPECT_EQ(call([&](grpc::ClientContext* c) {
              return admin->ReloadTokens(c, v1::ReloadTokensRequest(), &reloaded);
            }).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(call([&](grpc::ClientContext* c) { return alice->ListJobs(c, v1::ListJobsRequest(), &jobs); }).ok());

  v1::ListAuditResponse audit;
  ASSERT_TRUE(call([&](grpc::ClientContext* c) { return admin->ListAudit(c, v1::ListAuditRequest(), &audit); }).ok());
  std::vector<std::string> seen;
  for (const auto& a : audit.entries()) {
    EXPECT_NE(a.peer(), "");
    seen.push_back(a.principal() + " " + a.method() + " " + a.result().substr(0, a.result().find(':')));
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"alice SubmitJob OK", "bob CancelJob PERMISSION_DENIED",
                                            " SubmitJob UNAUTHENTICATED", "root ReloadTokens OK",
                                            "root ReloadTokens INVALID_ARGUMENT"}));
  EXPECT_NE(audit.entries(0).target().find(job.job_id()), std::string::npos) << audit.entries(0).target();
}

TEST(ServerOptionsTest, PlaintextOutsideLoopbackNeedsInsecure) {
  ServerOptions o;
  o.listen = "0.0.0.0:0";
  o.coordinator.data_dir = (fs::temp_directory_path() / ("trm_auth_plain_" + std::to_string(::getpid()))).string();
  try {
    CoordinatorServer s(o);
    FAIL() << "plaintext on 0.0.0.0 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--insecure"), std::string::npos);
  }
  o.insecure = true;
  CoordinatorServer s(o);
  EXPECT_GT(s.port(), 0);
  s.Shutdown();
  fs::remove_all(o.coordinator.data_dir);
}

}  // namespace
}  // namespace trm::coordinator
