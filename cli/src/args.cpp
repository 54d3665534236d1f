#include "args.h"

#include <cerrno>
#include <cstdlib>

#include "trm/cli/cli.h"

namespace trm::cli {

Args::Args(const std::string& command, const std::vector<std::string>& argv, const std::vector<FlagSpec>& spec)
    : command_(command) {
  auto find = [&](const std::string& token) -> const FlagSpec* {
    for (const auto& f : spec)
      if (token == f.name || (!f.alias.empty() && token == f.alias)) return &f;
    return nullptr;
  };
  bool flags_done = false;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (flags_done || a.size() < 2 || a[0] != '-') {
      positional_.push_back(a);
      continue;
    }
    if (a == "--") {
      flags_done = true;
      continue;
    }
    std::string token = a, inline_value;
    bool has_inline = false;
    if (const auto eq = a.find('='); a.rfind("--", 0) == 0 && eq != std::string::npos) {
      token = a.substr(0, eq);
      inline_value = a.substr(eq + 1);
      has_inline = true;
    }
    const FlagSpec* f = find(token);
    if (!f) throw UsageError("trmctl " + command_ + ": unknown option " + token);
    if (!f->takes_value) {
      if (has_inline) throw UsageError("trmctl " + command_ + ": " + f->name + " takes no value");
      bools_.insert(f->name);
      continue;
    }
    if (!has_inline) {
      if (i + 1 >= argv.size()) throw UsageError("trmctl " + command_ + ": " + f->name + " needs a value");
      inline_value = argv[++i];
    }
    values_[f->name].push_back(inline_value);
  }
}

bool Args::Has(const std::string& flag) const { return bools_.count(flag) > 0 || values_.count(flag) > 0; }

std::string Args::Get(const std::string& flag, const std::string& fallback) const {
  const auto it = values_.find(flag);
  return it == values_.end() ? fallback : it->second.back();
}

std::vector<std::string> Args::GetAll(const std::string& flag) const {
  const auto it = values_.find(flag);
  return it == values_.end() ? std::vector<std::string>{} : it->second;
}

int Args::GetInt(const std::string& flag, int fallback, int min_value, int max_value) const {
  if (!values_.count(flag)) return fallback;
  const std::string v = Get(flag);
  char* end = nullptr;
  errno = 0;
  const long n = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno == ERANGE || n < min_value || n > max_value)
    throw UsageError("trmctl " + command_ + ": " + flag + " '" + v + "': expected an integer in [" +
                     std::to_string(min_value) + ", " + std::to_string(max_value) + "]");
  return static_cast<int>(n);
}

void Args::ExpectPositional(size_t n, const std::string& what) const {
  if (positional_.size() < n) throw UsageError("trmctl " + command_ + ": missing " + what);
  if (positional_.size() > n)
    throw UsageError("trmctl " + command_ + ": unexpected argument '" + positional_[n] + "'");
}

}  // namespace trm::cli
