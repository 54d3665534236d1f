// Loading and saving tokenizer files, and resolving "gpt2" / "byte".
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "byte_level.h"
#include "tokenizer_shared.h"
#include "trm/common/error.h"
#include "trm/common/file_util.h"
#include "trm/data/special_tokens.h"

namespace fs = std::filesystem;

namespace trm::data {
namespace {

using Vocab = std::vector<std::pair<std::string, int32_t>>;
using Merges = std::vector<std::pair<std::string, std::string>>;

nlohmann::json ParseJsonFile(const std::string& path) {
  const std::string text = ReadFile(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    DataLoss(path + ": invalid JSON: " + e.what());
  }
}

Vocab VocabFromJson(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object()) DataLoss(where + ": expected an object of token -> id");
  Vocab vocab;
  vocab.reserve(j.size());
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!it.value().is_number_integer()) {
      DataLoss(where + ": token '" + it.key() + "': expected an integer id");
    }
    vocab.emplace_back(it.key(), it.value().get<int32_t>());
  }
  return vocab;
}

// merges.txt: an optional "#version" line, then one "a b" pair a line, in rank order.
Merges ReadMergesTxt(const std::string& path) {
  const std::string text = ReadFile(path);
  Merges merges;
  size_t line_no = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    std::string_view line(text.data() + pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) continue;
    const size_t sp = line.find(' ');
    if (sp == std::string_view::npos || sp == 0 || sp + 1 >= line.size() ||
        line.find(' ', sp + 1) != std::string_view::npos) {
      DataLoss(path + ":" + std::to_string(line_no) + ": expected two tokens separated by one space");
    }
    merges.emplace_back(std::string(line.substr(0, sp)), std::string(line.substr(sp + 1)));
  }
  return merges;
}

std::shared_ptr<const Tokenizer::Shared> FromVocabMerges(const std::string& name, const std::string& dir) {
  const std::string vocab_path = (fs::path(dir) / "vocab.json").string();
  const std::string merges_path = (fs::path(dir) / "merges.txt").string();
  Vocab vocab = VocabFromJson(ParseJsonFile(vocab_path), vocab_path);
  internal::BpeModel model(vocab, ReadMergesTxt(merges_path), vocab_path + " + " + merges_path);
  return std::make_shared<Tokenizer::Shared>(name, std::move(model), std::vector<SpecialToken>{});
}

std::shared_ptr<const Tokenizer::Shared> FromHfJson(const std::string& name, const std::string& path) {
  const nlohmann::json j = ParseJsonFile(path);
  auto field = [&](const nlohmann::json& obj, const char* key) -> const nlohmann::json& {
    static const nlohmann::json kNull;
    auto it = obj.find(key);
    return it == obj.end() ? kNull : *it;
  };
  const nlohmann::json& model = field(j, "model");
  if (!model.is_object() || field(model, "type") != "BPE") {
    InvalidArgument(path + ": model.type: expected \"BPE\" (only byte-level BPE tokenizers are supported)");
  }
  const nlohmann::json& pre = field(j, "pre_tokenizer");
  if (!pre.is_object() || field(pre, "type") != "ByteLevel") {
    InvalidArgument(path + ": pre_tokenizer: expected {\"type\": \"ByteLevel\"} (GPT-2 style)");
  }
  if (field(pre, "add_prefix_space") == true || field(pre, "use_regex") == false) {
    InvalidArgument(path + ": pre_tokenizer: add_prefix_space=true / use_regex=false are not supported");
  }
  if (!field(j, "normalizer").is_null()) InvalidArgument(path + ": normalizer: expected null");

  Vocab vocab = VocabFromJson(field(model, "vocab"), path + ": model.vocab");
  Merges merges;
  const nlohmann::json& jm = field(model, "merges");
  if (!jm.is_array()) DataLoss(path + ": model.merges: expected an array");
  for (size_t i = 0; i < jm.size(); ++i) {
    const auto& m = jm[i];
    if (m.is_string()) {  // "a b"
      const std::string s = m.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos) {
        DataLoss(path + ": model.merges[" + std::to_string(i) + "]: expected \"a b\"");
      }
      merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {  // ["a", "b"]
      merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      DataLoss(path + ": model.merges[" + std::to_string(i) + "]: expected \"a b\" or [\"a\", \"b\"]");
    }
  }
  std::vector<SpecialToken> added;
  const nlohmann::json& ja = field(j, "added_tokens");
  if (ja.is_array()) {
    for (size_t i = 0; i < ja.size(); ++i) {
      const auto& t = ja[i];
      if (!t.is_object() || !field(t, "id").is_number_integer() || !field(t, "content").is_string()) {
        DataLoss(path + ": added_tokens[" + std::to_string(i) + "]: expected {\"id\": int, \"content\": string}");
      }
      added.push_back({t["content"].get<std::string>(), t["id"].get<int32_t>()});
    }
  }
  internal::BpeModel bpe(vocab, std::move(merges), path);
  return std::make_shared<Tokenizer::Shared>(name, std::move(bpe), std::move(added));
}

std::shared_ptr<const Tokenizer::Shared> ByteShared() {
  Vocab vocab;
  for (int b = 0; b < 256; ++b) vocab.emplace_back(internal::ByteToChars(static_cast<uint8_t>(b)), b);
  return std::make_shared<Tokenizer::Shared>("byte", internal::BpeModel(vocab, {}, "byte"),
                                             std::vector<SpecialToken>{});
}

std::string ExecutableDir() {
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string() : exe.parent_path().string();
}

}  // namespace

std::vector<std::string> Tokenizer::GptFilesDirs() {
  const fs::path rel = fs::path(".cache") / "tokenizers" / "gpt2";
  std::vector<std::string> dirs;
  if (const char* home = std::getenv("TRM_HOME"); home != nullptr && *home != '\0') {
    dirs.push_back((fs::path(home) / rel).string());
  }
  if (std::string exe = ExecutableDir(); !exe.empty()) {
    dirs.push_back((fs::path(exe).parent_path().parent_path() / rel).lexically_normal().string());
  }
#ifdef TRM_DATA_SOURCE_DIR
  dirs.push_back((fs::path(TRM_DATA_SOURCE_DIR) / rel).string());
#endif
  std::vector<std::string> unique;
  for (const auto& d : dirs) {
    if (std::find(unique.begin(), unique.end(), d) == unique.end()) unique.push_back(d);
  }
  return unique;
}

Tokenizer Tokenizer::Load(const std::string& spec) {
  if (spec == "byte") {
    static const std::shared_ptr<const Shared> kByte = ByteShared();
    return Tokenizer(kByte);
  }
  if (spec == "gpt2") {
    std::string looked;
    for (const std::string& dir : GptFilesDirs()) {
      if (fs::exists(fs::path(dir) / "vocab.json") && fs::exists(fs::path(dir) / "merges.txt")) {
        return Tokenizer(FromVocabMerges("gpt2", dir));
      }
      looked += (looked.empty() ? "" : ", ") + dir;
    }
    NotFound("tokenizer 'gpt2': GPT-2's vocab.json + merges.txt are not installed (looked in " +
             looked + "); run scripts/setup.sh (or scripts/fetch_gpt2_tokenizer.sh), or set TRM_HOME "
             "to a checkout that has them");
  }
  const fs::path p(spec);
  std::error_code ec;
  if (fs::is_directory(p, ec)) {
    if (fs::exists(p / "tokenizer.json")) return Tokenizer(FromHfJson(spec, (p / "tokenizer.json").string()));
    if (fs::exists(p / "vocab.json") && fs::exists(p / "merges.txt")) return Tokenizer(FromVocabMerges(spec, spec));
    NotFound("tokenizer '" + spec + "': the directory has neither tokenizer.json nor vocab.json + merges.txt");
  }
  if (fs::is_regular_file(p, ec) && p.extension() == ".json") return Tokenizer(FromHfJson(spec, spec));
  NotFound("tokenizer '" + spec + "': expected 'gpt2', 'byte', a directory with tokenizer.json or "
           "vocab.json + merges.txt, or a tokenizer.json file");
}

void Tokenizer::Save(const std::string& dir) const {
  const Shared& s = *shared_;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) FileError(dir + ": cannot create directory", ec);

  // The vocabulary is written by hand in id order (as GPT-2's own file is): an ordered_json
  // object inserts in linear time per key, far too slow for 50k entries.
  std::string vocab = "{";
  for (int32_t id = 0; id < s.model.id_end(); ++id) {
    if (s.model.Spelled(id).empty()) continue;
    if (vocab.size() > 1) vocab += ',';
    vocab += nlohmann::json(s.model.Spelled(id)).dump() + ":" + std::to_string(id);
  }
  vocab += "}";
  std::string merges_txt = "#version: 0.2\n";
  nlohmann::ordered_json merges = nlohmann::ordered_json::array();
  for (const auto& [a, b] : s.model.merges()) {
    merges_txt += a + " " + b + "\n";
    merges.push_back(a + " " + b);
  }
  std::vector<SpecialToken> specials = s.specials;
  std::sort(specials.begin(), specials.end(), [](const SpecialToken& a, const SpecialToken& b) { return a.id < b.id; });
  nlohmann::ordered_json added = nlohmann::ordered_json::array();
  nlohmann::ordered_json extra = nlohmann::ordered_json::array();
  for (const auto& t : specials) {
    added.push_back({{"id", t.id}, {"content", t.text}, {"single_word", false}, {"lstrip", false},
                     {"rstrip", false}, {"normalized", false}, {"special", true}});
    if (t.text != kEndOfText) extra.push_back(t.text);
  }
  const nlohmann::ordered_json byte_level = {
      {"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  nlohmann::ordered_json hf = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer", byte_level},
      {"post_processor", byte_level},
      {"decoder", byte_level},
      {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr},
                 {"continuing_subword_prefix", ""}, {"end_of_word_suffix", ""}, {"fuse_unk", false},
                 {"byte_fallback", false}, {"vocab", nullptr}, {"merges", merges}}}};
  std::string hf_text = hf.dump();
  const std::string placeholder = "\"vocab\":null";
  hf_text.replace(hf_text.rfind(placeholder), placeholder.size(), "\"vocab\":" + vocab);
  const std::string eot(kEndOfText);
  nlohmann::ordered_json special_map = {{"bos_token", eot}, {"eos_token", eot}, {"unk_token", eot},
                                        {"pad_token", "<|pad|>"}, {"additional_special_tokens", extra}};
  nlohmann::ordered_json config = special_map;
  config["tokenizer_class"] = "GPT2Tokenizer";
  config["add_prefix_space"] = false;
  config["model_max_length"] = 1024;
  config["trm_tokenizer"] = s.name == "byte" || s.name == "gpt2" ? s.name : "files";

  const fs::path d(dir);
  WriteFileAtomic((d / "vocab.json").string(), vocab + "\n");
  WriteFileAtomic((d / "merges.txt").string(), merges_txt);
  WriteFileAtomic((d / "tokenizer.json").string(), hf_text + "\n");
  WriteFileAtomic((d / "special_tokens_map.json").string(), special_map.dump(2) + "\n");
  WriteFileAtomic((d / "tokenizer_config.json").string(), config.dump(2) + "\n");
}

}  // namespace trm::data
