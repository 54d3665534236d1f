// Streams the records (conversations) of a JSON array or JSON Lines file one at a time, so a
// 1 GB input needs memory for one record, not for the file. Errors name the file, line and
// column. Internal.
#pragma once

#include <cstdint>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "trm/common/sha256.h"

namespace trm::data::internal {

// nlohmann's parse_error message without its own position (relative to the text it was given,
// not to the file): "syntax error while parsing value - ...".
std::string JsonErrorReason(const nlohmann::json::parse_error& e);
// Same for out_of_range, which parse() throws for a number too large for a double ("1E400").
std::string JsonErrorReason(const nlohmann::json::out_of_range& e);

class JsonRecordReader {
 public:
  // The format is chosen by the first non-blank character: '[' a JSON array of objects, '{' JSON
  // Lines (one object a line). Throws NotFound / IoError / InvalidArgument naming `path`.
  explicit JsonRecordReader(const std::string& path);
  ~JsonRecordReader();
  JsonRecordReader(const JsonRecordReader&) = delete;
  JsonRecordReader& operator=(const JsonRecordReader&) = delete;

  // The next record, false at the end. Throws InvalidArgument "PATH:LINE:COLUMN: ..." (column in
  // characters, 1-based) on malformed JSON or a record that is not an object.
  bool Next(nlohmann::json* record);

  size_t records() const { return records_; }      // returned so far
  // The line the record Next returned last starts on (1-based), for errors about its fields.
  uint64_t record_line() const { return record_line_; }
  uint64_t bytes_read() const { return consumed_; }
  uint64_t file_size() const { return file_size_; }
  bool json_lines() const { return lines_mode_; }
  // SHA-256 of the whole input; only after Next returned false.
  std::string InputSha256() { return sha_.HexDigest(); }

 private:
  int Get();   // next byte or -1; advances the position
  int Peek();  // next byte or -1
  void SkipSpace();
  [[noreturn]] void Fail(uint64_t line, uint64_t col, const std::string& what) const;
  [[noreturn]] void FailJson(const nlohmann::json::parse_error& e, const std::string& text,
                             uint64_t line, uint64_t col, const std::string& what) const;
  bool NextInArray(nlohmann::json* record);
  bool NextLine(nlohmann::json* record);

  std::string path_;
  std::FILE* f_ = nullptr;
  std::vector<char> buf_;
  size_t pos_ = 0, len_ = 0;
  uint64_t consumed_ = 0, file_size_ = 0;
  uint64_t line_ = 1, col_ = 1;  // of the next byte
  bool lines_mode_ = false, started_ = false, done_ = false;
  size_t records_ = 0;
  uint64_t record_line_ = 0;
  std::string text_;
  trm::Sha256 sha_;
};

}  // namespace trm::data::internal
