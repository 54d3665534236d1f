#include "json_records.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "trm/common/error.h"

namespace trm::data::internal {
namespace {

bool IsSpace(int c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

}  // namespace

std::string JsonErrorReason(const nlohmann::json::parse_error& e) {
  const std::string msg = e.what();
  const size_t col = msg.find("column ");
  const size_t colon = col == std::string::npos ? std::string::npos : msg.find(": ", col);
  return colon == std::string::npos ? msg : msg.substr(colon + 2);
}

std::string JsonErrorReason(const nlohmann::json::out_of_range& e) {
  const std::string msg = e.what();  // "[json.exception.out_of_range.406] number overflow parsing '1E400'"
  const size_t end = msg.find("] ");
  return end == std::string::npos ? msg : msg.substr(end + 2);
}

JsonRecordReader::JsonRecordReader(const std::string& path) : path_(path) {
  f_ = std::fopen(path.c_str(), "rb");
  if (f_ == nullptr) {
    if (errno == ENOENT) NotFound(path + ": no such file");
    FileError(path + ": cannot open", errno);
  }
  // Our buffer is the only one needed; a small file gets a buffer of its size, not 1 MiB
  // (zero-filling 1 MiB per file dominated the cost of small inputs).
  std::setvbuf(f_, nullptr, _IONBF, 0);
  struct stat st {};
  if (::fstat(fileno(f_), &st) == 0) file_size_ = static_cast<uint64_t>(st.st_size);
  constexpr uint64_t kMaxBuffer = uint64_t{1} << 20;
  buf_.resize(file_size_ > 0 ? static_cast<size_t>(std::min(kMaxBuffer, file_size_ + 1)) : size_t{64} << 10);
}

JsonRecordReader::~JsonRecordReader() {
  if (f_ != nullptr) std::fclose(f_);
}

int JsonRecordReader::Peek() {
  if (pos_ == len_) {
    len_ = std::fread(buf_.data(), 1, buf_.size(), f_);
    pos_ = 0;
    if (len_ == 0) {
      if (std::ferror(f_)) IoError(path_ + ": read failed");
      return -1;
    }
    sha_.Update(buf_.data(), len_);
  }
  return static_cast<unsigned char>(buf_[pos_]);
}

int JsonRecordReader::Get() {
  const int c = Peek();
  if (c < 0) return c;
  ++pos_;
  ++consumed_;
  if (c == '\n') {
    ++line_;
    col_ = 1;
  } else if ((c & 0xC0) != 0x80) {  // count characters, not UTF-8 continuation bytes
    ++col_;
  }
  return c;
}

void JsonRecordReader::SkipSpace() {
  while (IsSpace(Peek())) Get();
}

void JsonRecordReader::Fail(uint64_t line, uint64_t col, const std::string& what) const {
  InvalidArgument(path_ + ":" + std::to_string(line) + ":" + std::to_string(col) + ": " + what);
}

void JsonRecordReader::FailJson(const nlohmann::json::parse_error& e, const std::string& text,
                                uint64_t line, uint64_t col, const std::string& what) const {
  // e.byte is 1-based within `text`, which starts at (line, col).
  const size_t end = std::min<size_t>(e.byte == 0 ? 0 : e.byte - 1, text.size());
  for (size_t i = 0; i < end; ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c == '\n') {
      ++line;
      col = 1;
    } else if ((c & 0xC0) != 0x80) {
      ++col;
    }
  }
  Fail(line, col, "malformed JSON in " + what + ": " + JsonErrorReason(e));
}

bool JsonRecordReader::Next(nlohmann::json* record) {
  if (done_) return false;
  if (!started_) {
    started_ = true;
    // A UTF-8 byte order mark is allowed before the data.
    if (Peek() == 0xEF) {
      Get();
      if (Get() != 0xBB || Get() != 0xBF) Fail(1, 1, "expected a JSON array or JSON Lines");
      col_ = 1;
    }
    SkipSpace();
    const int c = Peek();
    if (c < 0) {
      done_ = true;
      return false;
    }
    if (c == '[') {
      Get();
    } else if (c == '{') {
      lines_mode_ = true;
    } else {
      Fail(line_, col_, "expected a JSON array of conversations ('[') or JSON Lines ('{' on each line)");
    }
  }
  const bool got = lines_mode_ ? NextLine(record) : NextInArray(record);
  if (got) ++records_;
  return got;
}

bool JsonRecordReader::NextInArray(nlohmann::json* record) {
  const std::string what = "conversation " + std::to_string(records_);
  SkipSpace();
  if (records_ > 0 || Peek() == ']') {
    const uint64_t l = line_, c = col_;
    const int sep = Get();
    if (sep == ']') {
      SkipSpace();
      if (Peek() >= 0) Fail(line_, col_, "unexpected data after the closing ']'");
      done_ = true;
      return false;
    }
    if (sep != ',') {
      Fail(l, c, sep < 0 ? "unexpected end of file: the array is not closed with ']'"
                         : "expected ',' or ']' after conversation " + std::to_string(records_ - 1));
    }
    SkipSpace();
  }
  const uint64_t start_line = line_, start_col = col_;
  record_line_ = start_line;
  if (Peek() != '{') Fail(line_, col_, "expected an object for " + what);
  // Find the end of the object by bracket depth outside strings; nlohmann then checks the rest.
  text_.clear();
  std::string open;  // the brackets not yet closed
  bool in_string = false, escape = false;
  do {
    const uint64_t l = line_, col = col_;
    const int c = Get();
    if (c < 0) {
      Fail(line_, col_, "unexpected end of file inside " + what + " (it starts at line " +
                            std::to_string(start_line) + ")");
    }
    text_.push_back(static_cast<char>(c));
    if (in_string) {
      if (escape) escape = false;
      else if (c == '\\') escape = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      open.push_back(static_cast<char>(c));
    } else if (c == '}' || c == ']') {
      if (open.back() != (c == '}' ? '{' : '[')) {
        Fail(l, col, std::string("malformed JSON in ") + what + ": '" + static_cast<char>(c) +
                         "' does not close '" + open.back() + "'");
      }
      open.pop_back();
    }
  } while (!open.empty());
  try {
    *record = nlohmann::json::parse(text_);
  } catch (const nlohmann::json::parse_error& e) {
    FailJson(e, text_, start_line, start_col, what);
  } catch (const nlohmann::json::out_of_range& e) {  // a number too large for a double
    Fail(start_line, start_col, "malformed JSON in " + what + ": " + JsonErrorReason(e));
  }
  return true;
}

bool JsonRecordReader::NextLine(nlohmann::json* record) {
  for (;;) {
    const uint64_t line = line_;
    text_.clear();
    int c;
    while ((c = Get()) >= 0 && c != '\n') text_.push_back(static_cast<char>(c));
    if (c < 0 && text_.empty()) {
      done_ = true;
      return false;
    }
    if (text_.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string what = "conversation " + std::to_string(records_);
    try {
      *record = nlohmann::json::parse(text_);
    } catch (const nlohmann::json::parse_error& e) {
      FailJson(e, text_, line, 1, what + " (JSON Lines: one complete object a line)");
    } catch (const nlohmann::json::out_of_range& e) {
      Fail(line, 1, "malformed JSON in " + what + ": " + JsonErrorReason(e));
    }
    if (!record->is_object()) Fail(line, 1, "expected an object for " + what);
    record_line_ = line;
    return true;
  }
}

}  // namespace trm::data::internal
