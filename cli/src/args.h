// A small flag parser for trmctl's subcommands: `--flag value`, `--flag=value`, short aliases
// (-o DIR, -f), boolean flags, positionals, `--` ending the flags. Errors are UsageError naming
// the command and the flag.
#pragma once

#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace trm::cli {

struct FlagSpec {
  FlagSpec(std::string n, bool value = true, std::string a = "")
      : name(std::move(n)), takes_value(value), alias(std::move(a)) {}
  std::string name;   // "--config-name"
  bool takes_value;
  std::string alias;  // "-o", or empty
};

class Args {
 public:
  Args(const std::string& command, const std::vector<std::string>& argv, const std::vector<FlagSpec>& spec);

  bool Has(const std::string& flag) const;
  // The last value given, or `fallback`.
  std::string Get(const std::string& flag, const std::string& fallback = "") const;
  std::vector<std::string> GetAll(const std::string& flag) const;
  int GetInt(const std::string& flag, int fallback, int min_value, int max_value) const;
  const std::vector<std::string>& positional() const { return positional_; }
  // Exactly `n` positionals, else UsageError naming what they are.
  void ExpectPositional(size_t n, const std::string& what) const;

 private:
  std::string command_;
  std::map<std::string, std::vector<std::string>> values_;
  std::set<std::string> bools_;
  std::vector<std::string> positional_;
};

}  // namespace trm::cli
