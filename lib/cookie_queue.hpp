// A bounded multi-producer, multi-consumer FIFO of cookies: the dispatch
// queue of one arena (placement.cpp).
//
// Why it exists.  Handing every call to oneTBB as a task of its own costs
// about 270 instructions on the schedule path and 272 bytes of task per
// pending call (kasync-callgrind-driver, kasync-bench-probe).  Instead each
// arena keeps this queue of cookies and at most as many oneTBB "drain"
// tasks as it has threads; a drain task runs cookies until the queue is
// empty.  The call itself stays in its ring slot: the queue only says in
// which order the arena should look at cookies.
//
// The algorithm is the classic sequence-numbered ring: cell i of lap L is
// free for the push at position p = L * size + i when its sequence number
// equals p, and holds that push's cookie when it equals p + 1.  Producers
// and consumers each claim a position with a CAS on their own counter, so
// neither side takes a lock, and a full queue is reported, never waited on.
//
// SPDX-License-Identifier: MIT
#pragma once

#include <kasync/kasync.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace kasync::detail {

class cookie_queue {
public:
    explicit cookie_queue(unsigned size_bits)
        : mask_((std::size_t{1} << size_bits) - 1),
          cells_(new cell[mask_ + 1]) {
        for (std::size_t i = 0; i <= mask_; ++i)
            // relaxed: not yet shared with any other thread.
            cells_[i].seq.store(i, std::memory_order_relaxed);
    }

    // False when the queue is full (the caller dispatches another way).
    bool push(cookie_t c) noexcept {
        // relaxed: a starting guess; the CAS below validates it.
        std::size_t pos = tail_.load(std::memory_order_relaxed);
        for (;;) {
            cell& x = cells_[pos & mask_];
            // acquire: pairs with pop()'s release, so its read of the
            // cookie happened before we overwrite it.
            std::size_t seq = x.seq.load(std::memory_order_acquire);
            auto dif = static_cast<std::ptrdiff_t>(seq - pos);
            if (dif == 0) {
                // seq_cst: the producer's half of the drain hand-off with
                // placement's drainer count (see placement.cpp).
                if (tail_.compare_exchange_weak(pos, pos + 1, std::memory_order_seq_cst,
                                                std::memory_order_relaxed))  // retry
                    break;
            } else if (dif < 0) {
                return false;  // the cell of the previous lap is unread: full
            } else {
                pos = tail_.load(std::memory_order_relaxed);  // retry; CAS validates
            }
        }
        cell& x = cells_[pos & mask_];
        x.cookie = c;
        // release: publishes the cookie to the pop() that claims the cell.
        x.seq.store(pos + 1, std::memory_order_release);
        return true;
    }

    // False when no push has completed beyond what was popped.  A push
    // that has claimed its position but not written its cell yet is not
    // seen: busy() tells those apart.
    bool pop(cookie_t* out) noexcept {
        // relaxed: a starting guess; the CAS below validates it.
        std::size_t pos = head_.load(std::memory_order_relaxed);
        for (;;) {
            cell& x = cells_[pos & mask_];
            // acquire: pairs with push()'s release of the cookie.
            std::size_t seq = x.seq.load(std::memory_order_acquire);
            auto dif = static_cast<std::ptrdiff_t>(seq - (pos + 1));
            if (dif == 0) {
                // relaxed: the cell's sequence number carries the data.
                if (head_.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed))
                    break;
            } else if (dif < 0) {
                return false;
            } else {
                pos = head_.load(std::memory_order_relaxed);  // retry; CAS validates
            }
        }
        cell& x = cells_[pos & mask_];
        *out = x.cookie;
        // release: our read of the cookie happens before the next lap's
        // push overwrites it.
        x.seq.store(pos + mask_ + 1, std::memory_order_release);
        return true;
    }

    // True when some push has claimed a position that no pop has taken,
    // written or not.  seq_cst: the consumer's half of the drain hand-off.
    bool busy() const noexcept {
        // seq_cst (both): read after the drainer's seq_cst decrement.
        return tail_.load(std::memory_order_seq_cst) !=
               head_.load(std::memory_order_seq_cst);
    }

private:
    struct alignas(16) cell {
        std::atomic<std::size_t> seq;
        cookie_t cookie;
    };

    const std::size_t mask_;
    std::unique_ptr<cell[]> cells_;
    alignas(64) std::atomic<std::size_t> tail_{0};  // next push position
    alignas(64) std::atomic<std::size_t> head_{0};  // next pop position
};

}  // namespace kasync::detail
