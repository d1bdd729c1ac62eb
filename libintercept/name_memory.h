// Which names this process resolved through xsockd to which addresses, so that a
// profile's `host` rules can decide the connect() that follows (docs/config.md, "Names
// and connect"). A connect() sees only an address; the name it came from is known only
// to the resolver hooks, which remember it here.
//
// Bounded (kMaxAddresses addresses, kMaxNamesPerAddress names each; the oldest address is
// forgotten first) and process-wide. Safe from any thread; a fork child starts with the
// parent's memory, never half-updated.
#pragma once

#include <pthread.h>

#include <atomic>
#include <cstddef>
#include <deque>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "shared/rules.h"

namespace xsock::intercept {

class NameMemory {
 public:
  static constexpr size_t kMaxAddresses = 4096;
  static constexpr size_t kMaxNamesPerAddress = 4;

  NameMemory();
  NameMemory(const NameMemory&) = delete;
  NameMemory& operator=(const NameMemory&) = delete;

  // `name` resolved to `addr` (its port is ignored). The latest name comes first.
  void Remember(std::string_view name, const config::Endpoint& addr);
  // The names `addr` was resolved from, latest first; empty when none (cheap then).
  std::vector<std::string> NamesOf(const config::Endpoint& addr) const;
  bool empty() const { return count_.load(std::memory_order_acquire) == 0; }
  // pthread_atfork handlers: the lock is held across fork (prepare, parent) and made
  // new in the child, where its holder does not exist.
  void LockForFork();
  void UnlockInParent();
  void ResetLockInChild();

 private:
  static std::string Key(const config::Endpoint& addr);

  mutable pthread_mutex_t mu_ = PTHREAD_MUTEX_INITIALIZER;
  std::unordered_map<std::string, std::vector<std::string>> names_;
  std::deque<std::string> order_;  // keys, oldest first
  std::atomic<size_t> count_{0};
};

// The process's memory, fed by the resolver hooks and read by the routing policy.
NameMemory& ResolvedNames();

}  // namespace xsock::intercept
