// The limits core (backend/resource_limits.h): the ledger follows sockets from charge to
// uncharge, each check refuses with the right kind (and so errno) at exactly the limit,
// clients are independent, the token bucket refills with an injected clock.
#include "backend/resource_limits.h"

#include <cerrno>
#include <chrono>

#include <catch2/catch.hpp>

namespace xsock::backend {
namespace {

using namespace std::chrono_literals;

TEST_CASE("socket limit: the client at its maximum is refused with EMFILE, another is not",
          "[backend][limits]") {
  LimitOptions o;
  o.max_sockets_per_client = 2;
  Stats stats;
  Limits l(o, &stats);
  l.ClientConnected(1);
  l.ClientConnected(2);
  CHECK_FALSE(l.CheckSocket(1, 100).has_value());
  l.Charge(10, 1, 100);
  l.Charge(11, 1, 100);
  REQUIRE(l.CheckSocket(1, 100) == LimitKind::kSockets);
  CHECK(LimitErrno(LimitKind::kSockets) == EMFILE);
  CHECK_FALSE(l.CheckSocket(2, 100).has_value());
  CHECK(l.ClientUsage(1) == Limits::Usage{2, 200, 0});
  l.Uncharge(10);
  CHECK_FALSE(l.CheckSocket(1, 100).has_value());
  l.CountRefusal(LimitKind::kSockets);
  CHECK(stats.limit_refusals == 1);
  CHECK(stats.limit_refusals_sockets == 1);
}

TEST_CASE("ring memory per client and the global budget refuse with ENOBUFS", "[backend][limits]") {
  LimitOptions o;
  o.max_ring_memory_per_client = 1000;
  o.memory_budget = 1500;
  Stats stats;
  Limits l(o, &stats);
  l.ClientConnected(1);
  l.ClientConnected(2);
  l.Charge(1, 1, 900);
  CHECK(l.CheckSocket(1, 200) == LimitKind::kRingMemory);
  CHECK(l.CheckSocket(2, 700) == LimitKind::kBudget);  // 900 + 700 > 1500, for anyone
  CHECK_FALSE(l.CheckSocket(2, 600).has_value());
  CHECK(LimitErrno(LimitKind::kRingMemory) == ENOBUFS);
  CHECK(LimitErrno(LimitKind::kBudget) == ENOBUFS);
  CHECK(stats.ring_memory_now == 900);
  l.Uncharge(1);
  CHECK(l.total_bytes() == 0);
  CHECK(stats.ring_memory_now == 0);
}

TEST_CASE("pending connects are counted while connecting and refused with EAGAIN",
          "[backend][limits]") {
  LimitOptions o;
  o.max_pending_connects = 1;
  Limits l(o);
  l.ClientConnected(1);
  l.Charge(1, 1, 10);
  l.Charge(2, 1, 10);
  CHECK_FALSE(l.CheckConnect(1).has_value());
  l.SetConnecting(1, true);
  CHECK(l.CheckConnect(1) == LimitKind::kPendingConnects);
  CHECK(LimitErrno(LimitKind::kPendingConnects) == EAGAIN);
  l.SetConnecting(1, false);
  CHECK_FALSE(l.CheckConnect(1).has_value());
  l.SetConnecting(2, true);
  l.Uncharge(2);  // freed while connecting: no longer pending
  CHECK(l.ClientUsage(1).pending_connects == 0);
}

TEST_CASE("a socket outliving its client stays charged until adopted, then entries go",
          "[backend][limits]") {
  Limits l(LimitOptions{});
  l.ClientConnected(1);
  l.Charge(5, 1, 64);
  l.ClientGone(1);
  CHECK(l.OwnerOf(5) == 1);
  CHECK(l.client_entries() == 1);
  l.ClientConnected(2);
  l.Adopt(5, 2);
  CHECK(l.OwnerOf(5) == 2);
  CHECK(l.ClientUsage(2).sockets == 1);
  l.Uncharge(5);
  l.ClientGone(2);
  CHECK(l.charged_sockets() == 0);
  CHECK(l.client_entries() == 0);
  CHECK(l.total_bytes() == 0);
}

TEST_CASE("the token bucket allows a burst, refuses, and refills with time", "[backend][limits]") {
  const auto t0 = std::chrono::steady_clock::time_point{} + 1h;
  TokenBucket b(10, 10, t0);
  int taken = 0;
  while (taken < 100 && b.Take(t0)) ++taken;
  CHECK(taken == 10);
  CHECK_FALSE(b.Take(t0 + 50ms));  // half a token
  CHECK(b.Take(t0 + 100ms));       // one token per 100 ms
  CHECK_FALSE(b.Take(t0 + 100ms));
  TokenBucket unlimited(0, 0, t0);
  for (int i = 0; i < 1000; ++i) REQUIRE(unlimited.Take(t0));
}

}  // namespace
}  // namespace xsock::backend
