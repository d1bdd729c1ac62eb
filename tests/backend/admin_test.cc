// The admin socket, the metrics endpoint, the JSON log format and their options, driven
// in-process: listings of a real client and socket, requests that are malformed, too long,
// half-sent or never finished (the loop keeps serving), and the exposition text checked
// line by line against the stats.
#include <arpa/inet.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <map>
#include <string>
#include <vector>

#include "backend/admin.h"
#include "backend/log.h"
#include "backend/metrics.h"
#include "backend/options.h"
#include "fmt/format.h"
#include "test_client.h"

namespace xsock::testing {
namespace {

UniqueFd ConnectAdmin(const std::string& path) {
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  REQUIRE(fd.valid());
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  path.copy(addr.sun_path, sizeof(addr.sun_path) - 1);
  REQUIRE(connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  return fd;
}

UniqueFd ConnectTcp(uint16_t port) {
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  REQUIRE(fd.valid());
  sockaddr_in a = {};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
  return fd;
}

// Everything until the server closes; "<timeout>" appended if it does not within timeout_ms.
std::string ReadAll(int fd, int timeout_ms = kTimeoutMs) {
  std::string out;
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    const int left = static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
    if (left <= 0) return out + "<timeout>";
    pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, left) <= 0) continue;
    char buf[65536];
    const ssize_t n = read(fd, buf, sizeof(buf));  // sockets and pipes
    if (n <= 0) return out;
    out.append(buf, static_cast<size_t>(n));
  }
}

std::string Admin(const std::string& path, std::string_view request) {
  UniqueFd fd = ConnectAdmin(path);
  REQUIRE(send(fd.get(), request.data(), request.size(), MSG_NOSIGNAL) ==
          static_cast<ssize_t>(request.size()));
  return ReadAll(fd.get());
}

std::string Http(uint16_t port, std::string_view request) {
  UniqueFd fd = ConnectTcp(port);
  REQUIRE(send(fd.get(), request.data(), request.size(), MSG_NOSIGNAL) ==
          static_cast<ssize_t>(request.size()));
  return ReadAll(fd.get());
}

std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t pos = 0;
  for (;;) {
    const size_t e = s.find(sep, pos);
    out.push_back(s.substr(pos, e == std::string::npos ? e : e - pos));
    if (e == std::string::npos) return out;
    pos = e + 1;
  }
}

// A text reply ("ok", header, rows) as maps column → value.
std::vector<std::map<std::string, std::string>> Rows(const std::string& reply) {
  INFO(reply);
  REQUIRE(reply.rfind("ok\n", 0) == 0);
  std::vector<std::string> lines = Split(reply.substr(3), '\n');
  REQUIRE(lines.size() >= 2);
  REQUIRE(lines.back().empty());  // ends with a newline
  lines.pop_back();
  const std::vector<std::string> cols = Split(lines[0], '\t');
  std::vector<std::map<std::string, std::string>> rows;
  for (size_t i = 1; i < lines.size(); ++i) {
    const std::vector<std::string> cells = Split(lines[i], '\t');
    REQUIRE(cells.size() == cols.size());
    std::map<std::string, std::string> row;
    for (size_t c = 0; c < cols.size(); ++c) row[cols[c]] = cells[c];
    rows.push_back(std::move(row));
  }
  return rows;
}

std::string SelfExe() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf));
  REQUIRE(n > 0);
  return std::string(buf, static_cast<size_t>(n));
}

std::string Str(uint64_t v) { return std::to_string(v); }

bool AllDigits(std::string_view v) {
  return !v.empty() && v.find_first_not_of("0123456789") == std::string_view::npos;
}

struct Routed {
  std::unique_ptr<AppSocket> app;
  UniqueFd peer;
};

Routed ConnectRouted(Control& ctl, TcpListener& listener) {
  Routed r;
  r.app = AppSocket::Create(ctl, listener.family);
  const int err = r.app->Connect(ctl, listener.Addr());
  REQUIRE((err == 0 || err == EINPROGRESS));
  REQUIRE(r.app->WaitConnectDone() == SocketState::kConnected);
  r.peer = listener.Accept();
  REQUIRE(r.peer.valid());
  return r;
}

std::string PeerName(int fd, bool peer) {
  sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  const int rc = peer ? getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len)
                      : getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  REQUIRE(rc == 0);
  return proto::ToString(*proto::FromSockaddr(reinterpret_cast<sockaddr*>(&ss), len));
}

TEST_CASE("the admin socket is a 0600 stream socket beside the control socket",
          "[backend][admin]") {
  TestServer server(TestServer::Visibility{});
  const std::string path = server.admin_path();
  REQUIRE(path == server.path().substr(0, server.path().rfind('/')) + "/xsockd-admin.sock");
  struct stat st;
  REQUIRE(lstat(path.c_str(), &st) == 0);
  CHECK(S_ISSOCK(st.st_mode));
  CHECK((st.st_mode & 07777) == 0600);
  CHECK(st.st_uid == geteuid());
}

TEST_CASE("a peer that is neither root nor xsockd's user is refused even if the mode allows it",
          "[backend][admin]") {
  // The file mode is the first gate; this is the second, for a mode someone loosened.
  REQUIRE(geteuid() == 0);  // CI runs as root; the child drops to nobody
  TestServer server(TestServer::Visibility{});
  REQUIRE(chmod(server.admin_path().c_str(), 0666) == 0);
  // The test's private directory (mkdtemp: 0700) must be searchable by the child.
  const std::string run_dir = server.admin_path().substr(0, server.admin_path().rfind('/'));
  REQUIRE(chmod(run_dir.substr(0, run_dir.rfind('/')).c_str(), 0711) == 0);
  int out[2];
  REQUIRE(pipe(out) == 0);
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    close(out[0]);
    if (setgroups(0, nullptr) != 0 || setresgid(65534, 65534, 65534) != 0 ||
        setresuid(65534, 65534, 65534) != 0) {
      _exit(2);
    }
    const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr = {};
    addr.sun_family = AF_UNIX;
    server.admin_path().copy(addr.sun_path, sizeof(addr.sun_path) - 1);
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) _exit(3);
    (void)!send(fd, "stats\n", 6, MSG_NOSIGNAL);
    char buf[512];
    ssize_t n;
    while ((n = recv(fd, buf, sizeof(buf), 0)) > 0) {
      (void)!write(out[1], buf, static_cast<size_t>(n));
    }
    _exit(n == 0 ? 0 : 10 + errno % 100);
  }
  close(out[1]);
  UniqueFd from_child(out[0]);
  const std::string got = ReadAll(from_child.get());
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(got.rfind("error permission denied", 0) == 0);
  // Root is still answered.
  CHECK(Admin(server.admin_path(), "stats\n").rfind("ok\n", 0) == 0);
}

TEST_CASE("admin clients lists a control connection with its kernel identity", "[backend][admin]") {
  TestServer server(TestServer::Visibility{});
  Control ctl(server.path());
  ctl.Hello();
  const auto rows = Rows(Admin(server.admin_path(), "clients\n"));
  REQUIRE(rows.size() == 1);
  const auto& c = rows[0];
  CHECK(c.at("pid") == Str(static_cast<uint64_t>(getpid())));
  CHECK(c.at("uid") == Str(getuid()));
  CHECK(c.at("gid") == Str(getgid()));
  CHECK(c.at("exe") == SelfExe());
  struct stat ns;
  REQUIRE(stat("/proc/self/ns/net", &ns) == 0);
  CHECK(c.at("netns") == Str(ns.st_ino));
  CHECK(c.at("sockets") == "0");
  CHECK(c.at("denials") == "0");
  // YYYY-MM-DDTHH:MM:SSZ
  const std::string since = c.at("since");
  REQUIRE(since.size() == 20);
  CHECK(AllDigits(since.substr(0, 4)));
  CHECK(since.substr(4, 1) + since.substr(7, 1) + since.substr(10, 1) + since.substr(13, 1) +
            since.substr(16, 1) + since.substr(19, 1) ==
        "--T::Z");
  CHECK(AllDigits(since.substr(5, 2) + since.substr(8, 2) + since.substr(11, 2) +
                  since.substr(14, 2) + since.substr(17, 2)));

  const std::string json = Admin(server.admin_path(), "clients format=json\n");
  INFO(json);
  REQUIRE(json.rfind("ok\n[{", 0) == 0);
  CHECK(json.find(fmt::format("\"pid\": {},", getpid())) != std::string::npos);
  CHECK(json.find("\"exe\": " + backend::JsonQuoted(SelfExe())) != std::string::npos);
}

TEST_CASE("admin sockets shows a routed socket's addresses, bytes each way and ring fill",
          "[backend][admin]") {
  TestServer server(TestServer::Visibility{});
  Control ctl(server.path());
  ctl.Hello();
  auto listener = TcpListener::Open(AF_INET);
  Routed r = ConnectRouted(ctl, listener);
  const std::vector<uint8_t> out = Pattern(1000, 1), in = Pattern(3000, 2);
  REQUIRE(r.app->WriteAll(out.data(), out.size()));
  std::vector<uint8_t> got(out.size());
  REQUIRE(RecvExactly(r.peer.get(), got));
  REQUIRE(SendAll(r.peer.get(), in));  // left unread in `in`

  std::map<std::string, std::string> s;
  REQUIRE(Eventually([&] {
    const auto rows = Rows(Admin(server.admin_path(), "sockets\n"));
    if (rows.size() != 1) return false;
    s = rows[0];
    return s.at("from_host") == "3000";
  }));
  const auto clients = Rows(Admin(server.admin_path(), "clients\n"));
  REQUIRE(clients.size() == 1);
  CHECK(s.at("client") == clients[0].at("client"));
  CHECK(s.at("socket") == Str(r.app->id()));
  CHECK(s.at("kind") == "stream");
  CHECK(s.at("state") == "connected");
  CHECK(s.at("remote") == fmt::format("127.0.0.1:{}", listener.port));
  CHECK(s.at("local") == PeerName(r.peer.get(), true));
  CHECK(s.at("to_host") == "1000");
  CHECK(s.at("in_fill") == "3000");
  CHECK(s.at("out_fill") == "0");
  CHECK(s.at("ring_size") == Str(uint64_t{1} << r.app->order()));
  CHECK(clients[0].at("sockets") == "1");
  CHECK(clients[0].at("to_host") == "1000");
  CHECK(clients[0].at("from_host") == "3000");

  // Filtered by client: this one's socket, another id's nothing.
  CHECK(Rows(Admin(server.admin_path(), "sockets client=" + s.at("client") + "\n")).size() == 1);
  CHECK(Rows(Admin(server.admin_path(), "sockets client=999\n")).empty());

  // A closed socket's bytes stay with its client.
  r.app->CloseChannel();
  REQUIRE(Eventually([&] { return Rows(Admin(server.admin_path(), "sockets\n")).empty(); }));
  const auto after = Rows(Admin(server.admin_path(), "clients\n"));
  REQUIRE(after.size() == 1);
  CHECK(after[0].at("sockets") == "0");
  CHECK(after[0].at("sockets_closed") == "1");
  CHECK(after[0].at("to_host") == "1000");
  CHECK(after[0].at("from_host") == "3000");
}

TEST_CASE("admin sockets shows a routed listener and the connection it accepted",
          "[backend][admin]") {
  TestServer server(TestServer::Visibility{});
  Control ctl(server.path());
  ctl.Hello();
  auto app = AppSocket::Create(ctl, AF_INET);
  const auto bound =
      ctl.CallAs<proto::BindReply>(proto::BindRequest{app->id(), LoopbackAddr(AF_INET, 0)});
  REQUIRE(bound.err == 0);
  std::vector<UniqueFd> fds;
  const auto listened = ctl.CallAs<proto::ListenReply>(proto::ListenRequest{app->id(), 4}, &fds);
  REQUIRE(listened.err == 0);
  app->CloseChannel();  // the library drops the stream channel end after listen
  UniqueFd client(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_storage ss;
  const socklen_t len = proto::ToSockaddr(bound.addr, &ss);
  REQUIRE(connect(client.get(), reinterpret_cast<sockaddr*>(&ss), len) == 0);

  std::vector<std::map<std::string, std::string>> rows;
  REQUIRE(Eventually([&] {
    rows = Rows(Admin(server.admin_path(), "sockets\n"));
    return rows.size() == 2;
  }));
  const auto& l = rows[0];  // ordered by socket id: the listener came first
  CHECK(l.at("socket") == Str(app->id()));
  CHECK(l.at("kind") == "listener");
  CHECK(l.at("state") == "listening");
  CHECK(l.at("local") == proto::ToString(bound.addr));
  CHECK(l.at("remote") == "-");
  CHECK(l.at("in_fill") == "-");
  CHECK(l.at("ring_size") == "-");
  const auto& a = rows[1];
  CHECK(a.at("kind") == "accepted");
  CHECK(a.at("state") == "connected");
  CHECK(a.at("client") == l.at("client"));
  CHECK(a.at("local") == proto::ToString(bound.addr));
  CHECK(a.at("remote") == PeerName(client.get(), false));
}

TEST_CASE("admin stats equal the control protocol's stats and add the lookup counters",
          "[backend][admin]") {
  TestServer server(TestServer::Visibility{});
  Control ctl(server.path());
  ctl.Hello();
  const proto::StatsReply st = ctl.Stats();
  std::map<std::string, std::string> v;
  for (const auto& row : Rows(Admin(server.admin_path(), "stats\n")))
    v[row.at("counter")] = row.at("value");
  CHECK(v.at("clients_now") == Str(st.clients_now));
  CHECK(v.at("clients_total") == Str(st.clients_total));
  CHECK(v.at("sockets_now") == Str(st.sockets_now));
  CHECK(v.at("bytes_to_host") == Str(st.bytes_to_host));
  CHECK(v.count("lookups") == 1);
  CHECK(v.count("lookups_refused") == 1);
  CHECK(v.count("lookups_timed_out") == 1);
  CHECK(v.at("denials") == "0");
  const std::string json = Admin(server.admin_path(), "stats format=json\n");
  CHECK(json.rfind("ok\n{\"clients_now\": 1, ", 0) == 0);
}

TEST_CASE("bad admin requests get an error line and the loop keeps serving", "[backend][admin]") {
  TestServer server(TestServer::Visibility{true, false, 300});
  const std::string path = server.admin_path();
  Control ctl(server.path());
  ctl.Hello();

  CHECK(Admin(path, "frobnicate\n").rfind("error unknown request \"frobnicate\"", 0) == 0);
  CHECK(Admin(path, "\n") == "error empty request\n");
  CHECK(Admin(path, "sockets client=x\n").rfind("error unknown argument", 0) == 0);
  CHECK(Admin(path, "clients client=1\n").rfind("error client= applies to sockets only", 0) == 0);
  // Oversized: answered as soon as the bound is passed, without waiting for a newline.
  const std::string big(backend::kMaxAdminRequest + 100, 'x');
  CHECK(Admin(path, big).rfind("error request longer than", 0) == 0);

  // Half-sent: one connection sends part of a request and stops; another is answered
  // meanwhile (a loop waiting for the rest would never answer: the half-sent peer does not
  // go away), and the half-sent one is closed at the deadline without a reply.
  UniqueFd half = ConnectAdmin(path);
  REQUIRE(send(half.get(), "sta", 3, MSG_NOSIGNAL) == 3);
  REQUIRE(Eventually([&] { return server.admin_connections() == 1; }));
  CHECK(Admin(path, "stats\n").rfind("ok\n", 0) == 0);
  CHECK(ctl.Stats().clients_now == 1);                                   // the control plane too
  REQUIRE(Eventually([&] { return server.admin_connections() == 0; }));  // the deadline
  CHECK(ReadAll(half.get()).empty());                                    // closed, nothing sent

  // A peer that ends its half mid-request gets nothing either.
  UniqueFd cut = ConnectAdmin(path);
  REQUIRE(send(cut.get(), "clie", 4, MSG_NOSIGNAL) == 4);
  shutdown(cut.get(), SHUT_WR);
  CHECK(ReadAll(cut.get()).empty());
}

TEST_CASE("admin connections beyond the bound are closed at once; the rest are served",
          "[backend][admin]") {
  TestServer server(TestServer::Visibility{true, false, 10000});
  const std::string path = server.admin_path();
  std::vector<UniqueFd> idle;
  for (size_t i = 0; i < backend::kMaxAdminConnections; ++i) idle.push_back(ConnectAdmin(path));
  // Each is accepted in turn; wait until the next one is turned away.
  std::string extra;
  REQUIRE(Eventually([&] {
    UniqueFd fd = ConnectAdmin(path);
    (void)!send(fd.get(), "stats\n", 6, MSG_NOSIGNAL);
    extra = ReadAll(fd.get(), 1000);
    return extra.empty();
  }));
  idle.clear();  // the server sees them close
  REQUIRE(Eventually([&] { return Admin(path, "stats\n").rfind("ok\n", 0) == 0; }));
}

// ---- metrics ----

// A small scanner for the exposition grammar (std::regex trips GCC 12's
// maybe-uninitialized warning under the sanitizers).
bool NameChar(char c, bool first, bool colon) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon && c == ':') ||
         (!first && c >= '0' && c <= '9');
}
// Consumes a name at *i; "" if there is none.
std::string ScanName(const std::string& s, size_t* i, bool colon) {
  const size_t start = *i;
  while (*i < s.size() && NameChar(s[*i], *i == start, colon)) ++*i;
  return s.substr(start, *i - start);
}

// "name{labels} value": fills name, labels (with braces, "" if none) and value; false if
// the line is not well-formed.
bool ParseSample(const std::string& line, std::string* name, std::string* labels, uint64_t* value) {
  size_t i = 0;
  *name = ScanName(line, &i, true);
  if (name->empty()) return false;
  const size_t lstart = i;
  if (i < line.size() && line[i] == '{') {
    ++i;
    for (;;) {
      if (ScanName(line, &i, false).empty()) return false;
      if (line.compare(i, 2, "=\"") != 0) return false;
      i += 2;
      while (i < line.size() && line[i] != '"') {
        if (line[i] == '\\') {
          if (i + 1 >= line.size() || std::string("\\\"n").find(line[i + 1]) == std::string::npos) {
            return false;
          }
          ++i;
        }
        ++i;
      }
      if (i >= line.size()) return false;
      ++i;  // closing quote
      if (i < line.size() && line[i] == ',') {
        ++i;
        continue;
      }
      if (i < line.size() && line[i] == '}') {
        ++i;
        break;
      }
      return false;
    }
  }
  *labels = line.substr(lstart, i - lstart);
  if (i >= line.size() || line[i] != ' ') return false;
  const std::string v = line.substr(i + 1);
  if (!AllDigits(v)) return false;
  *value = std::stoull(v);
  return true;
}

// Checks the exposition format line by line; returns samples as "name{labels}" → value.
std::map<std::string, uint64_t> ParseExposition(const std::string& text) {
  std::map<std::string, std::string> types;
  std::map<std::string, uint64_t> samples;
  REQUIRE(!text.empty());
  REQUIRE(text.back() == '\n');
  for (const std::string& line : Split(text.substr(0, text.size() - 1), '\n')) {
    INFO(line);
    if (line.rfind("# HELP ", 0) == 0) {
      size_t i = 7;
      REQUIRE_FALSE(ScanName(line, &i, true).empty());
      REQUIRE(i + 1 < line.size());
      REQUIRE(line[i] == ' ');
      continue;
    }
    if (line.rfind("# TYPE ", 0) == 0) {
      size_t i = 7;
      const std::string family = ScanName(line, &i, true);
      REQUIRE_FALSE(family.empty());
      const std::string type = line.substr(i);
      REQUIRE((type == " counter" || type == " gauge"));
      REQUIRE(types.count(family) == 0);  // one TYPE per family
      types[family] = type.substr(1);
      continue;
    }
    std::string family, labels;
    uint64_t value = 0;
    REQUIRE(ParseSample(line, &family, &labels, &value));
    REQUIRE(types.count(family) == 1);  // TYPE comes before the samples
    if (types[family] == "counter") {
      REQUIRE(family.size() > 6);
      CHECK(family.substr(family.size() - 6) == "_total");
    }
    REQUIRE(samples.count(family + labels) == 0);  // no duplicate series
    samples[family + labels] = value;
  }
  return samples;
}

TEST_CASE("the exposition checker itself rejects malformed sample lines", "[backend][metrics]") {
  std::string name, labels;
  uint64_t v = 0;
  CHECK(ParseSample("a_b{x=\"1\",y=\"q\\\"\\n\"} 42", &name, &labels, &v));
  CHECK(name == "a_b");
  CHECK(labels == "{x=\"1\",y=\"q\\\"\\n\"}");
  CHECK(v == 42);
  CHECK_FALSE(ParseSample("a{x=\"1} 1", &name, &labels, &v));
  CHECK_FALSE(ParseSample("a{x=1} 1", &name, &labels, &v));
  CHECK_FALSE(ParseSample("a{x=\"1\"}1", &name, &labels, &v));
  CHECK_FALSE(ParseSample("a 1.5", &name, &labels, &v));
  CHECK_FALSE(ParseSample("1a 1", &name, &labels, &v));
  CHECK_FALSE(ParseSample("a{x=\"\\t\"} 1", &name, &labels, &v));
  CHECK_FALSE(ParseSample("a ", &name, &labels, &v));
}

std::string Body(const std::string& response) {
  const size_t e = response.find("\r\n\r\n");
  REQUIRE(e != std::string::npos);
  return response.substr(e + 4);
}

TEST_CASE("GET /metrics answers the exposition format with the stats' values",
          "[backend][metrics]") {
  TestServer server(TestServer::Visibility{false, true});
  REQUIRE(server.metrics_port() != 0);
  Control ctl(server.path());
  ctl.Hello();
  auto listener = TcpListener::Open(AF_INET);
  Routed r = ConnectRouted(ctl, listener);
  const std::vector<uint8_t> out = Pattern(4321, 3);
  REQUIRE(r.app->WriteAll(out.data(), out.size()));
  std::vector<uint8_t> got(out.size());
  REQUIRE(RecvExactly(r.peer.get(), got));
  REQUIRE(Eventually([&] { return ctl.Stats().bytes_to_host == 4321; }));
  const proto::StatsReply st = ctl.Stats();

  const std::string resp = Http(server.metrics_port(), "GET /metrics HTTP/1.0\r\n\r\n");
  INFO(resp);
  REQUIRE(resp.rfind("HTTP/1.0 200 OK\r\n", 0) == 0);
  CHECK(resp.find("Content-Type: text/plain; version=0.0.4") != std::string::npos);
  const std::string body = Body(resp);
  CHECK(resp.find(fmt::format("Content-Length: {}\r\n", body.size())) != std::string::npos);
  const auto m = ParseExposition(body);
  CHECK(m.at("xsockd_clients") == st.clients_now);
  CHECK(m.at("xsockd_clients_total") == st.clients_total);
  CHECK(m.at("xsockd_sockets") == st.sockets_now);
  CHECK(m.at("xsockd_sockets_total") == st.sockets_total);
  CHECK(m.at("xsockd_connects_total{result=\"ok\"}") == st.connects_ok);
  CHECK(m.at("xsockd_connects_total{result=\"failed\"}") == st.connects_failed);
  CHECK(m.at("xsockd_bytes_total{direction=\"to_host\"}") == 4321);
  CHECK(m.at("xsockd_bytes_total{direction=\"from_host\"}") == st.bytes_from_host);
  CHECK(m.count("xsockd_lookups_total{result=\"requested\"}") == 1);
  CHECK(m.at("xsockd_denials_total") == 0);
  // Per client, labelled with its identity.
  const std::string labels = fmt::format("{{client=\"1\",pid=\"{}\",uid=\"{}\",exe=\"{}\"}}",
                                         getpid(), getuid(), SelfExe());
  CHECK(m.at("xsockd_client_sockets" + labels) == 1);
  CHECK(m.at("xsockd_client_bytes_total" + labels.substr(0, labels.size() - 1) +
             ",direction=\"to_host\"}") == 4321);
}

TEST_CASE("the metrics endpoint answers 404, 405, 400 and 431, and survives half requests",
          "[backend][metrics]") {
  TestServer server(TestServer::Visibility{false, true, 300});
  const uint16_t port = server.metrics_port();
  CHECK(Http(port, "GET /other HTTP/1.0\r\n\r\n").rfind("HTTP/1.0 404 ", 0) == 0);
  CHECK(Http(port, "POST /metrics HTTP/1.0\r\n\r\n").rfind("HTTP/1.0 405 ", 0) == 0);
  CHECK(Http(port, "hello\n\n").rfind("HTTP/1.0 400 ", 0) == 0);
  CHECK(Http(port, std::string(backend::kMaxHttpRequest + 10, 'a')).rfind("HTTP/1.0 431 ", 0) == 0);
  CHECK(Http(port, "GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n").rfind("HTTP/1.0 200 ", 0) == 0);
  UniqueFd half = ConnectTcp(port);
  REQUIRE(send(half.get(), "GET /met", 8, MSG_NOSIGNAL) == 8);
  CHECK(Http(port, "GET /metrics HTTP/1.0\r\n\r\n").rfind("HTTP/1.0 200 ", 0) == 0);
  CHECK(ReadAll(half.get()).empty());  // closed at the deadline
}

TEST_CASE("a metrics client that does not read a large reply does not stall the loop",
          "[backend][metrics]") {
  TestServer server(TestServer::Visibility{true, true, 500});
  // 250 clients make a reply of ~90 KB (per-client samples), more than a TCP connection
  // with a minimal receive buffer takes before the server's send would block.
  std::vector<std::unique_ptr<Control>> clients;
  for (int i = 0; i < 250; ++i) {
    clients.push_back(std::make_unique<Control>(server.path()));
    clients.back()->Hello();
  }
  UniqueFd lazy(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  int small = 1;  // the kernel's minimum
  setsockopt(lazy.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
  sockaddr_in a = {};
  a.sin_family = AF_INET;
  a.sin_port = htons(server.metrics_port());
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(connect(lazy.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
  const std::string get = "GET /metrics HTTP/1.0\r\n\r\n";
  REQUIRE(send(lazy.get(), get.data(), get.size(), MSG_NOSIGNAL) ==
          static_cast<ssize_t>(get.size()));
  // Others are answered while `lazy` holds its reply unread (a loop blocked on it would
  // never answer them: lazy reads only afterwards). The pause only makes it likely that
  // lazy's request is handled first; nothing depends on its length.
  REQUIRE(Eventually([&] { return server.admin_connections() == 1; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const std::string full = Http(server.metrics_port(), "GET /metrics HTTP/1.0\r\n\r\n");
  CHECK(full.size() > 80000);
  CHECK(Rows(Admin(server.admin_path(), "clients\n")).size() == 250);
  CHECK(clients[0]->Stats().clients_now == 250);
  // At the deadline it is cut off: what it reads then is a prefix, not the whole reply.
  REQUIRE(Eventually([&] { return server.admin_connections() == 0; }));
  const std::string got = ReadAll(lazy.get());
  CHECK(got.find("<timeout>") == std::string::npos);
  CHECK(got.size() < full.size());
  CHECK(full.compare(0, got.size(), got) == 0);
}

TEST_CASE("--metrics takes a port or a loopback address unless remote is allowed",
          "[backend][metrics]") {
  auto a = backend::ParseMetricsAddress("9464", false);
  REQUIRE(a.ok());
  CHECK(a->text == "127.0.0.1:9464");
  CHECK(a->loopback);
  CHECK(backend::ParseMetricsAddress("127.0.0.2:1", false).ok());
  auto v6 = backend::ParseMetricsAddress("[::1]:9464", false);
  REQUIRE(v6.ok());
  CHECK(v6->text == "[::1]:9464");
  CHECK(backend::ParseMetricsAddress("0.0.0.0:9464", false)
            .status()
            .message()
            .find("not a loopback address") != std::string::npos);
  CHECK(backend::ParseMetricsAddress("0.0.0.0:9464", true).ok());
  CHECK_FALSE(backend::ParseMetricsAddress("[::]:9464", false).ok());
  CHECK_FALSE(backend::ParseMetricsAddress("localhost:9464", false).ok());
  CHECK_FALSE(backend::ParseMetricsAddress("70000", false).ok());
  CHECK_FALSE(backend::ParseMetricsAddress("1.2.3.4:", true).ok());
}

TEST_CASE("arbitrary bytes as an admin request, an HTTP head or a log line are handled",
          "[backend][admin][metrics][log]") {
  // In-process answers over empty sources; a property check for the parsers (run under the
  // sanitizers in CI): every input gets a well-formed answer, nothing reads out of bounds.
  backend::Stats stats;
  backend::EventLoop loop = std::move(*backend::EventLoop::Create());
  backend::SocketTable sockets(&loop, &stats);
  backend::ClientMap clients;
  const backend::AdminSources src{&stats, &sockets, &clients};
  uint64_t x = 0x9e3779b97f4a7c15ull;
  auto next = [&] {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
  };
  // Bytes drawn mostly from the grammar's own alphabet, so that deep paths are reached.
  const std::string alphabet =
      "clients sockets stats format=json text client=0123456789 "
      "GET /metrics HTTP/1.0\r\n\"\\=x\x01\x7f\xff";
  for (int i = 0; i < 20000; ++i) {
    std::string in(next() % 80, '\0');
    for (char& c : in) c = alphabet[next() % alphabet.size()];
    const std::string a = backend::AnswerAdmin(in, src);
    INFO(in);
    REQUIRE((a.rfind("ok\n", 0) == 0 || a.rfind("error ", 0) == 0));
    REQUIRE(a.back() == '\n');
    const std::string h = backend::AnswerHttp(in, src);
    REQUIRE(h.rfind("HTTP/1.0 ", 0) == 0);
    const std::string j = backend::LogfmtToJson(in);
    REQUIRE(j.front() == '{');
    REQUIRE(j.back() == '}');
  }
}

// ---- options and log format ----

TEST_CASE("--admin-socket, --metrics and --log-format", "[backend][admin][options]") {
  auto cl = backend::ParseCommandLine({"--socket", "/tmp/q/x.sock"}, nullptr);
  REQUIRE(cl.ok());
  CHECK(backend::AdminSocketPath(cl->options) == "/tmp/q/xsockd-admin.sock");
  CHECK(backend::AdminSocketPath(backend::DaemonOptions{}) == backend::kDefaultAdminSocketPath);
  cl = backend::ParseCommandLine({"--admin-socket", "none", "--metrics=9000",
                                  "--metrics-allow-remote", "--log-format", "json"},
                                 nullptr);
  REQUIRE(cl.ok());
  CHECK(backend::AdminSocketPath(cl->options).empty());
  CHECK(cl->options.metrics == "9000");
  CHECK(cl->options.metrics_allow_remote);
  CHECK(cl->options.log_format == backend::LogFormat::kJson);
  // A remote metrics address is a usage error unless allowed (the flag may come later).
  auto remote = backend::ParseCommandLine({"--metrics", "0.0.0.0:9464"}, nullptr);
  REQUIRE_FALSE(remote.ok());
  CHECK(remote.status().message().find("not a loopback address") != std::string::npos);
  CHECK(backend::ParseCommandLine({"--metrics", "0.0.0.0:9464", "--metrics-allow-remote"}, nullptr)
            .ok());
  CHECK_FALSE(backend::ParseCommandLine({"--metrics-allow-remote"}, nullptr).ok());
  CHECK_FALSE(backend::ParseCommandLine({"--metrics", "x"}, nullptr).ok());
  cl = backend::ParseCommandLine({"--admin-socket=/a/b.sock"}, nullptr);
  REQUIRE(cl.ok());
  CHECK(backend::AdminSocketPath(cl->options) == "/a/b.sock");
  CHECK_FALSE(backend::ParseCommandLine({"--log-format", "xml"}, nullptr).ok());
  CHECK_FALSE(backend::ParseCommandLine({"--admin-socket="}, nullptr).ok());
  CHECK(backend::HelpText().find("--admin-socket PATH|none") != std::string::npos);
  CHECK(backend::HelpText().find("--metrics [ADDR:]PORT") != std::string::npos);
  CHECK(backend::HelpText().find("--log-format logfmt|json") != std::string::npos);
}

TEST_CASE("a logfmt line becomes one JSON object with the same keys", "[backend][log]") {
  CHECK(backend::LogfmtToJson("ts=2025-01-02T03:04:05Z level=info event=client_connect client=3 "
                              "pid=41 exe=\"/usr/bin/my prog\" reason=\"a \\\"b\\\" \\x01\" "
                              "caps=0x3 n=-7 z=007") ==
        "{\"ts\":\"2025-01-02T03:04:05Z\",\"level\":\"info\",\"event\":\"client_connect\","
        "\"client\":3,\"pid\":41,\"exe\":\"/usr/bin/my prog\",\"reason\":\"a \\\"b\\\" \\u0001\","
        "\"caps\":\"0x3\",\"n\":-7,\"z\":\"007\"}");
  // Quoted numbers stay strings; what Quoted() writes comes back unchanged.
  CHECK(backend::LogfmtToJson("a=\"12\"") == "{\"a\":\"12\"}");
  const std::string odd = "tab\there \"q\" back\\slash";
  CHECK(backend::LogfmtToJson("v=" + backend::Quoted(odd)) ==
        "{\"v\":" + backend::JsonQuoted(odd) + "}");
}

}  // namespace
}  // namespace xsock::testing
