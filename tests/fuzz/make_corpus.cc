// Writes the fuzz seed corpus from the encoder, so the seeds always match the current
// wire format. Each argument is an output path whose file name says what to write:
// "request-<name>.bin" or "reply-<name>.bin", <name> being proto::Name() of a type, or
// "record-accept.bin" (a listener channel's AcceptRecord).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "shared/protocol.h"
#include "tests/protocol/samples.h"

namespace {

namespace proto = xsock::proto;

bool Write(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  return static_cast<bool>(f);
}

// The encoding of the sample message that `file_name` asks for; empty if it names none.
std::vector<uint8_t> EncodingFor(const std::string& file_name) {
  for (const auto& r : proto::testing::SampleRequests()) {
    if (file_name == std::string("request-") + proto::Name(proto::TypeOf(r)) + ".bin") {
      return proto::EncodeRequest(1, r);
    }
  }
  for (const auto& r : proto::testing::SampleReplies()) {
    if (file_name == std::string("reply-") + proto::Name(proto::TypeOf(r)) + ".bin") {
      return proto::EncodeReply(1, r);
    }
  }
  if (file_name == "record-accept.bin") {
    return proto::EncodeAcceptRecord(proto::testing::SampleAcceptRecord());
  }
  return {};
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string name = std::filesystem::path(argv[i]).filename();
    const std::vector<uint8_t> bytes = EncodingFor(name);
    if (bytes.empty()) {
      std::fprintf(stderr, "make_corpus: %s names no message type\n", argv[i]);
      return 1;
    }
    if (!Write(argv[i], bytes)) {
      std::fprintf(stderr, "make_corpus: cannot write %s\n", argv[i]);
      return 1;
    }
  }
  return 0;
}
