#include "libintercept/name_memory.h"

#include <algorithm>

#include "libintercept/mutex_lock.h"

namespace xsock::intercept {

NameMemory::NameMemory() = default;

std::string NameMemory::Key(const config::Endpoint& addr) {
  // Family and address only: the same host is connected to on many ports.
  std::string key(1, static_cast<char>(addr.family));
  const size_t n = addr.family == AF_INET ? 4 : 16;
  key.append(reinterpret_cast<const char*>(addr.addr.data()), n);
  return key;
}

void NameMemory::Remember(std::string_view name, const config::Endpoint& addr) {
  if (name.empty()) return;
  std::string key = Key(addr);
  MutexLock lock(&mu_);
  auto [it, inserted] = names_.try_emplace(key);
  std::vector<std::string>& names = it->second;
  if (inserted) {
    order_.push_back(std::move(key));
    if (order_.size() > kMaxAddresses) {
      names_.erase(order_.front());
      order_.pop_front();
    }
  }
  const auto same = std::find(names.begin(), names.end(), name);
  if (same != names.end()) names.erase(same);
  names.insert(names.begin(), std::string(name));
  if (names.size() > kMaxNamesPerAddress) names.pop_back();
  count_.store(names_.size(), std::memory_order_release);
}

std::vector<std::string> NameMemory::NamesOf(const config::Endpoint& addr) const {
  if (empty()) return {};
  const std::string key = Key(addr);
  MutexLock lock(&mu_);
  const auto it = names_.find(key);
  return it == names_.end() ? std::vector<std::string>{} : it->second;
}

void NameMemory::LockForFork() { pthread_mutex_lock(&mu_); }
void NameMemory::UnlockInParent() { pthread_mutex_unlock(&mu_); }
void NameMemory::ResetLockInChild() { mu_ = PTHREAD_MUTEX_INITIALIZER; }

NameMemory& ResolvedNames() {
  // Never destroyed: hooks may run during exit, after static destructors.
  static NameMemory* const memory = [] {
    auto* m = new NameMemory();
    // Held across fork, so the child's copy of the map is never half-updated.
    pthread_atfork([] { ResolvedNames().LockForFork(); }, [] { ResolvedNames().UnlockInParent(); },
                   [] { ResolvedNames().ResetLockInChild(); });
    return m;
  }();
  return *memory;
}

}  // namespace xsock::intercept
