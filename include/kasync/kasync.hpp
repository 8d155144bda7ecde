// kasync — C++20 API.
//
// A scheduler runs calls out of order on oneTBB arenas (one per NUMA node)
// and gives each a cookie from one counter.  A wait for cookie c returns
// once no call of its domain below c is pending, so a call can do its slow
// part in parallel and its visible step in cookie order:
//
//     kasync::scheduler s;
//     for (auto& dev : devices)
//         s.schedule([&dev, &s](kasync::cookie_t c) {
//             dev.probe();                 // in parallel
//             s.synchronize_cookie(c);     // every earlier call is done
//             dev.register_in_order();     // in cookie order
//         });
//     s.synchronize_full();
//
// The C API of <kasync/kasync.h> is this library's default scheduler.
//
// SPDX-License-Identifier: MIT
#ifndef KASYNC_KASYNC_HPP
#define KASYNC_KASYNC_HPP

#include <kasync/kasync.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

namespace kasync {

using cookie_t = kasync_cookie_t;
inline constexpr cookie_t cookie_max = KASYNC_COOKIE_MAX;
inline constexpr int any_node = KASYNC_NUMA_NO_NODE;

class scheduler;
class domain;

enum class domain_kind {
    registered,  // part of "all registered domains"
    exclusive,   // waited for only by name
};

/// Which CPUs belong to which NUMA node.  Index = node number.
struct KASYNC_API topology {
    std::vector<std::vector<int>> node_cpus;

    /// Parses KASYNC_TOPOLOGY's form "0:0-3;1:4-7" (node:cpu list, cpus as
    /// numbers or ranges separated by ','); nodes must be 0..n-1, each with
    /// at least one CPU and no CPU in two nodes.  Blanks around items and
    /// empty items (";;", a trailing ';') are ignored.  On error: nullopt,
    /// and *error says why.
    static std::optional<topology> parse(std::string_view spec,
                                         std::string* error = nullptr);

    /// libnuma's view, restricted to the CPUs this process may use; one node
    /// of every allowed CPU when libnuma reports no NUMA or is forbidden.
    static topology detect();

    std::size_t nodes() const noexcept { return node_cpus.size(); }
};

/// What the error handler receives when a call throws.
struct call_error {
    cookie_t cookie;
    std::string_view name;       // the call's name, or its symbol or type
    std::exception_ptr exception;
};

/// One finished call, as the trace sink receives it (times: steady clock ns).
struct call_record {
    cookie_t cookie;
    std::string_view name;
    int node;                    // node it was asked for, or any_node
    int thread;                  // kernel thread id that ran it
    std::uint64_t start_ns, end_ns;
    bool in_caller;              // ran in the scheduling thread (fallback)
};

// Every member has an initializer, `{}` included, so that designated
// initializers such as options{.threads = 8} compile cleanly under GCC 12's
// -Wextra (-Wmissing-field-initializers).
struct KASYNC_API options {
    unsigned threads = 0;              // 0: hardware threads
    std::size_t max_pending = 32768;   // beyond it calls run in the caller
    std::optional<topology> topo{};    // empty: topology::detect()
    bool pin = true;                   // pin arena threads to node CPUs
    bool debug = false;                // initcall_debug-style lines on stderr
    std::string trace_path{};          // Chrome trace JSON written at shutdown
    /// Microseconds a waiter next in line pauses and yields before it
    /// sleeps (the others: an eighth).  0: the default, 64.
    unsigned spin_us = 0;
    /// Called (on the thread that ran the call) when a call throws.  Empty:
    /// one line on stderr.  The exception is also counted in statistics.
    std::function<void(const call_error&)> on_error{};
    /// Called for every finished call when set (tracing hook); must be fast
    /// and thread-safe.
    std::function<void(const call_record&)> on_call{};

    /// The defaults overridden by KASYNC_THREADS, KASYNC_MAX_PENDING,
    /// KASYNC_TOPOLOGY, KASYNC_DEBUG and KASYNC_TRACE.  A bad value prints
    /// one line naming the variable on stderr (on every call) and keeps the
    /// default.
    static options from_environment();
};

/// Counters since the scheduler started.  Read without stopping anything,
/// so fields may disagree by calls in flight.
struct statistics {
    std::uint64_t scheduled = 0;        // cookies issued
    std::uint64_t completed = 0;        // calls returned or thrown
    std::uint64_t ran_in_caller = 0;    // fallback runs (limit, memory, stop)
    std::uint64_t refused = 0;          // nocall / try_schedule returned 0
    std::uint64_t pending = 0;          // now
    std::uint64_t peak_pending = 0;
    std::uint64_t exceptions = 0;
    std::uint64_t waits = 0;            // synchronize calls that had to wait
                                        // (a wait already satisfied on entry
                                        // is one load and is not counted)
    std::uint64_t waits_slept = 0;      // ... of those, went to sleep
    std::uint64_t wait_ns = 0;          // time spent in waits that blocked
    std::uint64_t wakeups = 0;          // futex wakes sent to waiters
    std::uint64_t futile_wakeups = 0;   // woken with the condition false
    std::uint64_t deadlocks = 0;        // waits refused with -EDEADLK
    std::uint64_t timeouts = 0;
    std::uint64_t helped = 0;           // calls a waiting worker ran itself
    std::uint64_t spare_runs = 0;       // calls run by compensating threads
    std::uint64_t displaced = 0;        // calls moved to the overflow table
    std::uint64_t drain_tasks = 0;      // oneTBB tasks started to run queued
                                        // calls (a stream needs few)
    std::uint64_t queue_full = 0;       // calls dispatched as a task of their
                                        // own: their arena's queue was full
};

/// Where and how to run one call.
struct call_options {
    const domain* in = nullptr;        // nullptr: the default domain
    int node = any_node;
    const char* name = nullptr;        // must outlive the call (a literal)
};

namespace detail {

class engine;

// Type erasure for calls.  A callable lives in a slot's inline storage when
// it fits and moves without throwing; otherwise it is boxed on the heap.
inline constexpr std::size_t inline_capacity = 32;

struct call_ops {
    void (*move_to)(void* dst, void* src) noexcept;  // move-construct at dst
    void (*invoke)(void* obj, cookie_t c);           // may throw
    void (*destroy)(void* obj) noexcept;
    const void* (*symbol)(const void* obj) noexcept; // for dladdr, or null
    const std::type_info* type;
};

template <class F>
void invoke_with_cookie(F& f, cookie_t c) {
    if constexpr (std::is_invocable_v<F&, cookie_t>)
        std::invoke(f, c);
    else
        std::invoke(f);
}

template <class F>
struct boxed {
    std::unique_ptr<F> f;
    void operator()(cookie_t c) { invoke_with_cookie(*f, c); }
};

template <class F>
inline constexpr bool fits_inline =
    sizeof(F) <= inline_capacity && alignof(F) <= alignof(std::max_align_t) &&
    std::is_nothrow_move_constructible_v<F>;

template <class F>
const call_ops* ops_for() noexcept {
    static_assert(fits_inline<F>);
    static constexpr call_ops ops{
        [](void* dst, void* src) noexcept {
            ::new (dst) F(std::move(*static_cast<F*>(src)));
        },
        [](void* obj, cookie_t c) { invoke_with_cookie(*static_cast<F*>(obj), c); },
        [](void* obj) noexcept { static_cast<F*>(obj)->~F(); },
        [](const void* obj) noexcept -> const void* {
            if constexpr (std::is_pointer_v<F> &&
                          std::is_function_v<std::remove_pointer_t<F>>)
                return reinterpret_cast<const void*>(*static_cast<const F*>(obj));
            else
                return nullptr;
        },
        &typeid(F),
    };
    return &ops;
}

}  // namespace detail

/// A scheduler: worker arenas, a cookie counter, domains.
class KASYNC_API scheduler {
public:
    explicit scheduler(options opts = {});
    ~scheduler();  // shutdown(), then frees everything
    scheduler(const scheduler&) = delete;
    scheduler& operator=(const scheduler&) = delete;

    /// The process-wide scheduler behind the C API.
    static scheduler& default_instance();

    /// Queue f (callable as f(cookie) or f()) and return its cookie.  Falls
    /// back to running f in the caller beyond the pending limit or after
    /// shutdown(); returns 0 without running f for a foreign or destroyed
    /// domain.  An exception from f goes to the error handler.
    template <class F>
    cookie_t schedule(F&& f, const call_options& o = {}) {
        return submit_callable(std::forward<F>(f), o, false);
    }

    /// As schedule(), but never runs f in the caller: returns 0 (and takes
    /// no cookie) when the call cannot be queued.
    template <class F>
    cookie_t try_schedule(F&& f, const call_options& o = {}) {
        return submit_callable(std::forward<F>(f), o, true);
    }

    /// Waits: 0, -EDEADLK, -ETIMEDOUT, -EINVAL (see <kasync/kasync.h>).
    int synchronize_cookie(cookie_t c);                       // default domain
    int synchronize_cookie(cookie_t c, const domain& d);
    int synchronize_cookie_all(cookie_t c);                   // all registered
    int synchronize_full();                                   // all registered
    int synchronize_full(const domain& d);

    template <class Rep, class Period>
    int synchronize_cookie(cookie_t c, const domain& d,
                           std::chrono::duration<Rep, Period> timeout) {
        return wait_for_ns(c, &d, to_ns(timeout));
    }
    template <class Rep, class Period>
    int synchronize_cookie_all(cookie_t c,
                               std::chrono::duration<Rep, Period> timeout) {
        return wait_for_ns(c, nullptr, to_ns(timeout));
    }
    template <class Rep, class Period>
    int synchronize_full(const domain& d,
                         std::chrono::duration<Rep, Period> timeout) {
        return wait_for_ns(cookie_max, &d, to_ns(timeout));
    }
    template <class Rep, class Period>
    int synchronize_full(std::chrono::duration<Rep, Period> timeout) {
        return wait_for_ns(cookie_max, nullptr, to_ns(timeout));
    }

    cookie_t lowest_in_progress() const;                      // all registered
    cookie_t lowest_in_progress(const domain& d) const;

    domain& default_domain() noexcept;

    /// Run every pending call, stop the workers: 0 (idempotent), -EDEADLK
    /// from inside a call of this scheduler.
    int shutdown();

    statistics stats() const;
    unsigned threads() const noexcept;
    std::size_t nodes() const noexcept;

    detail::engine& impl() noexcept { return *engine_; }

private:
    friend class domain;

    template <class Rep, class Period>
    static std::uint64_t to_ns(std::chrono::duration<Rep, Period> t) {
        auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t).count();
        return ns < 0 ? 0 : static_cast<std::uint64_t>(ns);
    }

    template <class F>
    cookie_t submit_callable(F&& f, const call_options& o, bool nocall) {
        using Fn = std::decay_t<F>;
        if constexpr (detail::fits_inline<Fn>) {
            Fn local(std::forward<F>(f));
            return submit(detail::ops_for<Fn>(), &local, o, nocall);
        } else {
            detail::boxed<Fn> local{std::make_unique<Fn>(std::forward<F>(f))};
            return submit(detail::ops_for<detail::boxed<Fn>>(), &local, o,
                          nocall);
        }
    }

    // Takes the callable at obj (moving from it, or running it in place).
    cookie_t submit(const detail::call_ops* ops, void* obj,
                    const call_options& o, bool nocall);
    int wait_for_ns(cookie_t c, const domain* d, std::uint64_t timeout_ns);

    std::unique_ptr<detail::engine> engine_;
    std::unique_ptr<domain> default_domain_;
};

/// A domain, destroyed (after waiting until it is empty) with the object.
class KASYNC_API domain {
public:
    explicit domain(scheduler& s, domain_kind kind = domain_kind::registered);
    ~domain();
    domain(domain&& other) noexcept;
    domain& operator=(domain&& other) noexcept;
    domain(const domain&) = delete;
    domain& operator=(const domain&) = delete;

    /// Take this idle registered domain out of "all": 0, -EBUSY, -EINVAL.
    int unregister();
    /// Wait until empty and release now: 0, -EDEADLK, -EINVAL.
    int destroy();

    cookie_t lowest_in_progress() const;
    bool registered() const;
    scheduler& owner() const noexcept { return *sched_; }

    /// The C handle (use it with the C API only for the default scheduler).
    kasync_domain* handle() const noexcept { return handle_; }

private:
    friend class scheduler;
    domain(scheduler& s, kasync_domain* adopted) noexcept;

    scheduler* sched_ = nullptr;
    kasync_domain* handle_ = nullptr;
    bool owned_ = true;
};

/// Managed blocking: while alive on a worker thread, the pool keeps running
/// queued calls on a spare thread.  Use it around any blocking that is not a
/// kasync wait.
class blocking_region {
public:
    blocking_region() noexcept { kasync_blocking_begin(); }
    ~blocking_region() { kasync_blocking_end(); }
    blocking_region(const blocking_region&) = delete;
    blocking_region& operator=(const blocking_region&) = delete;
};

/// True on a worker thread while it runs a scheduled call.
inline bool current_is_async() noexcept { return kasync_current_is_async(); }

/// The cookie of the call this thread is running, or 0.
KASYNC_API cookie_t current_cookie() noexcept;

}  // namespace kasync

#endif  // KASYNC_KASYNC_HPP
