// The process-wide singletons of libxsock.so (defined in hooks.cc), for the hooks that
// live in other files (hooks_process.cc).
#pragma once

#include "libintercept/fd_table.h"
#include "libintercept/interceptor.h"

namespace xsock::intercept {

// The fd table the hooks consult.
FdTable& HookTable();
// The core, created on first use.
Interceptor& HookCore();
// The core if it exists; nullptr keeps a hook's fast path.
Interceptor* HookCoreIfCreated();

}  // namespace xsock::intercept
