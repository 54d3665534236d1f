// The dashboard's /api endpoints, pages and login against a real Coordinator (fake clock, real
// SQLite), without a socket; and once over a real HTTP server on loopback.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "coordinator_fixture.h"
#include "http_api.h"
#include "http_server.h"
#include "tar_stream.h"
#include "trm/common/file_util.h"

namespace trm::coordinator {
namespace {

constexpr const char* kAdminToken = "admin-token-0123456789";
constexpr const char* kSubmitToken = "alice-token-0123456789";
constexpr const char* kReadToken = "reader-token-0123456789";

// One HTTP exchange on a fresh loopback connection: all the server sent.
std::string Fetch(int port, const std::string& request) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  EXPECT_EQ(::write(fd, request.data(), request.size()), static_cast<ssize_t>(request.size()));
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

class HttpApiTest : public CoordinatorTest {
 protected:
  HttpResponse Get(const HttpApi& api, const std::string& path, std::map<std::string, std::string> query = {},
                   const std::string& authorization = "", const std::string& cookie = "") {
    HttpRequest r;
    r.method = "GET";
    r.path = path;
    r.query = std::move(query);
    r.authorization = authorization;
    r.cookie = cookie;
    r.host = "127.0.0.1:8080";
    return api.Handle(r);
  }
  static nlohmann::json Body(const HttpResponse& r) { return nlohmann::json::parse(r.body); }
  static AuthConfig Tokens() {
    AuthConfig a;
    a.enabled = true;
    a.tokens = {{kAdminToken, Role::kAdmin}, {kSubmitToken, Role::kSubmit}, {kReadToken, Role::kRead}};
    a.names = {{kAdminToken, "admin"}, {kSubmitToken, "alice"}, {kReadToken, "reader"}};
    return a;
  }
  static std::string HeaderOf(const HttpResponse& r, const std::string& name, int nth = 0) {
    for (const auto& [k, v] : r.headers)
      if (k == name && nth-- == 0) return v;
    return "";
  }
  Authorizer open_{AuthConfig{}};
};

TEST_F(HttpApiTest, JobsJobMetricsAndEventsAreTheCoordinatorsData) {
  HttpApi api(c_.get(), &open_);
  AddWorker("w1", 1);
  Beat("w1");
  const std::string id = c_->SubmitJob(Spec(1));
  c_->Tick();
  std::vector<v1::WorkerEvent> evs;
  for (int s = 1; s <= 30; ++s) evs.push_back(Metrics(s, 10.0 / s));
  Report("w1", id, 1, evs);

  HttpResponse r = Get(api, "/api/jobs");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.content_type, "application/json");
  nlohmann::json j = Body(r);
  ASSERT_EQ(j["jobs"].size(), 1u);
  EXPECT_EQ(j["jobs"][0]["id"], id);
  EXPECT_EQ(j["jobs"][0]["state"], "JOB_RUNNING");
  EXPECT_EQ(Body(Get(api, "/api/jobs", {{"state", "succeeded"}}))["jobs"].size(), 0u);
  EXPECT_EQ(Body(Get(api, "/api/jobs", {{"state", "running"}}))["jobs"].size(), 1u);
  r = Get(api, "/api/jobs", {{"state", "sleeping"}});
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(Body(r)["error"].get<std::string>().find("query state='sleeping'"), std::string::npos);
  EXPECT_EQ(Get(api, "/api/jobs", {{"limit", "0"}}).status, 400);

  j = Body(Get(api, "/api/jobs/" + id));
  EXPECT_EQ(j["job"]["id"], id);
  EXPECT_EQ(j["job"]["spec"]["world_size"], 1);
  ASSERT_GE(j["states"].size(), 2u);  // submitted, running
  EXPECT_EQ(j["states"][1]["state"]["state"], "JOB_RUNNING");
  EXPECT_TRUE(j["checkpoints"].is_array());
  r = Get(api, "/api/jobs/job-999999");
  EXPECT_EQ(r.status, 404);
  EXPECT_NE(Body(r)["error"].get<std::string>().find("does not exist"), std::string::npos);

  // One point per logged step (under the downsampling limit).
  j = Body(Get(api, "/api/jobs/" + id + "/metrics"));
  ASSERT_EQ(j["train"]["steps"].size(), 30u);
  EXPECT_EQ(j["train"]["steps"][0], 1);
  EXPECT_DOUBLE_EQ(j["train"]["values"]["lm_loss"][29].get<double>(), 10.0 / 30);
  EXPECT_EQ(j["train_points"], 30);
  EXPECT_EQ(j["total_steps"], 10);
  // Fewer asked for: the first, the last and each bucket's extremes.
  j = Body(Get(api, "/api/jobs/" + id + "/metrics", {{"points", "10"}}));
  EXPECT_LE(j["train"]["steps"].size(), 10u);
  EXPECT_EQ(j["train"]["steps"].front(), 1);
  EXPECT_EQ(j["train"]["steps"].back(), 30);

  // Events after a sequence number, as trmctl watch reads them.
  j = Body(Get(api, "/api/jobs/" + id + "/events"));
  const uint64_t last = j["last_seq"].get<uint64_t>();
  EXPECT_GT(last, 30u);
  // The series says where it ends, so a page reads only the events after it.
  EXPECT_EQ(Body(Get(api, "/api/jobs/" + id + "/metrics"))["last_seq"].get<uint64_t>(), last);
  j = Body(Get(api, "/api/jobs/" + id + "/events", {{"after", std::to_string(last - 2)}}));
  EXPECT_EQ(j["events"].size(), 2u);
  EXPECT_EQ(j["last_seq"].get<uint64_t>(), last);
  j = Body(Get(api, "/api/jobs/" + id + "/events", {{"after", std::to_string(last)}}));
  EXPECT_EQ(j["events"].size(), 0u);
  EXPECT_EQ(j["last_seq"].get<uint64_t>(), last);

  EXPECT_EQ(Body(Get(api, "/api/workers"))["workers"][0]["id"], "w1");
  EXPECT_TRUE(Body(Get(api, "/api/datasets"))["datasets"].is_array());
  EXPECT_EQ(Get(api, "/api/queue").status, 200);
  j = Body(Get(api, "/api/whoami"));
  EXPECT_EQ(j["name"], "local");
  EXPECT_EQ(j["auth"], false);
  EXPECT_EQ(Get(api, "/api/nothing").status, 404);

  // The log tail: the newest lines, oldest first.
  std::vector<v1::WorkerEvent> logs;
  for (int i = 0; i < 5; ++i) {
    v1::WorkerEvent e;
    e.mutable_log()->set_text("line " + std::to_string(i));
    logs.push_back(e);
  }
  Report("w1", id, 1, logs);
  j = Body(Get(api, "/api/jobs/" + id + "/logs", {{"lines", "2"}}));
  ASSERT_EQ(j["events"].size(), 2u);
  EXPECT_EQ(j["events"][0]["log"]["text"], "line 3");
  EXPECT_EQ(j["events"][1]["log"]["text"], "line 4");
  EXPECT_EQ(Get(api, "/api/jobs/" + id + "/logs", {{"lines", "0"}}).status, 400);
  // At most `points`, however few.
  EXPECT_LE(Body(Get(api, "/api/jobs/" + id + "/metrics", {{"points", "2"}}))["train"]["steps"].size(), 4u);
}

// Without auth, a request naming another host (a rebound DNS name of some web page) gets
// nothing, and no page of another origin may change anything.
TEST_F(HttpApiTest, OtherHostsAndOriginsAreRefused) {
  HttpApiOptions o;
  o.hosts = {"trm.example"};
  HttpApi api(c_.get(), &open_, o);
  HttpRequest r;
  r.method = "GET";
  r.path = "/api/jobs";
  r.host = "evil.example:8080";
  HttpResponse resp = api.Handle(r);
  EXPECT_EQ(resp.status, 421);
  EXPECT_EQ(resp.body.find("jobs\""), std::string::npos);
  for (const std::string h : {"127.0.0.1:1", "localhost:2", "[::1]:3", "trm.example:4"}) {
    r.host = h;
    EXPECT_EQ(api.Handle(r).status, 200) << h;
  }
  HttpRequest post;
  post.method = "POST";
  post.path = "/logout";
  post.host = "127.0.0.1:8080";
  post.origin = "http://evil.example";
  EXPECT_EQ(api.Handle(post).status, 403);
  post.origin = "http://127.0.0.1:8080";
  EXPECT_EQ(api.Handle(post).status, 303);
}

TEST_F(HttpApiTest, PagesAndAssetsAreCompiledIn) {
  HttpApi api(c_.get(), &open_);
  HttpResponse r = Get(api, "/");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, "text/html; charset=utf-8");
  EXPECT_NE(r.body.find("/static/app.js"), std::string::npos);
  EXPECT_NE(HeaderOf(r, "Content-Security-Policy").find("default-src 'self'"), std::string::npos);
  EXPECT_NE(HeaderOf(r, "Set-Cookie").find("trm_csrf="), std::string::npos);
  EXPECT_EQ(Get(api, "/jobs/job-000001").status, 200);  // the page; its data may not exist
  EXPECT_EQ(Get(api, "/workers").status, 200);
  r = Get(api, "/static/app.js");
  EXPECT_EQ(r.content_type, "text/javascript; charset=utf-8");
  EXPECT_NE(r.body.find("function chart("), std::string::npos);
  EXPECT_EQ(Get(api, "/static/style.css").content_type, "text/css; charset=utf-8");
  EXPECT_EQ(Get(api, "/static/../../etc/passwd").status, 404);
  EXPECT_EQ(Get(api, "/static/nothing.js").status, 404);
  EXPECT_EQ(Get(api, "/elsewhere").status, 404);
}

TEST_F(HttpApiTest, DownsamplingKeepsTheEndsAndTheExtremes) {
  std::vector<double> v(100000);
  for (size_t i = 0; i < v.size(); ++i) v[i] = 5.0 - static_cast<double>(i) / 50000.0;
  v[33333] = 100;  // a spike
  v[77777] = -100;
  const auto keep = DownsampleIndices(v, 2000);
  ASSERT_LE(keep.size(), 2000u);
  EXPECT_GE(keep.size(), 1900u);
  EXPECT_EQ(keep.front(), 0u);
  EXPECT_EQ(keep.back(), v.size() - 1);
  EXPECT_TRUE(std::is_sorted(keep.begin(), keep.end()));
  EXPECT_NE(std::find(keep.begin(), keep.end(), 33333u), keep.end());
  EXPECT_NE(std::find(keep.begin(), keep.end(), 77777u), keep.end());
  EXPECT_EQ(DownsampleIndices({1, 2, 3}, 2000), (std::vector<size_t>{0, 1, 2}));
  EXPECT_LE(DownsampleIndices(v, 2).size(), 4u);
  EXPECT_EQ(DownsampleIndices({}, 2000), std::vector<size_t>{});
}

TEST_F(HttpApiTest, WithAuthNothingShowsWithoutAToken) {
  Authorizer auth(Tokens());
  HttpApi api(c_.get(), &auth);
  AddWorker("w1", 1);
  const std::string alice_job = c_->SubmitJob(Spec(1), Principal{"alice", Role::kSubmit});
  // No token: the login page for a page, 401 for the API; never the data.
  HttpResponse r = Get(api, "/");
  EXPECT_EQ(r.status, 401);
  EXPECT_NE(r.body.find("Sign in"), std::string::npos);
  EXPECT_EQ(r.body.find("/static/app.js"), std::string::npos);
  r = Get(api, "/jobs/" + alice_job);
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(r.body.find(alice_job), std::string::npos);
  r = Get(api, "/api/jobs");
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(r.body.find(alice_job), std::string::npos);
  EXPECT_EQ(Get(api, "/api/jobs", {}, "Bearer wrong-token-0123456789").status, 401);
  EXPECT_EQ(Get(api, "/static/style.css").status, 200);  // no data in it
  // A bearer token reads.
  r = Get(api, "/api/jobs", {}, std::string("Bearer ") + kReadToken);
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(Body(r)["jobs"][0]["id"], alice_job);

  // The login form sets an HttpOnly, SameSite=Strict cookie; a wrong token sets none.
  HttpRequest login;
  login.method = "POST";
  login.path = "/login";
  login.host = "127.0.0.1:8080";
  login.body = "token=wrong";
  r = api.Handle(login);
  EXPECT_EQ(r.status, 303);
  EXPECT_EQ(HeaderOf(r, "Location"), "/?login=failed");
  EXPECT_EQ(HeaderOf(r, "Set-Cookie"), "");
  login.body = std::string("token=") + kReadToken;
  r = api.Handle(login);
  EXPECT_EQ(r.status, 303);
  // The cookie holds a random session id, never the token.
  const std::string set = HeaderOf(r, "Set-Cookie");
  ASSERT_EQ(set.rfind("trm_session=", 0), 0u) << set;
  EXPECT_EQ(set.find(kReadToken), std::string::npos);
  EXPECT_NE(set.find("; Path=/; HttpOnly; SameSite=Strict"), std::string::npos);
  const std::string session = set.substr(12, set.find(';') - 12);
  EXPECT_EQ(session.size(), 48u);
  const std::string csrf_cookie = HeaderOf(r, "Set-Cookie", 1);
  ASSERT_EQ(csrf_cookie.rfind("trm_csrf=", 0), 0u);
  const std::string csrf = csrf_cookie.substr(9, csrf_cookie.find(';') - 9);
  EXPECT_EQ(csrf.size(), 32u);
  const std::string cookies = "trm_session=" + session + "; trm_csrf=" + csrf;
  EXPECT_EQ(Get(api, "/api/jobs", {}, "", "trm_session=0123; trm_csrf=" + csrf).status, 401);  // a made-up one
  EXPECT_EQ(Get(api, "/api/jobs", {}, "", cookies).status, 200);
  EXPECT_EQ(Get(api, "/", {}, "", cookies).status, 200);
  EXPECT_EQ(Body(Get(api, "/api/whoami", {}, "", cookies))["role"], "read");

  // Cancel: the CSRF header must match, and a reader may not.
  HttpRequest cancel;
  cancel.method = "POST";
  cancel.host = "127.0.0.1:8080";
  cancel.path = "/api/jobs/" + alice_job + "/cancel";
  cancel.cookie = cookies;
  r = api.Handle(cancel);
  EXPECT_EQ(r.status, 403);
  EXPECT_NE(r.body.find("X-TRM-CSRF"), std::string::npos);
  cancel.csrf = csrf;
  r = api.Handle(cancel);
  EXPECT_EQ(r.status, 403) << r.body;  // a read token
  cancel.cookie = "trm_csrf=" + csrf;
  cancel.authorization = std::string("Bearer ") + kAdminToken;
  r = api.Handle(cancel);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Body(r)["state"], "JOB_CANCELLED");
  // Each attempt is in the audit log, refusals included, as for the gRPC CancelJob.
  const auto audit = c_->ListAudit(0, "", 100);
  int cancels = 0, ok = 0;
  for (const auto& e : audit)
    if (e.method() == "CancelJob" && e.target() == alice_job) {
      ++cancels;
      ok += e.result() == "OK";
    }
  EXPECT_EQ(cancels, 3);
  EXPECT_EQ(ok, 1);
  // Logout ends the session.
  HttpRequest logout;
  logout.method = "POST";
  logout.path = "/logout";
  logout.host = "127.0.0.1:8080";
  logout.cookie = cookies;
  EXPECT_EQ(api.Handle(logout).status, 303);
  EXPECT_EQ(Get(api, "/api/jobs", {}, "", cookies).status, 401);
  cancel.method = "GET";
  EXPECT_EQ(api.Handle(cancel).status, 405);

  // TLS: the cookies are Secure.
  HttpApiOptions tls;
  tls.tls = true;
  HttpApi secure(c_.get(), &auth, tls);
  login.method = "POST";
  EXPECT_NE(HeaderOf(secure.Handle(login), "Set-Cookie").find("; Secure"), std::string::npos);
}

TEST_F(HttpApiTest, PrivateReadsHideOtherUsersJobs) {
  c_.reset();
  options_.private_reads = true;
  Open();
  Authorizer auth(Tokens());
  HttpApi api(c_.get(), &auth);
  AddWorker("w1", 1);
  const std::string alice_job = c_->SubmitJob(Spec(1), Principal{"alice", Role::kSubmit});
  const std::string reader = std::string("Bearer ") + kReadToken;
  EXPECT_EQ(Body(Get(api, "/api/jobs", {}, reader))["jobs"].size(), 0u);
  EXPECT_EQ(Get(api, "/api/jobs/" + alice_job, {}, reader).status, 404);
  EXPECT_EQ(Get(api, "/api/jobs/" + alice_job + "/metrics", {}, reader).status, 404);
  EXPECT_EQ(Body(Get(api, "/api/jobs", {}, std::string("Bearer ") + kSubmitToken))["jobs"].size(), 1u);
}

// The same API over a real socket: civetweb hands the request over and writes the answer.
TEST_F(HttpApiTest, ServesOverHttpOnLoopback) {
  HttpApi api(c_.get(), &open_);
  HttpServerOptions o;
  o.listen = "127.0.0.1:0";
  HttpServer server(o, &api);
  ASSERT_GT(server.port(), 0);
  EXPECT_EQ(server.url(), "http://127.0.0.1:" + std::to_string(server.port()) + "/");
  auto fetch = [&](const std::string& request) { return Fetch(server.port(), request); };
  std::string r = fetch("GET /api/whoami?x=%20y HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(r.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << r;
  EXPECT_NE(r.find("\"name\":\"local\""), std::string::npos) << r;
  r = fetch("GET /api/jobs/nope HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(r.rfind("HTTP/1.1 404", 0), 0u) << r;
  r = fetch("GET /api/whoami HTTP/1.1\r\nHost: rebound.example\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(r.rfind("HTTP/1.1 421", 0), 0u) << r;
  r = fetch("POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 11\r\n\r\ntoken=hello");
  EXPECT_EQ(r.rfind("HTTP/1.1 303", 0), 0u) << r;  // without auth any token "works"; the cookie is harmless
  r = fetch("POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 70000\r\n\r\n" +
            std::string(70000, 'x'));
  EXPECT_EQ(r.rfind("HTTP/1.1 413", 0), 0u) << r.substr(0, 100);
  // No CORS: a preflight of another origin gets no Access-Control-Allow-* header.
  r = fetch("OPTIONS /api/jobs/x/cancel HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://evil.example\r\n"
            "Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: x-trm-csrf\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(r.find("Access-Control-Allow"), std::string::npos) << r;
  // Off loopback without TLS it refuses to start.
  HttpServerOptions open;
  open.listen = "0.0.0.0:0";
  EXPECT_NE(ErrorOf([&] { HttpServer s(open, &api); }).find("plaintext off loopback"), std::string::npos);
}

// A checkpoint's download link: its files as one tar, read as it is sent, which tar itself
// unpacks into the files trmctl pull writes.
TEST_F(HttpApiTest, CheckpointsDownloadAsATar) {
  HttpApi api(c_.get(), &open_);
  AddWorker("w1", 1);
  Beat("w1");
  const std::string id = c_->SubmitJob(Spec(1));
  c_->Tick();
  Upload(id, 1, 2);
  HttpResponse r = Get(api, "/api/jobs/" + id + "/checkpoints/step_2/download");
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_TRUE(r.stream);
  EXPECT_EQ(r.content_type, "application/x-tar");
  EXPECT_EQ(HeaderOf(r, "Content-Disposition"), "attachment; filename=\"" + id + "-step_2.tar\"");
  std::string tar;
  ASSERT_TRUE(r.stream([&](const char* p, size_t n) { return tar.append(p, n), true; }));
  EXPECT_EQ(tar.size(), r.stream_length);
  EXPECT_EQ(tar.size() % 512, 0u);
  EXPECT_EQ(tar.substr(tar.size() - 1024), std::string(1024, '\0'));
  // The first header by hand: the name under the job-step folder, its size in octal, its sum.
  EXPECT_EQ(std::string(tar.c_str()), id + "-step_2/model.safetensors");
  EXPECT_EQ(std::strtoull(tar.substr(124, 12).c_str(), nullptr, 8), std::string("weights at 2").size());
  unsigned sum = 0;
  for (size_t i = 0; i < 512; ++i) sum += (i >= 148 && i < 156) ? ' ' : static_cast<unsigned char>(tar[i]);
  EXPECT_EQ(std::strtoul(tar.substr(148, 7).c_str(), nullptr, 8), sum);
  // And as tar reads it.
  const fs::path out = root_ / "untar";
  fs::create_directories(out);
  WriteFileAtomic((root_ / "c.tar").string(), tar);
  ASSERT_EQ(std::system(("tar -xf '" + (root_ / "c.tar").string() + "' -C '" + out.string() + "'").c_str()), 0);
  EXPECT_EQ(ReadFile((out / (id + "-step_2") / "model.safetensors").string()), "weights at 2");
  EXPECT_EQ(ReadFile((out / (id + "-step_2") / "tokenizer" / "vocab.json").string()), "{}");
  // A client that goes away stops the stream.
  size_t calls = 0;
  EXPECT_FALSE(r.stream([&](const char*, size_t) { return ++calls < 2; }));
  EXPECT_EQ(calls, 2u);
  // Selectors work as in trmctl pull; unknown checkpoints are 404.
  EXPECT_EQ(Get(api, "/api/jobs/" + id + "/checkpoints/latest/download").stream_length, tar.size());
  EXPECT_EQ(Get(api, "/api/jobs/" + id + "/checkpoints/step_9/download").status, 404);
  {
    // At most max_downloads at once (each holds a server thread); a slot is free again once its
    // response is gone.
    HttpApiOptions one;
    one.max_downloads = 1;
    HttpApi limited(c_.get(), &open_, one);
    HttpResponse first = Get(limited, "/api/jobs/" + id + "/checkpoints/step_2/download");
    ASSERT_EQ(first.status, 200);
    HttpResponse second = Get(limited, "/api/jobs/" + id + "/checkpoints/step_2/download");
    EXPECT_EQ(second.status, 503);
    EXPECT_EQ(HeaderOf(second, "Retry-After"), "10");
    EXPECT_EQ(Get(limited, "/api/jobs/" + id + "/checkpoints/step_9/download").status, 503);
    first = HttpResponse{};
    EXPECT_EQ(Get(limited, "/api/jobs/" + id + "/checkpoints/step_9/download").status, 404) << "the slot came back";
    EXPECT_EQ(Get(limited, "/api/jobs/" + id + "/checkpoints/step_2/download").status, 200) << "and after a refusal too";
  }

  // Over HTTP: Content-Length first, then the same bytes.
  HttpServerOptions o;
  o.listen = "127.0.0.1:0";
  HttpServer server(o, &api);
  const std::string http =
      Fetch(server.port(), "GET /api/jobs/" + id + "/checkpoints/step_2/download HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
  ASSERT_EQ(http.rfind("HTTP/1.1 200", 0), 0u) << http.substr(0, 200);
  EXPECT_NE(http.find("Content-Length: " + std::to_string(tar.size()) + "\r\n"), std::string::npos);
  EXPECT_EQ(http.substr(http.find("\r\n\r\n") + 4), tar);
}

TEST(TarStream, LongPathsSplitIntoPrefixAndName) {
  const fs::path dir = fs::temp_directory_path() / ("trm_tar_" + std::to_string(::getpid()));
  const std::string sub = std::string(80, 'd') + "/" + std::string(90, 'f');
  fs::create_directories(dir / std::string(80, 'd'));
  WriteFileAtomic((dir / sub).string(), "x");
  FileSet files{dir.string(), rpc::BuildManifest(dir.string(), "t")};
  std::string tar;
  ASSERT_TRUE(WriteTar(files, "top", [&](const char* p, size_t n) { return tar.append(p, n), true; }));
  EXPECT_EQ(tar.size(), TarSize(files, "top"));
  EXPECT_EQ(std::string(tar.c_str() + 345), "top/" + std::string(80, 'd'));
  EXPECT_EQ(std::string(tar.c_str(), 90), std::string(90, 'f'));
  // A path with no '/' that leaves both parts short enough: a GNU long name, which tar and
  // Python's tarfile read.
  const std::string unsplittable = std::string(200, 'u') + "/" + std::string(40, 'f');
  fs::create_directories(dir / std::string(200, 'u'));
  WriteFileAtomic((dir / unsplittable).string(), "y");
  const FileSet too_long{dir.string(), rpc::BuildManifest(dir.string(), "t")};
  std::string long_tar;
  ASSERT_TRUE(WriteTar(too_long, "top", [&](const char* p, size_t n) { return long_tar.append(p, n), true; }));
  EXPECT_EQ(long_tar.size(), TarSize(too_long, "top"));
  const std::string tar_path = (dir.parent_path() / ("trm_tar_long_" + std::to_string(::getpid()) + ".tar")).string();
  WriteFileAtomic(tar_path, long_tar);
  const std::string names_path = tar_path + ".names";
  const std::string cmd = "python3 -c 'import sys, tarfile; print(\"\\n\".join(sorted(tarfile.open(sys.argv[1]).getnames())))' " +
                          tar_path + " > " + names_path;
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  EXPECT_EQ(ReadFile(names_path), "top/" + sub + "\ntop/" + unsplittable + "\n");
  fs::remove(tar_path);
  fs::remove(names_path);
  // Missing or resized files are found before sending too, and while sending.
  WriteFileAtomic((dir / sub).string(), "xx");
  EXPECT_NE(ErrorOf([&] { TarSize(files, "top"); }).find("its manifest says 1"), std::string::npos);
  fs::remove(dir / sub);
  EXPECT_NE(ErrorOf([&] { TarSize(files, "top"); }).find("missing"), std::string::npos);
  EXPECT_THROW(WriteTar(files, "top", [](const char*, size_t) { return true; }), Error) << "a file deleted meanwhile";
  fs::remove_all(dir);
}

}  // namespace
}  // namespace trm::coordinator
