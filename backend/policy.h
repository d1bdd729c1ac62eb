// xsockd's access policy (/etc/xsock/xsockd.conf): which clients may connect where and
// bind what, and which destinations are rewritten. docs/xsockd-policy.md is the manual;
// in short:
//
//   [settings]
//   connect_deny_errno = "ECONNREFUSED"  # or EACCES, EPERM, ENETUNREACH, EHOSTUNREACH
//   bind_deny_errno = "EACCES"           # or EPERM, EADDRNOTAVAIL
//   connect_default = "allow"            # clients no [[client]] block matches
//   bind_default = "allow"
//
//   [[client]]                 # the first block whose match keys all match decides
//   name = "guests"
//   uids = [1000, "alice"]     # match keys (all optional): uids gids apps cgroups netns
//   connect_default = "deny"   # required
//   bind_default = "allow"     # required
//     [[client.connect]]       # ordered, first match decides
//     action = "allow"
//     to = "10.0.0.0/8"
//     port = "1-1023"
//     errno = "EACCES"         # deny only
//     [[client.bind]]
//     action = "deny"
//     addr = "0.0.0.0/0"
//     port = "1-1023"
//     [[client.rewrite]]       # after an allowed connect: where the host connects to
//     from = "10.0.0.5"
//     port = 5432
//     to = "127.0.0.1"
//     to_port = 5432
//
// TOML read with the same toml++ configuration as the client config (shared/config.cc:
// no exceptions), the address, port and glob matchers of shared/rules.h. Every error
// carries file:line:column; unknown keys are errors. Parsing and deciding are pure (user
// and group names are resolved while parsing, through a replaceable function);
// PolicyHolder does the file, the logging and the reload.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "backend/identity.h"
#include "backend/stats.h"
#include "shared/config.h"
#include "shared/protocol.h"
#include "shared/rules.h"

namespace xsock::backend {

inline constexpr char kDefaultPolicyPath[] = "/etc/xsock/xsockd.conf";

enum class Verdict : uint8_t { kAllow, kDeny };
const char* VerdictName(Verdict v);  // "allow" / "deny"

// [[client.connect]] / [[client.bind]].
struct PolicyRule {
  Verdict action = Verdict::kAllow;
  std::vector<config::Cidr> addrs;       // `to` / `addr`; empty: any address
  std::vector<config::PortRange> ports;  // empty: any port (0 included)
  int err = 0;                           // deny: the errno; 0: the [settings] one
  config::SourcePos pos;
};

// [[client.rewrite]].
struct RewriteRule {
  std::vector<config::Cidr> from;        // never empty
  std::vector<config::PortRange> ports;  // empty: any port
  config::Endpoint to;                   // family and address (port unused)
  uint16_t to_port = 0;                  // 0: keep the destination's port
  config::SourcePos pos;
};

struct ClientBlock {
  std::string name;
  // Match keys; an empty list is a key not written (matches everyone). Names in uids/gids
  // are resolved to numbers when the file is read.
  std::vector<uint32_t> uids;
  std::vector<uint32_t> gids;
  std::vector<std::string> apps;     // fnmatch; with '/': the whole path, else the basename
  std::vector<std::string> cgroups;  // fnmatch on ClientIdentity::cgroup
  std::vector<uint64_t> netns;       // namespace inodes ("net:[N]")
  Verdict connect_default = Verdict::kAllow;
  Verdict bind_default = Verdict::kAllow;
  std::vector<PolicyRule> connect;
  std::vector<PolicyRule> bind;
  std::vector<RewriteRule> rewrite;
  config::SourcePos pos;
};

struct Policy {
  std::string file;
  int connect_deny_errno = ECONNREFUSED;
  int bind_deny_errno = EACCES;
  Verdict connect_default = Verdict::kAllow;
  Verdict bind_default = Verdict::kAllow;
  std::vector<ClientBlock> clients;  // file order
  size_t rule_count() const;         // connect + bind + rewrite rules of every block
};

// How names in uids/gids become numbers. Unset: getpwnam_r / getgrnam_r (NSS: files,
// or whatever nsswitch.conf says). nullopt: no such name (an error in the file).
struct PolicyParseOptions {
  std::function<std::optional<uint32_t>(const std::string&)> user_id;
  std::function<std::optional<uint32_t>(const std::string&)> group_id;
};

struct PolicyParseResult {
  std::optional<Policy> policy;  // set exactly when errors is empty
  std::vector<config::ConfigError> errors;
};

PolicyParseResult ParsePolicy(std::string_view text, std::string_view file,
                              const PolicyParseOptions& options = {});
// Reads the file (at most 4 MiB) and parses it; an unreadable file is one error without a
// position, and `*not_found` tells ENOENT apart.
PolicyParseResult ParsePolicyFile(const std::string& path, bool* not_found = nullptr,
                                  const PolicyParseOptions& options = {});

// Every error as "file:line:column: message", one per line.
std::string PolicyErrorsText(const std::vector<config::ConfigError>& errors);

// A decision about one call.
struct PolicyDecision {
  bool allowed = true;
  int err = 0;                          // denied: the errno to answer
  const ClientBlock* client = nullptr;  // the block that decided; nullptr: no block matched
  int rule = 0;                         // 1-based in client->connect / ->bind; 0: a default
  // Connect, allowed and rewritten: where the host connects instead (family as the
  // destination's, v4-mapped again if the destination was).
  std::optional<config::Endpoint> rewritten;
  int rewrite_rule = 0;  // 1-based in client->rewrite
  // "guests#2", "guests#default" (the block's default), "default" ([settings]).
  std::string RuleName() const;
};

// The first block whose written match keys all match `who`, else nullptr.
const ClientBlock* MatchClient(const Policy& p, const ClientIdentity& who);
// A connect to `dest` (the address the application asked for): the block's connect rules
// decide, then, if allowed, the first rewrite whose `from` and port match changes it.
PolicyDecision DecidePolicyConnect(const Policy& p, const ClientIdentity& who,
                                   const config::Endpoint& dest);
// A bind to `local` (the address and port the application asked for; port 0: any).
PolicyDecision DecidePolicyBind(const Policy& p, const ClientIdentity& who,
                                const config::Endpoint& local);

// Control-protocol addresses as the matcher sees them (v4-mapped IPv6 as IPv4).
std::optional<config::Endpoint> PolicyEndpoint(const proto::SockAddr& a);
// `e` as a control-protocol address, with the flow info of `like` kept.
proto::SockAddr PolicySockAddr(const config::Endpoint& e, const proto::SockAddr& like);

// The policy in force, owned by the server (one thread: the event loop). Reload swaps
// the shared_ptr, so a decision in progress (or a caller holding current()) keeps the
// policy it started with; nothing else refers to a policy.
class PolicyHolder {
 public:
  // path "": no policy file at all (allow everything; what in-process tests use).
  // required: a missing file is an error (named with --config) rather than allow-all.
  PolicyHolder(std::string path, bool required) : path_(std::move(path)), required_(required) {}

  // At start: loads the file. A missing file that is not required: allow-all and one debug
  // line; otherwise a missing or bad file is an error (every error line in the message).
  absl::Status Load();
  // SIGHUP: re-reads the file. On success the new policy replaces the old one (log
  // `policy_reload ok=1`, stats->policy_reloads); on any error, a missing file included,
  // the old one stays (warn `policy_reload ok=0 error=...`, stats->policy_reload_errors).
  bool Reload(Stats* stats);

  // nullptr: no policy (everything allowed).
  std::shared_ptr<const Policy> current() const { return current_; }
  const std::string& path() const { return path_; }
  // For tests: use this policy from now on.
  void Set(std::shared_ptr<const Policy> p) { current_ = std::move(p); }

 private:
  std::string path_;
  bool required_;
  std::shared_ptr<const Policy> current_;
};

}  // namespace xsock::backend
