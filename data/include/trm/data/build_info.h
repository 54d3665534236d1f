// What a dataset's build.json (written by the builder, docs/data.md) says about its identity.
#pragma once

#include <string>

namespace trm::data {

// build.json's "content_sha256" (the digest of the arrays; a shard carries its dataset's), or ""
// for a dataset with no build.json (one the reference's own scripts built). A build.json that
// cannot be read, is not JSON, or lacks a 64-hex-digit content_sha256 is kDataLoss naming the
// file and the field: ranks compare this digest before training (RequireSameOnEveryRank), and
// reading a damaged file as "no digest" would let datasets that differ pass as equal.
std::string ContentDigest(const std::string& dataset_dir);

}  // namespace trm::data
