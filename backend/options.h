// xsockd's command line: parsing (with the XSOCK_SOCKET environment variable), the
// manual-page --help text and --version.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "backend/log.h"
#include "shared/socket_page.h"

namespace xsock::backend {

inline constexpr char kDefaultSocketPath[] = "/run/xsock/xsockd.sock";

// local: memfd rings for applications on this host; xen: a PVCalls backend for Xen
// guests (backend/xen/, docs/xen.md).
enum class Transport { kLocal, kXen };

struct DaemonOptions {
  Transport transport = Transport::kLocal;
  std::string socket_path = kDefaultSocketPath;
  uint32_t ring_order = kDefaultRingOrder;
  LogLevel log_level = LogLevel::kInfo;
  LogFormat log_format = LogFormat::kLogfmt;
  // --admin-socket: nullopt = "xsockd-admin.sock" beside the control socket; "" = none.
  std::optional<std::string> admin_socket;
  std::string metrics;  // --metrics ADDR:PORT, "" = off
  bool metrics_allow_remote = false;
};

// The admin socket path for these options (see DaemonOptions::admin_socket).
std::string AdminSocketPath(const DaemonOptions& options);

enum class Action { kRun, kHelp, kVersion };

struct CommandLine {
  Action action = Action::kRun;
  DaemonOptions options;
};

// Parses args (without the program name). env_socket is XSOCK_SOCKET (nullptr if unset);
// --socket wins over it. Errors are InvalidArgument with a message naming the option.
absl::StatusOr<CommandLine> ParseCommandLine(const std::vector<std::string>& args,
                                             const char* env_socket);

std::string HelpText();
std::string VersionText();

}  // namespace xsock::backend
