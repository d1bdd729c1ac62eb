#include "shared/syscalls.h"

#include <fcntl.h>
#include <unistd.h>

namespace xsock {

const Syscalls& LibcSyscalls() {
  static const Syscalls table = {
      .socket = ::socket,
      .connect = ::connect,
      .close = ::close,
      .sendmsg = ::sendmsg,
      .recvmsg = ::recvmsg,
      .poll = ::poll,
      .fcntl = ::fcntl,
      .getsockopt = ::getsockopt,
      .setsockopt = ::setsockopt,
      .dup3 = ::dup3,
      .epoll_ctl = ::epoll_ctl,
      .bind = ::bind,
      .listen = ::listen,
      .accept4 = ::accept4,
  };
  return table;
}

}  // namespace xsock
