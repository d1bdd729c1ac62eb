// What `xsock run` needs to know about a program before it execs it with LD_PRELOAD:
// whether the dynamic loader will load libxsock.so into it at all. Reads the ELF headers
// (program headers, PT_INTERP, the dynamic section's DT_NEEDED) or the "#!" line itself.
#pragma once

#include <string>
#include <vector>

namespace xsock::tool {

struct ProgramInfo {
  enum class Kind {
    kDynamic,     // ELF with a program interpreter: LD_PRELOAD applies
    kStatic,      // ELF without PT_INTERP (static, static-pie): nothing is intercepted
    kScript,      // "#!": the interpreter gets the library
    kNotElf,      // neither: the kernel will not execute it directly
    kUnreadable,  // could not be opened or read (error says why)
  };
  Kind kind = Kind::kUnreadable;
  std::string interpreter;        // PT_INTERP, or the script's interpreter path
  std::vector<std::string> needed;  // DT_NEEDED entries (kDynamic)
  bool links_libc = false;        // a DT_NEEDED libc.so.*
  bool setuid = false;            // set-user-ID bit and owner differs from our real uid
  bool setgid = false;            // set-group-ID bit and group differs from our real gid
  std::string error;
};

// Inspects the file at `path` (already resolved, e.g. on PATH).
ProgramInfo InspectProgram(const std::string& path);

// The warnings `xsock run` prints for `path` (empty when the library will be loaded into
// a dynamically linked program using libc). A script's interpreter is inspected too.
std::vector<std::string> LaunchWarnings(const std::string& path);

// `name` resolved as execvp(3) would: a name with a '/' as it is, else the first
// executable regular file of that name in $PATH (default "/usr/local/bin:/usr/bin:/bin").
// Empty if none.
std::string FindOnPath(const std::string& name);

}  // namespace xsock::tool
