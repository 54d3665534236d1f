#include "trm/rpc/client.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>
#include <grpcpp/support/client_interceptor.h>

#include <cstdlib>

#include "trm/common/error.h"
#include "trm/common/file_util.h"

namespace trm::rpc {
namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

// Adds the bearer token to every call's metadata. Call credentials would do the same but gRPC
// refuses them on plaintext channels, which loopback development uses.
class TokenInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit TokenInterceptor(const std::string& header) : header_(header) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA))
      methods->GetSendInitialMetadata()->insert({"authorization", header_});
    methods->Proceed();
  }

 private:
  const std::string& header_;
};

class TokenInterceptorFactory : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit TokenInterceptorFactory(std::string token) : header_("Bearer " + std::move(token)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(grpc::experimental::ClientRpcInfo*) override {
    return new TokenInterceptor(header_);
  }

 private:
  std::string header_;  // outlives the channel's interceptors: the factory is owned by the channel
};

ClientSecurity TlsFromEnv(ClientSecurity s) {
  s.ca_file = Env("TRM_TLS_CA");
  s.cert_file = Env("TRM_TLS_CERT");
  s.key_file = Env("TRM_TLS_KEY");
  return s;
}

}  // namespace

ClientSecurity UserSecurityFromEnv() {
  ClientSecurity s;
  s.token = Env("TRM_TOKEN");
  if (s.token.empty() && !Env("TRM_TOKEN_FILE").empty()) s.token = Trim(ReadFile(Env("TRM_TOKEN_FILE")));
  return TlsFromEnv(s);
}

ClientSecurity WorkerSecurityFromEnv() {
  ClientSecurity s;
  s.token = Env("TRM_WORKER_SECRET");
  if (s.token.empty() && !Env("TRM_WORKER_SECRET_FILE").empty())
    s.token = Trim(ReadFile(Env("TRM_WORKER_SECRET_FILE")));
  return TlsFromEnv(s);
}

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address, const ClientSecurity& sec) {
  const auto colon = address.rfind(':');
  if (colon == std::string::npos || colon + 1 == address.size())
    InvalidArgument("coordinator address '" + address + "': expected HOST:PORT");
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  args.SetMaxSendMessageSize(kMaxMessageBytes);
  // Reconnect quickly after a coordinator restart instead of backing off for up to 2 minutes.
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (sec.ca_file.empty()) {
    if (!sec.cert_file.empty()) InvalidArgument("a client certificate needs TLS: set the CA (TRM_TLS_CA) too");
    creds = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions o;
    o.pem_root_certs = ReadFile(sec.ca_file);
    if (!sec.cert_file.empty()) {
      o.pem_cert_chain = ReadFile(sec.cert_file);
      o.pem_private_key = ReadFile(sec.key_file);
    }
    creds = grpc::SslCredentials(o);
  }
  if (sec.token.empty()) return grpc::CreateCustomChannel(address, creds, args);
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(std::make_unique<TokenInterceptorFactory>(sec.token));
  return grpc::experimental::CreateCustomChannelWithInterceptors(address, creds, args, std::move(interceptors));
}

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address) {
  return MakeChannel(address, UserSecurityFromEnv());
}

void SetDeadline(grpc::ClientContext* ctx, std::chrono::milliseconds timeout) {
  ctx->set_deadline(std::chrono::system_clock::now() + timeout);
}

std::string CoordinatorAddress(const std::string& flag_value) {
  if (!flag_value.empty()) return flag_value;
  if (const char* env = std::getenv("TRM_COORDINATOR"); env && *env) return env;
  return "localhost:50051";
}

}  // namespace trm::rpc
