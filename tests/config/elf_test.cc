// tools/program_probe: what `xsock run` warns about.
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <fstream>
#include <string>

#include "tools/program_probe.h"

using xsock::tool::FindOnPath;
using xsock::tool::InspectProgram;
using xsock::tool::LaunchWarnings;
using Kind = xsock::tool::ProgramInfo::Kind;

namespace {
std::string TempFile(const std::string& name, const std::string& content, mode_t mode) {
  const std::string path = "/tmp/xsock-probe-" + std::to_string(getpid()) + "-" + name;
  std::ofstream(path, std::ios::binary) << content;
  chmod(path.c_str(), mode);
  return path;
}
}  // namespace

TEST_CASE("a dynamically linked program: interpreter, libc, no warnings") {
  const auto info = InspectProgram("/bin/sh");
  CHECK(info.kind == Kind::kDynamic);
  CHECK(info.interpreter.find("ld-linux") != std::string::npos);
  CHECK(info.links_libc);
  CHECK(!info.setuid);
  CHECK(LaunchWarnings("/bin/sh").empty());
}

TEST_CASE("the static test program is static") {
  if (XSOCK_STATIC_PROBE[0] == '\0') {
    WARN("the toolchain cannot link -static: not checked");
    return;
  }
  const auto info = InspectProgram(XSOCK_STATIC_PROBE);
  CHECK(info.kind == Kind::kStatic);
  CHECK(info.interpreter.empty());
  const auto w = LaunchWarnings(XSOCK_STATIC_PROBE);
  REQUIRE(w.size() == 1);
  CHECK(w[0] == std::string(XSOCK_STATIC_PROBE) +
                    " is statically linked (no program interpreter): LD_PRELOAD does not apply, "
                    "so none of its sockets is routed");
}

TEST_CASE("scripts name their interpreter; other files are neither") {
  const std::string script = TempFile("script", "#!  /bin/sh -e\necho hi\n", 0755);
  const auto info = InspectProgram(script);
  CHECK(info.kind == Kind::kScript);
  CHECK(info.interpreter == "/bin/sh");
  CHECK(LaunchWarnings(script) ==
        std::vector<std::string>{script + " is a script: the library is loaded into its "
                                          "interpreter /bin/sh (and whatever that runs)"});
  const std::string text = TempFile("text", "hello\n", 0755);
  CHECK(InspectProgram(text).kind == Kind::kNotElf);
  CHECK(LaunchWarnings(text) ==
        std::vector<std::string>{text + " is neither an ELF executable nor a script (no ELF or "
                                        "#! header): it cannot be executed directly"});
  const std::string bad = TempFile("badelf", std::string("\x7f" "ELF\x02\x01\x01", 7) +
                                                 std::string(200, '\xff'), 0755);
  CHECK(InspectProgram(bad).kind == Kind::kNotElf);
  CHECK(InspectProgram(bad).error == "malformed ELF headers");
  CHECK(InspectProgram("/nonexistent").kind == Kind::kUnreadable);
  std::remove(script.c_str());
  std::remove(text.c_str());
  std::remove(bad.c_str());
}

TEST_CASE("set-user-ID programs are reported when they change the uid") {
  const std::string p = TempFile("suid", "#!/bin/sh\n", 04755);
  const auto info = InspectProgram(p);
  // The file is ours: set-user-ID to ourselves changes nothing, so no warning.
  CHECK(!info.setuid);
  if (getuid() == 0) {
    REQUIRE(chown(p.c_str(), 65534, 65534) == 0);
    REQUIRE(chmod(p.c_str(), 06755) == 0);
    const auto w = InspectProgram(p);
    CHECK(w.setuid);
    CHECK(w.setgid);
    const auto warnings = LaunchWarnings(p);
    REQUIRE(warnings.size() >= 2);
    CHECK(warnings[0] == p + " is set-user-ID: the dynamic loader ignores LD_PRELOAD for it "
                             "(secure execution), so none of its sockets is routed");
  }
  std::remove(p.c_str());
}

TEST_CASE("FindOnPath resolves like execvp") {
  CHECK(FindOnPath("sh").find("/sh") != std::string::npos);
  CHECK(FindOnPath("./x") == "./x");
  CHECK(FindOnPath("no-such-program-xsock").empty());
  CHECK(FindOnPath("").empty());
}
