#include "trm/common/cpu_features.h"

#include <fstream>
#include <sstream>

namespace trm {

std::string CpuFeatures::isa() const {
  if (amx_bf16) return "AMX";
  if (avx512f && avx512_bf16) return "AVX-512 + BF16";
  if (avx512f) return "AVX-512";
  if (avx2) return "AVX2";
  return "baseline";
}

CpuFeatures ParseCpuInfo(const std::string& text) {
  CpuFeatures c;
  std::istringstream in(text);
  std::string line;
  bool flags_done = false;
  while (std::getline(in, line)) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon);
    while (!key.empty() && (key.back() == ' ' || key.back() == '\t')) key.pop_back();
    const std::string value = colon + 2 <= line.size() ? line.substr(colon + 2) : "";
    if (key == "model name" && c.model.empty()) c.model = value;
    if (key == "flags" && !flags_done) {
      std::istringstream flags(value);
      for (std::string flag; flags >> flag;) {
        c.avx2 |= flag == "avx2";
        c.avx512f |= flag == "avx512f";
        c.avx512_bf16 |= flag == "avx512_bf16";
        c.amx_bf16 |= flag == "amx_bf16";
      }
      flags_done = true;
    }
  }
  return c;
}

const CpuFeatures& HostCpu() {
  static const CpuFeatures features = [] {
    std::ifstream f("/proc/cpuinfo");
    std::stringstream text;
    text << f.rdbuf();
    return ParseCpuInfo(text.str());
  }();
  return features;
}

}  // namespace trm
