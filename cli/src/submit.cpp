// trmctl submit: the config is composed here, as trm-train would (configs/NAME.yaml + its
// defaults), so the coordinator receives one self-contained document; the overrides travel
// verbatim and the coordinator applies them. They are also applied here, to a copy, so a typo
// fails before anything is sent.
#include <filesystem>

#include "internal.h"
#include "trm/cli/commands.h"
#include "trm/rpc/client.h"
#include "trm/common/error.h"
#include "trm/common/file_util.h"
#include "trm/common/yaml_config.h"
#include "trm/worker/train_config.h"

namespace fs = std::filesystem;

namespace trm::cli {

namespace {

// Local config problems are unusable input (exit 2), whatever code the loader chose.
template <class Fn>
auto AsUsage(const std::string& context, Fn&& fn) {
  try {
    return fn();
  } catch (const UsageError&) {
    throw;
  } catch (const Error& e) {
    throw UsageError(context + e.what());
  }
}

}  // namespace

v1::SubmitJobRequest BuildSubmitRequest(const SubmitOptions& o) {
  if (o.config_name.empty() == o.config_file.empty())
    throw UsageError("trmctl submit: give exactly one of --config-name NAME and --config FILE");
  if (!o.dataset.empty() && !o.data_path.empty())
    throw UsageError("trmctl submit: give at most one of --dataset and --data-path");
  if (o.world_size < 1) throw UsageError("trmctl submit: --world-size must be at least 1");
  if (o.min_world_size < 0 || o.min_world_size > o.world_size)
    throw UsageError("trmctl submit: --min-world-size must be between 1 and --world-size (" +
                     std::to_string(o.world_size) + ")");
  if (o.max_restarts < 0) throw UsageError("trmctl submit: --max-restarts must not be negative");
  for (const auto& ov : o.overrides)
    if (ov.find('=') == std::string::npos && ov.rfind("~", 0) != 0)
      throw UsageError("trmctl submit: '" + ov + "': expected key=value (or ~key)");

  v1::SubmitJobRequest req;
  v1::JobSpec* spec = req.mutable_spec();
  nlohmann::json config;
  std::string config_name;
  if (!o.config_name.empty()) {
    config_name = o.config_name;
    const std::string dir = o.config_dir.empty() ? worker::DefaultConfigDir() : o.config_dir;
    config = AsUsage("", [&] { return LoadComposedConfig(dir, o.config_name); });
    // JSON is YAML: the composed tree travels as its JSON text, with no second YAML emitter.
    spec->set_config_yaml(config.dump(2));
  } else {
    config_name = fs::path(o.config_file).stem().string();
    const std::string text = AsUsage("", [&] { return ReadFile(o.config_file); });
    config = AsUsage("", [&] { return YamlToJson(text, o.config_file); });
    if (config.is_object() && config.contains("defaults"))
      throw UsageError(o.config_file + ": has a defaults: list, which only composes locally; use --config-name " +
                       config_name + " --config-dir " + fs::path(o.config_file).parent_path().string());
    spec->set_config_yaml(text);
  }
  AsUsage("trmctl submit: ", [&] {
    nlohmann::json checked = config;
    ApplyOverrides(&checked, o.overrides);
    worker::TrainConfig::FromJson(checked, config_name);
    return 0;
  });
  spec->set_config_name(config_name);
  spec->set_name(o.name.empty() ? config_name : o.name);
  for (const auto& ov : o.overrides) spec->add_overrides(ov);
  spec->set_dataset(o.dataset);
  spec->set_data_path(o.data_path);
  spec->set_world_size(o.world_size);
  spec->set_min_world_size(o.min_world_size);
  spec->set_priority(o.priority);
  spec->set_no_preempt(o.no_preempt);
  spec->set_max_restarts(o.max_restarts);
  spec->set_eval_dataset(o.eval_dataset);
  return req;
}

int RunSubmit(const Args& args, const Context& ctx) {
  SubmitOptions o;
  o.config_name = args.Get("--config-name");
  o.config_dir = args.Get("--config-dir");
  o.config_file = args.Get("--config");
  o.name = args.Get("--name");
  o.dataset = args.Get("--dataset");
  o.data_path = args.Get("--data-path");
  o.world_size = args.GetInt("--world-size", 1, 1, 65536);
  o.min_world_size = args.GetInt("--min-world-size", 0, 1, 65536);
  o.priority = args.GetInt("--priority", 0, -1000000, 1000000);
  o.max_restarts = args.GetInt("--max-restarts", 0, 0, 1000);
  o.eval_dataset = args.Get("--eval-dataset");
  o.no_preempt = args.Has("--no-preempt");
  o.overrides = args.positional();
  const v1::SubmitJobRequest req = BuildSubmitRequest(o);
  grpc::ClientContext c;
  rpc::SetDeadline(&c, ctx.timeout);
  v1::SubmitJobResponse resp;
  CheckRpc(ctx.jobs()->SubmitJob(&c, req, &resp), "submit");
  // The id alone, so JOB=$(trmctl submit ...) works.
  *ctx.io.out << resp.job_id() << '\n';
  return 0;
}

}  // namespace trm::cli
