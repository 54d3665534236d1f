// UniqueFd lives in trm_common (the worker agent uses it too).
#pragma once
#include "trm/common/unique_fd.h"
namespace trm::launch {
using trm::UniqueFd;
}  // namespace trm::launch
