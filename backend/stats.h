// Counters answered by the stats request (proto::StatsReply). Owned by the event loop's
// thread; nothing else touches them.
#pragma once

#include <cstdint>

namespace xsock::backend {

struct Stats {
  uint64_t clients_now = 0;
  uint64_t clients_total = 0;
  uint64_t sockets_now = 0;
  uint64_t sockets_total = 0;
  uint64_t connects_ok = 0;
  uint64_t connects_failed = 0;
  uint64_t bytes_to_host = 0;    // sent to host sockets from out rings
  uint64_t bytes_from_host = 0;  // received from host sockets into in rings
  // Name lookups (resolve, nameinfo, hostent); not in the stats reply yet.
  uint64_t lookups = 0;            // requested
  uint64_t lookups_refused = 0;    // over a bound: answered EAI_AGAIN at once
  uint64_t lookups_timed_out = 0;  // answered EAI_AGAIN at the deadline
};

}  // namespace xsock::backend
