// fd -> routed socket, with an O(1) lock-free read path.
//
// The hot path of every hooked call on an unrouted descriptor is Find(): one load of the
// chunk pointer (null in a process that never routed a descriptor in that range) and,
// if the chunk exists, one load of the entry. Routed entries are reference counted so a
// socket stays mapped while any call uses it, even if another thread closes the
// descriptor meanwhile; objects are type-stable (recycled, never freed), which makes a
// speculative reference on a just-removed object safe (see RefCounted::TryRef).
#pragma once

#include <atomic>
#include <cstdint>

namespace xsock::intercept {

// Base of everything the table points to. The count starts at 0; the creator takes the
// first reference with InitRef(). When the count returns to 0, LastUnref() runs exactly
// once; the object must stay addressable afterwards (recycled, not deleted), because a
// concurrent Find() may still try TryRef() on it.
class RefCounted {
 public:
  RefCounted() = default;
  RefCounted(const RefCounted&) = delete;
  RefCounted& operator=(const RefCounted&) = delete;

  // Takes a reference unless the count is already 0 (the object is dead or recycled).
  bool TryRef() noexcept;
  // Takes another reference; the caller must already hold one.
  void Ref() noexcept { refs_.fetch_add(1, std::memory_order_relaxed); }
  // Drops a reference; the last one runs LastUnref().
  void Unref() noexcept;
  uint32_t refs_for_testing() const { return refs_.load(std::memory_order_relaxed); }

 protected:
  ~RefCounted() = default;
  // Revives a dead (recycled) object with one reference, owned by the caller.
  void InitRef() noexcept { refs_.store(1, std::memory_order_release); }
  virtual void LastUnref() noexcept = 0;

 private:
  std::atomic<uint32_t> refs_{0};
};

// An owned reference (like a tiny intrusive_ptr). Empty means "not routed".
class FdRef {
 public:
  FdRef() = default;
  // Adopts a reference the caller already holds.
  static FdRef Adopt(RefCounted* p) { return FdRef(p); }
  FdRef(FdRef&& o) noexcept : p_(o.p_) { o.p_ = nullptr; }
  FdRef& operator=(FdRef&& o) noexcept {
    if (this != &o) {
      Reset();
      p_ = o.p_;
      o.p_ = nullptr;
    }
    return *this;
  }
  FdRef(const FdRef&) = delete;
  FdRef& operator=(const FdRef&) = delete;
  ~FdRef() { Reset(); }

  explicit operator bool() const { return p_ != nullptr; }
  RefCounted* get() const { return p_; }
  template <class T>
  T* as() const {
    return static_cast<T*>(p_);
  }
  void Reset() {
    if (p_ != nullptr) p_->Unref();
    p_ = nullptr;
  }
  // Gives up ownership without dropping the reference.
  RefCounted* Release() {
    RefCounted* p = p_;
    p_ = nullptr;
    return p;
  }

 private:
  explicit FdRef(RefCounted* p) : p_(p) {}
  RefCounted* p_ = nullptr;
};

// The table. constinit-constructible so it works before any constructor has run.
class FdTable {
 public:
  static constexpr int kChunkBits = 10;
  static constexpr int kChunkSize = 1 << kChunkBits;
  static constexpr int kChunks = 4096;
  // Descriptors at or above this number are never routed.
  static constexpr int kMaxFds = kChunks * kChunkSize;

  constexpr FdTable() = default;
  FdTable(const FdTable&) = delete;
  FdTable& operator=(const FdTable&) = delete;
  // Frees the chunks. libxsock.so never destroys its table (hooks run until the very end
  // of the process); tests do.
  ~FdTable();

  // The socket `fd` refers to, with a reference held, or empty.
  FdRef Find(int fd) const noexcept {
    if (static_cast<unsigned>(fd) >= static_cast<unsigned>(kMaxFds)) return {};
    const Chunk* c = chunks_[fd >> kChunkBits].load(std::memory_order_acquire);
    if (c == nullptr) return {};
    return FindIn(*c, fd);
  }

  // Cheap "might fd be routed" test (no reference taken; the answer can be stale).
  bool Contains(int fd) const noexcept {
    if (static_cast<unsigned>(fd) >= static_cast<unsigned>(kMaxFds)) return false;
    const Chunk* c = chunks_[fd >> kChunkBits].load(std::memory_order_acquire);
    return c != nullptr &&
           c->slots[fd & (kChunkSize - 1)].load(std::memory_order_relaxed) != nullptr;
  }

  // Points `fd` at `obj` (the table takes its own reference). Returns whatever the entry
  // held before (possibly empty); dropping that reference may run its LastUnref().
  // Returns empty and leaves `obj` untouched if fd is out of range (check with CanHold).
  FdRef Install(int fd, RefCounted* obj);

  // Clears the entry; returns the reference the table held (empty if none).
  FdRef Remove(int fd);

  // Clears every entry in [first, last] (close_range), skipping absent chunks.
  void RemoveRange(unsigned first, unsigned last);

  static bool CanHold(int fd) { return fd >= 0 && fd < kMaxFds; }

  // Calls f(fd) for every descriptor whose entry is `obj`, skipping absent chunks (the
  // answer can be stale, as with Contains). For rare whole-table work: listen(), a
  // failed connect.
  template <class F>
  void ForEachHolding(const RefCounted* obj, F&& f) const {
    for (int c = 0; c < kChunks; ++c) {
      const Chunk* chunk = chunks_[c].load(std::memory_order_acquire);
      if (chunk == nullptr) continue;
      for (int i = 0; i < kChunkSize; ++i) {
        if (chunk->slots[i].load(std::memory_order_relaxed) == obj) f(c * kChunkSize + i);
      }
    }
  }

 private:
  struct Chunk {
    std::atomic<RefCounted*> slots[kChunkSize];
  };
  static FdRef FindIn(const Chunk& c, int fd) noexcept;
  Chunk* ChunkFor(int fd, bool create);

  std::atomic<Chunk*> chunks_[kChunks] = {};
};

}  // namespace xsock::intercept
