// absl::Status from errno, with context, in the form the daemon reports errors:
//   "bind /run/xsock/xsockd.sock: EADDRINUSE (Address already in use)"
#pragma once

#include <cerrno>
#include <string_view>

#include "absl/status/status.h"

namespace xsock::backend {

// A status whose message is "<context>: <ENAME> (<strerror>)" and which carries err.
absl::Status ErrnoError(int err, std::string_view context);

// The errno an ErrnoError() status carries; `fallback` for any other status.
int ErrnoOf(const absl::Status& status, int fallback = EIO);

}  // namespace xsock::backend
