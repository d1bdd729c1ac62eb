// The fd -> socket table (libintercept/fd_table.h): references, duplicates, ranges and
// concurrent lookups racing removals.
#include "libintercept/fd_table.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <thread>
#include <vector>

namespace xsock::intercept {
namespace {

// Counts how often it died; revivable like a pooled FrontSocket.
class Counted final : public RefCounted {
 public:
  void Revive() { InitRef(); }
  std::atomic<int> deaths{0};

 private:
  void LastUnref() noexcept override { deaths.fetch_add(1); }
};

}  // namespace

TEST_CASE("an empty table routes nothing, including out-of-range descriptors", "[fd_table]") {
  FdTable t;
  for (int fd : {-1, 0, 3, 1023, 1024, FdTable::kMaxFds - 1, FdTable::kMaxFds, 1 << 30}) {
    CHECK_FALSE(t.Find(fd));
    CHECK_FALSE(t.Contains(fd));
  }
}

TEST_CASE("install, find and remove keep the reference count exact", "[fd_table]") {
  FdTable t;
  Counted obj;
  obj.Revive();  // the creator's reference
  CHECK_FALSE(t.Install(5, &obj));
  CHECK(obj.refs_for_testing() == 2);
  {
    FdRef r = t.Find(5);
    REQUIRE(r);
    CHECK(r.get() == &obj);
    CHECK(obj.refs_for_testing() == 3);
  }
  CHECK(obj.refs_for_testing() == 2);
  CHECK(t.Contains(5));
  CHECK_FALSE(t.Contains(6));
  obj.Unref();  // the creator lets go; the table keeps it alive
  CHECK(obj.deaths == 0);
  FdRef removed = t.Remove(5);
  CHECK(removed.get() == &obj);
  CHECK_FALSE(t.Find(5));
  CHECK(obj.deaths == 0);
  removed.Reset();
  CHECK(obj.deaths == 1);
  CHECK_FALSE(t.Remove(5));
}

TEST_CASE("duplicated descriptors share one socket that dies with the last of them", "[fd_table]") {
  FdTable t;
  Counted obj;
  obj.Revive();
  t.Install(3, &obj);
  obj.Unref();
  {
    FdRef r = t.Find(3);
    t.Install(1500, r.get());   // dup into another chunk
    t.Install(70000, r.get());  // and far away
  }
  CHECK(obj.refs_for_testing() == 3);
  t.Remove(3);
  t.Remove(70000);
  CHECK(obj.deaths == 0);
  REQUIRE(t.Find(1500).get() == &obj);
  t.Remove(1500);
  CHECK(obj.deaths == 1);
}

TEST_CASE("installing over an entry hands back the previous socket", "[fd_table]") {
  FdTable t;
  Counted a, b;
  a.Revive();
  b.Revive();
  t.Install(7, &a);
  a.Unref();
  FdRef old = t.Install(7, &b);  // dup2 of another routed socket onto 7
  b.Unref();
  CHECK(old.get() == &a);
  old.Reset();
  CHECK(a.deaths == 1);
  CHECK(t.Find(7).get() == &b);
  t.Remove(7);
  CHECK(b.deaths == 1);
}

TEST_CASE("out-of-range descriptors are refused without touching the socket", "[fd_table]") {
  FdTable t;
  Counted obj;
  obj.Revive();
  CHECK_FALSE(FdTable::CanHold(FdTable::kMaxFds));
  CHECK_FALSE(t.Install(FdTable::kMaxFds, &obj));
  CHECK_FALSE(t.Install(-1, &obj));
  CHECK(obj.refs_for_testing() == 1);
  obj.Unref();
}

TEST_CASE("remove range clears exactly the range and skips absent chunks", "[fd_table]") {
  FdTable t;
  Counted obj;
  obj.Revive();
  const int fds[] = {2, 3, 4, 1023, 1024, 50000, 4000000};
  for (int fd : fds) t.Install(fd, &obj);
  obj.Unref();
  t.RemoveRange(3, 50000);
  CHECK(t.Contains(2));
  for (int fd : {3, 4, 1023, 1024, 50000}) CHECK_FALSE(t.Contains(fd));
  CHECK(t.Contains(4000000));
  t.RemoveRange(0, ~0u);  // close_range(0, ~0U)
  CHECK_FALSE(t.Contains(2));
  CHECK_FALSE(t.Contains(4000000));
  CHECK(obj.deaths == 1);
}

TEST_CASE("lookups racing removal and reuse never hold a dead socket", "[fd_table]") {
  // One thread keeps closing and re-creating the socket behind descriptor 9 (the object
  // is recycled, as FrontSocketPool does); readers must only ever get a live reference.
  FdTable t;
  Counted objs[2];
  std::atomic<bool> stop{false};
  std::atomic<long> lookups{0}, bad{0};
  std::vector<std::thread> readers;
  for (int i = 0; i < 2; ++i) {
    readers.emplace_back([&] {
      while (!stop.load(std::memory_order_relaxed)) {
        if (FdRef r = t.Find(9)) {
          if (static_cast<Counted*>(r.get())->refs_for_testing() == 0) bad.fetch_add(1);
          lookups.fetch_add(1, std::memory_order_relaxed);
        }
      }
    });
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
  int rounds = 0;
  while (std::chrono::steady_clock::now() < deadline && rounds < 200000) {
    Counted& o = objs[rounds % 2];
    if (o.refs_for_testing() != 0) continue;  // a reader still holds the last life
    o.Revive();
    t.Install(9, &o);
    o.Unref();
    t.Remove(9);  // dies here or when the last reader lets go
    ++rounds;
  }
  stop = true;
  for (auto& r : readers) r.join();
  CHECK(bad == 0);
  CHECK(objs[0].deaths + objs[1].deaths == rounds);
  CHECK(rounds > 0);
}

}  // namespace xsock::intercept
