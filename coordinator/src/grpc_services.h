// The three gRPC services as thin adapters: authorize, unpack the request, call Coordinator
// (which validates it), convert trm::Error to a status (rpc::Guard). Streams poll ServerContext cancellation so a server
// shutdown or a gone client ends them.
#pragma once

#include <atomic>

#include "stream_limits.h"
#include "trm/coordinator/auth.h"
#include "trm/coordinator/coordinator.h"
#include "trm/coordinator/metrics.h"
#include "trm/v1/trm.grpc.pb.h"

namespace trm::coordinator {

class JobServiceImpl final : public v1::JobService::Service {
 public:
  JobServiceImpl(Coordinator* c, CoordinatorMetrics* m, Authorizer* auth, const std::atomic<bool>* stopping)
      : c_(c), m_(m), auth_(auth), stopping_(stopping) {}
  grpc::Status SubmitJob(grpc::ServerContext*, const v1::SubmitJobRequest*, v1::SubmitJobResponse*) override;
  grpc::Status GetJob(grpc::ServerContext*, const v1::GetJobRequest*, v1::Job*) override;
  grpc::Status ListJobs(grpc::ServerContext*, const v1::ListJobsRequest*, v1::ListJobsResponse*) override;
  grpc::Status CancelJob(grpc::ServerContext*, const v1::CancelJobRequest*, v1::Job*) override;
  grpc::Status WatchJob(grpc::ServerContext*, const v1::WatchJobRequest*, grpc::ServerWriter<v1::JobEvent>*) override;
  grpc::Status GetMetrics(grpc::ServerContext*, const v1::GetMetricsRequest*, v1::GetMetricsResponse*) override;
  grpc::Status ListCheckpoints(grpc::ServerContext*, const v1::ListCheckpointsRequest*,
                               v1::ListCheckpointsResponse*) override;
  grpc::Status DownloadCheckpoint(grpc::ServerContext*, const v1::DownloadCheckpointRequest*,
                                  grpc::ServerWriter<v1::TransferMessage>*) override;
  grpc::Status ListWorkers(grpc::ServerContext*, const v1::ListWorkersRequest*, v1::ListWorkersResponse*) override;
  grpc::Status GetQueue(grpc::ServerContext*, const v1::GetQueueRequest*, v1::GetQueueResponse*) override;
  grpc::Status ListAudit(grpc::ServerContext*, const v1::ListAuditRequest*, v1::ListAuditResponse*) override;
  grpc::Status ReloadTokens(grpc::ServerContext*, const v1::ReloadTokensRequest*, v1::ReloadTokensResponse*) override;
  grpc::Status Backup(grpc::ServerContext*, const v1::BackupRequest*, grpc::ServerWriter<v1::TransferMessage>*) override;

 private:
  Coordinator* c_;
  CoordinatorMetrics* m_;
  Authorizer* auth_;
  const std::atomic<bool>* stopping_;
  // Each stream holds a server thread while it lasts (stream_limits.h).
  StreamLimit watches_{"job watches", 1024};
  StreamLimit downloads_{"checkpoint downloads", 64};
};

class DatasetServiceImpl final : public v1::DatasetService::Service {
 public:
  DatasetServiceImpl(Coordinator* c, CoordinatorMetrics* m, const Authorizer* auth) : c_(c), m_(m), auth_(auth) {}
  grpc::Status PushDataset(grpc::ServerContext*, grpc::ServerReader<v1::TransferMessage>*, v1::DatasetInfo*) override;
  grpc::Status ListDatasets(grpc::ServerContext*, const v1::ListDatasetsRequest*, v1::ListDatasetsResponse*) override;

 private:
  Coordinator* c_;
  CoordinatorMetrics* m_;
  const Authorizer* auth_;
};

class WorkerServiceImpl final : public v1::WorkerService::Service {
 public:
  WorkerServiceImpl(Coordinator* c, CoordinatorMetrics* m, const Authorizer* auth) : c_(c), m_(m), auth_(auth) {}
  grpc::Status Register(grpc::ServerContext*, const v1::RegisterRequest*, v1::RegisterResponse*) override;
  grpc::Status Heartbeat(grpc::ServerContext*, const v1::HeartbeatRequest*, v1::HeartbeatResponse*) override;
  grpc::Status ReportEvents(grpc::ServerContext*, const v1::ReportEventsRequest*, v1::ReportEventsResponse*) override;
  grpc::Status UploadCheckpoint(grpc::ServerContext*, grpc::ServerReader<v1::CheckpointUpload>*,
                                v1::UploadCheckpointResponse*) override;
  grpc::Status FetchDataset(grpc::ServerContext*, const v1::FetchDatasetRequest*,
                            grpc::ServerWriter<v1::TransferMessage>*) override;
  grpc::Status FetchCheckpoint(grpc::ServerContext*, const v1::FetchCheckpointRequest*,
                               grpc::ServerWriter<v1::TransferMessage>*) override;

 private:
  Coordinator* c_;
  CoordinatorMetrics* m_;
  const Authorizer* auth_;
  StreamLimit transfers_{"dataset and checkpoint transfers", 256};
};

}  // namespace trm::coordinator
