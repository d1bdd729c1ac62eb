#include "tests/protocol/samples.h"

#include <netinet/in.h>
#include <netinet/tcp.h>

#include "shared/socket_page.h"

namespace xsock::proto::testing {

SockAddr LinkLocalV6(uint16_t port, uint32_t flowinfo, uint32_t scope_id) {
  SockAddr a;
  a.family = AF_INET6;
  a.port = port;
  a.flowinfo = flowinfo;
  a.addr = {0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  a.scope_id = scope_id;
  return a;
}

SockAddr V4(uint8_t a, uint8_t b, uint8_t c, uint8_t d, uint16_t port) {
  SockAddr s;
  s.family = AF_INET;
  s.port = port;
  s.addr[0] = a;
  s.addr[1] = b;
  s.addr[2] = c;
  s.addr[3] = d;
  return s;
}

std::vector<Request> SampleRequests() {
  return {
      HelloRequest{.min_version = 1, .max_version = 1, .caps = kAllCaps},
      SocketRequest{.domain = AF_INET6,
                    .type = SOCK_STREAM,
                    .protocol = IPPROTO_TCP,
                    .ring_order = kDefaultRingOrder},
      ConnectRequest{.socket_id = 7, .addr = LinkLocalV6(8080, 0x12345, 2)},
      ReleaseRequest{.socket_id = 8},
      ShutdownRequest{.socket_id = 9, .how = SHUT_WR},
      GetSockNameRequest{.socket_id = 10},
      GetPeerNameRequest{.socket_id = 11},
      SetSockOptRequest{
          .socket_id = 12, .level = IPPROTO_TCP, .optname = TCP_NODELAY, .value = {1, 0, 0, 0}},
      GetSockOptRequest{.socket_id = 13, .level = SOL_SOCKET, .optname = SO_RCVBUF, .optlen = 4},
      AttachRequest{},
      StatsRequest{},
      BindRequest{.socket_id = 14, .addr = V4(0, 0, 0, 0, 8080)},
      ListenRequest{.socket_id = 15, .backlog = 128},
      ResolveRequest{.flags = kAiCanonName | kAiAddrConfig,
                     .family = AF_INET6,
                     .socktype = SOCK_STREAM,
                     .protocol = IPPROTO_TCP,
                     .host = "only-in-test.xsock.test",
                     .service = "https"},
      NameInfoRequest{.addr = V4(10, 77, 0, 9, 443),
                      .flags = kNiNameReqd,
                      .want_host = true,
                      .want_service = true},
      HostEntRequest{.op = HostEntRequest::kByName, .family = AF_INET6, .name = "example.test"},
  };
}

std::vector<Reply> SampleReplies() {
  return {
      HelloReply{.err = 0, .version = kVersion, .caps = kCapIpv6, .server_pid = 4242},
      SocketReply{.err = 0, .ring_order = kDefaultRingOrder, .socket_id = 7},
      ConnectReply{.err = EINPROGRESS},
      ReleaseReply{.err = 0},
      ShutdownReply{.err = ENOTCONN},
      GetSockNameReply{.err = 0, .addr = V4(127, 0, 0, 1, 40000)},
      GetPeerNameReply{.err = 0, .addr = LinkLocalV6(22, 0, 3)},
      SetSockOptReply{.err = ENOPROTOOPT},
      GetSockOptReply{.err = 0, .value = {0x00, 0x00, 0x02, 0x00}},
      AttachReply{.err = 0,
                  .ring_order = kMinRingOrder,
                  .socket_id = 0x0102030405060708,
                  .state = static_cast<uint32_t>(SocketState::kConnected)},
      StatsReply{.err = 0,
                 .clients_now = 1,
                 .clients_total = 2,
                 .sockets_now = 3,
                 .sockets_total = 4,
                 .connects_ok = 5,
                 .connects_failed = 6,
                 .bytes_to_host = 7,
                 .bytes_from_host = uint64_t{1} << 40},
      BindReply{.err = 0, .addr = LinkLocalV6(40001, 0, 4)},
      ListenReply{.err = 0},
      ResolveReply{
          .err = 0,
          .canonname = "only-in-test.xsock.test",
          .entries =
              {{.socktype = SOCK_STREAM, .protocol = IPPROTO_TCP, .addr = V4(10, 77, 0, 9, 443)},
               {.socktype = SOCK_STREAM, .protocol = IPPROTO_TCP, .addr = LinkLocalV6(443, 0, 2)}}},
      NameInfoReply{.err = 0, .host = "host.xsock.test", .service = "https"},
      HostEntReply{.err = 0,
                   .family = AF_INET,
                   .name = "only-in-test.xsock.test",
                   .aliases = {"alias.xsock.test"},
                   .addrs = {{10, 77, 0, 9}, {10, 77, 0, 10}}},
  };
}

AcceptRecord SampleAcceptRecord() {
  return AcceptRecord{.socket_id = 0x1112131415161718,
                      .ring_order = kDefaultRingOrder,
                      .local = V4(127, 0, 0, 1, 8080),
                      .peer = V4(127, 0, 0, 2, 40002)};
}

}  // namespace xsock::proto::testing
