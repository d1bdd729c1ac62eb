// One representative, valid message of every request and reply type, shared by the codec
// unit tests and the fuzz seed-corpus generator so both start from the encoder's own output.
#pragma once

#include <vector>

#include "shared/protocol.h"

namespace xsock::proto::testing {

// One request per MsgType, in MsgType order, with non-default values in every field.
std::vector<Request> SampleRequests();
// One successful reply per MsgType, in MsgType order, with non-default values in every field.
std::vector<Reply> SampleReplies();
// A valid accept record (AF_INET, both addresses set).
AcceptRecord SampleAcceptRecord();

// fe80::1 as bytes; an IPv6 address that needs scope_id.
SockAddr LinkLocalV6(uint16_t port, uint32_t flowinfo, uint32_t scope_id);
// a.b.c.d as a canonical AF_INET SockAddr.
SockAddr V4(uint8_t a, uint8_t b, uint8_t c, uint8_t d, uint16_t port);

}  // namespace xsock::proto::testing
