// fuzz_api: the input bytes are a small program run against a fresh
// scheduler; an oracle checks the contract after every operation.
//
// Program:  [threads] [pending limit] [flags] then operations, each an
// opcode byte and argument bytes (missing bytes read as 0).  Three domains:
// the default one, a registered one (which may be unregistered, destroyed
// and re-created) and an exclusive one.  Calls may self-synchronise, block
// on a gate (bounded), schedule nested calls, throw, or wait from inside on
// their own domain (where -EDEADLK is expected exactly when the wait
// includes a call running on this thread).
//
// The oracle:
//   - a wait (or lowest_in_progress) that says "nothing below t" left no
//     known member below t unfinished, among cookies issued before it began;
//   - -EDEADLK exactly when the wait includes a call on the waiting thread;
//   - every issued cookie ran exactly once, refused calls never ran;
//   - statistics add up (scheduled, completed, refused, exceptions).
// Nothing can hang: gates open by themselves after a few milliseconds, and
// waits that could depend on a closed gate are timed.
//
// SPDX-License-Identifier: MIT
#include <kasync/kasync.hpp>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <stdexcept>
#include <thread>
#include <vector>

namespace {

using kasync::cookie_t;

constexpr cookie_t max_tracked = 8192;
constexpr int max_ops = 200;

[[noreturn]] void violation(const char* what, unsigned long long a = 0,
                            unsigned long long b = 0) {
    std::fprintf(stderr, "fuzz_api: contract violated: %s (%llu, %llu)\n", what, a, b);
    std::abort();
}

struct input {
    const std::uint8_t* p;
    std::size_t n;
    std::uint8_t byte() { return n ? (--n, *p++) : 0; }
    bool done() const { return n == 0; }
};

// What the oracle knows of one cookie.  `instance` names the domain the
// call belongs to (0 default, 1.. registered instances, 1000 exclusive).
struct record {
    std::atomic<int> runs{0};
    std::atomic<bool> finished{false};
    std::atomic<int> instance{-1};     // -1: not known yet
    std::atomic<bool> registered{false};
};

constexpr int default_instance = 0;
constexpr int exclusive_instance = 1000;
constexpr int all_registered = -2;

struct frame {
    cookie_t cookie;
    int instance;
    bool registered;
};
thread_local std::vector<frame> frames;  // fuzz calls running on this thread

struct world {
    std::unique_ptr<kasync::scheduler> sched;
    std::optional<kasync::domain> reg;       // registered (may be unregistered)
    std::optional<kasync::domain> excl;
    int reg_instance = 1;
    bool reg_registered = true;
    std::array<record, max_tracked> rec;
    std::atomic<cookie_t> max_issued{0};
    std::atomic<std::uint64_t> refused{0};
    std::atomic<std::uint64_t> thrown{0};
    std::atomic<std::uint64_t> errors_seen{0};
    std::atomic<bool> gate_open{false};
    std::thread::id driver = std::this_thread::get_id();

    kasync::domain* domain_of(int which) {
        switch (which % 3) {
        case 1: return &*reg;
        case 2: return &*excl;
        default: return &sched->default_domain();
        }
    }
    int instance_of(int which) const {
        switch (which % 3) {
        case 1: return reg_instance;
        case 2: return exclusive_instance;
        default: return default_instance;
        }
    }
    bool registered_of(int which) const {
        return which % 3 == 0 || (which % 3 == 1 && reg_registered);
    }

    void note(cookie_t c, int instance, bool registered) {
        if (c == 0 || c >= max_tracked)
            return;
        rec[c].instance.store(instance, std::memory_order_relaxed);
        rec[c].registered.store(registered, std::memory_order_relaxed);
        cookie_t m = max_issued.load(std::memory_order_relaxed);
        while (m < c && !max_issued.compare_exchange_weak(m, c)) {
        }
    }

    static bool member(int set, int instance, bool registered) {
        return set == all_registered ? registered : set == instance;
    }

    // Nothing of `set` below target may be unfinished, among cookies
    // issued before the wait began (snapshot).
    void check_nothing_below(int set, cookie_t target, cookie_t snapshot) {
        cookie_t end = std::min<cookie_t>(target, snapshot + 1);
        end = std::min<cookie_t>(end, max_tracked);
        for (cookie_t c = 1; c < end; ++c) {
            int inst = rec[c].instance.load(std::memory_order_relaxed);
            if (inst < 0)
                continue;  // issued by a call the wait does not cover: unknown
            if (member(set, inst, rec[c].registered.load(std::memory_order_relaxed)) &&
                !rec[c].finished.load(std::memory_order_acquire))
                violation("a wait returned with a lower cookie pending", c, target);
        }
    }

    bool expect_deadlock(int set, cookie_t target) const {
        for (const frame& f : frames)
            if (f.cookie < target && member(set, f.instance, f.registered))
                return true;
        return false;
    }
};

// A call's behaviour, packed in the callable (it must fit 32 bytes).
struct call {
    world* w;
    std::uint8_t kind, arg;
    std::uint8_t which;     // domain index it was scheduled in
    int instance;
    bool registered;

    void operator()(cookie_t c) const;
};
static_assert(sizeof(call) <= 32);

// Schedule a call into domain `which`, whose instance and registration the
// caller states (a call nesting into its own domain passes its own).
cookie_t schedule_in(world& w, std::uint8_t kind, std::uint8_t arg,
                     std::uint8_t which, int instance, bool registered,
                     bool nocall, int node) {
    kasync::domain* d = w.domain_of(which);
    call body{&w, kind, arg, std::uint8_t(which % 3), instance, registered};
    kasync::call_options o{.in = d, .node = node, .name = "fuzz"};
    cookie_t c = nocall ? w.sched->try_schedule(body, o) : w.sched->schedule(body, o);
    if (c == 0) {
        if (!nocall)
            violation("schedule returned 0 for a live domain");
        w.refused.fetch_add(1, std::memory_order_relaxed);
        return 0;
    }
    w.note(c, body.instance, body.registered);
    return c;
}

cookie_t schedule_one(world& w, std::uint8_t kind, std::uint8_t arg,
                      std::uint8_t which, bool nocall, int node) {
    return schedule_in(w, kind, arg, which, w.instance_of(which),
                       w.registered_of(which), nocall, node);
}

void call::operator()(cookie_t c) const {
    world& wd = *w;
    if (c < max_tracked) {
        if (wd.rec[c].runs.fetch_add(1, std::memory_order_relaxed) != 0)
            violation("a call ran twice", c);
        wd.note(c, instance, registered);
    }
    frames.push_back({c, instance, registered});
    struct pop {
        ~pop() { frames.pop_back(); }
    } popper;
    // 0 in a fallback run by the driver (a plain thread), 1 on workers.
    if (kasync::current_is_async() == (std::this_thread::get_id() == wd.driver))
        violation("current_is_async() is wrong", c);
    switch (kind % 6) {
    case 0:
        break;
    case 1: {  // self-synchronise on the own domain, then "commit"
        kasync::domain* d = wd.domain_of(which);
        int r = wd.sched->synchronize_cookie(c, *d, std::chrono::milliseconds(50));
        bool dl = wd.expect_deadlock(instance, c);
        if (dl ? r != -EDEADLK : (r != 0 && r != -ETIMEDOUT && r != -EINVAL))
            violation("self-synchronise gave a wrong result", c, cookie_t(-r));
        break;
    }
    case 2: {  // block on the gate, bounded
        kasync::blocking_region blocking;
        auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(5);
        while (!wd.gate_open.load(std::memory_order_acquire) &&
               std::chrono::steady_clock::now() < until)
            std::this_thread::yield();
        break;
    }
    case 3:  // a nested call, in this call's own domain (which outlives it)
        if (arg % 4 != 3)
            schedule_in(wd, std::uint8_t(arg & 1), 0, which, instance, registered,
                        arg & 2, -1);
        break;
    case 4:  // throw
        wd.thrown.fetch_add(1, std::memory_order_relaxed);
        if (c < max_tracked)
            wd.rec[c].finished.store(true, std::memory_order_release);
        throw std::runtime_error("fuzz call threw on purpose");
    case 5: {  // a wait from inside that includes this call
        kasync::domain* d = wd.domain_of(which);
        cookie_t target = c + 1 + arg % 4;
        int set = (arg & 16) ? all_registered : instance;
        int r = (arg & 16) ? wd.sched->synchronize_cookie_all(target, std::chrono::milliseconds(20))
                           : wd.sched->synchronize_cookie(target, *d, std::chrono::milliseconds(20));
        if (wd.expect_deadlock(set, target) != (r == -EDEADLK))
            violation("-EDEADLK not exactly when the wait includes this call", c, target);
        break;
    }
    }
    if (c < max_tracked)
        wd.rec[c].finished.store(true, std::memory_order_release);
}

void run_program(input in) {
    world w;
    unsigned threads = 1 + in.byte() % 3;
    std::size_t limit = 2 + in.byte() % 40;
    std::uint8_t flags = in.byte();
    kasync::options o;
    o.threads = threads;
    o.max_pending = limit;
    if (flags & 1)
        o.topo = kasync::topology::parse("0:0;1:1");
    o.on_error = [&w](const kasync::call_error&) {
        w.errors_seen.fetch_add(1, std::memory_order_relaxed);
    };
    w.sched = std::make_unique<kasync::scheduler>(std::move(o));
    w.reg.emplace(*w.sched, kasync::domain_kind::registered);
    w.excl.emplace(*w.sched, kasync::domain_kind::exclusive);

    for (int op = 0; op < max_ops && !in.done(); ++op) {
        std::uint8_t code = in.byte(), a = in.byte(), b = in.byte();
        cookie_t snapshot = w.max_issued.load();
        // Waits that a closed gate could hold are timed; gates open by
        // themselves within 5 ms, so 200 ms is ample.
        auto timeout = std::chrono::milliseconds(200);
        switch (code % 10) {
        case 0: case 1: case 2:
            if (a % 6 == 2)  // a gated call is never run in the driver
                schedule_one(w, a, b, code / 10, true, (b & 3) - 1);
            else
                schedule_one(w, a, b, code / 10, false, (b & 3) - 1);
            break;
        case 3:
            schedule_one(w, a, b, code / 10, true, -1);
            break;
        case 4: {  // synchronize_cookie on a domain or on all registered
            cookie_t base = snapshot ? 1 + b % snapshot : 1;
            cookie_t target = (a & 3) == 0 ? base : (a & 3) == 1 ? snapshot + 1
                              : (a & 3) == 2 ? snapshot : kasync::cookie_max;
            int set;
            int r;
            if (a & 4) {
                set = all_registered;
                r = w.sched->synchronize_cookie_all(target, timeout);
            } else {
                set = w.instance_of(a >> 3);
                r = w.sched->synchronize_cookie(target, *w.domain_of(a >> 3), timeout);
            }
            if (r == 0)
                w.check_nothing_below(set, target, snapshot);
            else if (r != -ETIMEDOUT)
                violation("a driver wait failed", cookie_t(-r), target);
            break;
        }
        case 5: {  // lowest_in_progress
            int set = (a & 4) ? all_registered : w.instance_of(a >> 3);
            cookie_t low = (a & 4) ? w.sched->lowest_in_progress()
                                   : w.domain_of(a >> 3)->lowest_in_progress();
            w.check_nothing_below(set, low, snapshot);
            break;
        }
        case 6: {  // unregister the registered domain
            int r = w.reg->unregister();
            if (r == 0) {
                if (!w.reg_registered)
                    violation("unregistered twice");
                w.reg_registered = false;
            } else if (r == -EINVAL) {
                if (w.reg_registered)
                    violation("unregister said -EINVAL for a registered domain");
            } else if (r != -EBUSY) {
                violation("unregister gave a wrong result", cookie_t(-r));
            }
            break;
        }
        case 7: {  // destroy and re-create the registered domain
            w.gate_open.store(true, std::memory_order_release);
            int inst = w.reg_instance;
            if (w.reg->destroy() != 0)
                violation("destroy of a live domain failed");
            w.check_nothing_below(inst, kasync::cookie_max, snapshot);
            w.reg.emplace(*w.sched, kasync::domain_kind::registered);
            ++w.reg_instance;
            w.reg_registered = true;
            w.gate_open.store(false, std::memory_order_release);
            break;
        }
        case 8:
            w.gate_open.store(a & 1, std::memory_order_release);
            break;
        case 9: {  // synchronize_full, bounded
            int set = (a & 4) ? all_registered : w.instance_of(a >> 3);
            int r = (a & 4) ? w.sched->synchronize_cookie_all(kasync::cookie_max, timeout)
                            : w.sched->synchronize_full(*w.domain_of(a >> 3), timeout);
            if (r == 0)
                w.check_nothing_below(set, kasync::cookie_max, snapshot);
            else if (r != -ETIMEDOUT)
                violation("synchronize_full failed", cookie_t(-r));
            break;
        }
        }
    }

    // Drain: open the gates, wait for everything, stop.
    w.gate_open.store(true, std::memory_order_release);
    if (w.sched->synchronize_full(*w.excl) != 0 || w.sched->synchronize_full(*w.reg) != 0 ||
        w.sched->synchronize_full() != 0)
        violation("final synchronize_full failed");
    if (w.sched->shutdown() != 0)
        violation("shutdown failed");

    cookie_t issued = w.max_issued.load();
    kasync::statistics st = w.sched->stats();
    if (st.scheduled < issued)
        violation("statistics: fewer scheduled than issued", st.scheduled, issued);
    if (st.completed != st.scheduled)
        violation("statistics: completed != scheduled", st.completed, st.scheduled);
    if (st.refused != w.refused.load())
        violation("statistics: refused", st.refused, w.refused.load());
    if (st.exceptions != w.thrown.load() || w.errors_seen.load() != w.thrown.load())
        violation("exceptions not all reported", st.exceptions, w.thrown.load());
    for (cookie_t c = 1; c <= st.scheduled && c < max_tracked; ++c)
        if (w.rec[c].runs.load() != 1)
            violation("a call did not run exactly once", c, cookie_t(w.rec[c].runs.load()));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    run_program(input{data, size});
    return 0;
}
