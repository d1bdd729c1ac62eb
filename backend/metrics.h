// The Prometheus metrics endpoint's pieces: where it listens (loopback unless allowed
// otherwise), the text exposition format (version 0.0.4) of xsockd's counters, and the
// HTTP/1.0 answer to one request. The connection handling is AdminServer's (admin.h).
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "backend/admin.h"
#include "backend/fd.h"

namespace xsock::backend {

struct MetricsAddress {
  sockaddr_storage addr = {};
  socklen_t len = 0;
  std::string text;  // "127.0.0.1:9464"
  bool loopback = false;
};

// "PORT" (then 127.0.0.1), "IPv4:PORT" or "[IPv6]:PORT", numeric only. An address that is
// not loopback (127.0.0.0/8, ::1) is refused unless allow_remote: the metrics name the
// clients' executables and carry no authentication.
absl::StatusOr<MetricsAddress> ParseMetricsAddress(std::string_view spec, bool allow_remote);

// A nonblocking TCP listener on addr (SO_REUSEADDR); *port gets the bound port.
absl::StatusOr<UniqueFd> OpenMetricsListener(const MetricsAddress& addr, uint16_t* port);

// The exposition text: # HELP / # TYPE, then samples (totals and per client).
std::string MetricsText(const AdminSources& src);

// The complete HTTP/1.0 response to one request head (without the blank line): 200 with
// the metrics for GET (or HEAD) /metrics, 404 for another path, 405 for another method,
// 400 for a request line that is not HTTP.
std::string AnswerHttp(std::string_view head, const AdminSources& src);
std::string HttpError(int code, std::string_view reason);

}  // namespace xsock::backend
