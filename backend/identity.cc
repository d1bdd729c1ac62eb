#include "backend/identity.h"

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <string_view>

#include "fmt/format.h"

namespace xsock::backend {
namespace {

std::string ReadLink(const std::string& path) {
  char buf[4096];
  const ssize_t n = readlink(path.c_str(), buf, sizeof(buf));
  if (n <= 0 || static_cast<size_t>(n) >= sizeof(buf)) return "";
  return std::string(buf, static_cast<size_t>(n));
}

// "0::/user.slice/..." is the unified (v2) hierarchy; on a v1-only host the first line's
// path is the best single answer.
std::string CgroupPath(const std::string& file) {
  std::ifstream in(file);
  std::string line;
  std::string first;
  while (std::getline(in, line)) {
    const size_t a = line.find(':');
    const size_t b = a == std::string::npos ? a : line.find(':', a + 1);
    if (b == std::string::npos) continue;
    std::string path = line.substr(b + 1);
    if (line.compare(0, b + 1, "0::") == 0) return path;
    if (first.empty()) first = std::move(path);
  }
  return first;
}

}  // namespace

void ReadProcIdentity(ClientIdentity* id, const std::string& proc) {
  id->proc_read = false;
  if (id->pid <= 0) return;
  const std::string dir = fmt::format("{}/{}", proc, id->pid);
  struct stat st;
  // The netns link answers stat() with the namespace's inode; failing means the pid is
  // gone (ENOENT) or hidden from us: then nothing from /proc is trusted.
  if (stat((dir + "/ns/net").c_str(), &st) != 0) return;
  id->netns = st.st_ino;
  id->exe = ReadLink(dir + "/exe");
  // " (deleted)" stays: it is what the kernel says, and an admin wants to see it.
  id->cgroup = CgroupPath(dir + "/cgroup");
  id->proc_read = true;
}

ClientIdentity PeerIdentity(int fd) {
  ClientIdentity id;
  ucred cred = {};
  socklen_t len = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return id;
  id.pid = cred.pid;
  id.uid = cred.uid;
  id.gid = cred.gid;
  ReadProcIdentity(&id);
  return id;
}

}  // namespace xsock::backend
