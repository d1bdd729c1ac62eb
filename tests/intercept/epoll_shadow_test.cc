// Registrations remembered for sockets connect() may still swap (libintercept/epoll_shadow.h).
#include "libintercept/epoll_shadow.h"

#include <catch2/catch.hpp>

namespace xsock::intercept {
namespace {

epoll_event Event(uint32_t events, uint64_t data) {
  epoll_event ev = {};
  ev.events = events;
  ev.data.u64 = data;
  return ev;
}

}  // namespace

TEST_CASE("only candidates have their registrations remembered", "[epoll_shadow]") {
  EpollShadow shadow;
  const epoll_event ev = Event(EPOLLIN, 1);
  shadow.AfterEpollCtl(3, EPOLL_CTL_ADD, 10, &ev);
  CHECK(shadow.Take(10).empty());
  shadow.MarkCandidate(10);
  CHECK(shadow.IsCandidate(10));
  CHECK_FALSE(shadow.IsCandidate(11));
  shadow.AfterEpollCtl(3, EPOLL_CTL_ADD, 10, &ev);
  const auto regs = shadow.Take(10);
  REQUIRE(regs.size() == 1);
  CHECK(regs[0].first == 3);
  CHECK(regs[0].second.data.u64 == 1);
  CHECK_FALSE(shadow.IsCandidate(10));  // taken: decided
  CHECK(shadow.Take(10).empty());
}

TEST_CASE("MOD replaces, DEL forgets, each epoll instance separately", "[epoll_shadow]") {
  EpollShadow shadow;
  shadow.MarkCandidate(5000);  // another chunk
  const epoll_event a = Event(EPOLLIN, 1), b = Event(EPOLLOUT | EPOLLET, 2);
  shadow.AfterEpollCtl(3, EPOLL_CTL_ADD, 5000, &a);
  shadow.AfterEpollCtl(4, EPOLL_CTL_ADD, 5000, &a);
  shadow.AfterEpollCtl(3, EPOLL_CTL_MOD, 5000, &b);
  shadow.AfterEpollCtl(4, EPOLL_CTL_DEL, 5000, nullptr);
  const auto regs = shadow.Take(5000);
  REQUIRE(regs.size() == 1);
  CHECK(regs[0].first == 3);
  CHECK(regs[0].second.events == (EPOLLOUT | EPOLLET));
  CHECK(regs[0].second.data.u64 == 2);
}

TEST_CASE("closing a socket or an epoll instance drops what involved it", "[epoll_shadow]") {
  EpollShadow shadow;
  const epoll_event ev = Event(EPOLLIN, 7);
  shadow.MarkCandidate(20);
  shadow.MarkCandidate(21);
  shadow.AfterEpollCtl(3, EPOLL_CTL_ADD, 20, &ev);
  shadow.AfterEpollCtl(4, EPOLL_CTL_ADD, 21, &ev);
  shadow.Closing(20);
  CHECK_FALSE(shadow.IsCandidate(20));
  shadow.Closing(4);  // the epoll instance: its number may come back as something else
  CHECK(shadow.IsCandidate(21));
  CHECK(shadow.Take(21).empty());
  shadow.MarkCandidate(30);
  shadow.MarkCandidate(40);
  shadow.AfterEpollCtl(50, EPOLL_CTL_ADD, 40, &ev);
  shadow.ClosingRange(25, 35);
  CHECK_FALSE(shadow.IsCandidate(30));
  CHECK(shadow.IsCandidate(40));
  CHECK(shadow.Take(40).size() == 1);
  CHECK_FALSE(shadow.IsCandidate(EpollShadow::kMaxFds));
  shadow.MarkCandidate(EpollShadow::kMaxFds);  // out of range: ignored
  CHECK_FALSE(shadow.IsCandidate(EpollShadow::kMaxFds));
}

}  // namespace xsock::intercept
