// Layout of the memory a routed socket shares between libxsock.so and xsockd (local
// transport), and the constants of the channel protocol that keeps the channel's kernel
// readiness equal to the socket's. docs/channel.md is the specification; this header is
// its C++ form. Both sides map the same memfd: [SocketPage][in ring][out ring].
#pragma once

#include <pthread.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "ringbuf/ring.h"

namespace xsock {

inline constexpr uint32_t kSocketPageMagic = 0x4B534F58;  // "XOSK"
inline constexpr uint32_t kSocketPageVersion = 1;
inline constexpr size_t kPageSize = 4096;

// Ring order: each direction holds 1 << order bytes.
inline constexpr uint32_t kMinRingOrder = 12;      // 4 KiB
inline constexpr uint32_t kMaxRingOrder = 24;      // 16 MiB
inline constexpr uint32_t kDefaultRingOrder = 18;  // 256 KiB

// SocketPage::state, written by xsockd only.
enum class SocketState : uint32_t {
  kIdle = 0,        // created, not connected
  kConnecting = 1,  // host connect() in progress
  kConnected = 2,   // data flows
  kFailed = 3,      // connect failed; so_error says why
  kClosed = 4,      // host socket gone (after EOF both ways, reset, or release)
  kListening = 5,   // listen() done: the socket now lives on its listener channel (no page)
};

// Ring error words (SocketPage::in_error / out_error). 0: none. Negative: -errno.
inline constexpr int32_t kRingEof = 1;  // in: the host peer sent FIN (after all data)

// Indices of one direction, each written by one side only, on its own cache line, in the
// order of PVCalls' pvcalls_data_intf (cons, prod, error).
struct alignas(64) RingIndexLine {
  std::atomic<uint32_t> value;
  uint8_t pad[60];
};

struct SocketPage {
  // Immutable after creation (written by xsockd before the memfd is sealed and sent).
  uint32_t magic;
  uint32_t version;
  uint32_t ring_order;
  uint32_t reserved0;
  uint64_t socket_id;
  uint8_t pad0[40];

  // Data interface, PVCalls order: in = xsockd -> app, out = app -> xsockd.
  RingIndexLine in_cons;  // app writes
  RingIndexLine in_prod;  // xsockd writes
  struct alignas(64) {
    std::atomic<int32_t> value;  // xsockd writes: kRingEof or -errno, after the data
  } in_error;
  RingIndexLine out_cons;  // xsockd writes
  RingIndexLine out_prod;  // app writes
  struct alignas(64) {
    std::atomic<int32_t> value;  // xsockd writes: -EPIPE / -ECONNRESET ... (writes fail)
  } out_error;

  // Connection state (xsockd writes; the app reads, and clears so_error when reporting it).
  alignas(64) std::atomic<uint32_t> state;
  std::atomic<int32_t> so_error;  // positive errno of a failed connect / reset

  // Wake-up protocol (docs/channel.md). Each flag is "armed" by one side and consumed
  // (exchange to 0) by the other.
  alignas(64) std::atomic<uint32_t> in_token;         // a readiness token is queued for the app
  alignas(64) std::atomic<uint32_t> out_data_wanted;  // xsockd sleeps until out has data
  alignas(64) std::atomic<uint32_t> in_room_wanted;   // xsockd sleeps until in has room
  // App writes 1 when accept() hands an accepted connection to the application. xsockd
  // closes a connection whose app end went away before that with a reset, as the kernel
  // does for connections still queued on a listener that closes.
  alignas(64) std::atomic<uint32_t> app_accepted;

  // App side only (xsockd never touches them): serialise the app's processes and threads
  // that share the consumer (read) or producer (write) role. Process-shared, robust.
  alignas(64) pthread_mutex_t read_lock;
  alignas(64) pthread_mutex_t write_lock;
};

static_assert(sizeof(SocketPage) <= kPageSize, "SocketPage must fit one page");
static_assert(std::atomic<uint32_t>::is_always_lock_free);

inline constexpr size_t RingBytes(uint32_t order) { return size_t{1} << order; }
inline constexpr size_t SocketMemfdSize(uint32_t order) { return kPageSize + 2 * RingBytes(order); }

// Ring views over a mapped socket memfd (base = start of the mapping). `order` comes from
// the side's own records, never from the shared page (which the peer can rewrite).
inline ring::RingRefs InRing(void* base, uint32_t order) {
  auto* p = static_cast<SocketPage*>(base);
  return {&p->in_cons.value, &p->in_prod.value, &p->in_error.value,
          static_cast<std::byte*>(base) + kPageSize, static_cast<uint32_t>(RingBytes(order))};
}
inline ring::RingRefs OutRing(void* base, uint32_t order) {
  auto* p = static_cast<SocketPage*>(base);
  const size_t n = RingBytes(order);
  return {&p->out_cons.value, &p->out_prod.value, &p->out_error.value,
          static_cast<std::byte*>(base) + kPageSize + n, static_cast<uint32_t>(n)};
}

// Bytes the app sends on its channel end to wake xsockd ("look at the rings again"), and
// the chunk it uses to fill its own send queue so the kernel reports it unwritable.
inline constexpr char kWakeByte = 'w';
inline constexpr size_t kStuffChunk = 4096;
// Byte xsockd sends to make the app end readable (see in_token).
inline constexpr char kTokenByte = 't';

}  // namespace xsock
