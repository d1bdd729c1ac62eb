// Fuzz target for the configuration parser entry point (shared/config.h ParseConfig) and
// the matcher over what it accepts (shared/rules.h). The file is read by root-run
// launchers and inside every preloaded process, so no input may crash it.
//
// Properties checked on every input:
//   * no crash, no sanitizer report, no exception (toml++ is built without them);
//   * a result is either a config and no error, or no config and at least one error,
//     each with a message, a position inside the input (line <= lines + 1) or none;
//   * warnings (rules never used) only come with a config, each at a rule's line;
//   * for an accepted config, every decision (connect, host name, bind, profile
//     selection) names a rule that exists in that profile, a bind mapping keeps the
//     family, and the explanations are non-empty.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "shared/config.h"
#include "shared/rules.h"

namespace {

using namespace xsock::config;

[[noreturn]] void Fail(const char* what, size_t size) {
  std::fprintf(stderr, "config_fuzz: %s (input of %zu bytes)\n", what, size);
  std::abort();
}

// Endpoints made from the input's bytes, so that rules written in the input get hit.
Endpoint EndpointFrom(const uint8_t* data, size_t size, size_t salt) {
  Endpoint e;
  e.family = (salt & 1) != 0 ? AF_INET6 : AF_INET;
  for (size_t i = 0; i < 16; ++i) {
    e.addr[i] = size == 0 ? 0 : data[(salt * 7 + i) % size];
  }
  if (e.family == AF_INET) std::fill(e.addr.begin() + 4, e.addr.end(), 0);
  e.port = static_cast<uint16_t>(size == 0 ? 0 : data[salt % size] * 257 + salt);
  return e;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const ParseResult r = ParseConfig(text, "fuzz.conf");
  if (r.config.has_value() != r.errors.empty()) Fail("config and errors disagree", size);
  size_t lines = 1;
  for (const char c : text) lines += c == '\n' ? 1 : 0;
  for (const ConfigError& e : r.errors) {
    if (e.message.empty()) Fail("error without a message", size);
    if (e.pos.line > lines + 1) Fail("error position beyond the input", size);
    if (e.ToString().rfind("fuzz.conf:", 0) != 0) Fail("error without the file name", size);
  }
  if (!r.config && !r.warnings.empty()) Fail("warnings without a config", size);
  for (const ConfigError& w : r.warnings) {
    if (w.message.empty() || w.pos.line == 0 || w.pos.line > lines) Fail("bad warning", size);
  }
  if (!r.config) return 0;
  const Config& c = *r.config;
  for (const Profile& p : c.profiles) {
    for (size_t salt = 0; salt < 8; ++salt) {
      const Endpoint e = EndpointFrom(data, size, salt);
      const Decision d = DecideConnect(p, e);
      if (d.rule < 0 || static_cast<size_t>(d.rule) > p.outgoing.size()) Fail("rule out of range", size);
      if ((d.rule == 0) != (d.matched == nullptr)) Fail("rule and matched disagree", size);
      if (d.matched != nullptr && d.matched->action != d.action) Fail("action differs", size);
      if (DescribeDecision(c, p, d).empty()) Fail("empty explanation", size);
      const BindDecision b = DecideBind(p, e);
      if (b.rule < 0 || static_cast<size_t>(b.rule) > p.incoming.size()) Fail("bind rule out of range", size);
      if (b.host.family != e.family) Fail("bind mapping changed the family", size);
      if (DescribeDecision(c, p, b).empty()) Fail("empty bind explanation", size);
      const std::string_view host = text.substr(salt % (size + 1), 12);
      const Decision h = DecideHost(p, host, e.port);
      if (h.rule < 0 || static_cast<size_t>(h.rule) > p.outgoing.size()) Fail("host rule out of range", size);
      if (h.matched != nullptr && !h.matched->to.empty()) Fail("an address rule decided a name", size);
    }
  }
  const ProfileChoice choice = SelectProfile(c, {text.substr(0, 32), 0, "root"}, "");
  if (choice.by == SelectedBy::kApp && choice.profile == nullptr) Fail("app choice without profile", size);
  return 0;
}
