// Data-path scenarios: sendfile, splice, sendmmsg/recvmmsg, vectored I/O, a large transfer
// both ways, duplicated descriptors and a socket shared across fork.
#include <fcntl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "tests/conformance/scenario.h"

namespace xsock::conform {

// ---------------------------------------------------------------------------------------
SCENARIO(sendfile_to_socket, 24300, "sendfile from a file, with an offset and with the file position");
void App_sendfile_to_socket() {
  const std::vector<unsigned char> content = StreamBytes(21, (1 << 20) + 123);
  const std::string path = SyncPath("sendfile.data");
  const int file = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (write(file, content.data(), content.size()) != ssize_t(content.size())) {
    Say("writing the file failed");
    return;
  }
  const int fd = ConnectTo();
  off_t off = 0;
  std::string end = "done";
  for (int i = 0; i < 10000 && off < off_t(content.size()); ++i) {
    const ssize_t r = sendfile(fd, file, &off, content.size() - off);
    if (r <= 0) {
      end = Ret(r);
      break;
    }
  }
  Sayf("sendfile with offset: {} offset={} file position={}", end, off,
       lseek(file, 0, SEEK_CUR));
  Sayf("lseek to 1000: {}", lseek(file, 1000, SEEK_SET));
  const std::string r = Ret(sendfile(fd, file, nullptr, 5000));
  Sayf("sendfile(NULL offset, 5000): {} file position={}", r, lseek(file, 0, SEEK_CUR));
  off = off_t(content.size());
  Sayf("sendfile at end of file: {}", Ret(sendfile(fd, file, &off, 100)));
  Sayf("sendfile 0 bytes: {}", Ret(sendfile(fd, file, &off, 0)));
  std::vector<unsigned char> expected = content;
  expected.insert(expected.end(), content.begin() + 1000, content.begin() + 6000);
  Sayf("expected at the peer: {} bytes hash {}", expected.size(),
       Hex64(HashOf(expected.data(), expected.size())));
  shutdown(fd, SHUT_WR);
  Await("peer.done");
  close(file);
}
void Peer_sendfile_to_socket() {
  const int l = Listen();
  const int c = AcceptOne(l);
  const Drained d = ReadToEnd(c);
  Sayf("received {} bytes hash {} then {}", d.bytes, Hex64(d.hash), d.end);
  Post("peer.done");
}

// ---------------------------------------------------------------------------------------
SCENARIO(splice_pipe_to_socket, 24310, "splice from a pipe into the socket");
void App_splice_pipe_to_socket() {
  int p[2];
  pipe(p);
  const std::vector<unsigned char> content = StreamBytes(31, 60000);
  if (write(p[1], content.data(), content.size()) != ssize_t(content.size())) {
    Say("writing the pipe failed");
    return;
  }
  const int fd = ConnectTo();
  size_t total = 0;
  std::string end = "done";
  for (int i = 0; i < 10000 && total < content.size(); ++i) {
    const ssize_t r = splice(p[0], nullptr, fd, nullptr, content.size() - total, 0);
    if (r <= 0) {
      end = Ret(r);
      break;
    }
    total += static_cast<size_t>(r);
  }
  Sayf("splice: {} total={}", end, total);
  Sayf("expected at the peer: {} bytes hash {}", content.size(),
       Hex64(HashOf(content.data(), content.size())));
  shutdown(fd, SHUT_WR);
  Await("peer.done");
}
void Peer_splice_pipe_to_socket() { Peer_sendfile_to_socket(); }

// ---------------------------------------------------------------------------------------
SCENARIO(splice_socket_to_pipe, 24320, "splice from the socket into a pipe");
void App_splice_socket_to_pipe() {
  int p[2];
  pipe(p);
  const int fd = ConnectTo();
  Await("peer.sent");
  Sayf("FIONREAD: {}", WaitInq(fd, 5000));
  size_t total = 0;
  std::string end = "done";
  for (int i = 0; i < 1000 && total < 5000; ++i) {
    const ssize_t r = splice(fd, nullptr, p[1], nullptr, 5000 - total, SPLICE_F_NONBLOCK);
    if (r <= 0) {
      end = Ret(r);
      break;
    }
    total += static_cast<size_t>(r);
  }
  std::vector<unsigned char> got(6000);
  const ssize_t n = read(p[0], got.data(), total);
  Sayf("splice: {} total={}, pipe holds {} hash {}", end, total, Ret(n),
       Hex64(HashOf(got.data(), n > 0 ? n : 0)));
  Sayf("recv after: {}", Ret(recv(fd, got.data(), got.size(), MSG_DONTWAIT)));
  Post("app.done");
}
void Peer_splice_socket_to_pipe() {
  const int l = Listen();
  const int c = AcceptOne(l);
  const std::vector<unsigned char> content = StreamBytes(41, 5000);
  SendAll(c, content.data(), content.size());
  Sayf("sent 5000 bytes hash {}", Hex64(HashOf(content.data(), content.size())));
  Post("peer.sent");
  Await("app.done");
  close(c);
}

// ---------------------------------------------------------------------------------------
SCENARIO(mmsg, 24330, "sendmmsg of three messages, recvmmsg of three 100-byte pieces");
void App_mmsg() {
  const int fd = ConnectTo();
  const std::vector<unsigned char> out = StreamBytes(51, 600);
  iovec iov[3] = {{const_cast<unsigned char*>(out.data()), 100},
                  {const_cast<unsigned char*>(out.data() + 100), 200},
                  {const_cast<unsigned char*>(out.data() + 300), 300}};
  mmsghdr msgs[3] = {};
  for (int i = 0; i < 3; ++i) {
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
  const int sent = sendmmsg(fd, msgs, 3, MSG_NOSIGNAL);
  Sayf("sendmmsg: {} lens {} {} {}", Ret(sent), msgs[0].msg_len, msgs[1].msg_len, msgs[2].msg_len);
  Sayf("expected at the peer: 600 bytes hash {}", Hex64(HashOf(out.data(), out.size())));
  Await("peer.sent");
  Sayf("FIONREAD: {}", WaitInq(fd, 300));
  std::vector<unsigned char> in(300);
  iovec riov[3] = {{in.data(), 100}, {in.data() + 100, 100}, {in.data() + 200, 100}};
  mmsghdr rmsgs[3] = {};
  for (int i = 0; i < 3; ++i) {
    rmsgs[i].msg_hdr.msg_iov = &riov[i];
    rmsgs[i].msg_hdr.msg_iovlen = 1;
  }
  const int got = recvmmsg(fd, rmsgs, 3, MSG_DONTWAIT, nullptr);
  Sayf("recvmmsg: {} lens {} {} {} hash {}", Ret(got), rmsgs[0].msg_len, rmsgs[1].msg_len,
       rmsgs[2].msg_len, Hex64(HashOf(in.data(), in.size())));
  Sayf("recvmmsg on empty: {}", Ret(recvmmsg(fd, rmsgs, 3, MSG_DONTWAIT, nullptr)));
  shutdown(fd, SHUT_WR);
  Await("peer.done");
}
void Peer_mmsg() {
  const int l = Listen();
  const int c = AcceptOne(l);
  const std::string got = RecvExactly(c, 600);
  Sayf("received {} bytes hash {}", got.size(), Hex64(HashOf(got.data(), got.size())));
  const std::vector<unsigned char> back = StreamBytes(52, 300);
  SendAll(c, back.data(), back.size());
  Sayf("sent 300 bytes hash {}", Hex64(HashOf(back.data(), back.size())));
  Post("peer.sent");
  Sayf("then: {}", DescribeDrained(ReadToEnd(c)));
  Post("peer.done");
}

// ---------------------------------------------------------------------------------------
SCENARIO(vectored_io, 24340, "writev/readv/sendmsg/recvmsg with several iovecs");
void App_vectored_io() {
  const int fd = ConnectTo();
  const std::vector<unsigned char> out = StreamBytes(61, 51001 + 3000);
  iovec iov[3] = {{const_cast<unsigned char*>(out.data()), 1},
                  {const_cast<unsigned char*>(out.data() + 1), 1000},
                  {const_cast<unsigned char*>(out.data() + 1001), 50000}};
  Sayf("writev 1+1000+50000: {}", Ret(writev(fd, iov, 3)));
  iovec iov2[2] = {{const_cast<unsigned char*>(out.data() + 51001), 1000},
                   {const_cast<unsigned char*>(out.data() + 52001), 2000}};
  msghdr mh{};
  mh.msg_iov = iov2;
  mh.msg_iovlen = 2;
  Sayf("sendmsg 1000+2000: {}", Ret(sendmsg(fd, &mh, MSG_NOSIGNAL)));
  Sayf("writev with no iovecs: {}", Ret(writev(fd, iov, 0)));
  Sayf("expected at the peer: {} bytes hash {}", out.size(), Hex64(HashOf(out.data(), out.size())));
  Await("peer.sent");
  Sayf("FIONREAD: {}", WaitInq(fd, 6000));
  std::vector<unsigned char> in(8000, 0);
  iovec riov[3] = {{in.data(), 10}, {in.data() + 10, 100}, {in.data() + 110, 2890}};
  const std::string rv = Ret(readv(fd, riov, 3));
  Sayf("readv 10+100+2890: {} hash {}", rv, Hex64(HashOf(in.data(), 3000)));
  iovec riov2[2] = {{in.data() + 3000, 1}, {in.data() + 3001, 4999}};
  msghdr rmh{};
  rmh.msg_iov = riov2;
  rmh.msg_iovlen = 2;
  char name[64];
  rmh.msg_name = name;
  rmh.msg_namelen = sizeof name;
  const ssize_t r = recvmsg(fd, &rmh, 0);
  Sayf("recvmsg 1+4999: {} namelen={} controllen={} flags={} hash {}", Ret(r), rmh.msg_namelen,
       rmh.msg_controllen, rmh.msg_flags, Hex64(HashOf(in.data(), 6000)));
  shutdown(fd, SHUT_WR);
  Await("peer.done");
}
void Peer_vectored_io() {
  const int l = Listen();
  const int c = AcceptOne(l);
  const std::string got = RecvExactly(c, 54001);
  Sayf("received {} bytes hash {}", got.size(), Hex64(HashOf(got.data(), got.size())));
  const std::vector<unsigned char> back = StreamBytes(62, 6000);
  SendAll(c, back.data(), back.size());
  Sayf("sent 6000 bytes, hash of the first 3000 {} of all {}", Hex64(HashOf(back.data(), 3000)),
       Hex64(HashOf(back.data(), 6000)));
  Post("peer.sent");
  Sayf("then: {}", DescribeDrained(ReadToEnd(c)));
  Post("peer.done");
}

// ---------------------------------------------------------------------------------------
// Both directions at once on a nonblocking socket driven by poll, as event loops do; the
// side that finishes sending shuts down for writing.
void Exchange(int fd, uint64_t send_seed, uint64_t bytes) {
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  testprog::ByteStream out(send_seed);
  testprog::StreamHash in_hash;
  std::vector<unsigned char> obuf(128 * 1024), ibuf(128 * 1024);
  size_t opos = 0, olen = 0;
  uint64_t sent = 0;
  bool wr_done = false, eof = false;
  std::string error;
  for (int iter = 0; iter < 2000000 && !(wr_done && eof) && error.empty(); ++iter) {
    pollfd p{fd, static_cast<short>(POLLIN | (wr_done ? 0 : POLLOUT)), 0};
    if (poll(&p, 1, kSyncMs) <= 0) {
      error = "poll timed out";
      break;
    }
    if (p.revents & (POLLIN | POLLERR | POLLHUP)) {
      const ssize_t r = recv(fd, ibuf.data(), ibuf.size(), 0);
      if (r > 0) {
        in_hash.Update(ibuf.data(), static_cast<size_t>(r));
      } else if (r == 0) {
        eof = true;
      } else if (errno != EAGAIN) {
        error = ErrnoName(errno);
      }
    }
    if (!wr_done && (p.revents & POLLOUT)) {
      if (opos == olen) {
        olen = static_cast<size_t>(std::min<uint64_t>(obuf.size(), bytes - sent));
        out.Fill(obuf.data(), olen);
        opos = 0;
      }
      const ssize_t r = send(fd, obuf.data() + opos, olen - opos, MSG_NOSIGNAL);
      if (r > 0) {
        opos += static_cast<size_t>(r);
        sent += static_cast<uint64_t>(r);
        if (sent == bytes) {
          wr_done = true;
          shutdown(fd, SHUT_WR);
        }
      } else if (errno != EAGAIN) {
        error = ErrnoName(errno);
      }
    }
  }
  std::vector<unsigned char> expect(static_cast<size_t>(bytes));
  testprog::ByteStream(send_seed ^ 1).Fill(expect.data(), expect.size());
  Sayf("sent {}; received {} bytes, {} the peer's stream; {}", sent, in_hash.bytes(),
       in_hash.Digest() == HashOf(expect.data(), expect.size()) ? "equal to" : "NOT equal to",
       error.empty() ? (eof ? "then EOF" : "no EOF") : "error " + error);
}

constexpr uint64_t kBigTransfer = 32 << 20;

SCENARIO(large_transfer, 24350, "32 MiB each way at once, hashed, through poll");
void App_large_transfer() { Exchange(ConnectTo(), 0x100, kBigTransfer); }
void Peer_large_transfer() {
  const int l = Listen();
  Exchange(AcceptOne(l), 0x101, kBigTransfer);
}

// ---------------------------------------------------------------------------------------
SCENARIO(dup_and_close, 24360, "dup/dup2/F_DUPFD_CLOEXEC, closing some duplicates, using the rest");
void App_dup_and_close() {
  const int fd = ConnectTo();
  const int d1 = dup(fd);
  Sayf("dup: {}", d1 >= 0 ? "ok" : Ret(d1));
  Sayf("close original: {}", Ret(close(fd)));
  Sayf("send on dup: {}", Ret(send(d1, "via-dup", 7, MSG_NOSIGNAL)));
  const int d2 = fcntl(d1, F_DUPFD_CLOEXEC, 100);
  Sayf("F_DUPFD_CLOEXEC from 100: {} {}", d2 >= 100 ? "ok" : Ret(d2), FdFlags(d2));
  std::string r = Ret(dup2(d1, 50));
  Sayf("dup2 to 50: {} {}", r, FdFlags(50));
  r = Ret(dup3(d1, 51, O_CLOEXEC));
  Sayf("dup3 to 51 O_CLOEXEC: {} {}", r, FdFlags(51));
  Sayf("close first dup: {}", Ret(close(d1)));
  Sayf("send on 50: {}", Ret(send(50, "-dup2", 5, MSG_NOSIGNAL)));
  char buf[16] = {};
  const std::string reply = RecvExactly(d2, 5);
  Sayf("recv on the F_DUPFD copy: {}", Show(reply.data(), reply.size()));
  Sayf("close 51: {}", Ret(close(51)));
  Sayf("shutdown(SHUT_WR) on 50: {}", Ret(shutdown(50, SHUT_WR)));
  Sayf("recv on the F_DUPFD copy: {}", Ret(recv(d2, buf, sizeof buf, 0)));
  Sayf("close 50: {}", Ret(close(50)));
  Sayf("close copy: {}", Ret(close(d2)));
  Sayf("send on closed: {}", Ret(send(d2, "x", 1, MSG_NOSIGNAL)));
}
void Peer_dup_and_close() {
  const int l = Listen();
  const int c = AcceptOne(l);
  const std::string got = RecvExactly(c, 12);
  Sayf("received {}", Show(got.data(), got.size()));
  SendAll(c, "reply");
  Sayf("then: {}", DescribeDrained(ReadToEnd(c)));
  close(c);
}

// ---------------------------------------------------------------------------------------
SCENARIO(fork_shared, 24370, "a socket used by a child then by its parent; the child's close is no FIN");
void App_fork_shared() {
  const int fd = ConnectTo();
  const pid_t pid = fork();
  if (pid == 0) {
    Sayf("child send: {}", Ret(send(fd, "child;", 6, MSG_NOSIGNAL)));
    char buf[16] = {};
    const ssize_t r = recv(fd, buf, 6, MSG_WAITALL);
    Sayf("child recv: {} {}", Ret(r), Show(buf, r > 0 ? r : 0));
    Sayf("child close: {}", Ret(close(fd)));
    _exit(0);
  }
  int status = -1;
  waitpid(pid, &status, 0);
  Sayf("child exit status: {}", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  Sayf("parent send: {}", Ret(send(fd, "parent;", 7, MSG_NOSIGNAL)));
  char buf[16] = {};
  const ssize_t r = recv(fd, buf, 6, MSG_WAITALL);
  Sayf("parent recv: {} {}", Ret(r), Show(buf, r > 0 ? r : 0));
  const pid_t pid2 = fork();
  if (pid2 == 0) _exit(0);  // a child that never touches the socket
  waitpid(pid2, &status, 0);
  Sayf("parent send after a second child exited: {}", Ret(send(fd, "end", 3, MSG_NOSIGNAL)));
  close(fd);
  Await("peer.done");
}
void Peer_fork_shared() {
  const int l = Listen();
  const int c = AcceptOne(l);
  std::string got = RecvExactly(c, 6);
  Sayf("received {}", Show(got.data(), got.size()));
  SendAll(c, "c-data");
  got = RecvExactly(c, 7);
  Sayf("received {}", Show(got.data(), got.size()));
  SendAll(c, "p-data");
  Sayf("then: {}", DescribeDrained(ReadToEnd(c)));
  Post("peer.done");
}


// ---------------------------------------------------------------------------------------
SCENARIO(raw_syscalls, 24610, "socket calls made through syscall(2) act on the socket itself");
void App_raw_syscalls() {
  Await("listen0");
  const int fd = static_cast<int>(syscall(SYS_socket, AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  socklen_t len = 0;
  const sockaddr_storage ss = Loopback(AF_INET, 0, &len);
  Sayf("connect: {}", Ret(syscall(SYS_connect, fd, &ss, len)));
  Sayf("getpeername: {}", DescribePeerName(fd));
  const char msg[] = "through syscall(SYS_write)";
  Sayf("write: {}", Ret(syscall(SYS_write, fd, msg, sizeof msg - 1)));
  Sayf("sendto: {}", Ret(syscall(SYS_sendto, fd, "+sendto", 7, MSG_NOSIGNAL, nullptr, 0)));
  int type = -1;
  socklen_t tlen = sizeof type;
  Sayf("getsockopt SO_TYPE: {} {}", Ret(syscall(SYS_getsockopt, fd, SOL_SOCKET, SO_TYPE, &type,
                                                &tlen)),
       type);
  Await("peer.sent");
  Sayf("FIONREAD: {}", WaitInq(fd, 10));
  char buf[64] = {};
  Sayf("read 4: {} \"{}\"", Ret(syscall(SYS_read, fd, buf, 4)), std::string(buf, 4));
  std::memset(buf, 0, sizeof buf);
  Sayf("recvfrom: {} \"{}\"", Ret(syscall(SYS_recvfrom, fd, buf, sizeof buf, 0, nullptr, nullptr)),
       buf);
  Sayf("shutdown(SHUT_WR): {}", Ret(syscall(SYS_shutdown, fd, SHUT_WR)));
  Await("peer.done");
  Sayf("read at EOF: {}", Ret(syscall(SYS_read, fd, buf, sizeof buf)));
  Sayf("close: {}", Ret(syscall(SYS_close, fd)));
  Sayf("close again: {}", Ret(syscall(SYS_close, fd)));
}
void Peer_raw_syscalls() {
  const int l = Listen();
  const int c = AcceptOne(l);
  Sayf("received: \"{}\"", RecvExactly(c, 33));
  SendAll(c, "0123456789");
  Post("peer.sent");
  Sayf("then: {}", DescribeDrained(ReadToEnd(c)));
  Post("peer.done");
}

}  // namespace xsock::conform
