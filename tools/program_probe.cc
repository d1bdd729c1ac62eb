#include "tools/program_probe.h"

#include <elf.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace xsock::tool {
namespace {

// Bounds on what a well-formed executable has; beyond them the file is treated as corrupt
// rather than read at length.
constexpr uint32_t kMaxPhdrs = 4096;
constexpr size_t kMaxDynEntries = 8192;
constexpr size_t kMaxName = 4096;

bool ReadAt(int fd, void* buf, size_t n, uint64_t off) {
  auto* p = static_cast<char*>(buf);
  while (n > 0) {
    const ssize_t r = pread(fd, p, n, static_cast<off_t>(off));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    off += static_cast<uint64_t>(r);
    n -= static_cast<size_t>(r);
  }
  return true;
}

// A NUL-terminated string at `off`, at most kMaxName bytes.
bool ReadString(int fd, uint64_t off, std::string& out) {
  out.clear();
  char buf[256];
  while (out.size() < kMaxName) {
    const ssize_t r = pread(fd, buf, sizeof(buf), static_cast<off_t>(off + out.size()));
    if (r <= 0) return false;
    const void* nul = std::memchr(buf, '\0', static_cast<size_t>(r));
    if (nul != nullptr) {
      out.append(buf, static_cast<size_t>(static_cast<const char*>(nul) - buf));
      return true;
    }
    out.append(buf, static_cast<size_t>(r));
  }
  return false;
}

template <typename Ehdr, typename Phdr, typename Dyn>
bool InspectElf(int fd, ProgramInfo& info) {
  Ehdr eh;
  if (!ReadAt(fd, &eh, sizeof(eh), 0)) return false;
  if (eh.e_phentsize != sizeof(Phdr) || eh.e_phnum > kMaxPhdrs) return false;
  std::vector<Phdr> ph(eh.e_phnum);
  if (!ph.empty() && !ReadAt(fd, ph.data(), ph.size() * sizeof(Phdr), eh.e_phoff)) return false;
  const Phdr* dynamic = nullptr;
  bool interp = false;
  for (const Phdr& p : ph) {
    if (p.p_type == PT_INTERP) {
      interp = true;
      ReadString(fd, p.p_offset, info.interpreter);
    } else if (p.p_type == PT_DYNAMIC) {
      dynamic = &p;
    }
  }
  info.kind = interp ? ProgramInfo::Kind::kDynamic : ProgramInfo::Kind::kStatic;
  if (dynamic == nullptr) return true;
  const size_t count = std::min<size_t>(dynamic->p_filesz / sizeof(Dyn), kMaxDynEntries);
  std::vector<Dyn> dyn(count);
  if (count == 0 || !ReadAt(fd, dyn.data(), count * sizeof(Dyn), dynamic->p_offset)) return true;
  uint64_t strtab = 0;
  std::vector<uint64_t> needed;
  for (const Dyn& d : dyn) {
    if (d.d_tag == DT_NULL) break;
    if (d.d_tag == DT_STRTAB) strtab = d.d_un.d_ptr;
    if (d.d_tag == DT_NEEDED) needed.push_back(d.d_un.d_val);
  }
  // DT_STRTAB is an address: find the file offset through the PT_LOAD that maps it.
  uint64_t strtab_off = 0;
  bool found = false;
  for (const Phdr& p : ph) {
    if (p.p_type == PT_LOAD && strtab >= p.p_vaddr && strtab < p.p_vaddr + p.p_filesz) {
      strtab_off = strtab - p.p_vaddr + p.p_offset;
      found = true;
      break;
    }
  }
  if (!found) return true;
  for (const uint64_t n : needed) {
    std::string name;
    if (!ReadString(fd, strtab_off + n, name)) continue;
    if (name.rfind("libc.so", 0) == 0) info.links_libc = true;
    info.needed.push_back(std::move(name));
  }
  return true;
}

}  // namespace

ProgramInfo InspectProgram(const std::string& path) {
  ProgramInfo info;
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    info.error = std::strerror(errno);
    return info;
  }
  struct stat st;
  if (fstat(fd, &st) == 0) {
    info.setuid = (st.st_mode & S_ISUID) != 0 && st.st_uid != getuid();
    info.setgid = (st.st_mode & S_ISGID) != 0 && (st.st_mode & S_IXGRP) != 0 &&
                  st.st_gid != getgid();
  }
  unsigned char ident[EI_NIDENT] = {};
  const ssize_t n = pread(fd, ident, sizeof(ident), 0);
  if (n >= 2 && ident[0] == '#' && ident[1] == '!') {
    info.kind = ProgramInfo::Kind::kScript;
    std::string line;
    char buf[256];
    const ssize_t r = pread(fd, buf, sizeof(buf), 2);
    if (r > 0) line.assign(buf, static_cast<size_t>(r));
    line = line.substr(0, line.find('\n'));
    const size_t start = line.find_first_not_of(" \t");
    if (start != std::string::npos) {
      const size_t end = line.find_first_of(" \t", start);
      info.interpreter = line.substr(start, end == std::string::npos ? end : end - start);
    }
  } else if (n == EI_NIDENT && std::memcmp(ident, ELFMAG, SELFMAG) == 0 &&
             ident[EI_DATA] == ELFDATA2LSB) {
    const bool ok = ident[EI_CLASS] == ELFCLASS64
                        ? InspectElf<Elf64_Ehdr, Elf64_Phdr, Elf64_Dyn>(fd, info)
                        : ident[EI_CLASS] == ELFCLASS32 &&
                              InspectElf<Elf32_Ehdr, Elf32_Phdr, Elf32_Dyn>(fd, info);
    if (!ok) {
      info.kind = ProgramInfo::Kind::kNotElf;
      info.error = "malformed ELF headers";
    }
  } else if (n < 0) {
    info.error = std::strerror(errno);
  } else {
    info.kind = ProgramInfo::Kind::kNotElf;
  }
  close(fd);
  return info;
}

std::vector<std::string> LaunchWarnings(const std::string& path) {
  std::vector<std::string> out;
  const ProgramInfo info = InspectProgram(path);
  const auto id_warnings = [&](const std::string& p, const ProgramInfo& i) {
    if (i.setuid) {
      out.push_back(p + " is set-user-ID: the dynamic loader ignores LD_PRELOAD for it (secure "
                        "execution), so none of its sockets is routed");
    }
    if (i.setgid) {
      out.push_back(p + " is set-group-ID: the dynamic loader ignores LD_PRELOAD for it (secure "
                        "execution), so none of its sockets is routed");
    }
  };
  id_warnings(path, info);
  switch (info.kind) {
    case ProgramInfo::Kind::kDynamic:
      if (!info.links_libc) {
        out.push_back(path + " does not link libc.so dynamically: socket calls it makes without "
                             "libc (raw system calls) are not intercepted");
      }
      break;
    case ProgramInfo::Kind::kStatic:
      out.push_back(path + " is statically linked (no program interpreter): LD_PRELOAD does not "
                           "apply, so none of its sockets is routed");
      break;
    case ProgramInfo::Kind::kScript: {
      const std::string interp = info.interpreter.empty() ? "(none)" : info.interpreter;
      out.push_back(path + " is a script: the library is loaded into its interpreter " + interp +
                    " (and whatever that runs)");
      if (!info.interpreter.empty()) {
        const ProgramInfo i = InspectProgram(info.interpreter);
        id_warnings(info.interpreter, i);
        if (i.kind == ProgramInfo::Kind::kStatic) {
          out.push_back(info.interpreter + " is statically linked (no program interpreter): "
                                           "LD_PRELOAD does not apply, so none of its sockets "
                                           "is routed");
        }
      }
      break;
    }
    case ProgramInfo::Kind::kNotElf:
      out.push_back(path + " is neither an ELF executable nor a script (" +
                    (info.error.empty() ? std::string("no ELF or #! header") : info.error) +
                    "): it cannot be executed directly");
      break;
    case ProgramInfo::Kind::kUnreadable:
      out.push_back(path + " cannot be read (" + info.error +
                    "): whether the library can be loaded into it is unknown");
      break;
  }
  return out;
}

std::string FindOnPath(const std::string& name) {
  if (name.empty()) return "";
  if (name.find('/') != std::string::npos) return name;
  const char* env = std::getenv("PATH");
  const std::string path = env != nullptr ? env : "/usr/local/bin:/usr/bin:/bin";
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find(':', start);
    if (end == std::string::npos) end = path.size();
    std::string dir = path.substr(start, end - start);
    if (dir.empty()) dir = ".";
    const std::string candidate = dir + "/" + name;
    struct stat st;
    if (stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
    start = end + 1;
  }
  return "";
}

}  // namespace xsock::tool
