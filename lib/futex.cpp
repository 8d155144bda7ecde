// The futex layer; its contract is in futex.hpp.
//
// SPDX-License-Identifier: MIT
#include "futex.hpp"

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

namespace kasync::detail {

namespace {

[[noreturn]] void futex_fatal(const char* op, int err) {
    std::fprintf(stderr, "kasync: futex %s failed: %s\n", op, std::strerror(err));
    std::abort();
}

}  // namespace

wait_result futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected,
                       std::uint64_t timeout_ns) noexcept {
    timespec ts{};
    timespec* tp = nullptr;
    if (timeout_ns != no_timeout) {
        ts.tv_sec = static_cast<time_t>(timeout_ns / 1000000000u);
        ts.tv_nsec = static_cast<long>(timeout_ns % 1000000000u);
        tp = &ts;
    }
    // The kernel reads the word itself; std::atomic<uint32_t> has the
    // layout of uint32_t (checked below).
    static_assert(sizeof(word) == sizeof(std::uint32_t));
    long r = ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word),
                       FUTEX_WAIT_PRIVATE, expected, tp, nullptr, 0);
    if (r == 0)
        return wait_result::woken;
    switch (errno) {
    case EAGAIN:     // the word had already changed
    case EINTR:      // a signal: the caller re-checks
        return wait_result::woken;
    case ETIMEDOUT:
        return wait_result::timed_out;
    default:
        futex_fatal("wait", errno);
    }
}

void futex_wake(std::atomic<std::uint32_t>& word, int count) noexcept {
    long r = ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word),
                       FUTEX_WAKE_PRIVATE, count, nullptr, nullptr, 0);
    if (r < 0)
        futex_fatal("wake", errno);
}

}  // namespace kasync::detail
