// The "seed design": the kernel's async algorithm as its SPEC describes it,
// ported naively to user space.  It is a baseline for kasync-bench, not part
// of the library.  Written from docs/SPEC.md's description only.
//
//  - one global mutex guards everything: the cookie counter, every domain's
//    pending list, the list of all registered domains' calls, and the work
//    queue;
//  - a pending call is a heap-allocated entry linked (in cookie order) into
//    its domain's list and, for a registered domain, into the global list;
//  - lowest-in-progress is the head of the relevant list;
//  - every completion takes the mutex, unlinks its entry and wakes every
//    waiter (notify_all on one condition variable); waiters re-check;
//  - a fixed number of worker threads take calls from one FIFO queue.
//
// The queue is filled under the same mutex that hands out cookies, so workers
// dequeue in cookie order; a call that waits for its own cookie therefore
// only waits for calls that some other worker is already running, and the
// canonical self-synchronising pattern cannot deadlock even with fixed
// workers.
//
// SPDX-License-Identifier: MIT
#ifndef KASYNC_BENCH_SEED_DESIGN_HPP
#define KASYNC_BENCH_SEED_DESIGN_HPP

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

namespace seed {

using cookie_t = std::uint64_t;
inline constexpr cookie_t cookie_max = UINT64_MAX;

using func_t = void (*)(void* data, cookie_t cookie);

struct entry;

// A pending-call list (intrusive, doubly linked, ordered by cookie because
// cookies are handed out under the lock and appended at the tail).
struct list {
    entry* head = nullptr;
    entry* tail = nullptr;
};

class scheduler;

class domain {
public:
    explicit domain(bool registered = true) : registered_(registered) {}
    domain(const domain&) = delete;
    domain& operator=(const domain&) = delete;
    bool registered() const { return registered_; }

private:
    friend class scheduler;
    list pending_;
    bool registered_;
};

struct statistics {
    std::uint64_t scheduled = 0;
    std::uint64_t completed = 0;
    std::uint64_t notifies = 0;        // notify_all calls (one per completion)
    std::uint64_t waits = 0;           // synchronize calls
    std::uint64_t waits_slept = 0;     // ... that blocked at least once
    std::uint64_t wakeups = 0;         // returns from condition_variable::wait
    std::uint64_t futile_wakeups = 0;  // ... with the condition still false
};

class scheduler {
public:
    explicit scheduler(unsigned threads);
    ~scheduler();  // runs every queued call, then joins the workers
    scheduler(const scheduler&) = delete;
    scheduler& operator=(const scheduler&) = delete;

    // Takes the next cookie, records the call as pending and queues it.
    cookie_t schedule(func_t f, void* data, domain* d = nullptr);

    // Returns once no call of d (nullptr: of every registered domain) below
    // c is pending.
    void synchronize_cookie(cookie_t c, domain* d);
    void synchronize_cookie(cookie_t c) { synchronize_cookie(c, &default_); }
    void synchronize_full(domain* d = nullptr) { synchronize_cookie(cookie_max, d); }

    cookie_t lowest_in_progress(domain* d);
    domain& default_domain() { return default_; }
    statistics stats();

private:
    cookie_t lowest_locked(const domain* d) const;
    void worker();

    std::mutex lock_;                   // the one global lock
    std::condition_variable done_;      // woken on every completion
    std::condition_variable work_;      // workers sleep here
    cookie_t next_cookie_ = 1;
    list global_;                       // calls of every registered domain
    domain default_{true};
    entry* queue_head_ = nullptr;       // FIFO of calls not yet started
    entry* queue_tail_ = nullptr;
    bool stop_ = false;
    statistics stats_;
    std::vector<std::thread> workers_;
};

}  // namespace seed

#endif
