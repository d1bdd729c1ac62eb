// How sockets end: a host reset after the host's FIN, POLLHUP once both directions are
// over (xsockd shuts its channel end, then learns the app's close through sock_diag), the
// reset a close with unread data sends, and SO_RCVLOWAT kept off the host socket.
#include <poll.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>

#include "test_client.h"

namespace xsock::testing {
namespace {

struct Routed {
  std::unique_ptr<AppSocket> app;
  UniqueFd peer;
};

Routed ConnectRouted(Control& ctl, TcpListener& listener) {
  Routed r;
  r.app = AppSocket::Create(ctl, listener.family);
  const int err = r.app->Connect(ctl, listener.Addr());
  REQUIRE((err == 0 || err == EINPROGRESS));
  REQUIRE(r.app->WaitConnectDone() == SocketState::kConnected);
  r.peer = listener.Accept();
  REQUIRE(r.peer.valid());
  return r;
}

constexpr short kHup = POLLIN | POLLRDHUP | POLLHUP;

// Polls until every bit of `want` is there (or the bound passes); returns the last mask.
short PollUntil(AppSocket& app, short want) {
  short got = 0;
  Eventually([&] { return ((got = app.Poll(POLLIN | POLLOUT | POLLRDHUP)) & want) == want; });
  return got;
}

TEST_CASE("a host reset after the host's FIN fails out with EPIPE and the app end polls HUP",
          "[backend][finish]") {
  LogCapture log;
  TestServer server;
  Control ctl(server.path());
  ctl.Hello();
  auto listener = TcpListener::Open(AF_INET);
  Routed r = ConnectRouted(ctl, listener);

  r.peer.reset();  // FIN; a byte sent to the closed peer then draws its RST
  char b;
  REQUIRE(r.app->Read(&b, 1) == 0);
  CHECK((r.app->Poll(POLLIN | POLLRDHUP) & POLLHUP) == 0);  // only half over
  REQUIRE(r.app->Write("x", 1) == 1);
  CHECK((PollUntil(*r.app, kHup) & kHup) == kHup);
  CHECK(r.app->page()->out_error.value.load() == -EPIPE);
  CHECK(r.app->page()->so_error.load() == EPIPE);
  CHECK(r.app->page()->state.load() == static_cast<uint32_t>(SocketState::kClosed));
  CHECK(r.app->Write("x", 1) == -EPIPE);
  CHECK(r.app->Read(&b, 1) == 0);  // the EOF stays (a kernel socket in CLOSE_WAIT)
  CHECK_FALSE(log.WaitFor({"event=reset", "during=after_eof", "errno=EPIPE"}).empty());

  // Still served until the app closes its end, then freed.
  CHECK(ctl.CallAs<proto::GetSockNameReply>(proto::GetSockNameRequest{r.app->id()}).err == 0);
  CHECK(ctl.Stats().sockets_now == 1);
  r.app->CloseChannel();
  CHECK(Eventually([&] { return ctl.Stats().sockets_now == 0; }));
}

TEST_CASE("SHUT_WR both ways: the app end polls HUP, the socket is freed when the app closes",
          "[backend][finish]") {
  TestServer server;
  Control ctl(server.path());
  ctl.Hello();
  auto listener = TcpListener::Open(AF_INET);
  Routed r = ConnectRouted(ctl, listener);

  REQUIRE(shutdown(r.peer.get(), SHUT_WR) == 0);
  char b;
  REQUIRE(r.app->Read(&b, 1) == 0);
  CHECK(ctl.CallAs<proto::ShutdownReply>(proto::ShutdownRequest{r.app->id(), SHUT_WR}).err == 0);
  int err = -1;
  CHECK(RecvToEof(r.peer.get(), &err).empty());
  CHECK(err == 0);
  CHECK((PollUntil(*r.app, kHup) & (kHup | POLLOUT)) == (kHup | POLLOUT));
  CHECK(r.app->page()->state.load() == static_cast<uint32_t>(SocketState::kClosed));
  // A dup of the app end keeps the socket; only the last close frees it.
  UniqueFd dup_end(dup(r.app->channel()));
  r.app->CloseChannel();
  CHECK(ctl.CallAs<proto::GetSockNameReply>(proto::GetSockNameRequest{r.app->id()}).err == 0);
  CHECK(ctl.Stats().sockets_now == 1);
  dup_end.reset();
  CHECK(Eventually([&] { return ctl.Stats().sockets_now == 0; }));
}

TEST_CASE("a refused connect polls HUP; closing the app end frees the socket",
          "[backend][finish]") {
  TestServer server;
  Control ctl(server.path());
  ctl.Hello();
  auto app = AppSocket::Create(ctl, AF_INET);
  const int err = app->Connect(ctl, LoopbackAddr(AF_INET, ClosedPort(AF_INET)));
  REQUIRE((err == ECONNREFUSED || err == EINPROGRESS));
  if (err == EINPROGRESS) {
    REQUIRE(app->WaitConnectDone() == SocketState::kFailed);
    CHECK((PollUntil(*app, kHup | POLLOUT) & (kHup | POLLOUT)) == (kHup | POLLOUT));
  }
  app->CloseChannel();
  CHECK(Eventually([&] { return ctl.Stats().sockets_now == 0; }));
}

TEST_CASE("closing with received bytes unread resets the host peer", "[backend][finish]") {
  LogCapture log;
  TestServer server;
  Control ctl(server.path());
  ctl.Hello();
  auto listener = TcpListener::Open(AF_INET);
  Routed r = ConnectRouted(ctl, listener);

  REQUIRE(SendAll(r.peer.get(), Pattern(100, 3)));
  REQUIRE(Eventually([&] {
    return r.app->page()->in_prod.value.load() - r.app->page()->in_cons.value.load() == 100;
  }));
  r.app->CloseChannel();
  int err = -1;
  CHECK(RecvToEof(r.peer.get(), &err).empty());
  CHECK(err == ECONNRESET);
  CHECK_FALSE(log.WaitFor({"event=socket_closed", "close=unread_data"}).empty());
  CHECK(Eventually([&] { return ctl.Stats().sockets_now == 0; }));
}

TEST_CASE("SO_RCVLOWAT is reported back but xsockd still pulls every byte",
          "[backend][finish]") {
  TestServer server;
  Control ctl(server.path());
  ctl.Hello();
  auto listener = TcpListener::Open(AF_INET);
  Routed r = ConnectRouted(ctl, listener);

  proto::SetSockOptRequest set;
  set.socket_id = r.app->id();
  set.level = SOL_SOCKET;
  set.optname = SO_RCVLOWAT;
  const int ten = 10;
  set.value.resize(sizeof(ten));
  std::memcpy(set.value.data(), &ten, sizeof(ten));
  REQUIRE(ctl.CallAs<proto::SetSockOptReply>(set).err == 0);
  const auto got = ctl.CallAs<proto::GetSockOptReply>(
      proto::GetSockOptRequest{r.app->id(), SOL_SOCKET, SO_RCVLOWAT, sizeof(int)});
  REQUIRE(got.err == 0);
  int value = 0;
  REQUIRE(got.value.size() == sizeof(value));
  std::memcpy(&value, got.value.data(), sizeof(value));
  CHECK(value == 10);

  const std::vector<uint8_t> five = Pattern(5, 4);
  REQUIRE(SendAll(r.peer.get(), five));
  std::vector<uint8_t> in(5);
  CHECK(r.app->Read(in.data(), in.size()) == 5);
  CHECK(Diff(in, five) == "");
}

}  // namespace
}  // namespace xsock::testing
