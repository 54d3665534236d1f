// The dashboard's pages, script and style (coordinator/web/), compiled into the binary at build
// time (cmake/embed_web.cmake): nothing is fetched at run time.
#pragma once

#include <string>
#include <string_view>

namespace trm::coordinator {

struct WebAsset {
  const char* name;          // file name under coordinator/web/
  const char* content_type;  // with its charset
  std::string_view body;
};

// nullptr when there is no such asset.
const WebAsset* FindWebAsset(const std::string& name);

}  // namespace trm::coordinator
