// A command-line flag's value as a number, for the tools' hand-written argument loops. Bad input
// is InvalidArgument naming the flag, what was expected and what was given.
#pragma once

#include <cstdint>
#include <string>

namespace trm {

// A whole decimal integer >= min ("--batch-size: expected an integer of at least 1, got 'x'").
int64_t IntFlag(const std::string& flag, const std::string& value, int64_t min);
// A whole floating-point number ("--temperature: expected a number, got 'x'").
double NumberFlag(const std::string& flag, const std::string& value);

}  // namespace trm
