// trmctl's command table: names, flags, help texts and dispatch.
#include "trm/cli/cli.h"

#include <chrono>

#include "internal.h"
#include "output.h"
#include "trm/rpc/client.h"

namespace trm::cli {

namespace {

using Handler = int (*)(const Args&, const Context&);

struct Command {
  std::string name;  // "dataset push" for the two-word ones
  std::string usage;
  std::vector<FlagSpec> flags;
  Handler run;
};

const char kCommon[] =
    "\ncommon options:\n"
    "  --coordinator HOST:PORT  the coordinator (default $TRM_COORDINATOR, else localhost:50051)\n"
    "  --timeout-s N            deadline of each request in seconds (default 30)\n"
    "  -h, --help               this text\n"
    "\nexit codes: 0 done; 1 the service refused or failed the request (the message says why;\n"
    "watch: the job failed or was cancelled); 2 bad usage or local input (a flag, a file).\n"
    "-o json on list, status, checkpoints, workers and dataset list prints one JSON document\n"
    "whose field names are trm.proto's (snake_case), stable for scripts.\n";

const std::vector<Command>& Commands() {
  static const std::vector<Command> commands = {
      {"submit",
       "usage: trmctl submit (--config-name NAME [--config-dir DIR] | --config FILE.yaml) [--name N]\n"
       "                     [--dataset NAME_OR_HASH | --data-path PATH] [--world-size N [--min-world-size M]]\n"
       "                     [--priority P]\n"
       "                     [--max-restarts M] [--eval-dataset NAME_OR_HASH] [--no-preempt] [key=value ...]\n"
       "Submits a training job and prints its id. --config-name composes configs/NAME.yaml with its\n"
       "defaults here, as trm-train does; key=value overrides are checked here and applied by the\n"
       "coordinator. --world-size defaults to 1, --priority (higher first) and --max-restarts to 0.\n"
       "--eval-dataset evaluates every checkpoint the job uploads on that dataset's test split (an\n"
       "evaluation run each, after every training job; trmctl checkpoints shows the results).\n"
       "A queued job of higher --priority that does not fit preempts lower-priority running jobs:\n"
       "they save a checkpoint, wait in the queue and resume exactly (no restart used);\n"
       "--no-preempt (admins only) exempts this one. With --min-world-size the job is elastic: when\n"
       "fewer slots are free (or a worker is lost) it runs on the largest size down to M that divides\n"
       "global_batch_size, keeping the global batch (the same run), and grows back onto free slots.\n",
       {{"--config-name"}, {"--config-dir"}, {"--config"}, {"--name"}, {"--dataset"}, {"--data-path"},
        {"--world-size"}, {"--min-world-size"}, {"--priority"}, {"--max-restarts"}, {"--eval-dataset"}, {"--no-preempt", false}},
       RunSubmit},
      {"list",
       "usage: trmctl list [--state STATE[,STATE...]] [--limit N] [--mine | --owner NAME] [-o table|json]\n"
       "Lists jobs (newest first); STATE is queued, running, succeeded, failed or cancelled.\n"
       "--mine: only your jobs (your token's name); --owner NAME: only NAME's.\n",
       {{"--state"}, {"--limit"}, {"--mine", false}, {"--owner"}, OutputFlag()},
       RunList},
      {"status",
       "usage: trmctl status JOB [-o table|json] [--json]\n"
       "Shows a job: state, message, failure kind, placement, latest checkpoint, restarts.\n"
       "-o json: the Job as one JSON line; --json: the same, indented.\n",
       {{"--json", false}, OutputFlag()},
       RunStatus},
      {"watch",
       "usage: trmctl watch JOB [--logs] [--events] [--after-seq N] [--reconnect-s N]\n"
       "Follows a job until it ends: state changes, live progress (step, loss, tokens/s, ETA),\n"
       "checkpoints, and with --logs the ranks' output. --events prints every event as one JSON\n"
       "line. Reconnects for up to --reconnect-s (default 120) when the coordinator goes away.\n"
       "Exits 0 when the job succeeded, 1 when it failed or was cancelled. --after-seq N starts\n"
       "after event N (a script's resume point; events are numbered from 1).\n",
       {{"--logs", false}, {"--events", false}, {"--after-seq"}, {"--reconnect-s"}},
       RunWatch},
      {"logs",
       "usage: trmctl logs JOB [-f] [--reconnect-s N]\n"
       "Prints the job's log lines ([rank N] text); -f keeps following until the job ends.\n",
       {{"--follow", false, "-f"}, {"--reconnect-s"}},
       RunLogs},
      {"cancel",
       "usage: trmctl cancel JOB\nCancels a queued or running job (yours, or anyone's as an admin).\n", {},
       RunCancel},
      {"eval",
       "usage: trmctl eval JOB --dataset NAME_OR_HASH [--split test] [--prompts NAME]\n"
       "                   [--select latest|best:METRIC|step:N|all] [--priority P] [--max-restarts M]\n"
       "Submits evaluation runs of JOB's checkpoints and prints their ids, one a line: trm-eval on\n"
       "one worker slot over the dataset's split (--split, default test) and, with --prompts (a\n"
       "pushed dataset holding one .jsonl/.json prompts file; --dataset may then be left out),\n"
       "trm-eval generate on it. --select (default latest) picks the checkpoint as pull does; all\n"
       "is every retained one. Runs show in trmctl list (KIND eval), run after every training job,\n"
       "can be cancelled, and are run again when their worker dies (--max-restarts, default 2).\n"
       "Results go on the checkpoint: trmctl checkpoints JOB shows them as eval[DATASET]:METRIC,\n"
       "which --select best:eval[DATASET]:lm_loss and the coordinator's --keep-best accept.\n",
       {{"--select"}, {"--dataset"}, {"--split"}, {"--prompts"}, {"--priority"}, {"--max-restarts"}},
       RunEval},
      {"checkpoints",
       "usage: trmctl checkpoints JOB [--metrics KEY[,KEY...]] [-o table|json]\n"
       "Lists a job's checkpoints: a column per chosen step metric (--metrics, default\n"
       "lm_loss,eval_lm_loss,eval_accuracy; '-' where a checkpoint has none) and the evaluation\n"
       "results (eval[DATASET]:METRIC). -o json (or --json) prints every field of every checkpoint.\n",
       {{"--json", false}, {"--metrics"}, OutputFlag()},
       RunCheckpoints},
      {"pull",
       "usage: trmctl pull JOB -o DIR [--select latest|best:METRIC|step:N] [--weights-only] [--retries N]\n"
       "                   [--force]\n"
       "Downloads a checkpoint into DIR (through DIR.partial), resuming after broken streams\n"
       "(--retries, default 5) and verifying every file's SHA-256. DIR must not exist or be empty\n"
       "unless --force. --weights-only: only what evaluation and generation need (model.safetensors,\n"
       "state.json, tokenizer/ and a manifest.json listing them), not the optimizer state.\n",
       {{"--output", true, "-o"}, {"--select"}, {"--retries"}, {"--force", false}, {"--weights-only", false}},
       RunPull},
      {"workers", "usage: trmctl workers [-o table|json]\nLists the workers the coordinator knows.\n", {OutputFlag()},
       RunWorkers},
      {"metrics",
       "usage: trmctl metrics JOB [--format csv|json] [--keys KEY[,KEY...]] [--from-step N]\n"
       "Prints a job's metric series, one point per logged step and per evaluation: CSV (default)\n"
       "with columns step,total_steps,eval (1 on evaluation lines) and one per key (every key\n"
       "the points have, sorted, unless --keys; empty where a line lacks it), values at full\n"
       "precision; or JSON, {\"points\": [{\"step\", \"total_steps\", \"values\": {...}, \"eval\"}]}.\n",
       {{"--format"}, {"--keys"}, {"--from-step"}},
       RunMetrics},
      {"dataset push",
       "usage: trmctl dataset push DIR [--name NAME] [--prompts]\n"
       "Uploads a dataset built by trm-data build (NAME defaults to DIR's name) and prints its name\n"
       "and content hash; jobs use it with --dataset NAME_OR_HASH. Names are per user: NAME is\n"
       "yours, and others name it OWNER/NAME (pushing OWNER/NAME: its owner or an admin only).\n"
       "--prompts: DIR holds one\n"
       ".jsonl/.json prompts file instead (JSONL prompt/reference, ShareGPT, Alpaca or\n"
       "OpenAssistant), for trmctl eval --prompts NAME.\n",
       {{"--name"}, {"--prompts", false}},
       RunDatasetPush},
      {"dataset list",
       "usage: trmctl dataset list [-o table|json]\nLists the pushed datasets: every version of every\n"
       "OWNER/NAME (the newest is what the name means).\n",
       {OutputFlag()}, RunDatasetList},
      {"queue",
       "usage: trmctl queue [-o table|json]\n"
       "The queued jobs in the order the scheduler considers them (priority, training before\n"
       "evaluation runs, then first come first served), each with its owner, the slots it wants,\n"
       "how long it has waited and why it waits (too few free slots, another user's quota, behind a\n"
       "job that has waited past the coordinator's --max-wait-s). trmctl status shows the same reason.\n",
       {OutputFlag()},
       RunQueue},
      {"audit",
       "usage: trmctl audit [--since 7d|2026-12-01] [--user NAME] [--limit N] [-o table|json]\n"
       "Admins: the coordinator's record of mutating calls (submit, cancel, push, evaluation runs,\n"
       "token reloads), refusals included: time, user, peer address, method, target, result.\n"
       "--since: a duration back from now (90s, 30m, 12h, 7d) or a UTC date; --limit: the newest N\n"
       "(default 1000).\n",
       {{"--since"}, {"--user"}, {"--limit"}, OutputFlag()},
       RunAudit},
      {"admin reload-tokens",
       "usage: trmctl admin reload-tokens\nAdmins: the coordinator re-reads its --auth-tokens file (as on SIGHUP);\n"
       "a removed token is refused from its next call on, open watches and downloads included.\n",
       {},
       RunReloadTokens},
      {"admin backup",
       "usage: trmctl admin backup FILE [--force] [--deadline-h 24]\nAdmins: a consistent backup of the coordinator's "
       "whole state while it runs (its database,\nevery dataset and checkpoint), verified as it arrives and written "
       "to FILE (a tar file) only\nonce complete. Restore it with: trm-coordinator --restore FILE --data-dir NEW_DIR.\n",
       {{"--force", false}, {"--deadline-h"}},
       RunBackup},
  };
  return commands;
}

const Command* Find(const std::string& name) {
  for (const auto& c : Commands())
    if (c.name == name) return &c;
  return nullptr;
}

bool IsHelp(const std::string& a) { return a == "-h" || a == "--help" || a == "help"; }

const char kCommonFlags[] = "--coordinator --timeout-s --help";

}  // namespace

// Made from the command table, so it never lists a command or flag trmctl does not have.
std::string BashCompletion() {
  std::string top = "completion", cases, dataset_cases;
  for (const auto& c : Commands()) {
    std::string flags;
    for (const auto& f : c.flags) flags += f.name + " " + (f.alias.empty() ? "" : f.alias + " ");
    flags += kCommonFlags;
    const bool two_word = c.name.rfind("dataset ", 0) == 0;
    const bool admin = c.name.rfind("admin ", 0) == 0;  // one command: no flags of its own
    const std::string word = two_word ? c.name.substr(8) : c.name;
    if (!admin) (two_word ? dataset_cases : cases) += "    " + word + ") flags=\"" + flags + "\" ;;\n";
    if (!two_word && !admin) top += " " + c.name;
  }
  top += " dataset admin";
  return "# trmctl completion for bash: source <(trmctl completion bash)\n"
         "_trmctl() {\n"
         "  local cur=\"${COMP_WORDS[COMP_CWORD]}\" cmd=\"${COMP_WORDS[1]}\" flags=\"\"\n"
         "  if [ \"$COMP_CWORD\" -eq 1 ]; then\n"
         "    COMPREPLY=($(compgen -W \"" + top + "\" -- \"$cur\")); return\n"
         "  fi\n"
         "  if [ \"$cmd\" = dataset ]; then\n"
         "    if [ \"$COMP_CWORD\" -eq 2 ]; then COMPREPLY=($(compgen -W \"push list\" -- \"$cur\")); return; fi\n"
         "    cmd=\"${COMP_WORDS[2]}\"\n"
         "    case \"$cmd\" in\n" + dataset_cases + "    esac\n"
         "  elif [ \"$cmd\" = admin ]; then\n"
         "    if [ \"$COMP_CWORD\" -eq 2 ]; then COMPREPLY=($(compgen -W \"backup reload-tokens\" -- \"$cur\")); return; fi\n"
         "  else\n"
         "    case \"$cmd\" in\n" + cases + "      completion) flags=\"bash\" ;;\n    esac\n"
         "  fi\n"
         "  # Flags where a flag is being typed; otherwise files (dataset and output directories).\n"
         "  if [[ \"$cur\" == -* || \"$cmd\" == completion ]]; then COMPREPLY=($(compgen -W \"$flags\" -- \"$cur\")); fi\n"
         "}\n"
         "complete -o default -F _trmctl trmctl\n";
}

std::string Usage(const std::string& command) {
  if (const Command* c = Find(command)) return c->usage + kCommon;
  return "usage: trmctl COMMAND [options]\n"
         "\n"
         "commands:\n"
         "  submit        submit a training job (prints its id)\n"
         "  list          list jobs\n"
         "  status JOB    show a job\n"
         "  watch JOB     follow a job's progress until it ends\n"
         "  logs JOB      print a job's logs (-f to follow)\n"
         "  cancel JOB    cancel a job\n"
         "  checkpoints JOB   list a job's checkpoints\n"
         "  metrics JOB   a job's metric series (CSV or JSON)\n"
         "  pull JOB -o DIR   download a checkpoint\n"
         "  eval JOB --dataset NAME   evaluate checkpoints (evaluation runs)\n"
         "  workers       list workers\n"
         "  dataset push DIR | dataset list\n"
         "  queue         the queue: order, owners, slots wanted, why each job waits\n"
         "  audit         the audit log of mutating calls (admins)\n"
         "  admin reload-tokens   re-read the coordinator's tokens file (admins)\n"
         "  admin backup FILE     a backup of the coordinator's whole state (admins)\n"
         "  completion bash   bash completion (source <(trmctl completion bash))\n"
         "\n"
         "trmctl COMMAND --help describes one.\n" +
         std::string(kCommon);
}

int Run(const std::vector<std::string>& argv, const ConnectFn& connect, const Io& io) {
  if (argv.empty()) throw UsageError("missing command (trmctl --help lists them)");
  if (IsHelp(argv[0])) {
    *io.out << Usage(argv.size() > 1 ? argv[1] : "");
    return 0;
  }
  std::string name = argv[0];
  if (name == "completion") {
    if (argv.size() != 2 || argv[1] != "bash") throw UsageError("usage: trmctl completion bash");
    *io.out << BashCompletion();
    return 0;
  }
  size_t rest = 1;
  if (name == "dataset") {
    if (argv.size() < 2 || IsHelp(argv[1])) {
      if (argv.size() < 2) throw UsageError("trmctl dataset: expected push or list");
      *io.out << Usage("dataset push") << '\n' << Usage("dataset list");
      return 0;
    }
    name += " " + argv[1];
    rest = 2;
  } else if (name == "admin") {
    if (argv.size() < 2 || IsHelp(argv[1])) {
      if (argv.size() < 2) throw UsageError("trmctl admin: expected backup or reload-tokens");
      *io.out << Usage("admin backup") << '\n' << Usage("admin reload-tokens");
      return 0;
    }
    name += " " + argv[1];
    rest = 2;
  }
  const Command* cmd = Find(name);
  if (!cmd) throw UsageError("unknown command '" + name + "' (trmctl --help lists them)");
  std::vector<FlagSpec> flags = cmd->flags;
  flags.push_back({"--coordinator"});
  flags.push_back({"--timeout-s"});
  flags.push_back({"--help", false, "-h"});
  const Args args(name, std::vector<std::string>(argv.begin() + static_cast<long>(rest), argv.end()), flags);
  if (args.Has("--help")) {
    *io.out << Usage(name);
    return 0;
  }
  const Context ctx(connect, rpc::CoordinatorAddress(args.Get("--coordinator")), io,
                    std::chrono::seconds(args.GetInt("--timeout-s", 30, 1, 86400)));
  return cmd->run(args, ctx);
}

int ExitCodeFor(const std::exception& e) {
  if (dynamic_cast<const UsageError*>(&e)) return 2;
  if (dynamic_cast<const RpcError*>(&e)) return 1;
  // Local input the user named (a directory to push, a config file) that is missing or wrong.
  if (const auto* err = dynamic_cast<const Error*>(&e))
    return err->code() == Code::kInvalidArgument || err->code() == Code::kNotFound ? 2 : 1;
  return 1;
}

}  // namespace trm::cli
