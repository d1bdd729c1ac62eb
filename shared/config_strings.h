// String building for config.cc and rules.cc. Debian's abseil has its own string_view
// (not std::string_view), so absl::StrCat does not take the std::string_view these files
// use throughout; this is the small part of it they need.
#pragma once

#include <concepts>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

namespace xsock::config::text {

inline void Append(std::string& out, std::string_view s) { out.append(s); }
inline void Append(std::string& out, const char* s) { out.append(s); }
inline void Append(std::string& out, const std::string& s) { out.append(s); }
inline void Append(std::string& out, char c) { out.push_back(c); }
inline void Append(std::string& out, double v) {
  char buf[32];
  const int n = std::snprintf(buf, sizeof(buf), "%g", v);
  out.append(buf, n > 0 ? static_cast<size_t>(n) : 0);
}
template <std::integral T>
  requires(!std::same_as<T, char> && !std::same_as<T, bool>)
void Append(std::string& out, T v) {
  out.append(std::to_string(v));
}

// Cat("a", 1, std::string_view("b")) == "a1b".
template <typename... T>
std::string Cat(const T&... parts) {
  std::string out;
  (Append(out, parts), ...);
  return out;
}

template <typename... T>
void AppendAll(std::string& out, const T&... parts) {
  (Append(out, parts), ...);
}

template <typename S>
std::string Join(const std::vector<S>& parts, std::string_view sep) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i != 0) out.append(sep);
    Append(out, parts[i]);
  }
  return out;
}

}  // namespace xsock::config::text
