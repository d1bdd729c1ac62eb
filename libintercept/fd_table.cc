#include "libintercept/fd_table.h"

#include <new>

namespace xsock::intercept {

bool RefCounted::TryRef() noexcept {
  uint32_t n = refs_.load(std::memory_order_relaxed);
  while (n != 0) {
    // Acquire pairs with the release in InitRef(): a revived object's fields are visible.
    if (refs_.compare_exchange_weak(n, n + 1, std::memory_order_acquire,
                                    std::memory_order_relaxed)) {
      return true;
    }
  }
  return false;
}

void RefCounted::Unref() noexcept {
  // acq_rel: the last owner sees every other owner's writes before it tears down.
  if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) LastUnref();
}

FdTable::~FdTable() {
  for (auto& c : chunks_) delete c.load(std::memory_order_relaxed);
}

FdRef FdTable::FindIn(const Chunk& c, int fd) noexcept {
  const std::atomic<RefCounted*>& slot = c.slots[fd & (kChunkSize - 1)];
  for (;;) {
    RefCounted* p = slot.load(std::memory_order_acquire);
    if (p == nullptr) return {};
    if (!p->TryRef()) continue;  // dying; the slot has changed or is about to
    // The object may have been removed and recycled between the load and TryRef; only a
    // reference on what the slot still holds counts.
    if (slot.load(std::memory_order_acquire) == p) return FdRef::Adopt(p);
    p->Unref();
  }
}

FdTable::Chunk* FdTable::ChunkFor(int fd, bool create) {
  std::atomic<Chunk*>& head = chunks_[fd >> kChunkBits];
  Chunk* c = head.load(std::memory_order_acquire);
  if (c != nullptr || !create) return c;
  auto* fresh = new (std::nothrow) Chunk();  // value-initialised: all slots null
  if (fresh == nullptr) return nullptr;
  if (head.compare_exchange_strong(c, fresh, std::memory_order_acq_rel)) return fresh;
  delete fresh;  // another thread won
  return c;
}

FdRef FdTable::Install(int fd, RefCounted* obj) {
  if (!CanHold(fd)) return {};
  Chunk* c = ChunkFor(fd, /*create=*/true);
  if (c == nullptr) return {};
  obj->Ref();
  RefCounted* old = c->slots[fd & (kChunkSize - 1)].exchange(obj, std::memory_order_acq_rel);
  return FdRef::Adopt(old);
}

FdRef FdTable::Remove(int fd) {
  if (!CanHold(fd)) return {};
  Chunk* c = ChunkFor(fd, /*create=*/false);
  if (c == nullptr) return {};
  RefCounted* old = c->slots[fd & (kChunkSize - 1)].exchange(nullptr, std::memory_order_acq_rel);
  return FdRef::Adopt(old);
}

void FdTable::RemoveRange(unsigned first, unsigned last) {
  if (first >= static_cast<unsigned>(kMaxFds)) return;
  if (last >= static_cast<unsigned>(kMaxFds)) last = kMaxFds - 1;
  for (unsigned fd = first; fd <= last;) {
    if (chunks_[fd >> kChunkBits].load(std::memory_order_acquire) == nullptr) {
      fd = ((fd >> kChunkBits) + 1) << kChunkBits;  // the whole chunk is empty
      continue;
    }
    Remove(static_cast<int>(fd));  // the returned reference drops here
    ++fd;
  }
}

}  // namespace xsock::intercept
