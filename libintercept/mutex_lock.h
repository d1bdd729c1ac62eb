// A scoped pthread mutex lock. The library uses plain pthread mutexes (not std::mutex or
// absl::Mutex) because it must re-initialise them in a pthread_atfork child handler.
#pragma once

#include <pthread.h>

namespace xsock::intercept {

class MutexLock {
 public:
  explicit MutexLock(pthread_mutex_t* m) : m_(m) { pthread_mutex_lock(m_); }
  ~MutexLock() { pthread_mutex_unlock(m_); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  pthread_mutex_t* m_;
};

}  // namespace xsock::intercept
