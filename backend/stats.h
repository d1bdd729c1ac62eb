// Counters of the daemon: answered by the stats request (proto::StatsReply: the first eight),
// by the admin socket's `stats` and by the metrics endpoint (all). Owned by the event loop's
// thread; nothing else touches them.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

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
  // Name lookups (resolve, nameinfo, hostent); not in the control protocol's stats reply.
  uint64_t lookups = 0;            // requested
  uint64_t lookups_refused = 0;    // over a bound: answered EAI_AGAIN at once
  uint64_t lookups_timed_out = 0;  // answered EAI_AGAIN at the deadline
  // Calls refused by policy (0 until a policy exists).
  uint64_t denials = 0;
  // SIGHUP re-reads of the policy file (backend/policy.h): applied, and rejected (the old
  // policy kept).
  uint64_t policy_reloads = 0;
  uint64_t policy_reload_errors = 0;
  // Calls refused by a limit (backend/limits.h), in all and by kind; ring memory charged
  // to live sockets now (page and both rings each).
  uint64_t limit_refusals = 0;
  uint64_t limit_refusals_sockets = 0;
  uint64_t limit_refusals_ring_memory = 0;
  uint64_t limit_refusals_pending_connects = 0;
  uint64_t limit_refusals_rate = 0;
  uint64_t limit_refusals_budget = 0;
  uint64_t ring_memory_now = 0;
};

// Every counter with its name, in a fixed order (admin `stats`, metrics, xsockctl).
inline std::vector<std::pair<const char*, uint64_t>> StatsCounters(const Stats& s) {
  return {
      {"clients_now", s.clients_now},
      {"clients_total", s.clients_total},
      {"sockets_now", s.sockets_now},
      {"sockets_total", s.sockets_total},
      {"connects_ok", s.connects_ok},
      {"connects_failed", s.connects_failed},
      {"bytes_to_host", s.bytes_to_host},
      {"bytes_from_host", s.bytes_from_host},
      {"lookups", s.lookups},
      {"lookups_refused", s.lookups_refused},
      {"lookups_timed_out", s.lookups_timed_out},
      {"denials", s.denials},
      {"policy_reloads", s.policy_reloads},
      {"policy_reload_errors", s.policy_reload_errors},
      {"limit_refusals", s.limit_refusals},
      {"limit_refusals_sockets", s.limit_refusals_sockets},
      {"limit_refusals_ring_memory", s.limit_refusals_ring_memory},
      {"limit_refusals_pending_connects", s.limit_refusals_pending_connects},
      {"limit_refusals_rate", s.limit_refusals_rate},
      {"limit_refusals_budget", s.limit_refusals_budget},
      {"ring_memory_now", s.ring_memory_now},
  };
}

}  // namespace xsock::backend
