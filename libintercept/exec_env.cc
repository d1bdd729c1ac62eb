#include "libintercept/exec_env.h"

#include <sys/stat.h>

#include <cstring>

namespace xsock::intercept::execenv {
namespace {

constexpr char kPreload[] = "LD_PRELOAD";
constexpr size_t kPreloadLen = sizeof(kPreload) - 1;

// Length of the name part of "NAME=value" (the whole string if it has no '=').
size_t NameLen(const char* entry) {
  const char* eq = std::strchr(entry, '=');
  return eq != nullptr ? static_cast<size_t>(eq - entry) : std::strlen(entry);
}

bool HasName(const char* entry, const char* name, size_t len) {
  return std::strncmp(entry, name, len) == 0 && entry[len] == '=';
}

// The first envp entry named `name` (len bytes), or null.
const char* FindNamed(const char* const* envp, const char* name, size_t len) {
  if (envp == nullptr) return nullptr;
  for (const char* const* e = envp; *e != nullptr; ++e) {
    if (HasName(*e, name, len)) return *e;
  }
  return nullptr;
}

const char* BaseName(const char* path, size_t len, size_t* base_len) {
  size_t start = len;
  while (start > 0 && path[start - 1] != '/') --start;
  *base_len = len - start;
  return path + start;
}

// Whether LD_PRELOAD's value names our library (by file name: a symlink or another
// directory holding the same build is still us).
bool MentionsLibrary(const char* value, const std::string& library) {
  size_t lib_base_len;
  const char* lib_base = BaseName(library.data(), library.size(), &lib_base_len);
  const char* p = value;
  while (*p != '\0') {
    while (*p == ':' || *p == ' ') ++p;
    const char* start = p;
    while (*p != '\0' && *p != ':' && *p != ' ') ++p;
    if (p == start) continue;
    size_t base_len;
    const char* base = BaseName(start, static_cast<size_t>(p - start), &base_len);
    if (base_len == lib_base_len && std::memcmp(base, lib_base, base_len) == 0) return true;
  }
  return false;
}

enum class PreloadState { kMissing, kEmpty, kWithoutUs, kFine };

PreloadState PreloadIn(const char* const* envp, const SavedEnv& saved, const char** entry) {
  *entry = FindNamed(envp, kPreload, kPreloadLen);
  if (*entry == nullptr) return PreloadState::kMissing;
  const char* value = *entry + kPreloadLen + 1;
  if (*value == '\0') return PreloadState::kEmpty;
  return MentionsLibrary(value, saved.library_path()) ? PreloadState::kFine
                                                      : PreloadState::kWithoutUs;
}

}  // namespace

SavedEnv SavedEnv::Capture(const char* const* envp, std::string library_path) {
  SavedEnv s;
  s.library_path_ = std::move(library_path);
  s.preload_entry_ = std::string(kPreload) + "=" + s.library_path_;
  if (envp == nullptr) return s;
  for (const char* const* e = envp; *e != nullptr; ++e) {
    if (std::strncmp(*e, "XSOCK_", 6) != 0 || std::strchr(*e, '=') == nullptr) continue;
    const size_t len = NameLen(*e);
    bool seen = false;
    for (const std::string& kept : s.xsock_entries_) {
      seen = seen || HasName(kept.c_str(), *e, len);
    }
    if (!seen) s.xsock_entries_.emplace_back(*e);
  }
  return s;
}

const char* FindEntry(const char* const* envp, const char* name) {
  const char* e = FindNamed(envp, name, std::strlen(name));
  return e != nullptr ? e + std::strlen(name) + 1 : nullptr;
}

RestorePlan PlanRestore(const char* const* envp, const SavedEnv& saved) {
  RestorePlan plan;
  if (saved.empty()) return plan;
  size_t count = 0;
  if (envp != nullptr) {
    while (envp[count] != nullptr) ++count;
  }
  size_t added = 0;
  const char* entry;
  switch (PreloadIn(envp, saved, &entry)) {
    case PreloadState::kMissing:
      ++added;
      break;
    case PreloadState::kEmpty:
      plan.needed = true;  // replaced in place by our entry
      break;
    case PreloadState::kWithoutUs:
      plan.needed = true;  // "LD_PRELOAD=theirs:ours"
      plan.scratch = std::strlen(entry) + 1 + saved.library_path().size() + 1;
      break;
    case PreloadState::kFine:
      break;
  }
  for (const std::string& x : saved.xsock_entries()) {
    if (FindNamed(envp, x.c_str(), NameLen(x.c_str())) == nullptr) ++added;
  }
  plan.needed = plan.needed || added > 0;
  plan.entries = count + added + 1;
  return plan;
}

char* const* BuildRestored(const char* const* envp, const SavedEnv& saved, const RestorePlan& plan,
                           const char** out, char* scratch) {
  const char* preload;
  const PreloadState state = PreloadIn(envp, saved, &preload);
  size_t n = 0;
  if (envp != nullptr) {
    for (const char* const* e = envp; *e != nullptr; ++e) {
      const char* entry = *e;
      if (entry == preload && state == PreloadState::kEmpty) {
        entry = saved.preload_entry().c_str();
      } else if (entry == preload && state == PreloadState::kWithoutUs) {
        const size_t len = std::strlen(preload);
        std::memcpy(scratch, preload, len);
        scratch[len] = ':';
        std::memcpy(scratch + len + 1, saved.library_path().c_str(),
                    saved.library_path().size() + 1);
        entry = scratch;
      }
      out[n++] = entry;
    }
  }
  if (state == PreloadState::kMissing) out[n++] = saved.preload_entry().c_str();
  for (const std::string& x : saved.xsock_entries()) {
    if (FindNamed(envp, x.c_str(), NameLen(x.c_str())) == nullptr) out[n++] = x.c_str();
  }
  out[n] = nullptr;
  (void)plan;  // sized by it; n + 1 == plan.entries
  return const_cast<char* const*>(out);
}

bool ResolveExecPath(const char* file, const char* path, char* out, size_t cap) {
  if (file == nullptr || *file == '\0') return false;
  const size_t flen = std::strlen(file);
  if (std::strchr(file, '/') != nullptr) {
    if (flen + 1 > cap) return false;
    std::memcpy(out, file, flen + 1);
    return true;
  }
  if (path == nullptr) path = "/bin:/usr/bin";
  const char* p = path;
  for (;;) {
    const char* end = std::strchr(p, ':');
    const size_t dlen = end != nullptr ? static_cast<size_t>(end - p) : std::strlen(p);
    // An empty element means the current directory, as in glibc.
    const size_t need = (dlen == 0 ? 0 : dlen + 1) + flen + 1;
    if (need <= cap) {
      size_t at = 0;
      if (dlen != 0) {
        std::memcpy(out, p, dlen);
        out[dlen] = '/';
        at = dlen + 1;
      }
      std::memcpy(out + at, file, flen + 1);
      struct stat st;
      if (stat(out, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0111) != 0) return true;
    }
    if (end == nullptr) return false;
    p = end + 1;
  }
}

}  // namespace xsock::intercept::execenv
