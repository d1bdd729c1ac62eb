#include "libintercept/routed_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>

namespace xsock::intercept::io {
namespace {

constexpr unsigned kMaxMessages = 1024;  // UIO_MAXIOV: the kernel's cap on vlen

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

// 1: a pipe, 0: something else, -errno: not a descriptor.
int IsPipe(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) return -errno;
  return S_ISFIFO(st.st_mode) ? 1 : 0;
}

}  // namespace

Result RecvMmsg(FrontSocket& s, int fd, mmsghdr* vec, unsigned vlen, int flags,
                timespec* timeout) {
  // do_recvmmsg(): the timeout is checked between messages only, and written back with
  // what is left when anything was received.
  int64_t end = 0;
  if (timeout != nullptr) {
    if (timeout->tv_sec < 0 || timeout->tv_nsec < 0 || timeout->tv_nsec >= 1000000000) {
      return Result::Err(EINVAL);
    }
    end = NowNs() + int64_t{timeout->tv_sec} * 1000000000 + timeout->tv_nsec;
  }
  if (vlen > kMaxMessages) vlen = kMaxMessages;
  if (vlen > 0 && vec == nullptr) return Result::Err(EFAULT);
  unsigned done = 0;
  Result err = Result::Ok(0);
  timespec left = {};
  while (done < vlen) {
    const Result r = RecvMsg(s, fd, &vec[done].msg_hdr, flags);
    if (!r.ok()) {
      err = r;
      break;
    }
    vec[done].msg_len = static_cast<unsigned>(r.value());
    ++done;
    if (flags & MSG_WAITFORONE) flags |= MSG_DONTWAIT;
    if (timeout != nullptr) {
      const int64_t ns = end - NowNs();
      left = ns > 0 ? timespec{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)}
                    : timespec{0, 0};
      if (ns <= 0) break;
    }
  }
  if (done == 0) return err;
  if (timeout != nullptr) *timeout = left;
  // A later error is dropped (the kernel keeps it in sk_err for the next call; the
  // routed socket reports it again from its error word).
  return Result::Ok(done);
}

Result SendMmsg(FrontSocket& s, int fd, mmsghdr* vec, unsigned vlen, int flags) {
  if (vlen > kMaxMessages) vlen = kMaxMessages;
  if (vlen > 0 && vec == nullptr) return Result::Err(EFAULT);
  unsigned done = 0;
  Result err = Result::Ok(0);
  while (done < vlen) {
    // A short count (nonblocking, `out` full) does not stop the batch: the next message
    // then fails with EAGAIN, as in __sys_sendmmsg().
    const Result r = SendMsg(s, fd, &vec[done].msg_hdr, flags);
    if (!r.ok()) {
      err = r;
      break;
    }
    vec[done].msg_len = static_cast<unsigned>(r.value());
    ++done;
  }
  return done > 0 ? Result::Ok(done) : err;
}

Result Splice(FrontSocket* in_sock, int fd_in, loff_t* off_in, FrontSocket* out_sock,
              int fd_out, loff_t* off_out, size_t len, unsigned flags) {
  constexpr unsigned kKnown = SPLICE_F_MOVE | SPLICE_F_NONBLOCK | SPLICE_F_MORE | SPLICE_F_GIFT;
  if (len == 0) return Result::Ok(0);
  if (flags & ~kKnown) return Result::Err(EINVAL);
  // One side must be a pipe; a routed socket is not one.
  if (in_sock != nullptr && out_sock != nullptr) return Result::Err(EINVAL);
  const int pipe = out_sock != nullptr ? fd_in : fd_out;
  const int is_pipe = IsPipe(pipe);
  if (is_pipe < 0) return Result::Err(-is_pipe);
  if (is_pipe == 0) return Result::Err(EINVAL);
  // do_splice(): an offset on the pipe is ESPIPE, on a socket (no pread/pwrite) EINVAL.
  loff_t* pipe_off = out_sock != nullptr ? off_in : off_out;
  loff_t* sock_off = out_sock != nullptr ? off_out : off_in;
  if (pipe_off != nullptr) return Result::Err(ESPIPE);
  if (sock_off != nullptr) return Result::Err(EINVAL);
  const int fl = fcntl(pipe, F_GETFL);
  const bool nonblocking = (flags & SPLICE_F_NONBLOCK) || (fl >= 0 && (fl & O_NONBLOCK));
  if (out_sock != nullptr) return out_sock->SpliceFromPipe(fd_out, pipe, len, nonblocking);
  return in_sock->SpliceToPipe(fd_in, pipe, len, nonblocking);
}

}  // namespace xsock::intercept::io
