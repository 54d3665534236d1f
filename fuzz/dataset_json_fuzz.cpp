// Fuzz target: the chat dataset readers of `trm-data build` (data/src/json_records.cpp streams the
// records of a JSON array or JSON Lines file; data/src/chat_records.cpp turns a ShareGPT / Alpaca /
// OpenAssistant record into turns; chat_template.cpp renders them). Same sequence as
// BuildDataset's phase 1, except that every record is tried in all three formats and rendered
// with the built-in byte tokenizer, and nothing is written.
// Promise under test (docs/data.md, dataset_builder.h): bad input is trm::Error naming the file,
// line and column or the conversation, never a crash.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <vector>

#include "chat_records.h"  // data/src: internal
#include "fuzz_common.h"
#include "json_records.h"  // data/src: internal
#include "trm/data/chat_template.h"
#include "trm/data/dataset_builder.h"
#include "trm/data/tokenizer.h"

namespace {

using trm::data::ChatFormat;

// The reader takes a path: the input goes to an in-memory file, reopened through /proc.
const std::string& InputPath() {
  static const std::string path = [] {
    const int fd = ::memfd_create("dataset_json_fuzz", 0);
    if (fd < 0) std::abort();
    return "/proc/self/fd/" + std::to_string(fd);
  }();
  return path;
}

void WriteInput(const uint8_t* data, size_t size) {
  const int fd = std::stoi(InputPath().substr(std::string("/proc/self/fd/").size()));
  FUZZ_CHECK(::ftruncate(fd, 0) == 0);
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::pwrite(fd, data + done, size - done, static_cast<off_t>(done));
    FUZZ_CHECK(n > 0);
    done += static_cast<size_t>(n);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static trm::data::Tokenizer tok = trm::data::Tokenizer::Load("byte");
  WriteInput(data, size);
  try {
    trm::data::internal::JsonRecordReader reader(InputPath());
    FUZZ_CHECK(reader.file_size() == size);
    nlohmann::json record;
    std::vector<trm::data::Turn> turns;
    trm::data::RenderedChat chat;
    while (reader.Next(&record)) {
      FUZZ_CHECK(record.is_object());
      FUZZ_CHECK(reader.bytes_read() <= size);
      const std::string where = "fuzz.json: conversation " + std::to_string(reader.records() - 1);
      const ChatFormat detected = trm::data::internal::DetectFormat(record);
      for (ChatFormat format : {ChatFormat::kShareGpt, ChatFormat::kAlpaca, ChatFormat::kOpenAssistant}) {
        try {
          trm::data::internal::ParseRecord(record, format, where, &turns);
        } catch (const trm::Error& e) {
          trm::fuzz::ExpectedError(e);
          FUZZ_CHECK(format != detected || e.code() == trm::Code::kInvalidArgument);
          continue;
        }
        for (bool include_system : {false, true}) {
          trm::data::RenderChat(turns, include_system, tok, &chat);
          FUZZ_CHECK(chat.tokens.size() == chat.assistant_mask.size());
          for (int32_t id : chat.tokens) FUZZ_CHECK(id >= 0 && id < tok.vocab_size());
        }
      }
    }
    FUZZ_CHECK(reader.bytes_read() <= size);
    FUZZ_CHECK(reader.InputSha256().size() == 64);
  } catch (const trm::Error& e) {
    trm::fuzz::ExpectedError(e);
  }
  return 0;
}
