// What libxsock.so puts back into the environment of a program it execs, so that routed
// sockets inherited across exec keep working when the program scrubbed its environment
// (sshd, su-like programs and daemons build a fresh envp for their children).
//
// At start-up the library records its own path and the XSOCK_* variables it was started
// with (SavedEnv). Before an exec, PlanRestore() says whether the new environment lacks
// any of them; BuildRestored() then writes the new array into caller-provided memory.
// Neither allocates nor locks: an exec may run in a vfork child or a forked child of a
// multi-threaded program, where malloc is not safe.
#pragma once

#include <sys/stat.h>

#include <cstddef>
#include <string>
#include <vector>

namespace xsock::intercept::execenv {

class SavedEnv {
 public:
  SavedEnv() = default;
  // `envp`: the environment at start-up (may be null); `library_path`: libxsock.so's
  // absolute path. Keeps every XSOCK_* entry (first occurrence of each name).
  static SavedEnv Capture(const char* const* envp, std::string library_path);

  const std::string& library_path() const { return library_path_; }
  // "LD_PRELOAD=<library_path>"
  const std::string& preload_entry() const { return preload_entry_; }
  // "XSOCK_ROUTE=...", ... in start-up order.
  const std::vector<std::string>& xsock_entries() const { return xsock_entries_; }
  bool empty() const { return library_path_.empty(); }

 private:
  std::string library_path_;
  std::string preload_entry_;
  std::vector<std::string> xsock_entries_;
};

struct RestorePlan {
  bool needed = false;  // envp lacks LD_PRELOAD (or us in it) or a saved XSOCK_* name
  size_t entries = 0;   // slots BuildRestored writes, including the terminating null
  size_t scratch = 0;   // bytes of scratch it needs (a rewritten LD_PRELOAD entry)
};

// Compares `envp` (null means empty, as the kernel takes it) with what was saved.
// LD_PRELOAD absent or empty: ours is added. Present without our library (matched by
// file name, with ':' or ' ' separating entries): ours is appended to it. A saved
// XSOCK_* name that envp lacks is added; one envp has (whatever its value) is kept.
RestorePlan PlanRestore(const char* const* envp, const SavedEnv& saved);

// Writes envp plus what it lacks into `out` (plan.entries slots) using `scratch`
// (plan.scratch bytes), per the plan from PlanRestore() for the same arguments. Every
// name appears once. Returns `out`.
char* const* BuildRestored(const char* const* envp, const SavedEnv& saved, const RestorePlan& plan,
                           const char** out, char* scratch);

// The value of NAME in envp ("NAME=value"), or null.
const char* FindEntry(const char* const* envp, const char* name);

// The loader ignores LD_PRELOAD (with a slash) for set-user-ID / set-group-ID programs.
inline bool IsSetIdProgram(const struct stat& st) {
  return S_ISREG(st.st_mode) && (st.st_mode & (S_ISUID | S_ISGID)) != 0;
}

// The file execvp() would run for `file`, searched in `path` (PATH's value; null: the
// default "/bin:/usr/bin"), written into out (cap bytes). A name containing '/' is taken
// as is. Returns false if none is found or a candidate does not fit. Like glibc, the
// first regular file with an execute bit wins.
bool ResolveExecPath(const char* file, const char* path, char* out, size_t cap);

}  // namespace xsock::intercept::execenv
