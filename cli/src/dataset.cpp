// trmctl dataset push / list. A pushed dataset is content-addressed by its manifest, so pushing
// the same directory twice is cheap on the coordinator and gives the same hash.
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "format.h"
#include "internal.h"
#include "output.h"
#include "trm/cli/commands.h"
#include "trm/rpc/client.h"
#include "trm/rpc/transfer.h"

namespace fs = std::filesystem;

namespace trm::cli {

v1::DatasetInfo PushDataset(v1::DatasetService::StubInterface* datasets, const std::string& dir,
                            const std::string& name, milliseconds stream_deadline) {
  const v1::Manifest manifest = rpc::BuildManifest(dir, name);
  grpc::ClientContext c;
  rpc::SetDeadline(&c, stream_deadline);
  v1::DatasetInfo info;
  auto writer = datasets->PushDataset(&c, &info);
  v1::TransferMessage head;
  *head.mutable_manifest() = manifest;
  // A failed write means the server ended the call; Finish says why.
  if (writer->Write(head)) {
    v1::TransferMessage msg;
    if (rpc::SendChunks(dir, manifest, 0, [&](const v1::Chunk& chunk) {
          *msg.mutable_chunk() = chunk;
          return writer->Write(msg);
        }))
      writer->WritesDone();
  }
  CheckRpc(writer->Finish(), "push dataset " + name);
  return info;
}

int RunDatasetPush(const Args& args, const Context& ctx) {
  args.ExpectPositional(1, "DIR");
  std::string dir = args.positional()[0];
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  if (!fs::is_directory(dir)) throw UsageError(dir + ": not a directory");
  if (args.Has("--prompts")) {
    // A prompts set for trmctl eval --prompts: the one file trm-eval generate reads.
    int files = 0;
    for (const auto& e : fs::recursive_directory_iterator(dir)) {
      const std::string ext = e.path().extension().string();
      files += e.is_regular_file() && (ext == ".jsonl" || ext == ".json");
    }
    if (files != 1)
      throw UsageError(dir + ": a prompts set holds exactly one .jsonl or .json file, this one " +
                       std::to_string(files));
  } else if (!fs::exists(fs::path(dir) / "train" / "dataset.json")) {
    // The layout `trm-data build` writes (docs/data.md); anything else would fail on the workers.
    throw UsageError(dir + ": not a built dataset (no train/dataset.json; make one with trm-data build, or push "
                           "a prompts file's directory with --prompts)");
  }
  std::string name = args.Get("--name");
  if (name.empty()) name = fs::absolute(dir).lexically_normal().filename().string();
  try {
    // NAME (yours) or OWNER/NAME (another user's namespace: its owner or an admin only).
    const size_t slash = name.find('/');
    rpc::CheckName(name.substr(0, slash), "dataset name");
    if (slash != std::string::npos) rpc::CheckName(name.substr(slash + 1), "dataset name (after OWNER/)");
  } catch (const Error& e) {
    throw UsageError(std::string(e.what()) + " (choose one with --name)");
  }
  const auto start = std::chrono::steady_clock::now();
  const v1::DatasetInfo info = PushDataset(ctx.datasets(), dir, name, std::chrono::hours(6));
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  char rate[32];
  std::snprintf(rate, sizeof rate, "%.1f", s > 0 ? info.size_bytes() / 1e6 / s : 0.0);
  *ctx.io.out << (info.owner().empty() ? "" : info.owner() + "/") << info.name() << " " << info.content_sha256() << "\n"
              << "  " << info.files() << " files, " << FormatBytes(info.size_bytes()) << ", " << rate << " MB/s\n";
  return 0;
}

int RunDatasetList(const Args& args, const Context& ctx) {
  args.ExpectPositional(0, "");
  grpc::ClientContext c;
  rpc::SetDeadline(&c, ctx.timeout);
  v1::ListDatasetsResponse resp;
  CheckRpc(ctx.datasets()->ListDatasets(&c, v1::ListDatasetsRequest(), &resp), "list datasets");
  if (WantsJson(args)) {
    PrintJson(resp, *ctx.io.out);
    return 0;
  }
  Table t({"NAME", "SHA256", "SIZE", "FILES", "AGE"});
  const int64_t now = NowUnixMs();
  for (const auto& d : resp.datasets())
    t.AddRow({(d.owner().empty() ? "local" : d.owner()) + "/" + d.name(), d.content_sha256().substr(0, 12), FormatBytes(d.size_bytes()), std::to_string(d.files()),
              FormatAge(d.created_unix_ms(), now)});
  t.Print(*ctx.io.out);
  return 0;
}

}  // namespace trm::cli
