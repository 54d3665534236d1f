// The gRPC edge on loopback: status codes for bad requests, the health service, a dataset pushed
// and fetched back byte-exact, a watch stream that ends with the job.
#include "trm/coordinator/server.h"

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "trm/rpc/client.h"
#include "trm/rpc/transfer.h"
#include "trm/v1/trm.grpc.pb.h"

namespace fs = std::filesystem;

namespace trm::coordinator {
namespace {

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("trm_server_" + std::to_string(::getpid()) + "_" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    ServerOptions o;
    o.listen = "127.0.0.1:0";
    o.tick_ms = 20;
    o.coordinator.data_dir = (root_ / "state").string();
    o.coordinator.config_dir = std::string(TRM_SOURCE_DIR) + "/configs";
    server_ = std::make_unique<CoordinatorServer>(o);
    channel_ = rpc::MakeChannel("127.0.0.1:" + std::to_string(server_->port()));
    jobs_ = v1::JobService::NewStub(channel_);
    datasets_ = v1::DatasetService::NewStub(channel_);
    workers_ = v1::WorkerService::NewStub(channel_);
  }
  void TearDown() override {
    server_.reset();
    fs::remove_all(root_);
  }
  std::unique_ptr<grpc::ClientContext> Ctx() {
    auto ctx = std::make_unique<grpc::ClientContext>();
    rpc::SetDeadline(ctx.get(), std::chrono::seconds(10));
    return ctx;
  }

  fs::path root_;
  std::unique_ptr<CoordinatorServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::JobService::Stub> jobs_;
  std::unique_ptr<v1::DatasetService::Stub> datasets_;
  std::unique_ptr<v1::WorkerService::Stub> workers_;
};

TEST_F(ServerTest, BadRequestsGetTheRightStatusAndTheServerStaysUp) {
  v1::Job job;
  grpc::Status s = jobs_->GetJob(Ctx().get(), v1::GetJobRequest(), &job);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  v1::GetJobRequest get;
  get.set_job_id("job-424242");
  s = jobs_->GetJob(Ctx().get(), get, &job);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(s.error_message().find("job-424242"), std::string::npos);
  get.set_job_id("../../x");
  EXPECT_EQ(jobs_->GetJob(Ctx().get(), get, &job).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  v1::SubmitJobRequest sub;
  sub.mutable_spec()->set_config_yaml("{{{{");
  sub.mutable_spec()->set_data_path("/d");
  v1::SubmitJobResponse sr;
  s = jobs_->SubmitJob(Ctx().get(), sub, &sr);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  sub.mutable_spec()->set_config_name("cfg_tiny");
  sub.mutable_spec()->clear_config_yaml();
  sub.mutable_spec()->set_world_size(8);
  s = jobs_->SubmitJob(Ctx().get(), sub, &sr);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();

  // Checkpoint names that look like paths.
  v1::DownloadCheckpointRequest dl;
  dl.set_job_id("job-000001");
  dl.set_selector("step:../../../etc");
  auto ctx = Ctx();
  auto reader = jobs_->DownloadCheckpoint(ctx.get(), dl);
  v1::TransferMessage msg;
  EXPECT_FALSE(reader->Read(&msg));
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::NOT_FOUND);  // the job is checked first

  v1::FetchDatasetRequest fd;
  fd.set_content_sha256("../x");
  auto ctx2 = Ctx();
  auto r2 = workers_->FetchDataset(ctx2.get(), fd);
  EXPECT_FALSE(r2->Read(&msg));
  EXPECT_EQ(r2->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  v1::RegisterRequest reg;
  reg.set_worker_id("w/1");
  v1::RegisterResponse rr;
  EXPECT_EQ(workers_->Register(Ctx().get(), reg, &rr).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  // A push whose first message is not a manifest.
  v1::DatasetInfo info;
  auto ctx3 = Ctx();
  auto w = datasets_->PushDataset(ctx3.get(), &info);
  v1::TransferMessage chunk;
  chunk.mutable_chunk()->set_data("x");
  w->Write(chunk);
  w->WritesDone();
  EXPECT_EQ(w->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  // Still serving.
  v1::ListJobsResponse lj;
  EXPECT_TRUE(jobs_->ListJobs(Ctx().get(), v1::ListJobsRequest(), &lj).ok());
}

TEST_F(ServerTest, DatasetPushThenFetchIsByteExact) {
  const fs::path src = root_ / "ds";
  fs::create_directories(src / "train");
  std::string big(3 * rpc::kChunkBytes + 17, 'a');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 131 % 251);
  std::ofstream(src / "train" / "inputs.npy", std::ios::binary) << big;
  std::ofstream(src / "dataset.json") << "{\"x\": 1}";
  v1::Manifest m = rpc::BuildManifest(src.string(), "chat");

  v1::DatasetInfo info;
  auto ctx = Ctx();
  auto w = datasets_->PushDataset(ctx.get(), &info);
  v1::TransferMessage head;
  *head.mutable_manifest() = m;
  ASSERT_TRUE(w->Write(head));
  rpc::SendChunks(src.string(), m, 0, [&](const v1::Chunk& c) {
    v1::TransferMessage msg;
    *msg.mutable_chunk() = c;
    return w->Write(msg);
  });
  w->WritesDone();
  ASSERT_TRUE(w->Finish().ok());
  EXPECT_EQ(info.name(), "chat");
  EXPECT_EQ(info.content_sha256(), m.content_sha256());

  // The first fetch breaks off after two chunks; the second resumes where it stopped.
  rpc::FileReceiver rx((root_ / "rx.tmp").string(), 1 << 30);
  for (int pass = 0; pass < 2; ++pass) {
    const uint64_t offset = rx.received();
    v1::FetchDatasetRequest req;
    req.set_content_sha256(info.content_sha256());
    req.set_offset(offset);
    auto c = Ctx();
    auto r = workers_->FetchDataset(c.get(), req);
    v1::TransferMessage msg;
    // The first pass stops after the manifest and one chunk, like a broken stream.
    int chunks = 0;
    while (r->Read(&msg)) {
      rx.OnMessage(msg);
      if (msg.has_chunk() && pass == 0 && ++chunks == 2) break;
    }
    c->TryCancel();
    r->Finish();
  }
  ASSERT_TRUE(rx.complete());
  EXPECT_GT(rx.received(), rpc::kChunkBytes);
  rx.Commit((root_ / "rx").string());
  std::ifstream in(root_ / "rx" / "train" / "inputs.npy", std::ios::binary);
  std::string got((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(got, big);
}

// Debian ships no health.proto, so the check is made as grpcurl would: a generic call with the
// encoded messages (an empty HealthCheckRequest; SERVING is field 1 = 1, bytes 08 01).
TEST_F(ServerTest, HealthServiceServes) {
  grpc::GenericStub stub(channel_);
  grpc::CompletionQueue cq;
  auto ctx = Ctx();
  grpc::Slice empty;
  grpc::ByteBuffer req(&empty, 1), resp;
  auto call = stub.PrepareUnaryCall(ctx.get(), "/grpc.health.v1.Health/Check", req, &cq);
  call->StartCall();
  grpc::Status status;
  call->Finish(&resp, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  ASSERT_TRUE(cq.Next(&tag, &ok));
  ASSERT_TRUE(status.ok()) << status.error_message();
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(resp.Dump(&slices).ok());
  std::string bytes;
  for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  EXPECT_EQ(bytes, std::string("\x08\x01", 2));
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
}

}  // namespace
}  // namespace trm::coordinator
