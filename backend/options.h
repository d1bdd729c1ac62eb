// xsockd's command line: parsing (with the XSOCK_SOCKET environment variable), the
// manual-page --help text and --version.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "backend/log.h"
#include "backend/resource_limits.h"
#include "shared/socket_page.h"

namespace xsock::backend {

inline constexpr char kDefaultSocketPath[] = "/run/xsock/xsockd.sock";

// local: memfd rings for applications on this host; xen: a PVCalls backend for Xen
// guests (backend/xen/, docs/xen.md).
enum class Transport { kLocal, kXen };

// --front xen: inside a Xen domU, carry routed sockets' host side to dom0 over PVCalls
// (backend/xen/front_stack.h) instead of this machine's kernel.
enum class Front { kNone, kXen };

struct DaemonOptions {
  Transport transport = Transport::kLocal;
  Front front = Front::kNone;
  // --no-xen-ext: the xen transport and front speak standard PVCalls v1 only (no xsock
  // extension offered or asked for).
  bool xen_extension = true;
  // --xen-ring-order N: PVCalls data rings of 2^N pages (half each way); dom0 offers it as
  // max-page-order, the front asks for it. 0: the defaults (4 both, Linux's limit).
  uint32_t xen_ring_order = 0;
  std::string socket_path = kDefaultSocketPath;
  uint32_t ring_order = kDefaultRingOrder;
  LogLevel log_level = LogLevel::kInfo;
  LogFormat log_format = LogFormat::kLogfmt;
  // --admin-socket: nullopt = "xsockd-admin.sock" beside the control socket; "" = none.
  std::optional<std::string> admin_socket;
  std::string metrics;  // --metrics ADDR:PORT, "" = off
  bool metrics_allow_remote = false;
  // --config FILE: the access policy (backend/policy.h, docs/xsockd-policy.md).
  std::string config_path = "/etc/xsock/xsockd.conf";
  bool config_given = false;  // named on the command line: a missing file is an error
  // --max-sockets-per-client, --max-ring-memory-per-client, --max-pending-connects,
  // --max-request-rate, --memory-budget (backend/resource_limits.h; 0 = no limit).
  LimitOptions limits;
};

// The admin socket path for these options (see DaemonOptions::admin_socket).
std::string AdminSocketPath(const DaemonOptions& options);

enum class Action { kRun, kHelp, kVersion, kCheckConfig };  // kCheckConfig: --check-config

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
