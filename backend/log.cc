#include "backend/log.h"

#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <mutex>

namespace xsock::backend {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};
std::atomic<int> g_format{static_cast<int>(LogFormat::kLogfmt)};
std::mutex g_mutex;
std::function<void(std::string_view)>& Sink() {
  static auto* sink = new std::function<void(std::string_view)>();
  return *sink;
}

std::string Timestamp() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  tm utc;
  gmtime_r(&ts.tv_sec, &utc);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z", utc.tm_year + 1900,
                     utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec,
                     ts.tv_nsec / 1000);
}

bool IsInteger(std::string_view v) {
  if (!v.empty() && v[0] == '-') v.remove_prefix(1);
  if (v.empty() || v.size() > 19 || (v.size() > 1 && v[0] == '0')) return false;
  for (char c : v) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::optional<LogFormat> ParseLogFormat(std::string_view name) {
  if (name == "logfmt") return LogFormat::kLogfmt;
  if (name == "json") return LogFormat::kJson;
  return std::nullopt;
}

void SetLogFormat(LogFormat format) { g_format.store(static_cast<int>(format)); }

std::string JsonQuoted(std::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      out += fmt::format("\\u{:04x}", c);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  out.push_back('"');
  return out;
}

std::string LogfmtToJson(std::string_view line) {
  std::string out = "{";
  size_t i = 0;
  bool first = true;
  while (i < line.size()) {
    if (line[i] == ' ') {
      ++i;
      continue;
    }
    const size_t key_start = i;
    while (i < line.size() && line[i] != '=' && line[i] != ' ') ++i;
    const std::string_view key = line.substr(key_start, i - key_start);
    std::string value;
    bool quoted = false;
    if (i < line.size() && line[i] == '=') {
      ++i;
      if (i < line.size() && line[i] == '"') {
        quoted = true;
        ++i;
        // Undoes Quoted(): \" \\ and \xNN.
        while (i < line.size() && line[i] != '"') {
          if (line[i] == '\\' && i + 1 < line.size()) {
            if (line[i + 1] == 'x' && i + 3 < line.size() && HexDigit(line[i + 2]) >= 0 &&
                HexDigit(line[i + 3]) >= 0) {
              value.push_back(
                  static_cast<char>(HexDigit(line[i + 2]) * 16 + HexDigit(line[i + 3])));
              i += 4;
              continue;
            }
            value.push_back(line[i + 1]);
            i += 2;
            continue;
          }
          value.push_back(line[i++]);
        }
        if (i < line.size()) ++i;  // closing quote
      } else {
        const size_t v_start = i;
        while (i < line.size() && line[i] != ' ') ++i;
        value = std::string(line.substr(v_start, i - v_start));
      }
    }
    out += first ? "" : ",";
    first = false;
    out += JsonQuoted(key);
    out.push_back(':');
    out += !quoted && IsInteger(value) ? value : JsonQuoted(value);
  }
  out.push_back('}');
  return out;
}

std::optional<LogLevel> ParseLogLevel(std::string_view name) {
  if (name == "error") return LogLevel::kError;
  if (name == "warn" || name == "warning") return LogLevel::kWarn;
  if (name == "info") return LogLevel::kInfo;
  if (name == "debug") return LogLevel::kDebug;
  return std::nullopt;
}

const char* LogLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kError:
      return "error";
    case LogLevel::kWarn:
      return "warn";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kDebug:
      return "debug";
  }
  return "unknown";
}

void SetLogLevel(LogLevel level) { g_level.store(static_cast<int>(level)); }

bool LogEnabled(LogLevel level) { return static_cast<int>(level) <= g_level.load(); }

void SetLogSink(std::function<void(std::string_view)> sink) {
  std::lock_guard<std::mutex> lock(g_mutex);
  Sink() = std::move(sink);
}

void LogLine(LogLevel level, std::string_view fields) {
  std::string line = fmt::format("ts={} level={} {}", Timestamp(), LogLevelName(level), fields);
  if (g_format.load() == static_cast<int>(LogFormat::kJson)) line = LogfmtToJson(line);
  std::lock_guard<std::mutex> lock(g_mutex);
  if (Sink()) {
    Sink()(line);
    return;
  }
  line.push_back('\n');
  // One write per line, so lines from concurrent writers never interleave.
  size_t off = 0;
  while (off < line.size()) {
    const ssize_t n = ::write(STDERR_FILENO, line.data() + off, line.size() - off);
    if (n <= 0) break;
    off += static_cast<size_t>(n);
  }
}

std::string Quoted(std::string_view value) {
  bool plain = !value.empty();
  for (char c : value) {
    if (c <= ' ' || c == '"' || c == '=' || c == '\\' || c == 0x7f) plain = false;
  }
  if (plain) return std::string(value);
  std::string out = "\"";
  for (unsigned char c : value) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c < ' ' || c == 0x7f) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  out.push_back('"');
  return out;
}

std::string ErrnoName(int err) {
  const char* name = strerrorname_np(err);
  if (name != nullptr) return name;
  return fmt::format("errno={}", err);
}

}  // namespace xsock::backend
