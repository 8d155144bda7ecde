// The futex layer: sleeping and waking on a 32-bit word.
//
// Contract, complete:
//   futex_wait(w, expected, timeout_ns) sleeps while *w == expected.  It
//   returns wait_result::woken when woken, when *w already differed
//   (EAGAIN) or on a signal (EINTR): the caller re-checks its condition
//   either way.  It returns wait_result::timed_out when the relative
//   time-out (CLOCK_MONOTONIC) ran out; timeout_ns == no_timeout sleeps
//   until woken.
//   futex_wake(w, n) wakes at most n sleepers on w.
//   Any other error (EFAULT, EINVAL, ENOSYS) means a bug or a kernel without
//   futexes: fatal, with a message.
//
// Private futexes: the words never live in shared memory.
//
// SPDX-License-Identifier: MIT
#pragma once

#include <atomic>
#include <cstdint>

namespace kasync::detail {

inline constexpr std::uint64_t no_timeout = UINT64_MAX;

enum class wait_result { woken, timed_out };

wait_result futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected,
                       std::uint64_t timeout_ns) noexcept;
void futex_wake(std::atomic<std::uint32_t>& word, int count) noexcept;

}  // namespace kasync::detail
