// A fake xsockd control server for Interceptor and ControlClient tests: listens on an
// AF_UNIX SOCK_SEQPACKET path, answers the requests of shared/protocol.h, hands out
// FakeBackend sockets, enforces "a socket id is honoured only on the connection that
// created or attached it", and logs every request it receives.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "shared/protocol.h"
#include "tests/intercept/fake_backend.h"

namespace xsock::testing {

class FakeXsockd {
 public:
  enum class ConnectMode {
    kConnectedAtOnce,  // reply 0, state kConnected
    kInProgress,       // reply EINPROGRESS, finish after `complete_after_ms` with complete_err
    kRefusedAtOnce,    // reply ECONNREFUSED, state kFailed
  };
  struct Options {
    ConnectMode connect = ConnectMode::kConnectedAtOnce;
    int complete_err = 0;
    int complete_after_ms = 20;
    bool wrong_seq = false;  // answer every request after hello with a wrong sequence number
  };

  explicit FakeXsockd(Options options);
  ~FakeXsockd();
  FakeXsockd(const FakeXsockd&) = delete;
  FakeXsockd& operator=(const FakeXsockd&) = delete;

  const std::string& path() const { return path_; }
  // One line per request, e.g. "hello", "socket AF_INET", "connect 1 127.0.0.1:9",
  // "setsockopt 1 6/1 len 4", "attach 1", "getpeername 1".
  std::vector<std::string> Log();
  int connections() const { return connections_.load(); }
  FakeBackend* backend(uint64_t id);

 private:
  void Run();
  void Serve(int fd);
  proto::Reply Handle(int client, const proto::Request& req, std::vector<int>& fds_in,
                      std::vector<int>& fds_out);
  bool Owns(int client, uint64_t id);

  const Options options_;
  std::string dir_;
  std::string path_;
  int listen_fd_ = -1;
  int stop_fd_ = -1;
  std::thread thread_;
  std::atomic<int> connections_{0};

  std::mutex mu_;
  std::vector<std::string> log_;
  std::map<uint64_t, std::unique_ptr<FakeBackend>> backends_;
  std::map<uint64_t, std::pair<dev_t, ino_t>> inodes_;  // of each app channel end
  std::map<uint64_t, std::vector<int>> owners_;         // client fds allowed per socket
  struct Pending {
    uint64_t id;
    int64_t due_ms;
  };
  std::vector<Pending> pending_;
  uint64_t next_id_ = 1;
};

}  // namespace xsock::testing
