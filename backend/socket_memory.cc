#include "backend/socket_memory.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>

#include <cerrno>
#include <new>

#include "backend/errors.h"
#include "fmt/format.h"

namespace xsock::backend {
namespace {

// The app's locks must survive a holder that dies (robust) and work across processes.
int InitAppMutex(pthread_mutex_t* m) {
  pthread_mutexattr_t attr;
  int rc = pthread_mutexattr_init(&attr);
  if (rc != 0) return rc;
  rc = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  if (rc == 0) rc = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  if (rc == 0) rc = pthread_mutex_init(m, &attr);
  pthread_mutexattr_destroy(&attr);
  return rc;
}

}  // namespace

absl::StatusOr<SocketMemory> SocketMemory::Create(uint64_t socket_id, uint32_t order) {
  const size_t size = SocketMemfdSize(order);
  const std::string name = fmt::format("xsock-socket-{}", socket_id);
  UniqueFd fd(memfd_create(name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd.valid()) return ErrnoError(errno, "memfd_create");
  if (ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
    return ErrnoError(errno, fmt::format("ftruncate memfd to {} bytes", size));
  }
  void* base = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (base == MAP_FAILED) return ErrnoError(errno, "mmap memfd");
  SocketMemory mem(std::move(fd), base, size, order);

  // A fresh memfd reads as zeros: indices, error words, state (kIdle) and flags start at 0.
  SocketPage* page = new (base) SocketPage;
  page->magic = kSocketPageMagic;
  page->version = kSocketPageVersion;
  page->ring_order = order;
  page->socket_id = socket_id;
  if (int rc = InitAppMutex(&page->read_lock); rc != 0) return ErrnoError(rc, "init read_lock");
  if (int rc = InitAppMutex(&page->write_lock); rc != 0) return ErrnoError(rc, "init write_lock");

  // Without these seals the app could truncate the memfd under xsockd's mapping and make
  // xsockd fault (SIGBUS) on its next ring access.
  if (fcntl(mem.fd(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    return ErrnoError(errno, "seal memfd");
  }
  return mem;
}

SocketMemory::SocketMemory(SocketMemory&& other) noexcept
    : fd_(std::move(other.fd_)),
      base_(std::exchange(other.base_, nullptr)),
      size_(other.size_),
      order_(other.order_) {}

SocketMemory::~SocketMemory() {
  if (base_ != nullptr) munmap(base_, size_);
}

}  // namespace xsock::backend
