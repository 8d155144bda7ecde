// kasync-replay: the replay model and its runner.  See the README, section "kasync-replay".
//
// SPDX-License-Identifier: MIT
#include "replay.hpp"

#include <kasync/kasync.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>

#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace replay {

plan make_plan(const bootlog::log& log, const config& cfg) {
    plan p;
    const double f = std::clamp(cfg.ordered_fraction, 0.0, 1.0);
    bool any = false;
    bootlog::usec_t first = 0, last = 0;
    for (std::size_t i = 0; i < log.calls.size(); ++i) {
        const bootlog::call& c = log.calls[i];
        if (!c.finished) continue;
        item it;
        it.call = i;
        it.duration_us = static_cast<double>(c.duration_us);
        it.parallel_us = it.duration_us * (1.0 - f);
        it.ordered_us = it.duration_us - it.parallel_us;
        p.items.push_back(it);
        p.serial_us += it.duration_us;
        first = any ? std::min(first, c.start_us) : c.start_us;
        last = any ? std::max(last, c.end_us) : c.end_us;
        any = true;
    }
    p.span_us = any ? static_cast<double>(last - first) : 0.0;

    if (cfg.how == mode::async) {
        // A log of async calls (cookie-prefixed names) printed "calling" as
        // each started, out of order: its order is the cookies'.
        bool all_cookies = !p.items.empty() && std::all_of(p.items.begin(), p.items.end(), [&](const item& it) {
            return log.calls[it.call].cookie != 0;
        });
        if (all_cookies)
            std::stable_sort(p.items.begin(), p.items.end(), [&](const item& a, const item& b) {
                return log.calls[a.call].cookie < log.calls[b.call].cookie;
            });
        // Unbounded threads: every parallel part starts at 0; registration i
        // follows registration i-1 and the end of its own parallel part.
        double reg = 0;
        for (item& it : p.items) {
            reg = std::max(reg, it.parallel_us) + it.ordered_us;
            it.ideal_end_us = reg;
        }
        p.ideal_us = reg;
    } else {
        // As logged: each call at its logged start, but after the previous
        // call of its pid (a pid runs its calls one after another).
        std::unordered_map<long, std::size_t> lane;  // pid -> last item
        double makespan = 0;
        for (std::size_t k = 0; k < p.items.size(); ++k) {
            item& it = p.items[k];
            const bootlog::call& c = log.calls[it.call];
            double start = static_cast<double>(c.start_us - first);
            if (c.pid >= 0) {
                auto found = lane.find(c.pid);
                if (found != lane.end()) {
                    const item& prev = p.items[found->second];
                    it.after = found->second;
                    start = std::max(start, prev.start_us + prev.duration_us);
                }
                lane[c.pid] = k;
            }
            it.start_us = start;
            it.ideal_end_us = start + it.duration_us;
            makespan = std::max(makespan, it.ideal_end_us);
        }
        p.ideal_us = makespan;
    }
    return p;
}

namespace {

using clock_type = std::chrono::steady_clock;

std::int64_t to_ns(double log_us, double speed) {
    double ns = log_us * 1000.0 / speed;
    return ns <= 0 ? 0 : static_cast<std::int64_t>(std::llround(ns));
}

int current_tid() { return static_cast<int>(::syscall(SYS_gettid)); }

void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

// Busy until the deadline (CPU work, and the short ordered step).
void spin_until(clock_type::time_point deadline) {
    while (clock_type::now() < deadline) cpu_relax();
}

// Sleep until the deadline on CLOCK_MONOTONIC (what steady_clock reads).
void sleep_until(clock_type::time_point deadline) {
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline.time_since_epoch()).count();
    timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
    while (::clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
    }
}

// The default 50 us timer slack of a normal thread would make every sleep
// overshoot; the replay asks for 1 us on each thread that sleeps.
void tighten_timer_slack() {
    thread_local bool done = false;
    if (!done) {
        ::prctl(PR_SET_TIMERSLACK, 1000UL, 0UL, 0UL, 0UL);
        done = true;
    }
}

distribution summarize(std::vector<double> v) {
    distribution d;
    d.n = v.size();
    if (v.empty()) return d;
    std::sort(v.begin(), v.end());
    for (double x : v) d.sum += x;
    d.mean = d.sum / static_cast<double>(v.size());
    auto at = [&](double q) {
        std::size_t i = static_cast<std::size_t>(q * static_cast<double>(v.size() - 1) + 0.5);
        return v[std::min(i, v.size() - 1)];
    };
    d.p50 = at(0.5);
    d.p99 = at(0.99);
    d.max = v.back();
    return d;
}

// A line on stderr, refreshed, once a replay has run for a second.
class progress_line {
public:
    progress_line(bool on, std::size_t total, double expect_s, const std::atomic<std::size_t>& done)
        : total_(total), expect_s_(expect_s), done_(done) {
        if (on) thread_ = std::thread([this] { loop(); });
    }
    ~progress_line() { stop(); }
    void stop() {
        if (!thread_.joinable()) return;
        {
            std::lock_guard lk(mu_);
            stop_ = true;
        }
        cv_.notify_all();
        thread_.join();
        if (printed_ && tty_) std::fputs("\n", stderr);
    }

private:
    void loop() {
        tty_ = ::isatty(2);
        auto t0 = clock_type::now();
        auto next_plain = std::chrono::seconds(1);
        std::unique_lock lk(mu_);
        while (!cv_.wait_for(lk, std::chrono::milliseconds(200), [this] { return stop_; })) {
            auto el = clock_type::now() - t0;
            if (el < std::chrono::seconds(1)) continue;
            if (!tty_ && el < next_plain) continue;
            double s = std::chrono::duration<double>(el).count();
            std::fprintf(stderr, "%skasync-replay: %zu/%zu calls done, %.1f s of about %.1f s%s",
                         tty_ ? "\r" : "", done_.load(std::memory_order_relaxed), total_, s,
                         expect_s_, tty_ ? "  " : "\n");
            std::fflush(stderr);
            printed_ = true;
            next_plain = std::chrono::duration_cast<std::chrono::seconds>(el) + std::chrono::seconds(5);
        }
    }

    std::size_t total_;
    double expect_s_;
    const std::atomic<std::size_t>& done_;
    std::thread thread_;
    std::mutex mu_;
    std::condition_variable cv_;
    bool stop_ = false, tty_ = false, printed_ = false;
};

struct shared_state {
    const plan* p = nullptr;
    const config* cfg = nullptr;
    kasync::scheduler* sched = nullptr;
    clock_type::time_point t0;
    std::vector<timing> times;
    std::vector<std::int64_t> parallel_ns, ordered_ns, duration_ns, start_ns;
    std::vector<std::size_t> registration;
    std::atomic<std::size_t> next_slot{0};
    std::atomic<std::size_t> done{0};

    std::int64_t since_t0(clock_type::time_point t) const {
        return std::chrono::duration_cast<std::chrono::nanoseconds>(t - t0).count();
    }

    // Work for `ns` starting now: a sleep the pool knows about, or a spin.
    void work_for(std::int64_t ns) {
        if (ns <= 0) return;
        auto deadline = clock_type::now() + std::chrono::nanoseconds(ns);
        if (cfg->kind == work::cpu || ns < cfg->spin_below_ns) {
            spin_until(deadline);
            return;
        }
        if (cfg->low_timer_slack) tighten_timer_slack();
        kasync::blocking_region blocked;  // the pool lends this thread's place
        sleep_until(deadline);
    }

    // Async model: parallel part, wait for own cookie, ordered step, register.
    void async_call(std::size_t i, kasync::cookie_t c) {
        timing& t = times[i];
        t.start = since_t0(clock_type::now());
        t.thread = current_tid();
        t.cookie = c;
        work_for(parallel_ns[i]);
        t.parallel_end = since_t0(clock_type::now());
        // A kasync wait: the library itself keeps the pool going meanwhile
        // (helping, then lending this thread's place).
        t.wait_rc = sched->synchronize_cookie(c);
        auto ordered_from = clock_type::now();
        t.ordered_start = since_t0(ordered_from);
        // The ordered step is short CPU work (a registration): spin it, a
        // sleep would add its timer overshoot to the in-order chain.
        spin_until(ordered_from + std::chrono::nanoseconds(ordered_ns[i]));
        registration[next_slot.fetch_add(1, std::memory_order_acq_rel)] = i;
        t.end = since_t0(clock_type::now());
        done.fetch_add(1, std::memory_order_release);
    }

    // As-logged model: a call is scheduled once its planned start has come
    // (the dispatcher in run() says so) and the previous call of its pid has
    // finished (that call says so as it ends); whichever is last schedules
    // it.  No call waits inside the pool for another.
    std::unique_ptr<std::atomic<int>[]> gates;   // conditions still missing
    std::vector<std::size_t> next_of_pid;         // next item of the same pid
    const std::vector<std::string>* names = nullptr;

    void release(std::size_t i) {
        if (gates[i].fetch_sub(1, std::memory_order_acq_rel) != 1) return;
        times[i].scheduled = since_t0(clock_type::now());
        shared_state* self = this;
        sched->schedule([self, i](kasync::cookie_t c) { self->logged_call(i, c); },
                        kasync::call_options{.name = (*names)[i].c_str()});
    }

    void logged_call(std::size_t i, kasync::cookie_t c) {
        timing& t = times[i];
        t.start = since_t0(clock_type::now());
        t.thread = current_tid();
        t.cookie = c;
        work_for(duration_ns[i]);
        t.end = t.parallel_end = t.ordered_start = since_t0(clock_type::now());
        done.fetch_add(1, std::memory_order_release);
        if (next_of_pid[i] != SIZE_MAX) release(next_of_pid[i]);
    }

    static constexpr std::int64_t spin_window_ns = 150'000;
};

// Start the pool's threads before timing, as a long-running program has
// them: in the sleep model, as many spare threads as calls will sleep at
// once (capped), since each sleeping call lends its worker's place to one.
void warm_up(kasync::scheduler& s, const config& cfg, std::size_t sleepers) {
    std::size_t n = std::max<std::size_t>(2 * s.threads(), cfg.kind == work::sleep ? sleepers : 0);
    n = std::min<std::size_t>(n, 1024);
    for (std::size_t k = 0; k < n; ++k)
        s.schedule(
            [&cfg] {
                if (cfg.kind == work::sleep) {
                    if (cfg.low_timer_slack) tighten_timer_slack();
                    kasync::blocking_region blocked;
                    std::this_thread::sleep_for(std::chrono::milliseconds(20));
                }
            },
            kasync::call_options{.name = "replay-warmup"});
    s.synchronize_full();
}

// The most calls whose work overlaps in the plan (async: all start at 0).
std::size_t peak_concurrency(const plan& p, const config& cfg) {
    if (cfg.how == mode::async) {
        std::size_t k = 0;
        for (const item& it : p.items) k += it.parallel_us > 0;
        return k;
    }
    std::vector<std::pair<double, int>> ev;
    for (const item& it : p.items) {
        if (it.duration_us <= 0) continue;
        ev.emplace_back(it.start_us, 1);
        ev.emplace_back(it.start_us + it.duration_us, -1);
    }
    std::sort(ev.begin(), ev.end());
    int cur = 0, peak = 0;
    for (auto& e : ev) peak = std::max(peak, cur += e.second);
    return static_cast<std::size_t>(peak);
}

void check_order(const plan& p, shared_state& st, result& r) {
    r.order_checked = true;
    r.order_ok = true;
    std::size_t n = p.items.size();
    if (st.next_slot.load() != n) {
        r.order_ok = false;
        r.order_error = "registered " + std::to_string(st.next_slot.load()) + " of " + std::to_string(n) +
                        " calls";
        return;
    }
    for (std::size_t k = 0; k < n; ++k) {
        if (st.registration[k] != k) {
            r.order_ok = false;
            r.order_error = "registration " + std::to_string(k + 1) + " was log call " +
                            std::to_string(st.registration[k] + 1);
            return;
        }
        if (st.times[k].wait_rc != 0) {
            r.order_ok = false;
            r.order_error = "synchronize_cookie failed for log call " + std::to_string(k + 1) +
                            " (" + std::to_string(st.times[k].wait_rc) + ")";
            return;
        }
        if (k > 0 && st.times[k].ordered_start < st.times[k - 1].end) {
            r.order_ok = false;
            r.order_error = "ordered step of log call " + std::to_string(k + 1) +
                            " began before call " + std::to_string(k) + " had registered";
            return;
        }
        if (k > 0 && st.times[k].cookie <= st.times[k - 1].cookie) {
            r.order_ok = false;
            r.order_error = "cookies do not follow log order at call " + std::to_string(k + 1);
            return;
        }
    }
}

void diagnose(const plan& p, const config& cfg, shared_state& st, result& r) {
    const auto& T = st.times;
    std::size_t n = T.size();
    std::vector<double> delay, over, hand;
    std::set<int> threads;
    for (std::size_t k = 0; k < n; ++k) {
        // Async: queue to body.  As logged: planned start to body (lateness).
        std::int64_t from = cfg.how == mode::async ? T[k].scheduled : st.start_ns[k];
        delay.push_back(static_cast<double>(T[k].start - from) / 1000.0);
        threads.insert(T[k].thread);
        std::int64_t planned = cfg.how == mode::async ? st.parallel_ns[k] : st.duration_ns[k];
        if (cfg.kind == work::sleep && planned > 0)
            over.push_back(static_cast<double>(T[k].parallel_end - T[k].start - planned) / 1000.0);
        if (cfg.how == mode::async && k > 0 && T[k].parallel_end <= T[k - 1].end)
            hand.push_back(static_cast<double>(T[k].ordered_start - T[k - 1].end) / 1000.0);
    }
    r.start_delay = summarize(std::move(delay));
    r.oversleep = summarize(std::move(over));
    r.handoff = summarize(std::move(hand));
    r.worker_threads_seen = threads.size();

    if (cfg.how != mode::async || n == 0) return;
    // Walk the chain back from the last registration while each call was
    // already waiting when its predecessor registered.
    double to_log = cfg.speed / 1000.0;  // ns of replay -> us of log
    std::size_t k = n - 1;
    critical_path cp;
    while (k > 0 && T[k].parallel_end <= T[k - 1].end) {
        cp.ordered_us += static_cast<double>(T[k].end - T[k].ordered_start) * to_log;
        cp.handoff_us += static_cast<double>(T[k].ordered_start - T[k - 1].end) * to_log;
        ++cp.length;
        --k;
    }
    cp.head = k;
    cp.start_delay_us = static_cast<double>(T[k].start) * to_log;
    cp.parallel_us = static_cast<double>(T[k].parallel_end - T[k].start) * to_log;
    cp.parallel_planned_us = p.items[k].parallel_us;
    // The head's own wait (nothing to wait for when it is first) and step.
    cp.handoff_us += static_cast<double>(T[k].ordered_start - T[k].parallel_end) * to_log;
    cp.ordered_us += static_cast<double>(T[k].end - T[k].ordered_start) * to_log;
    r.path = cp;
}

}  // namespace

result run(const bootlog::log& log, const plan& p, const config& cfg) {
    result r;
    const std::size_t n = p.items.size();
    if (n == 0) return r;

    kasync::options opts;
    opts.threads = cfg.threads;
    kasync::scheduler sched(std::move(opts));
    r.threads = sched.threads();
    if (cfg.warmup) warm_up(sched, cfg, peak_concurrency(p, cfg));
    auto base = sched.stats();

    // Names must outlive the calls: they live here until the end of run().
    std::vector<std::string> names;
    names.reserve(n);
    for (const item& it : p.items) names.push_back(log.calls[it.call].function);

    shared_state st;
    st.p = &p;
    st.cfg = &cfg;
    st.sched = &sched;
    st.times.assign(n, timing{});
    st.registration.assign(n, SIZE_MAX);
    st.names = &names;
    st.gates = std::make_unique<std::atomic<int>[]>(n);
    st.next_of_pid.assign(n, SIZE_MAX);
    for (std::size_t i = 0; i < n; ++i) {
        std::size_t after = p.items[i].after;
        st.gates[i].store(after == SIZE_MAX ? 1 : 2, std::memory_order_relaxed);
        if (after != SIZE_MAX) st.next_of_pid[after] = i;
    }
    for (const item& it : p.items) {
        st.parallel_ns.push_back(to_ns(it.parallel_us, cfg.speed));
        st.ordered_ns.push_back(to_ns(it.ordered_us, cfg.speed));
        st.duration_ns.push_back(to_ns(it.duration_us, cfg.speed));
        st.start_ns.push_back(to_ns(it.start_us, cfg.speed));
    }

    double expect_s = p.ideal_us / cfg.speed / 1e6;
    progress_line progress(cfg.progress, n, expect_s, st.done);

    shared_state* sp = &st;
    st.t0 = clock_type::now();
    if (cfg.how == mode::async) {
        // Every call scheduled at once, in log order: cookie order = log order.
        for (std::size_t i = 0; i < n; ++i) {
            st.times[i].scheduled = st.since_t0(clock_type::now());
            sched.schedule([sp, i](kasync::cookie_t c) { sp->async_call(i, c); },
                           kasync::call_options{.name = names[i].c_str()});
        }
    } else {
        // Dispatch each call at its planned start.
        std::vector<std::size_t> order(n);
        for (std::size_t i = 0; i < n; ++i) order[i] = i;
        std::stable_sort(order.begin(), order.end(),
                         [&](std::size_t a, std::size_t b) { return st.start_ns[a] < st.start_ns[b]; });
        if (cfg.low_timer_slack) tighten_timer_slack();
        for (std::size_t i : order) {
            // Sleep until just before the start, spin the rest: on time to
            // a few microseconds, without a wake-up's latency.
            auto when = st.t0 + std::chrono::nanoseconds(st.start_ns[i]);
            auto early = when - std::chrono::nanoseconds(shared_state::spin_window_ns);
            if (clock_type::now() < early) sleep_until(early);
            spin_until(when);
            st.release(i);
        }
    }
    sched.synchronize_full();
    progress.stop();

    std::int64_t last = 0;
    for (const timing& t : st.times) last = std::max(last, t.end);
    r.wall_us = static_cast<double>(last) * cfg.speed / 1000.0;
    r.ran = true;

    if (cfg.how == mode::async) {
        check_order(p, st, r);
    } else {
        r.order_ok = true;  // nothing is ordered in this model
        for (const timing& t : st.times)
            if (t.end == 0 && t.start == 0) r.order_ok = false;
    }
    for (const timing& t : st.times)
        if (t.wait_rc != 0) ++r.wait_errors;
    diagnose(p, cfg, st, r);

    auto now = sched.stats();
    r.helped = now.helped - base.helped;
    r.spare_runs = now.spare_runs - base.spare_runs;
    r.waits_slept = now.waits_slept - base.waits_slept;
    r.registration = std::move(st.registration);
    r.times = std::move(st.times);
    sched.shutdown();
    return r;
}

}  // namespace replay
