#include "backend/errors.h"

#include <string.h>

#include <string>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "backend/log.h"
#include "fmt/format.h"

namespace xsock::backend {
namespace {
constexpr char kErrnoPayload[] = "xsock.errno";
}  // namespace

absl::Status ErrnoError(int err, std::string_view context) {
  const std::string message = fmt::format("{}: {} ({})", context, ErrnoName(err), strerror(err));
  absl::Status status(absl::ErrnoToStatusCode(err), message);
  status.SetPayload(kErrnoPayload, absl::Cord(std::to_string(err)));
  return status;
}

int ErrnoOf(const absl::Status& status, int fallback) {
  const auto payload = status.GetPayload(kErrnoPayload);
  int err = 0;
  if (payload.has_value() && absl::SimpleAtoi(std::string(*payload), &err) && err > 0) return err;
  return fallback;
}

}  // namespace xsock::backend
