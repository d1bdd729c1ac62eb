// `xsockd --front xen`: a user-space PVCalls version 1 frontend inside a Xen domU that
// carries every routed socket's host side to dom0 (docs/xen.md, "Design of the front").
//
// Towards local applications the front is the ordinary xsockd (backend/server.h): same
// socket file, control protocol and memfd rings. FrontStack is the HostStack
// (backend/host_stack.h) the server is given instead of the kernel's: every descriptor it
// hands out is one end (`a`) of an AF_UNIX stream socketpair; the front's own thread keeps
// the other end (`b`) in its epoll set and pumps bytes between `b` and the socket's PVCalls
// data ring in grant pages shared with dom0. Commands (socket, connect, release, bind,
// listen, accept, poll) go over the command ring negotiated with the XenBus handshake.
//
// Everything Xen is reached through the XenApi table (backend/xen/xen_api.h): RealXenApi()
// in a domU, the test double (tests/xen/xen_double.h) in tests.
//
// Trust: dom0 is trusted with the data but not with the shared memory's consistency.
// Every index, error word and response read from shared memory is copied once, then
// validated; an impossible data-ring index resets that socket (ECONNRESET, log line
// event=front_ring_corrupt), an impossible command-ring index drops the backend (all
// sockets reset, handshake again).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>

#include "absl/status/statusor.h"
#include "backend/host_stack.h"
#include "backend/xen/xen_api.h"

namespace xsock::backend::xen {

struct FrontStackOptions {
  // This domain's id. nullopt: read XenStore's relative node "domid" (a real domU);
  // tests give it, as the double has no per-connection home directory.
  std::optional<uint32_t> domid;
  // Data ring order asked for (2^order grant pages per socket, half each way); clamped
  // to the backend's max-page-order.
  uint32_t ring_order = 4;
  // Liveness: while connected, a release of an id never used is sent this often; no
  // answer within probe_timeout means dom0's backend is gone.
  std::chrono::milliseconds probe_interval{1000};
  std::chrono::milliseconds probe_timeout{3000};
  // Bound for the commands the server thread waits for (socket+bind, listen).
  std::chrono::milliseconds call_timeout{5000};
  // After the app closed, how long dom0 may take to consume the out ring before release.
  std::chrono::milliseconds release_linger{5000};
  // Ask for the xsock extension (shutdown, socket options, names, IPv6) when the backend
  // offers it (docs/xen.md "The xsock extension").
  bool extension = true;
};

struct FrontStats {
  uint64_t handshakes = 0;      // times the backend reached Connected with us
  uint64_t backend_losses = 0;  // times the backend was found gone
  uint64_t backend_unmaps = 0;  // of which through the command ring's unmap notification
  uint64_t sockets_reset = 0;   // by corrupt indices or backend loss
  uint64_t bytes_to_dom0 = 0;
  uint64_t bytes_from_dom0 = 0;
  uint64_t events_to_dom0 = 0;  // data-ring events sent (standard: one per busy pass)
  uint64_t live_sockets = 0;    // front sockets with state (any kind)
  uint64_t leaked_slots = 0;    // command-ring slots lost to unanswered accepts
};

class FrontStack final : public HostStack {
 public:
  // Opens the libraries' handles (errors name the call) and starts the front thread,
  // which performs the handshake (and repeats it whenever the backend goes away).
  static absl::StatusOr<std::unique_ptr<FrontStack>> Create(const XenApi& api,
                                                            const FrontStackOptions& options);
  ~FrontStack() override;
  FrontStack(const FrontStack&) = delete;
  FrontStack& operator=(const FrontStack&) = delete;

  // Whether the handshake is complete (thread-safe); waits up to timeout for it.
  bool WaitConnected(std::chrono::milliseconds timeout);
  FrontStats Stats() const;

  // Whether the current handshake negotiated the xsock extension.
  bool Extension() const;

  // HostStack. Socket() fails with ENETDOWN while no backend is connected and with
  // EAFNOSUPPORT for anything but AF_INET (PVCalls v1) or, under the extension, AF_INET6.
  int Socket(int domain) override;
  int Connect(int fd, const sockaddr* addr, socklen_t len) override;
  int Bind(int fd, const sockaddr* addr, socklen_t len) override;
  int Listen(int fd, int backlog) override;
  int Accept(int fd) override;
  int GetSockName(int fd, sockaddr* addr, socklen_t* len) override;
  int GetPeerName(int fd, sockaddr* addr, socklen_t* len) override;
  int Shutdown(int fd, int how) override;
  int SetSockOpt(int fd, int level, int name, const void* value, socklen_t len) override;
  int GetSockOpt(int fd, int level, int name, void* value, socklen_t* len) override;
  int EofError(int fd) override;

  struct Impl;

 private:
  explicit FrontStack(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace xsock::backend::xen
