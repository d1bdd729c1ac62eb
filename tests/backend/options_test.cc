// xsockd's command line (backend/options.h).
#include "backend/options.h"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

namespace xsock::backend {
namespace {

using Args = std::vector<std::string>;

std::string ErrorOf(const Args& args, const char* env = nullptr) {
  auto cl = ParseCommandLine(args, env);
  REQUIRE_FALSE(cl.ok());
  return std::string(cl.status().message());
}

TEST_CASE("command line defaults", "[backend][options]") {
  auto cl = ParseCommandLine({}, nullptr);
  REQUIRE(cl.ok());
  CHECK(cl->action == Action::kRun);
  CHECK(cl->options.socket_path == "/run/xsock/xsockd.sock");
  CHECK(cl->options.ring_order == kDefaultRingOrder);
  CHECK(cl->options.log_level == LogLevel::kInfo);
}

TEST_CASE("XSOCK_SOCKET sets the path and --socket wins over it", "[backend][options]") {
  CHECK(ParseCommandLine({}, "/tmp/env.sock")->options.socket_path == "/tmp/env.sock");
  CHECK(ParseCommandLine({"--socket", "/tmp/flag.sock"}, "/tmp/env.sock")->options.socket_path ==
        "/tmp/flag.sock");
  CHECK(ParseCommandLine({"--socket=/tmp/inline.sock"}, "/tmp/env.sock")->options.socket_path ==
        "/tmp/inline.sock");
  CHECK(ParseCommandLine({}, "")->options.socket_path == "/run/xsock/xsockd.sock");
}

TEST_CASE("--ring-order accepts 12..24 only", "[backend][options]") {
  CHECK(ParseCommandLine({"--ring-order", "12"}, nullptr)->options.ring_order == 12);
  CHECK(ParseCommandLine({"--ring-order=24"}, nullptr)->options.ring_order == 24);
  for (const char* bad : {"11", "25", "-1", "abc", "18x", ""}) {
    CHECK(ErrorOf({"--ring-order", bad}) ==
          "option '--ring-order': '" + std::string(bad) + "' is not an integer in 12..24");
  }
}

TEST_CASE("--log-level and -q set the level", "[backend][options]") {
  CHECK(ParseCommandLine({"--log-level", "debug"}, nullptr)->options.log_level == LogLevel::kDebug);
  CHECK(ParseCommandLine({"--log-level=warn"}, nullptr)->options.log_level == LogLevel::kWarn);
  CHECK(ParseCommandLine({"-q"}, nullptr)->options.log_level == LogLevel::kError);
  CHECK(ParseCommandLine({"-q", "--log-level", "info"}, nullptr)->options.log_level ==
        LogLevel::kInfo);
  CHECK(ErrorOf({"--log-level", "loud"}) ==
        "option '--log-level': 'loud' is not one of error, warn, info, debug");
}

TEST_CASE("bad command lines name the problem", "[backend][options]") {
  CHECK(ErrorOf({"--frobnicate"}) == "unknown option '--frobnicate'");
  CHECK(ErrorOf({"-x"}) == "unknown option '-x'");
  CHECK(ErrorOf({"extra"}) == "unexpected argument 'extra'");
  CHECK(ErrorOf({"--socket"}) == "option '--socket' needs a value");
  CHECK(ErrorOf({"--socket="}) == "option '--socket': the path is empty");
  CHECK(ErrorOf({"-q=1"}) == "unknown option '-q=1'");
  CHECK(ErrorOf({"--quiet=1"}) == "option '--quiet' takes no value");
  CHECK(ErrorOf({"--no-xen-ext"}) == "option '--no-xen-ext' needs --transport xen or --front xen");
  CHECK(ErrorOf({"--no-xen-ext=1", "--front", "xen"}) == "option '--no-xen-ext' takes no value");
}

TEST_CASE("--no-xen-ext turns the xsock extension off for the xen transport and front",
          "[backend][options]") {
  CHECK(ParseCommandLine({"--front", "xen"}, nullptr)->options.xen_extension);
  CHECK_FALSE(ParseCommandLine({"--front", "xen", "--no-xen-ext"}, nullptr)->options.xen_extension);
  CHECK_FALSE(
      ParseCommandLine({"--no-xen-ext", "--transport=xen"}, nullptr)->options.xen_extension);
}

TEST_CASE("--xen-ring-order takes 1..9 for the xen transport and front", "[backend][options]") {
  CHECK(ParseCommandLine({"--front", "xen"}, nullptr)->options.xen_ring_order == 0);
  CHECK(ParseCommandLine({"--front", "xen", "--xen-ring-order", "9"}, nullptr)
            ->options.xen_ring_order == 9);
  CHECK(ParseCommandLine({"--transport=xen", "--xen-ring-order=1"}, nullptr)
            ->options.xen_ring_order == 1);
  CHECK(ErrorOf({"--front", "xen", "--xen-ring-order", "10"}) ==
        "option '--xen-ring-order': '10' is not an integer in 1..9");
  CHECK(ErrorOf({"--front", "xen", "--xen-ring-order", "0"}) ==
        "option '--xen-ring-order': '0' is not an integer in 1..9");
  CHECK(ErrorOf({"--xen-ring-order", "5"}) ==
        "option '--xen-ring-order' needs --transport xen or --front xen");
}

TEST_CASE("--help and --version stop parsing", "[backend][options]") {
  CHECK(ParseCommandLine({"--help", "--bogus"}, nullptr)->action == Action::kHelp);
  CHECK(ParseCommandLine({"-h"}, nullptr)->action == Action::kHelp);
  CHECK(ParseCommandLine({"--version"}, nullptr)->action == Action::kVersion);
  CHECK(ParseCommandLine({"-V"}, nullptr)->action == Action::kVersion);
}

TEST_CASE("--help reads like a manual page", "[backend][options]") {
  const std::string help = HelpText();
  for (const char* section : {"NAME\n", "SYNOPSIS\n", "DESCRIPTION\n", "OPTIONS\n", "ENVIRONMENT\n",
                              "FILES\n", "SIGNALS\n", "EXIT STATUS\n", "EXAMPLES\n"}) {
    CHECK_THAT(help, Catch::Contains(section));
  }
  for (const char* word : {"--socket PATH", "--ring-order N", "--log-level LEVEL", "-q, --quiet",
                           "XSOCK_SOCKET", "/run/xsock/xsockd.sock", "SIGTERM"}) {
    CHECK_THAT(help, Catch::Contains(word));
  }
  CHECK_THAT(VersionText(), Catch::StartsWith("xsockd "));
}

}  // namespace
}  // namespace xsock::backend
