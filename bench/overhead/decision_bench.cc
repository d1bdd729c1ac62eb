// The routing decision libxsock.so makes on every TCP connect(), in isolation
// (RoutingPolicy::ForConnect): decisions per second for XSOCK_ROUTE and for profiles of
// growing size, the cost of host rules with a full name memory, and bind decisions.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "fmt/format.h"
#include "libintercept/name_memory.h"
#include "libintercept/policy.h"

namespace {

using xsock::intercept::NameMemory;
using xsock::intercept::PolicySource;
using xsock::intercept::RoutingPolicy;

std::string WriteTemp(const std::string& text) {
  char tmpl[] = "/tmp/xsock-decision-bench.XXXXXX";
  const int fd = mkstemp(tmpl);
  if (fd < 0 || write(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    std::perror("temp config");
    std::exit(1);
  }
  close(fd);
  return tmpl;
}

// A profile of `rules` outgoing address rules (none matching 127.0.0.1) and a default.
std::string ProfileWith(int rules, bool host_rules) {
  std::string t = "[[profile]]\nname = \"p\"\noutgoing_default = \"bypass\"\n";
  for (int i = 0; i < rules; ++i) {
    t += fmt::format("[[profile.outgoing]]\naction = \"route\"\nto = \"10.{}.0.0/16\"\nport = {}\n",
                     i % 250, 1000 + i);
  }
  if (host_rules) {
    t += "[[profile.outgoing]]\naction = \"route\"\nhost = [\"*.db.internal\", "
         "\"cache-*.internal\"]\n";
  }
  t += "[[profile.incoming]]\naction = \"route\"\nport = 80\nhost_port = 8080\n";
  return t;
}

std::unique_ptr<RoutingPolicy> Load(const std::string& text, const char* route_env = nullptr) {
  static std::string path;  // kept until exit: the policy keeps no reference, but cheap
  PolicySource s;
  if (route_env != nullptr) {
    s.route_env = route_env;
    s.route_env_set = true;
  } else {
    path = WriteTemp(text);
    s.config_path = path;
    s.config_path_explicit = true;
    s.profile = "p";
  }
  s.exe_storage = "/usr/bin/bench";
  s.app.exe = s.exe_storage;
  auto p = RoutingPolicy::Load(s, [](absl::string_view l) {
    std::fprintf(stderr, "%.*s\n", static_cast<int>(l.size()), l.data());
  });
  if (route_env == nullptr) unlink(path.c_str());
  return p;
}

sockaddr_in V4(const char* ip, uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, ip, &a.sin_addr);
  return a;
}

void Decide(benchmark::State& state, const RoutingPolicy& p, const sockaddr_in& dest) {
  for (auto _ : state) {
    benchmark::DoNotOptimize(p.ForConnect(reinterpret_cast<const sockaddr*>(&dest), sizeof dest));
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_NoConfiguration(benchmark::State& state) {
  PolicySource s;
  s.config_path = "/nonexistent/xsock.conf";
  const auto p = RoutingPolicy::Load(s, nullptr);
  Decide(state, *p, V4("127.0.0.1", 5432));
}
BENCHMARK(BM_NoConfiguration);

void BM_RouteEnv(benchmark::State& state) {
  const auto p = Load("", "10.0.0.0/8:5432,192.168.0.0/16,[fd00::]/8");
  Decide(state, *p, V4("127.0.0.1", 5432));
}
BENCHMARK(BM_RouteEnv);

void BM_ProfileRules(benchmark::State& state) {
  const auto p = Load(ProfileWith(static_cast<int>(state.range(0)), false));
  Decide(state, *p, V4("127.0.0.1", 5432));  // no rule matches: every rule is looked at
}
BENCHMARK(BM_ProfileRules)->Arg(1)->Arg(8)->Arg(32)->Arg(128);

void BM_ProfileFirstRuleMatches(benchmark::State& state) {
  const auto p = Load(ProfileWith(32, false));
  Decide(state, *p, V4("10.0.1.2", 1000));
}
BENCHMARK(BM_ProfileFirstRuleMatches);

// Host rules, with NameMemory holding `range(0)` resolved addresses: the connect's
// address is one of them.
void BM_HostRulesWithNames(benchmark::State& state) {
  auto p = Load(ProfileWith(8, true));
  NameMemory names;
  const int n = static_cast<int>(state.range(0));
  for (int i = 0; i < n; ++i) {
    const std::string ip = fmt::format("10.200.{}.{}", (i >> 8) & 255, i & 255);
    names.Remember(fmt::format("host-{}.db.internal", i), *xsock::config::ParseEndpoint(ip, false));
  }
  p->set_names(&names);
  Decide(state, *p, V4("10.200.0.7", 5432));
}
BENCHMARK(BM_HostRulesWithNames)->Arg(16)->Arg(4096);

void BM_BindMapped(benchmark::State& state) {
  const auto p = Load(ProfileWith(8, false));
  const sockaddr_in any80 = V4("0.0.0.0", 80);
  for (auto _ : state) {
    benchmark::DoNotOptimize(p->ForBind(reinterpret_cast<const sockaddr*>(&any80), sizeof any80));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_BindMapped);

}  // namespace

BENCHMARK_MAIN();
