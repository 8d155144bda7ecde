// The kasync engine: cookies, pending sets, waits, workers.
//
// Theory of operation
// -------------------
// A cookie is the position of a call in one total order, taken from one
// atomic counter (`next_`).  Calls run out of order; a wait for cookie c on
// a set S (a domain, "all registered domains" or "everything") returns once
// no member of S below c is pending.  So each call can do its slow part in
// parallel and its visible step after waiting for its own cookie: the
// visible steps happen in cookie order, like an out-of-order CPU retiring
// in order.
//
// The ring.  Cookie c lives in slot c % W of a ring of W slots (W a power
// of two, at least the pending limit).  A slot's 64-bit tag says at once
// which cookie it holds (its lap, c / W), which domain the call belongs to,
// whether that domain is registered, and the call's state
// (queued, claimed, running, done).  One atomic load of a tag tells a
// scanner everything it needs about cookie c, so "is any member of S below
// c pending?" is a walk over tags that never takes a lock.
//
// Closing the publication window.  Taking a cookie and writing its tag are
// two steps.  A scanner that reaches a slot still showing an older lap knows
// cookie c was taken but not yet published and waits for it: an unpublished
// cookie is pending (SCENARIOS 21).  Each set also counts its pending calls,
// and a call is counted *before* its cookie is taken, so a set whose count
// is zero has no member below the counter: that is the O(1) answer for an
// empty set, and it is what lets a frontier jump ahead.
//
// Frontiers.  Each set keeps a frontier: every member cookie below it is
// complete.  lowest_in_progress(S) advances the frontier over done and
// foreign slots and stops at the first pending member; the frontier only
// moves forward, so every slot is walked once per set (amortised O(1) per
// call for a call's own domain; a set pays for foreign cookies it skips).
//
// Displacement.  A call can stay pending while W later cookies are taken
// (one slow call among many fast ones).  The publisher of cookie c + W then
// finds slot c % W still pending: it moves c's record to a small locked
// overflow table and takes the slot.  Scanners that find a newer lap than
// they expect look in the table when it is not empty.  This is the only
// lock near the ordering core, and it is taken only on that rare path.
//
// Waiting.  A waiter spins briefly, then registers in its set's waiter list
// and sleeps on its own futex word.  A completion that sees sleepers in its
// set computes the set's new lowest and wakes exactly the waiters whose
// target it reached; a completion in another set never touches them
// (SCENARIOS 23).  The waiter's "register, fence, re-check" and the
// completer's "publish done, fence, look for sleepers" are a Dekker pair:
// one of the two always sees the other (no lost wake-up, SCENARIOS 22).
//
// Dispatch.  submit() hands the cookie to placement (placement.hpp): a
// per-arena queue of cookies and a few drain tasks, not a task per call.
// The call itself stays in its slot; whoever claims the slot first (a
// drainer, a waiting worker, a spare) runs it, and the others skip it.
//
// Forward progress.  A waiting worker first runs, itself, every queued
// member below its target (claiming a call is one CAS on its tag, so every
// call still runs exactly once).  Helping only ever runs lower cookies, so
// nested helping cannot form a cycle.  A worker that must sleep, or that
// user code declares blocked (kasync_blocking_begin), lends its place to a
// spare thread that keeps running queued calls (SCENARIOS 18-19).
//
// SPDX-License-Identifier: MIT
#pragma once

#include <kasync/kasync.hpp>

#include "futex.hpp"

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace kasync::detail {

// ---- slot tags ------------------------------------------------------------
//
//   63                      24 23              4   3    2..0
//   [ lap (40 bits)          ][ domain id (20) ][reg][state]

enum call_state : std::uint64_t {
    st_queued = 1,   // waiting for a worker
    st_claimed = 2,  // a runner is moving the callable out of the slot
    st_running = 3,
    st_done = 4,
};

inline constexpr unsigned lap_shift = 24;
inline constexpr std::uint64_t lap_mask = (std::uint64_t{1} << 40) - 1;
inline constexpr unsigned id_bits = 20;
inline constexpr std::uint32_t max_domains = 1u << id_bits;

inline constexpr std::uint64_t make_tag(std::uint64_t lap, std::uint32_t id,
                                        bool reg, std::uint64_t state) {
    return ((lap & lap_mask) << lap_shift) | (std::uint64_t{id} << 4) |
           (std::uint64_t{reg} << 3) | state;
}
inline constexpr std::uint64_t tag_lap(std::uint64_t t) { return t >> lap_shift; }
inline constexpr std::uint32_t tag_id(std::uint64_t t) {
    return static_cast<std::uint32_t>((t >> 4) & (max_domains - 1));
}
inline constexpr bool tag_reg(std::uint64_t t) { return (t >> 3) & 1; }
inline constexpr std::uint64_t tag_state(std::uint64_t t) { return t & 7; }
inline constexpr std::uint64_t with_state(std::uint64_t t, std::uint64_t s) {
    return (t & ~std::uint64_t{7}) | s;
}

// Signed distance from lap b to lap a, modulo 2^40.
inline std::int64_t lap_diff(std::uint64_t a, std::uint64_t b) {
    std::uint64_t d = (a - b) & lap_mask;
    return d & (std::uint64_t{1} << 39) ? static_cast<std::int64_t>(d) -
                                              (std::int64_t{1} << 40)
                                        : static_cast<std::int64_t>(d);
}

// One cookie's record: a cache line.  Every field but `tag` is written by
// the publisher before the release that publishes the tag, and read only by
// the thread that claims the slot with a CAS on the tag.
struct alignas(64) slot {
    std::atomic<std::uint64_t> tag;
    const char* name;
    const call_ops* ops;
    std::int32_t node;
    std::uint32_t pad;
    alignas(8) unsigned char storage[inline_capacity];
};
static_assert(sizeof(slot) == 64);

// A record moved out of the ring (see "Displacement").
struct overflow_call {
    std::uint64_t tag;  // lap of the cookie, id, reg, state
    const char* name;
    const call_ops* ops;
    int node;
    alignas(8) unsigned char storage[inline_capacity];
};

// ---- pending sets and their waiters --------------------------------------

struct waiter {
    waiter* next = nullptr;
    waiter* prev = nullptr;
    cookie_t target = 0;
    std::atomic<std::uint32_t> word{0};  // 1 once woken with target reached
};

enum class set_kind { domain, registered, all };

// A set of calls that can be waited for.  `word` packs the pending count
// (low bits) with flags for domains; the count includes calls whose cookie
// is about to be taken.
struct pending_set {
    static constexpr std::uint64_t count_mask = (std::uint64_t{1} << 24) - 1;
    static constexpr std::uint64_t reg_bit = std::uint64_t{1} << 24;
    static constexpr std::uint64_t dead_bit = std::uint64_t{1} << 25;
    static constexpr unsigned gen_shift = 26;

    set_kind kind = set_kind::domain;
    std::uint32_t id = 0;                       // immutable while alive
    std::atomic<std::uint64_t> word{0};         // count | reg | dead | gen
    std::atomic<cookie_t> frontier{1};          // members below: complete

    std::mutex wait_mu;                         // guards `waiters`
    waiter* waiters = nullptr;                  // under wait_mu
    std::atomic<std::uint32_t> sleepers{0};     // written under wait_mu

    bool member(std::uint64_t tag) const {
        switch (kind) {
        case set_kind::domain: return tag_id(tag) == id;
        case set_kind::registered: return tag_reg(tag);
        case set_kind::all: return true;
        }
        return false;
    }
    std::uint64_t pending() const {
        // seq_cst: pairs with the seq_cst increments made before a cookie is
        // taken; see engine::lowest().
        return word.load(std::memory_order_seq_cst) & count_mask;
    }
};

// The frame of the call a thread is running (nested when a waiting worker
// helps, or when a call falls back to running inline).
struct call_frame {
    const engine* owner;
    cookie_t cookie;
    std::uint32_t domain_id;
    bool registered;
    call_frame* outer;
};

class placement;  // arenas and pinning, placement.cpp
class tracer;     // debug lines and trace events, trace.cpp

class engine {
public:
    explicit engine(options opts);
    ~engine();

    cookie_t submit(const call_ops* ops, void* obj, const call_options& o,
                    bool nocall, std::uint32_t domain_id, std::uint64_t gen);

    // Waits: set nullptr means all registered domains.
    int wait(pending_set* s, cookie_t target, std::uint64_t timeout_ns);
    // The lowest pending member of s, or cookie_max.  Lock-free: a cookie
    // whose publication takes too long is reported as it is (a lower bound)
    // and *unpublished is set; unless patient, when it waits for it.
    cookie_t lowest(pending_set& s, bool* unpublished = nullptr,
                    bool patient = false);

    // Domains.  Handles are (generation, id); see c_api.cpp for the encoding.
    bool create_domain(bool exclusive, std::uint32_t* id, std::uint64_t* gen);
    int destroy_domain(std::uint32_t id, std::uint64_t gen);
    int unregister_domain(std::uint32_t id, std::uint64_t gen);
    pending_set* find_domain(std::uint32_t id, std::uint64_t gen) const;
    bool domain_registered(std::uint32_t id, std::uint64_t gen) const;

    pending_set& registered_set() noexcept { return registered_; }
    pending_set& default_set() noexcept { return *default_set_; }
    pending_set& all_set() noexcept { return all_; }

    int shutdown();
    statistics stats() const;
    unsigned threads() const noexcept { return threads_; }
    std::size_t nodes() const noexcept;
    std::uint32_t serial() const noexcept { return serial_; }
    std::uint64_t default_gen() const noexcept { return default_gen_; }

    // Managed blocking, for the current thread.
    void blocking_begin();
    void blocking_end();

    // Run by an arena task: runs cookie c unless someone already did.
    void run_cookie(cookie_t c) noexcept;

    bool in_call_of(const pending_set* s, cookie_t target) const;
    bool in_any_call() const noexcept;

private:
    struct counters;

    slot& slot_of(cookie_t c) noexcept { return ring_[c & mask_]; }
    std::uint64_t lap_of(cookie_t c) const noexcept { return c >> ring_bits_; }

    void publish(cookie_t c, std::uint64_t tag, const call_ops* ops, void* obj,
                 const call_options& o) noexcept;
    bool displace(slot& s, cookie_t old_cookie, std::uint64_t ours) noexcept;
    bool overflow_state(cookie_t c, std::uint64_t* tag);
    void run_overflow(cookie_t c) noexcept;
    void execute(cookie_t c, std::uint64_t tag, const call_ops* ops, void* obj,
                 const char* name, int node, bool in_caller) noexcept;
    void complete(cookie_t c, std::uint64_t tag) noexcept;
    bool try_run(cookie_t c, std::uint64_t queued_tag) noexcept;
    void report_exception(cookie_t c, std::string_view name,
                          std::exception_ptr e) noexcept;
    bool reached(pending_set& s, cookie_t target, bool* unpublished = nullptr);
    bool next_in_line(pending_set& s, cookie_t target);
    int sleep_until_reached(pending_set& s, cookie_t target,
                            std::uint64_t timeout_ns);
    void unlink(pending_set& s, waiter& w) noexcept;
    void wake_reached(pending_set& s);
    bool help(pending_set& s, cookie_t target);
    bool run_one_queued();
    void spare_main();
    void poke_spares();
    pending_set* domain_slot(std::uint32_t id) const;

    const unsigned ring_bits_;
    const cookie_t mask_;
    std::unique_ptr<slot[]> ring_;
    alignas(64) std::atomic<cookie_t> next_{1};

    options opts_;
    unsigned threads_ = 1;
    std::uint32_t serial_;
    std::uint64_t default_gen_ = 0;
    pending_set* default_set_ = nullptr;  // immutable after construction
    std::uint64_t spin_ns_;  // a wait's budget before it sleeps (see wait())

    pending_set all_;         // every call; its count enforces the limit
    pending_set registered_;  // calls of registered domains

    // Domain table: chunks of pending sets, never freed before the engine,
    // so a stale handle can be checked without a use-after-free.
    static constexpr std::uint32_t chunk_bits = 10;
    mutable std::mutex domains_mu_;                     // create/destroy
    std::unique_ptr<std::atomic<pending_set*>[]> chunks_[max_domains >> chunk_bits];
    std::vector<std::uint32_t> free_ids_;                // under domains_mu_
    std::uint32_t next_id_ = 1;                          // under domains_mu_

    std::mutex overflow_mu_;
    std::map<cookie_t, overflow_call> overflow_;          // under overflow_mu_
    std::atomic<std::uint64_t> overflow_count_{0};

    std::unique_ptr<placement> placement_;
    std::unique_ptr<tracer> tracer_;
    std::unique_ptr<counters> counters_;

    std::atomic<bool> stopped_{false};
    std::mutex shutdown_mu_;

    // Spare threads (managed blocking).
    std::atomic<int> blocked_{0};          // workers blocked right now
    std::atomic<int> active_spares_{0};    // spares running calls right now
    std::atomic<std::uint32_t> spare_seq_{0};
    std::atomic<bool> spares_stop_{false};
    std::atomic<cookie_t> spare_cursor_{1};
    std::mutex spares_mu_;
    std::vector<std::thread> spares_;      // under spares_mu_
    std::atomic<int> idle_spares_{0};
};

// Thread-local state of the calling thread.
struct thread_state {
    call_frame* frame = nullptr;      // innermost call being run here
    const engine* worker_of = nullptr;  // set while a worker runs our tasks
    int blocking_depth = 0;
};
thread_state& this_thread_state() noexcept;

// The kernel thread id, for debug lines and traces.
int current_tid() noexcept;
std::uint64_t now_ns() noexcept;

}  // namespace kasync::detail
