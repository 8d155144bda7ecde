// Shared helpers for the kasync test binaries.
//
//   - kt::config      which worker count and topology this run uses, read
//                     from KASYNC_TEST_THREADS and KASYNC_TEST_TOPOLOGY, so
//                     that meson can register one binary several times;
//   - kt::watchdog    aborts the process, naming the running test, when a
//                     test hangs (default 30 s, KASYNC_TEST_WATCHDOG=<s>);
//   - kt::gate        a flag a test opens, that calls block on (inside a
//                     kasync::blocking_region, so the pool compensates);
//   - kt::opener      opens gates when a test leaves, so that a failing test
//                     does not leave calls blocked for the scheduler's
//                     destructor to wait on forever;
//   - kt::counter     a count one can wait to reach, with a time-out;
//   - timed helpers   "does not return within short_wait" / "returns
//                     within long_wait" around std::future.
//
// A binary that wants doctest's main() with the watchdog defines
// KASYNC_TEST_MAIN before including this header, in one translation unit.
//
// SPDX-License-Identifier: MIT
#ifndef KASYNC_TESTS_SUPPORT_HPP
#define KASYNC_TESTS_SUPPORT_HPP

#ifdef KASYNC_TEST_MAIN
#define DOCTEST_CONFIG_IMPLEMENT
#endif
#include <doctest/doctest.h>

#include <kasync/kasync.hpp>

#include <cerrno>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <initializer_list>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace kt {

using namespace std::chrono_literals;

// "Does not return yet" is checked by waiting this long and seeing no return.
inline constexpr auto short_wait = 50ms;
// "Returns" is checked by waiting at most this long (a hang fails, a pass is
// fast: nothing waits for it to elapse).
inline constexpr auto long_wait = 20s;

// ---------------------------------------------------------------------------
// Configuration

inline long env_long(const char* name, long fallback) {
    const char* v = std::getenv(name);
    if (!v || !*v)
        return fallback;
    char* end = nullptr;
    long n = std::strtol(v, &end, 10);
    if (*end != '\0') {
        std::fprintf(stderr, "tests: ignoring bad %s=%s\n", name, v);
        return fallback;
    }
    return n;
}

inline double env_double(const char* name, double fallback) {
    const char* v = std::getenv(name);
    if (!v || !*v)
        return fallback;
    char* end = nullptr;
    double d = std::strtod(v, &end);
    if (*end != '\0' || d <= 0) {
        std::fprintf(stderr, "tests: ignoring bad %s=%s\n", name, v);
        return fallback;
    }
    return d;
}

struct config {
    unsigned threads = 2;
    std::string topology;  // empty: the library detects it

    static const config& get() {
        static const config c = [] {
            config r;
            long t = env_long("KASYNC_TEST_THREADS", 2);
            r.threads = t > 0 ? static_cast<unsigned>(t) : 2u;
            if (const char* topo = std::getenv("KASYNC_TEST_TOPOLOGY"))
                r.topology = topo;
            return r;
        }();
        return c;
    }

    // Options for a scheduler of this run, optionally with another
    // thread count.
    kasync::options make_options(unsigned threads_override = 0) const {
        kasync::options o;
        o.threads = threads_override ? threads_override : threads;
        if (!topology.empty()) {
            std::string err;
            o.topo = kasync::topology::parse(topology, &err);
            if (!o.topo) {
                std::fprintf(stderr, "tests: KASYNC_TEST_TOPOLOGY=%s: %s\n",
                             topology.c_str(), err.c_str());
                std::abort();
            }
        }
        return o;
    }

    std::string describe() const {
        return "threads=" + std::to_string(threads) +
               " topology=" + (topology.empty() ? "detect" : topology);
    }
};

#if defined(__SANITIZE_THREAD__)
#define KASYNC_TESTS_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define KASYNC_TESTS_TSAN 1
#endif
#endif

// Multiplier for iteration counts (KASYNC_STRESS_SCALE).  Default 1, or
// 0.15 under ThreadSanitizer, which runs this code 20 to 50 times slower
// (the stress binary then takes about 15 s on two cores).
inline double scale() {
#ifdef KASYNC_TESTS_TSAN
    constexpr double fallback = 0.15;
#else
    constexpr double fallback = 1.0;
#endif
    static const double s = env_double("KASYNC_STRESS_SCALE", fallback);
    return s;
}

inline int scaled(int n) {
    double v = n * scale();
    return v < 1 ? 1 : static_cast<int>(v);
}

// Burns about n loop iterations of CPU time (a call's "slow part").
inline void burn(int n) {
    for (int i = 0; i < n; ++i)
        asm volatile("" ::: "memory");
}

// ---------------------------------------------------------------------------
// Watchdog

class watchdog {
public:
    explicit watchdog(std::chrono::seconds budget) : budget_(budget) {
        instance_ = this;
        arm("(startup)");
        thread_ = std::thread([this] { run(); });
    }

    ~watchdog() {
        {
            std::lock_guard<std::mutex> l(m_);
            stop_ = true;
        }
        cv_.notify_all();
        thread_.join();
        instance_ = nullptr;
    }

    watchdog(const watchdog&) = delete;
    watchdog& operator=(const watchdog&) = delete;

    // Names what runs now and restarts the clock.
    void arm(std::string what) {
        std::lock_guard<std::mutex> l(m_);
        what_ = std::move(what);
        deadline_ = std::chrono::steady_clock::now() + budget_;
        cv_.notify_all();
    }

    static watchdog* instance() { return instance_; }

private:
    void run() {
        std::unique_lock<std::mutex> l(m_);
        while (!stop_) {
            auto d = deadline_;
            if (cv_.wait_until(l, d) == std::cv_status::timeout && !stop_ &&
                std::chrono::steady_clock::now() >= deadline_) {
                std::fprintf(stderr,
                             "\nWATCHDOG: test \"%s\" still running after "
                             "%lld s; aborting (%s)\n",
                             what_.c_str(),
                             static_cast<long long>(budget_.count()),
                             config::get().describe().c_str());
                std::fflush(stderr);
                std::abort();
            }
        }
    }

    static inline watchdog* instance_ = nullptr;
    std::chrono::seconds budget_;
    std::mutex m_;
    std::condition_variable cv_;
    std::string what_;                                 // under m_
    std::chrono::steady_clock::time_point deadline_;  // under m_
    bool stop_ = false;                                // under m_
    std::thread thread_;
};

// Restart the watchdog's clock inside a long test, naming the phase.
inline void kick(const std::string& phase) {
    if (watchdog* w = watchdog::instance())
        w->arm(phase);
}

// ---------------------------------------------------------------------------
// Gates and counters

// A one-shot flag.  wait() inside a call declares the block to the pool.
class gate {
public:
    void open() {
        {
            std::lock_guard<std::mutex> l(m_);
            open_ = true;
        }
        cv_.notify_all();
    }

    bool is_open() const {
        std::lock_guard<std::mutex> l(m_);
        return open_;
    }

    void wait() {
        kasync::blocking_region br;
        std::unique_lock<std::mutex> l(m_);
        cv_.wait(l, [this] { return open_; });
    }

    // For test threads: true when the gate opened within d.
    template <class Rep, class Period>
    bool wait_for(std::chrono::duration<Rep, Period> d) {
        std::unique_lock<std::mutex> l(m_);
        return cv_.wait_for(l, d, [this] { return open_; });
    }

private:
    mutable std::mutex m_;
    std::condition_variable cv_;
    bool open_ = false;
};

// Opens gates on scope exit: declare it after the scheduler and domains.
class opener {
public:
    opener(std::initializer_list<gate*> gates) : gates_(gates) {}
    explicit opener(std::vector<gate*> gates) : gates_(std::move(gates)) {}
    ~opener() {
        for (gate* g : gates_)
            g->open();
    }
    opener(const opener&) = delete;
    opener& operator=(const opener&) = delete;

private:
    std::vector<gate*> gates_;
};

class counter {
public:
    void add(long n = 1) {
        {
            std::lock_guard<std::mutex> l(m_);
            n_ += n;
        }
        cv_.notify_all();
    }

    long get() const {
        std::lock_guard<std::mutex> l(m_);
        return n_;
    }

    template <class Rep, class Period>
    bool wait_for(long target, std::chrono::duration<Rep, Period> d) {
        std::unique_lock<std::mutex> l(m_);
        return cv_.wait_for(l, d, [&] { return n_ >= target; });
    }

private:
    mutable std::mutex m_;
    std::condition_variable cv_;
    long n_ = 0;
};

// ---------------------------------------------------------------------------
// Waits in the background

template <class F>
auto in_background(F&& f) {
    return std::async(std::launch::async, std::forward<F>(f));
}

// True when fut has not become ready within d (default short_wait).
template <class T, class Rep = long, class Period = std::milli>
bool still_waiting(std::future<T>& fut,
                   std::chrono::duration<Rep, Period> d = short_wait) {
    return fut.wait_for(d) == std::future_status::timeout;
}

// What finished() returns for a wait that did not return within long_wait.
inline constexpr int hung = INT_MIN;

// The value of a background wait, or hung.
inline int finished(std::future<int>& fut) {
    if (fut.wait_for(long_wait) != std::future_status::ready)
        return hung;
    return fut.get();
}

}  // namespace kt

// ---------------------------------------------------------------------------
// main(): doctest with the watchdog

#ifdef KASYNC_TEST_MAIN

namespace kt {

struct watchdog_listener : doctest::IReporter {
    explicit watchdog_listener(const doctest::ContextOptions&) {}

    void report_query(const doctest::QueryData&) override {}
    void test_run_start() override {}
    void test_run_end(const doctest::TestRunStats&) override {}
    void test_case_start(const doctest::TestCaseData& tc) override {
        name_ = tc.m_name;
        kick(name_);
    }
    void test_case_reenter(const doctest::TestCaseData& tc) override {
        name_ = tc.m_name;
        kick(name_);
    }
    void test_case_end(const doctest::CurrentTestCaseStats&) override {}
    void test_case_exception(const doctest::TestCaseException&) override {}
    void subcase_start(const doctest::SubcaseSignature& s) override {
        kick(name_ + " / " + s.m_name.c_str());
    }
    void subcase_end() override {}
    void log_assert(const doctest::AssertData&) override {}
    void log_message(const doctest::MessageData&) override {}
    void test_case_skipped(const doctest::TestCaseData&) override {}

private:
    std::string name_;
};

}  // namespace kt

DOCTEST_REGISTER_LISTENER("kasync-watchdog", 1, kt::watchdog_listener);

int main(int argc, char** argv) {
    long budget = kt::env_long("KASYNC_TEST_WATCHDOG", 30);
    kt::watchdog wd(std::chrono::seconds(budget > 0 ? budget : 30));
    std::fprintf(stderr, "kasync tests: %s, stress scale %g\n",
                 kt::config::get().describe().c_str(), kt::scale());

    doctest::Context ctx;
    ctx.applyCommandLine(argc, argv);
    int rc = ctx.run();
    kt::kick("(exit)");
    return rc;
}

#endif  // KASYNC_TEST_MAIN

#endif  // KASYNC_TESTS_SUPPORT_HPP
