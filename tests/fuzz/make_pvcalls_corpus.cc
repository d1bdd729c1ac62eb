// Writes the seed corpus of pvcalls_fuzz: one valid request per command, an unknown
// command, a garbage release, ring indices at the edges, a XenStore number. Each output
// file's name (basename) says which seed goes in it.
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "shared/pvcalls.h"

namespace pv = xsock::pvcalls;

namespace {

// Decoder 0: a standard request; 3: a request with the xsock extension negotiated.
std::vector<uint8_t> RequestSeed(const pv::Request& r, uint8_t decoder = 0) {
  std::vector<uint8_t> v(1 + sizeof(r));
  v[0] = decoder;
  std::memcpy(v.data() + 1, &r, sizeof(r));
  return v;
}

void Inet(uint8_t (&addr)[28], uint16_t port) {
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(port);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::memcpy(addr, &sin, sizeof(sin));
}

std::vector<uint8_t> Seed(const std::string& name) {
  pv::Request r{};
  r.req_id = 1;
  r.u.socket.id = 0x1122334455667788ull;
  if (name == "socket.bin") {
    r.cmd = pv::kCmdSocket;
    r.u.socket.domain = AF_INET;
    r.u.socket.type = SOCK_STREAM;
  } else if (name == "connect.bin") {
    r.cmd = pv::kCmdConnect;
    Inet(r.u.connect.addr, 80);
    r.u.connect.len = 16;
    r.u.connect.ref = 9;
    r.u.connect.evtchn = 3;
  } else if (name == "release.bin") {
    r.cmd = pv::kCmdRelease;
  } else if (name == "bind.bin") {
    r.cmd = pv::kCmdBind;
    Inet(r.u.bind.addr, 8080);
    r.u.bind.len = 16;
  } else if (name == "listen.bin") {
    r.cmd = pv::kCmdListen;
    r.u.listen.backlog = 128;
  } else if (name == "accept.bin") {
    r.cmd = pv::kCmdAccept;
    r.u.accept.id_new = 2;
    r.u.accept.ref = 10;
    r.u.accept.evtchn = 4;
  } else if (name == "poll.bin") {
    r.cmd = pv::kCmdPoll;
  } else if (name == "unknown.bin") {
    r.cmd = 7;
  } else if (name == "garbage-release.bin") {
    r.cmd = pv::kCmdRelease;
    r.u.release.reuse = 0xAB;
  } else if (name == "ring-overflow.bin") {
    const uint32_t v[4] = {33, 0, 0, 0};
    std::vector<uint8_t> s(1 + 16 + 1);
    s[0] = 1;
    std::memcpy(s.data() + 1, v, 16);
    s[17] = 3;
    return s;
  } else if (name == "data-ring.bin") {
    const uint32_t v[4] = {0xFFFFFFF0u, 0xFFFFF000u, 0x10u, 0xFFFFFFF0u};
    std::vector<uint8_t> s(1 + 16 + 1);
    s[0] = 1;
    std::memcpy(s.data() + 1, v, 16);
    s[17] = 0;
    return s;
  } else if (name == "ext-socket6.bin") {
    r.cmd = pv::kCmdSocket;
    r.u.socket.domain = AF_INET6;
    r.u.socket.type = SOCK_STREAM;
    return RequestSeed(r, 3);
  } else if (name == "ext-connect6.bin") {
    r.cmd = pv::kCmdConnect;
    sockaddr_in6 sin6{};
    sin6.sin6_family = AF_INET6;
    sin6.sin6_port = htons(443);
    sin6.sin6_addr = in6addr_loopback;
    std::memcpy(r.u.connect.addr, &sin6, sizeof(sin6));
    r.u.connect.len = sizeof(sin6);
    r.u.connect.ref = 9;
    r.u.connect.evtchn = 3;
    return RequestSeed(r, 3);
  } else if (name == "ext-shutdown.bin") {
    r.cmd = pv::kCmdExtShutdown;
    r.u.ext_shutdown.how = SHUT_WR;
    return RequestSeed(r, 3);
  } else if (name == "ext-sockopt.bin") {
    r.cmd = pv::kCmdExtSetSockOpt;
    r.u.ext_sockopt.level = SOL_SOCKET;
    r.u.ext_sockopt.name = SO_KEEPALIVE;
    r.u.ext_sockopt.len = 4;
    r.u.ext_sockopt.value[0] = 1;
    return RequestSeed(r, 3);
  } else if (name == "ext-name.bin") {
    // As a response: 24 standard bytes, len 16, a sockaddr_in payload.
    pv::ExtResponse e{};
    e.base.req_id = 1;
    e.base.cmd = pv::kCmdExtGetPeerName;
    e.len = sizeof(sockaddr_in);
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = htons(5000);
    std::memcpy(e.data, &sin, sizeof(sin));
    std::vector<uint8_t> v(1 + sizeof(e));
    v[0] = 3;
    std::memcpy(v.data() + 1, &e, sizeof(e));
    return v;
  } else if (name == "xenstore.bin") {
    const std::string n =
        "\x02"
        "4294967295";
    return std::vector<uint8_t>(n.begin(), n.end());
  } else {
    return {};
  }
  return RequestSeed(r);
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string path = argv[i];
    const size_t slash = path.rfind('/');
    const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
    const std::vector<uint8_t> bytes = Seed(base);
    if (bytes.empty()) {
      std::fprintf(stderr, "make_pvcalls_corpus: no seed named %s\n", base.c_str());
      return 1;
    }
    FILE* f = std::fopen(path.c_str(), "wb");
    if (f == nullptr || std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size()) {
      std::fprintf(stderr, "make_pvcalls_corpus: cannot write %s\n", path.c_str());
      return 1;
    }
    std::fclose(f);
  }
  return 0;
}
