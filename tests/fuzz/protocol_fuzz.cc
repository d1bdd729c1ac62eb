// Fuzz target for the control protocol decoders and the listener channel's accept-record
// decoder, which read bytes from an untrusted peer.
//
// Properties checked on every input, for DecodeRequest, DecodeReply and DecodeAcceptRecord
// alike:
//   * no crash, no sanitizer report, no assertion failure;
//   * a rejection is InvalidArgument with a message (the message names the field);
//   * an accepted message re-encodes to exactly the input bytes: the decoder accepts only
//     the canonical encoding, so there is one wire form per message and nothing the
//     decoder skips over (reserved bits, trailing bytes, unused address bytes) can carry
//     data past the checks;
//   * no input is both a request and a reply, nor both a control message and a record.
// Any violation aborts, which libFuzzer records as a crash with the input saved.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <vector>

#include "shared/protocol.h"

namespace {

using xsock::proto::DecodeAcceptRecord;
using xsock::proto::DecodeReply;
using xsock::proto::DecodeRequest;
using xsock::proto::EncodeAcceptRecord;
using xsock::proto::EncodeReply;
using xsock::proto::EncodeRequest;

[[noreturn]] void Fail(const char* what, std::span<const uint8_t> in) {
  std::fprintf(stderr, "protocol_fuzz: %s (input of %zu bytes)\n", what, in.size());
  std::abort();
}

void CheckRejection(const absl::Status& s, std::span<const uint8_t> in) {
  if (s.code() != absl::StatusCode::kInvalidArgument) Fail("rejection is not InvalidArgument", in);
  if (s.message().empty()) Fail("rejection without a reason", in);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> in(data, size);
  const std::vector<uint8_t> input(in.begin(), in.end());

  auto request = DecodeRequest(in);
  if (request.ok()) {
    if (EncodeRequest(request->seq, request->msg) != input) {
      Fail("accepted request does not re-encode to its input", in);
    }
  } else {
    CheckRejection(request.status(), in);
  }

  auto reply = DecodeReply(in);
  if (reply.ok()) {
    if (EncodeReply(reply->seq, reply->msg) != input) {
      Fail("accepted reply does not re-encode to its input", in);
    }
  } else {
    CheckRejection(reply.status(), in);
  }

  auto record = DecodeAcceptRecord(in);
  if (record.ok()) {
    if (EncodeAcceptRecord(*record) != input) {
      Fail("accepted accept record does not re-encode to its input", in);
    }
  } else {
    CheckRejection(record.status(), in);
  }

  if (request.ok() && reply.ok()) Fail("input decodes as both a request and a reply", in);
  if (record.ok() && (request.ok() || reply.ok())) {
    Fail("input decodes as both a control message and an accept record", in);
  }
  return 0;
}
