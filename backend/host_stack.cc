#include "backend/host_stack.h"

#include <netinet/in.h>

#include <atomic>
#include <cerrno>

namespace xsock::backend {
namespace {

int Ret(int r) { return r == 0 ? 0 : errno; }

class Kernel final : public HostStack {
 public:
  int Socket(int domain) override {
    const int fd = ::socket(domain, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
    return fd >= 0 ? fd : -errno;
  }
  int Connect(int fd, const sockaddr* a, socklen_t l) override { return Ret(::connect(fd, a, l)); }
  int Bind(int fd, const sockaddr* a, socklen_t l) override { return Ret(::bind(fd, a, l)); }
  int Listen(int fd, int backlog) override { return Ret(::listen(fd, backlog)); }
  int Accept(int fd) override {
    const int c = ::accept4(fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    return c >= 0 ? c : -errno;
  }
  int GetSockName(int fd, sockaddr* a, socklen_t* l) override {
    return Ret(::getsockname(fd, a, l));
  }
  int GetPeerName(int fd, sockaddr* a, socklen_t* l) override {
    return Ret(::getpeername(fd, a, l));
  }
  int Shutdown(int fd, int how) override { return Ret(::shutdown(fd, how)); }
  int SetSockOpt(int fd, int level, int name, const void* v, socklen_t l) override {
    return Ret(::setsockopt(fd, level, name, v, l));
  }
  int GetSockOpt(int fd, int level, int name, void* v, socklen_t* l) override {
    return Ret(::getsockopt(fd, level, name, v, l));
  }
  int EofError(int) override { return 0; }
};

std::atomic<HostStack*> g_stack{nullptr};

}  // namespace

HostStack& KernelHostStack() {
  static Kernel kernel;
  return kernel;
}

HostStack& CurrentHostStack() {
  HostStack* s = g_stack.load(std::memory_order_acquire);
  return s != nullptr ? *s : KernelHostStack();
}

void InstallHostStack(HostStack* stack) { g_stack.store(stack, std::memory_order_release); }

}  // namespace xsock::backend
