// xsock-sandbox-check: what OpenSSH's pre-authentication child does to its connection,
// without OpenSSH. Connects to an echo server at ADDR PORT, then confines itself with a
// seccomp-BPF filter installed through libc's prctl(PR_SET_SECCOMP) that allows roughly
// what OpenSSH's sandbox-seccomp-filter.c allows (read, write, poll/ppoll/select/pselect6,
// close, exit, futex, brk, mmap & co, the clocks and sleeps, getpid/gettid/getrandom,
// rt_sigprocmask, shutdown; openat/stat/fstat fail with EACCES) and kills the process
// with SIGSYS on anything else. Then it sends BYTES of the test stream and reads the echo
// back, checking length and hash, with only read(), write() and poll():
//   --mode poll      nonblocking socket, one poll() loop for both directions (as sshd)
//   --mode blocking  blocking socket: writes of a piece, then reads of its echo
// Prints "sent N bytes, received N bytes, hash ok" and exits 0; any failure exits 1 with
// a reason; death by SIGSYS means the preload library made a forbidden call.
#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "tests/programs/common.h"
#include "tests/programs/sandbox_filter.h"

namespace {

using xsock::testprog::ByteStream;
using xsock::testprog::ErrnoName;

// After the filter only write() may report: no stdio (it may fstat or allocate lazily).
void Say(const std::string& s) {
  const std::string line = s + "\n";
  size_t done = 0;
  for (int i = 0; i < 100 && done < line.size(); ++i) {
    const ssize_t n = write(STDOUT_FILENO, line.data() + done, line.size() - done);
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

[[noreturn]] void Fail(const std::string& why) {
  Say("FAIL: " + why);
  _exit(1);
}

void Confine(bool via_syscall) {
  std::vector<sock_filter> f = xsock::testprog::SandboxFilter();
  sock_fprog prog = {static_cast<unsigned short>(f.size()), f.data()};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) Fail("PR_SET_NO_NEW_PRIVS: " + ErrnoName(errno));
  if (via_syscall) {
    // As libseccomp and some runtimes do: seccomp(2) through libc's syscall().
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) {
      Fail("seccomp(SECCOMP_SET_MODE_FILTER): " + ErrnoName(errno));
    }
    return;
  }
  // libc's prctl, as OpenSSH calls it: the preload library sees this one.
  if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
    Fail("PR_SET_SECCOMP: " + ErrnoName(errno));
  }
}

// Hash of a byte sequence (FNV-1a 64), fed in any chunking.
struct Hash {
  uint64_t h = 1469598103934665603ull;
  void Add(const char* p, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      h ^= static_cast<unsigned char>(p[i]);
      h *= 1099511628211ull;
    }
  }
};

constexpr size_t kPiece = 64 * 1024;

// Both directions in one poll() loop on a nonblocking socket.
void RunPoll(int fd, uint64_t bytes, Hash& sent_hash, Hash& got_hash) {
  ByteStream out(1);
  std::vector<char> wbuf(kPiece), rbuf(kPiece);
  size_t wlen = 0, woff = 0;
  uint64_t sent = 0, got = 0;
  // Bounded: each pass moves bytes or waits at most 20 s.
  for (uint64_t pass = 0; got < bytes; ++pass) {
    if (pass > 100 * 1000 * 1000) Fail("poll loop did not finish");
    if (woff == wlen && sent < bytes) {
      wlen = static_cast<size_t>(std::min<uint64_t>(kPiece, bytes - sent));
      out.Fill(reinterpret_cast<unsigned char*>(wbuf.data()), wlen);
      sent_hash.Add(wbuf.data(), wlen);
      woff = 0;
    }
    pollfd p = {fd, static_cast<short>(POLLIN | (woff < wlen ? POLLOUT : 0)), 0};
    const int r = poll(&p, 1, 20000);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) Fail("poll: " + ErrnoName(errno));
    if (r == 0) Fail("poll: no progress for 20 s (sent " + std::to_string(sent) + ", received " +
                     std::to_string(got) + ")");
    if (p.revents & POLLNVAL) Fail("poll: POLLNVAL");
    if (woff < wlen && (p.revents & (POLLOUT | POLLERR | POLLHUP))) {
      const ssize_t n = write(fd, wbuf.data() + woff, wlen - woff);
      if (n > 0) {
        woff += static_cast<size_t>(n);
        sent += static_cast<uint64_t>(n);
      } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
        Fail("write: " + ErrnoName(errno));
      }
    }
    if (p.revents & (POLLIN | POLLERR | POLLHUP)) {
      const ssize_t n = read(fd, rbuf.data(), rbuf.size());
      if (n == 0) Fail("EOF after " + std::to_string(got) + " bytes");
      if (n > 0) {
        got_hash.Add(rbuf.data(), static_cast<size_t>(n));
        got += static_cast<uint64_t>(n);
      } else if (errno != EAGAIN && errno != EINTR) {
        Fail("read: " + ErrnoName(errno));
      }
    }
  }
  if (sent != bytes || got != bytes) Fail("counts differ");
}

// Blocking: each piece is written whole, then its echo read whole.
void RunBlocking(int fd, uint64_t bytes, Hash& sent_hash, Hash& got_hash) {
  ByteStream out(1);
  std::vector<char> wbuf(kPiece), rbuf(kPiece);
  uint64_t done = 0;
  while (done < bytes) {
    const size_t len = static_cast<size_t>(std::min<uint64_t>(kPiece, bytes - done));
    out.Fill(reinterpret_cast<unsigned char*>(wbuf.data()), len);
    sent_hash.Add(wbuf.data(), len);
    for (size_t off = 0; off < len;) {
      const ssize_t n = write(fd, wbuf.data() + off, len - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) Fail("write: " + ErrnoName(errno));
      off += static_cast<size_t>(n);
    }
    for (size_t off = 0; off < len;) {
      const ssize_t n = read(fd, rbuf.data() + off, len - off);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) Fail("read: " + ErrnoName(errno));
      if (n == 0) Fail("EOF after " + std::to_string(done + off) + " bytes");
      off += static_cast<size_t>(n);
    }
    got_hash.Add(rbuf.data(), len);
    done += len;
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = "poll";
  bool via_syscall = false;
  uint64_t bytes = 4u << 20;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--mode" && i + 1 < argc) {
      mode = argv[++i];
    } else if (arg == "--via-syscall") {
      via_syscall = true;
    } else if (arg == "--bytes" && i + 1 < argc) {
      const auto b = xsock::testprog::ParseSize(argv[++i]);
      if (!b || *b == 0 || *b > (1ull << 30)) {
        std::fprintf(stderr, "xsock-sandbox-check: --bytes: 1..1G\n");
        return 2;
      }
      bytes = *b;
    } else {
      positional.push_back(arg);
    }
  }
  if ((mode != "poll" && mode != "blocking") || positional.size() != 2) {
    std::fprintf(stderr, "usage: xsock-sandbox-check [--mode poll|blocking] [--via-syscall] [--bytes N] ADDR PORT\n");
    return 2;
  }
  const auto port = xsock::testprog::ParsePort(positional[1]);
  const auto peer = port ? xsock::testprog::ParseEndpoint(positional[0], *port) : std::nullopt;
  if (!peer) {
    std::fprintf(stderr, "xsock-sandbox-check: bad address or port\n");
    return 2;
  }
  const int fd = socket(peer->family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) Fail("socket: " + ErrnoName(errno));
  if (connect(fd, peer->addr(), peer->len) != 0) Fail("connect: " + ErrnoName(errno));
  if (mode == "poll") {
    // As sshd: O_NONBLOCK is set before the sandbox, and never looked at again.
    const int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0) Fail("fcntl: " + ErrnoName(errno));
  }
  std::fflush(stdout);
  Confine(via_syscall);
  Say("confined");
  Hash sent_hash, got_hash;
  if (mode == "poll") {
    RunPoll(fd, bytes, sent_hash, got_hash);
  } else {
    RunBlocking(fd, bytes, sent_hash, got_hash);
  }
  if (sent_hash.h != got_hash.h) Fail("hash of the echo differs from the hash sent");
  Say("sent " + std::to_string(bytes) + " bytes, received " + std::to_string(bytes) +
      " bytes, hash ok");
  close(fd);
  _exit(0);
}
