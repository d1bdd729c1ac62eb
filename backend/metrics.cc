#include "backend/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/numbers.h"
#include "backend/errors.h"
#include "fmt/format.h"

namespace xsock::backend {
namespace {

// A label value: backslash, double quote and newline escaped, as the format requires.
std::string LabelValue(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

void Family(std::string& out, const char* name, const char* type, const char* help) {
  fmt::format_to(std::back_inserter(out), "# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

void Sample(std::string& out, const char* name, std::string_view labels, uint64_t v) {
  if (labels.empty()) {
    fmt::format_to(std::back_inserter(out), "{} {}\n", name, v);
  } else {
    fmt::format_to(std::back_inserter(out), "{}{{{}}} {}\n", name, labels, v);
  }
}

}  // namespace

absl::StatusOr<MetricsAddress> ParseMetricsAddress(std::string_view spec, bool allow_remote) {
  auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(fmt::format("--metrics '{}': {}", spec, why));
  };
  std::string_view host = "127.0.0.1";
  std::string_view port_text = spec;
  if (!spec.empty() && spec[0] == '[') {
    const size_t close = spec.find("]:");
    if (close == std::string_view::npos) return bad("expected [IPv6]:PORT");
    host = spec.substr(1, close - 1);
    port_text = spec.substr(close + 2);
  } else if (const size_t colon = spec.rfind(':'); colon != std::string_view::npos) {
    host = spec.substr(0, colon);
    port_text = spec.substr(colon + 1);
  }
  uint32_t port = 0;
  if (!absl::SimpleAtoi(absl::string_view(port_text.data(), port_text.size()), &port) ||
      port > 65535) {
    return bad("the port is not a number in 0..65535");
  }
  MetricsAddress a;
  const std::string h(host);
  if (auto* v4 = reinterpret_cast<sockaddr_in*>(&a.addr);
      inet_pton(AF_INET, h.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    a.len = sizeof(sockaddr_in);
    a.loopback = (ntohl(v4->sin_addr.s_addr) >> 24) == 127;
    a.text = fmt::format("{}:{}", h, port);
  } else if (auto* v6 = reinterpret_cast<sockaddr_in6*>(&a.addr);
             inet_pton(AF_INET6, h.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    a.len = sizeof(sockaddr_in6);
    a.loopback = IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr);
    a.text = fmt::format("[{}]:{}", h, port);
  } else {
    return bad("expected PORT, IPv4:PORT or [IPv6]:PORT with a numeric address");
  }
  if (!a.loopback && !allow_remote) {
    return bad("not a loopback address (use --metrics-allow-remote to serve other hosts)");
  }
  return a;
}

absl::StatusOr<UniqueFd> OpenMetricsListener(const MetricsAddress& addr, uint16_t* port) {
  UniqueFd fd(socket(addr.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return ErrnoError(errno, "metrics socket");
  const int one = 1;
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr.addr), addr.len) != 0) {
    return ErrnoError(errno, fmt::format("bind metrics {}", addr.text));
  }
  if (listen(fd.get(), 64) != 0)
    return ErrnoError(errno, fmt::format("listen metrics {}", addr.text));
  sockaddr_storage bound = {};
  socklen_t len = sizeof(bound);
  getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound), &len);
  *port = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                            : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  return fd;
}

std::string MetricsText(const AdminSources& src) {
  const Stats& s = *src.stats;
  std::string out;
  Family(out, "xsockd_clients", "gauge", "Control connections (client processes) now.");
  Sample(out, "xsockd_clients", "", s.clients_now);
  Family(out, "xsockd_clients_total", "counter", "Control connections accepted.");
  Sample(out, "xsockd_clients_total", "", s.clients_total);
  Family(out, "xsockd_sockets", "gauge", "Routed sockets now (listeners included).");
  Sample(out, "xsockd_sockets", "", s.sockets_now);
  Family(out, "xsockd_sockets_total", "counter", "Routed sockets created (accepted included).");
  Sample(out, "xsockd_sockets_total", "", s.sockets_total);
  Family(out, "xsockd_connects_total", "counter", "Host connects completed, by result.");
  Sample(out, "xsockd_connects_total", "result=\"ok\"", s.connects_ok);
  Sample(out, "xsockd_connects_total", "result=\"failed\"", s.connects_failed);
  Family(out, "xsockd_bytes_total", "counter",
         "Bytes moved between rings and host sockets, by direction.");
  Sample(out, "xsockd_bytes_total", "direction=\"to_host\"", s.bytes_to_host);
  Sample(out, "xsockd_bytes_total", "direction=\"from_host\"", s.bytes_from_host);
  Family(out, "xsockd_lookups_total", "counter",
         "Name lookups requested, and those refused over a bound or timed out.");
  Sample(out, "xsockd_lookups_total", "result=\"requested\"", s.lookups);
  Sample(out, "xsockd_lookups_total", "result=\"refused\"", s.lookups_refused);
  Sample(out, "xsockd_lookups_total", "result=\"timed_out\"", s.lookups_timed_out);
  Family(out, "xsockd_denials_total", "counter", "Calls refused by policy.");
  Sample(out, "xsockd_denials_total", "", s.denials);
  Family(out, "xsockd_policy_reloads_total", "counter",
         "Policy file reloads (SIGHUP), by result (rejected: the old policy was kept).");
  Sample(out, "xsockd_policy_reloads_total", "result=\"ok\"", s.policy_reloads);
  Sample(out, "xsockd_policy_reloads_total", "result=\"rejected\"", s.policy_reload_errors);

  // Per client: its live sockets and what they (and its closed ones) carried.
  const Table clients = ClientsTable(src);
  auto col = [&](const char* name) {
    for (size_t i = 0; i < clients.columns.size(); ++i) {
      if (clients.columns[i] == name) return i;
    }
    return size_t{0};
  };
  const size_t c_id = col("client"), c_pid = col("pid"), c_uid = col("uid"), c_exe = col("exe"),
               c_sockets = col("sockets"), c_to = col("to_host"), c_from = col("from_host");
  std::vector<std::string> labels;
  for (const auto& row : clients.rows) {
    labels.push_back(fmt::format("client=\"{}\",pid=\"{}\",uid=\"{}\",exe=\"{}\"", row[c_id].text,
                                 row[c_pid].text, row[c_uid].text, LabelValue(row[c_exe].text)));
  }
  auto num = [](const Cell& c) {
    uint64_t v = 0;
    (void)absl::SimpleAtoi(absl::string_view(c.text), &v);
    return v;
  };
  Family(out, "xsockd_client_sockets", "gauge", "Routed sockets of one client now.");
  for (size_t r = 0; r < clients.rows.size(); ++r) {
    Sample(out, "xsockd_client_sockets", labels[r], num(clients.rows[r][c_sockets]));
  }
  Family(out, "xsockd_client_bytes_total", "counter",
         "Bytes carried for one client, by direction.");
  for (size_t r = 0; r < clients.rows.size(); ++r) {
    Sample(out, "xsockd_client_bytes_total", labels[r] + ",direction=\"to_host\"",
           num(clients.rows[r][c_to]));
    Sample(out, "xsockd_client_bytes_total", labels[r] + ",direction=\"from_host\"",
           num(clients.rows[r][c_from]));
  }
  return out;
}

std::string HttpError(int code, std::string_view reason) {
  const std::string body = fmt::format("{} {}\n", code, reason);
  return fmt::format(
      "HTTP/1.0 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n"
      "Connection: close\r\n\r\n{}",
      code, reason, body.size(), body);
}

std::string AnswerHttp(std::string_view head, const AdminSources& src) {
  const size_t eol = head.find_first_of("\r\n");
  const std::string_view line = head.substr(0, eol);
  std::vector<std::string_view> parts;
  for (size_t pos = 0;;) {
    const size_t end = line.find(' ', pos);
    parts.push_back(line.substr(pos, end == std::string_view::npos ? end : end - pos));
    if (end == std::string_view::npos) break;
    pos = end + 1;
  }
  if (parts.size() != 3 || parts[2].substr(0, 5) != "HTTP/") return HttpError(400, "Bad Request");
  const std::string_view method = parts[0];
  std::string_view path = parts[1];
  if (const size_t q = path.find('?'); q != std::string_view::npos) path = path.substr(0, q);
  if (method != "GET" && method != "HEAD") return HttpError(405, "Method Not Allowed");
  if (path != "/metrics") return HttpError(404, "Not Found");
  const std::string body = MetricsText(src);
  return fmt::format(
      "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
      "Content-Length: {}\r\nConnection: close\r\n\r\n{}",
      body.size(), method == "HEAD" ? "" : body);
}

}  // namespace xsock::backend
