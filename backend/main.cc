// xsockd: parses the command line and runs the server until SIGTERM/SIGINT.
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "backend/backend_socket.h"
#include "backend/host_stack.h"
#include "backend/log.h"
#include "backend/options.h"
#include "backend/policy.h"
#include "backend/server.h"
#include "backend/xen/xen_main.h"

int main(int argc, char** argv) {
  using namespace xsock::backend;
  const std::vector<std::string> args(argv + 1, argv + argc);
  auto cl = ParseCommandLine(args, std::getenv("XSOCK_SOCKET"));
  if (!cl.ok()) {
    std::fprintf(stderr, "xsockd: %s\nTry 'xsockd --help' for more information.\n",
                 std::string(cl.status().message()).c_str());
    return 2;
  }
  if (cl->action == Action::kHelp) {
    std::fputs(HelpText().c_str(), stdout);
    return 0;
  }
  if (cl->action == Action::kVersion) {
    std::fputs(VersionText().c_str(), stdout);
    return 0;
  }
  if (cl->action == Action::kCheckConfig) {
    const std::string& path = cl->options.config_path;
    const PolicyParseResult r = ParsePolicyFile(path);
    if (!r.policy) {
      std::fprintf(stderr, "%s\n", PolicyErrorsText(r.errors).c_str());
      return 1;
    }
    std::printf("%s: ok (%zu client blocks, %zu rules)\n", path.c_str(), r.policy->clients.size(),
                r.policy->rule_count());
    return 0;
  }
  SetLogLevel(cl->options.log_level);
  SetLogFormat(cl->options.log_format);
  signal(SIGPIPE, SIG_IGN);
  if (const char* d = std::getenv("XSOCKD_TEST_TOKEN_DELAY_US")) {
    SetTokenRaceDelayForTesting(static_cast<unsigned>(std::strtoul(d, nullptr, 10)));
  }
  // Blocked before the socket file exists, so a SIGTERM sent as soon as it appears is
  // already a clean stop (the server reads it from a signalfd).
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGHUP);  // policy reload, also read from the signalfd
  sigprocmask(SIG_BLOCK, &stop, nullptr);
  if (cl->options.transport == Transport::kXen) return RunXenTransport(cl->options);
  // --front xen: routed sockets' host side goes to dom0 over PVCalls. Installed before the
  // server starts, destroyed after it (declared before `server`).
  std::unique_ptr<HostStack> front;
  if (cl->options.front == Front::kXen) {
    front = StartXenFront(cl->options);
    if (front == nullptr) return 1;
    InstallHostStack(front.get());
  }

  ServerOptions options;
  options.socket_path = cl->options.socket_path;
  options.ring_order = cl->options.ring_order;
  options.handle_signals = true;
  options.admin.socket_path = AdminSocketPath(cl->options);
  options.admin.metrics_address = cl->options.metrics;
  options.admin.metrics_allow_remote = cl->options.metrics_allow_remote;
  options.limits = cl->options.limits;
  options.policy_path = cl->options.config_path;
  options.policy_required = cl->options.config_given;
  auto server = Server::Create(options);
  if (!server.ok()) {
    std::fprintf(stderr, "xsockd: %s\n", std::string(server.status().message()).c_str());
    return 1;
  }
  if (auto s = (*server)->Run(); !s.ok()) {
    std::fprintf(stderr, "xsockd: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}
