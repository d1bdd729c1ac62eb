// xsockd's log: one line per notable event on stderr, as logfmt key=value pairs after a
// UTC timestamp and a level, e.g.
//   ts=2025-01-02T03:04:05.678901Z level=info event=client_connect client=3 pid=41 uid=0
// Thread-safe; tests may redirect lines to a sink.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "fmt/format.h"

namespace xsock::backend {

enum class LogLevel { kError = 0, kWarn = 1, kInfo = 2, kDebug = 3 };

// logfmt (the default): the line as written; json: one object per line, the same keys,
// integers unquoted, e.g. {"ts":"...","level":"info","event":"client_connect","pid":41}.
enum class LogFormat { kLogfmt, kJson };
std::optional<LogFormat> ParseLogFormat(std::string_view name);
void SetLogFormat(LogFormat format);

// A logfmt line ("key=value key=\"quoted value\" ...", as Quoted() writes values) as one
// JSON object.
std::string LogfmtToJson(std::string_view line);
// A JSON string literal, quotes included (control bytes as \u00XX; other bytes as they are).
std::string JsonQuoted(std::string_view s);

// "error", "warn", "info", "debug" (also "warning"); nullopt otherwise.
std::optional<LogLevel> ParseLogLevel(std::string_view name);
const char* LogLevelName(LogLevel level);

void SetLogLevel(LogLevel level);
bool LogEnabled(LogLevel level);

// Sends every complete line (without the newline) to sink instead of stderr; an empty
// function restores stderr.
void SetLogSink(std::function<void(std::string_view line)> sink);

// Writes one line: the timestamp and level, then fields (already "key=value ...").
void LogLine(LogLevel level, std::string_view fields);

template <typename... Args>
void Log(LogLevel level, fmt::format_string<Args...> format, Args&&... args) {
  if (!LogEnabled(level)) return;
  LogLine(level, fmt::format(format, std::forward<Args>(args)...));
}

// A logfmt value: as is when it is a plain token, else double-quoted with escapes.
std::string Quoted(std::string_view value);

// The symbolic name of an errno value ("ECONNREFUSED"), or "errno=N" if unknown.
std::string ErrnoName(int err);

}  // namespace xsock::backend
