#include "libintercept/epoll_shadow.h"

#include <algorithm>
#include <new>

#include "libintercept/mutex_lock.h"

namespace xsock::intercept {
namespace {}  // namespace

EpollShadow::EpollShadow() { pthread_mutex_init(&mu_, nullptr); }

EpollShadow::~EpollShadow() {
  for (auto& c : chunks_) delete c.load(std::memory_order_relaxed);
  pthread_mutex_destroy(&mu_);
}

void EpollShadow::MarkCandidate(int fd) {
  if (static_cast<unsigned>(fd) >= static_cast<unsigned>(kMaxFds)) return;
  std::atomic<Chunk*>& head = chunks_[fd >> kChunkBits];
  Chunk* c = head.load(std::memory_order_acquire);
  if (c == nullptr) {
    auto* fresh = new (std::nothrow) Chunk();
    if (fresh == nullptr) return;
    if (head.compare_exchange_strong(c, fresh, std::memory_order_acq_rel)) {
      c = fresh;
    } else {
      delete fresh;
    }
  }
  const unsigned bit = fd & ((1 << kChunkBits) - 1);
  c->bits[bit / 64].fetch_or(uint64_t{1} << (bit % 64), std::memory_order_relaxed);
}

void EpollShadow::Clear(int fd) {
  if (static_cast<unsigned>(fd) >= static_cast<unsigned>(kMaxFds)) return;
  Chunk* c = chunks_[fd >> kChunkBits].load(std::memory_order_acquire);
  if (c == nullptr) return;
  const unsigned bit = fd & ((1 << kChunkBits) - 1);
  c->bits[bit / 64].fetch_and(~(uint64_t{1} << (bit % 64)), std::memory_order_relaxed);
}

void EpollShadow::AfterEpollCtl(int epfd, int op, int fd, const epoll_event* ev) {
  if (!IsCandidate(fd)) return;
  MutexLock lock(&mu_);
  auto same = [&](const Registration& r) { return r.fd == fd && r.epfd == epfd; };
  regs_.erase(std::remove_if(regs_.begin(), regs_.end(), same), regs_.end());
  if ((op == EPOLL_CTL_ADD || op == EPOLL_CTL_MOD) && ev != nullptr) {
    regs_.push_back({fd, epfd, *ev});
  }
  reg_count_.store(regs_.size(), std::memory_order_relaxed);
}

std::vector<std::pair<int, epoll_event>> EpollShadow::Take(int fd) {
  Clear(fd);
  std::vector<std::pair<int, epoll_event>> out;
  if (reg_count_.load(std::memory_order_relaxed) == 0) return out;
  MutexLock lock(&mu_);
  for (const Registration& r : regs_) {
    if (r.fd == fd) out.emplace_back(r.epfd, r.ev);
  }
  regs_.erase(
      std::remove_if(regs_.begin(), regs_.end(), [&](const Registration& r) { return r.fd == fd; }),
      regs_.end());
  reg_count_.store(regs_.size(), std::memory_order_relaxed);
  return out;
}

void EpollShadow::Closing(int fd) {
  if (IsCandidate(fd)) Take(fd);
  if (reg_count_.load(std::memory_order_relaxed) == 0) return;
  MutexLock lock(&mu_);
  regs_.erase(std::remove_if(regs_.begin(), regs_.end(),
                             [&](const Registration& r) { return r.epfd == fd; }),
              regs_.end());
  reg_count_.store(regs_.size(), std::memory_order_relaxed);
}

void EpollShadow::ClosingRange(unsigned first, unsigned last) {
  if (last >= static_cast<unsigned>(kMaxFds)) last = kMaxFds - 1;
  for (unsigned fd = first; fd <= last;) {
    if (chunks_[fd >> kChunkBits].load(std::memory_order_acquire) == nullptr) {
      fd = ((fd >> kChunkBits) + 1) << kChunkBits;
      continue;
    }
    Clear(static_cast<int>(fd));
    ++fd;
  }
  if (reg_count_.load(std::memory_order_relaxed) == 0) return;
  MutexLock lock(&mu_);
  auto in_range = [&](int fd) {
    return static_cast<unsigned>(fd) >= first && static_cast<unsigned>(fd) <= last;
  };
  regs_.erase(
      std::remove_if(regs_.begin(), regs_.end(),
                     [&](const Registration& r) { return in_range(r.fd) || in_range(r.epfd); }),
      regs_.end());
  reg_count_.store(regs_.size(), std::memory_order_relaxed);
}

}  // namespace xsock::intercept
