// The swap pitfall of DESIGN.md §2: connect() installs the channel over the socket's
// number with dup3(), which closes the kernel socket, and the kernel silently drops every
// epoll registration of a file when it closes. A program that registered its socket
// before connecting (nginx's upstream connections do) would then wait forever.
//
// So, for TCP sockets that connect() may still swap ("candidates": created by socket(),
// not yet connected), the library remembers the registrations made through epoll_ctl and
// re-adds them on the channel right after the swap. The hot path of epoll_ctl on any
// other descriptor is one load.
#pragma once

#include <pthread.h>
#include <sys/epoll.h>

#include <atomic>
#include <cstdint>
#include <utility>
#include <vector>

namespace xsock::intercept {

class EpollShadow {
 public:
  static constexpr int kChunkBits = 12;
  static constexpr int kChunks = 1024;
  static constexpr int kMaxFds = kChunks << kChunkBits;

  EpollShadow();
  ~EpollShadow();
  EpollShadow(const EpollShadow&) = delete;
  EpollShadow& operator=(const EpollShadow&) = delete;

  // socket() made `fd`, a TCP socket connect() may route.
  void MarkCandidate(int fd);
  bool IsCandidate(int fd) const {
    if (static_cast<unsigned>(fd) >= static_cast<unsigned>(kMaxFds)) return false;
    const Chunk* c = chunks_[fd >> kChunkBits].load(std::memory_order_acquire);
    if (c == nullptr) return false;
    const unsigned bit = fd & ((1 << kChunkBits) - 1);
    return (c->bits[bit / 64].load(std::memory_order_relaxed) >> (bit % 64)) & 1;
  }

  // A successful epoll_ctl(epfd, op, fd, ev); remembered only for candidates.
  void AfterEpollCtl(int epfd, int op, int fd, const epoll_event* ev);

  // `fd` is no longer a candidate (connected, closed or replaced): its registrations,
  // for connect() to re-add on the channel.
  std::vector<std::pair<int, epoll_event>> Take(int fd);

  // `fd` is being closed: it stops being a candidate, and if it is an epoll instance we
  // remembered registrations in, those go (its number may come back as another one).
  void Closing(int fd);

  // close_range(first, last): as Closing() for every number in the range.
  void ClosingRange(unsigned first, unsigned last);

  // pthread_atfork child handler.
  void ResetAfterFork() { pthread_mutex_init(&mu_, nullptr); }

 private:
  struct Chunk {
    std::atomic<uint64_t> bits[(1 << kChunkBits) / 64];
  };
  struct Registration {
    int fd;
    int epfd;
    epoll_event ev;
  };
  void Clear(int fd);

  std::atomic<Chunk*> chunks_[kChunks] = {};
  pthread_mutex_t mu_;
  std::vector<Registration> regs_;  // few: only sockets registered before connecting
  std::atomic<size_t> reg_count_{0};
};

}  // namespace xsock::intercept
