// Stress tests: many threads scheduling and waiting at once, checked for
// the ordering contract (docs/SPEC.md section 2) and exactly-once execution.
//
// Every call records, in arrays indexed by its cookie, that it ran, in
// which domain, and when it finished.  Waiters check, after each wait that
// returned 0, that no lower cookie of the domains they waited for is still
// unfinished; and every call checks, as its last step, that no wait for a
// higher cookie of its domain has already returned (that catches calls a
// waiter could not see because they had not started).
//
// KASYNC_STRESS_SCALE multiplies the iteration counts (default 1: a few
// seconds; the sizes stay within the watchdog under ThreadSanitizer).
//
// SPDX-License-Identifier: MIT
#define KASYNC_TEST_MAIN
#include "support.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <latch>
#include <memory>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using kasync::cookie_max;
using kasync::cookie_t;

namespace {

constexpr int n_domains = 3;  // 0: default, 1: registered, 2: exclusive

void raise_to(std::atomic<cookie_t>& a, cookie_t v) {
    cookie_t cur = a.load();
    while (v > cur && !a.compare_exchange_weak(cur, v)) {
    }
}

// Everything the calls and the waiters record.
struct ledger {
    explicit ledger(std::size_t size)
        : runs(size), domain_of(size), finished(size) {
        for (auto& log : commits)
            log.resize(size);
    }

    std::size_t size() const { return runs.size(); }

    std::vector<std::atomic<int>> runs;
    std::vector<std::atomic<unsigned char>> domain_of;  // domain + 1
    std::vector<std::atomic<unsigned char>> finished;
    std::array<std::vector<cookie_t>, n_domains> commits;
    std::array<std::atomic<std::size_t>, n_domains> commit_pos{};
    // The highest cookie a wait returned 0 for, per domain.
    std::array<std::atomic<cookie_t>, n_domains> passed{};

    std::atomic<long> out_of_range{0}, bad_rc{0}, overtaken{0};
    std::atomic<long> early_return{0}, timeouts{0}, lost_wakeups{0};
    std::atomic<long> children{0};  // calls that did not commit
};

// The harness: a scheduler with its three domains and a ledger.
struct harness {
    explicit harness(kasync::options o, std::size_t size)
        : s(std::move(o)), reg(s),
          excl(s, kasync::domain_kind::exclusive), book(size) {}

    kasync::domain* dom(int d) {
        return d == 0 ? &s.default_domain() : d == 1 ? &reg : &excl;
    }

    int sync_own(cookie_t c, int d) {
        return d == 0 ? s.synchronize_cookie(c)  // the default-only form
                      : s.synchronize_cookie(c, *dom(d));
    }

    // The body of every stress call: slow part, then self-synchronise,
    // then the visible step in cookie order.  Children (calls scheduled by
    // a call) do not self-synchronise: when the pending limit makes one run
    // inside its parent, waiting for its own cookie would wait for the
    // parent below it on the stack (-EDEADLK, by design).
    void call(cookie_t own, int d, int work, int children) {
        if (own == 0 || own >= book.size()) {
            ++book.out_of_range;
            return;
        }
        book.domain_of[own] = static_cast<unsigned char>(d + 1);
        ++book.runs[own];
        kt::burn(work);
        for (int i = 0; i < children; ++i)
            schedule(d, work / 2, -1, kasync::any_node);
        if (children >= 0) {
            if (sync_own(own, d) != 0)
                ++book.bad_rc;
            book.commits[d][book.commit_pos[d]++] = own;
        } else {
            ++book.children;
        }

        // Last step: nobody may have waited past us.
        if (book.passed[d].load() > own)
            ++book.overtaken;
        book.finished[own] = 1;
    }

    cookie_t schedule(int d, int work, int children, int node) {
        return s.schedule(
            [this, d, work, children](cookie_t own) {
                call(own, d, work, children);
            },
            {.in = dom(d), .node = node});
    }

    // After a wait for `upto` in the domains `ds` returned 0.
    void check_after_wait(cookie_t upto, std::initializer_list<int> ds) {
        for (int d : ds)
            raise_to(book.passed[d], upto);
        const cookie_t end = std::min<cookie_t>(upto, book.size());
        for (cookie_t k = 1; k < end; ++k) {
            int d = book.domain_of[k].load() - 1;
            if (d < 0 || book.finished[k].load())
                continue;
            if (std::find(ds.begin(), ds.end(), d) != ds.end())
                ++book.early_return;
        }
    }

    // One of several kinds of waits, for a cookie near c.
    void random_wait(std::mt19937& rng, cookie_t c, int d) {
        cookie_t upto = c + rng() % 2;
        switch (rng() % 5) {
        case 0:
            if (sync_own(upto, d) == 0)
                check_after_wait(upto, {d});
            else
                ++book.bad_rc;
            break;
        case 1:
            if (s.synchronize_cookie_all(upto) == 0)
                check_after_wait(upto, {0, 1});
            else
                ++book.bad_rc;
            break;
        case 2: {
            int rc = s.synchronize_cookie(upto, *dom(d), 200us);
            if (rc == 0)
                check_after_wait(upto, {d});
            else if (rc == -ETIMEDOUT)
                ++book.timeouts;
            else
                ++book.bad_rc;
            break;
        }
        case 3: {
            int rc = s.synchronize_cookie(upto, *dom(d), kt::long_wait);
            if (rc == 0)
                check_after_wait(upto, {d});
            else if (rc == -ETIMEDOUT)
                ++book.lost_wakeups;
            else
                ++book.bad_rc;
            break;
        }
        default:
            (void)s.lowest_in_progress(*dom(d));  // lock-free read, racing
            break;
        }
    }

    // Waits for everything, then checks the whole ledger.
    void verify() {
        CHECK(s.synchronize_cookie_all(cookie_max, kt::long_wait) == 0);
        CHECK(s.synchronize_full(excl, kt::long_wait) == 0);

        const kasync::statistics st = s.stats();
        CHECK(book.out_of_range.load() == 0);
        REQUIRE(st.scheduled < book.size());
        CHECK(st.completed == st.scheduled);
        CHECK(st.pending == 0);

        long wrong = 0;
        for (cookie_t k = 1; k < book.size(); ++k) {
            int want = k <= st.scheduled ? 1 : 0;
            if (book.runs[k].load() != want && ++wrong <= 5)
                MESSAGE("cookie " << k << " ran " << book.runs[k].load()
                                  << " times");
        }
        CHECK(wrong == 0);

        std::size_t committed = 0;
        for (int d = 0; d < n_domains; ++d) {
            CAPTURE(d);
            std::size_t n = book.commit_pos[d].load();
            committed += n;
            auto b = book.commits[d].begin();
            CHECK(std::adjacent_find(b, b + static_cast<long>(n),
                                     std::greater_equal<cookie_t>()) ==
                  b + static_cast<long>(n));
        }
        CHECK(committed + static_cast<std::uint64_t>(book.children.load()) ==
              st.scheduled);
        CHECK(book.bad_rc.load() == 0);
        CHECK(book.early_return.load() == 0);
        CHECK(book.overtaken.load() == 0);
        CHECK(book.lost_wakeups.load() == 0);
        MESSAGE(st.scheduled << " calls: " << st.ran_in_caller
                             << " in the caller, " << st.helped
                             << " helped, " << st.spare_runs
                             << " on spare threads, " << st.waits_slept
                             << "/" << st.waits << " waits slept, "
                             << st.futile_wakeups << " futile wake-ups, "
                             << book.timeouts.load() << " short time-outs");
    }

    kasync::scheduler s;
    kasync::domain reg, excl;
    ledger book;
};

kasync::options base_options() { return kt::config::get().make_options(); }

// Producers schedule into random domains and nodes, and wait now and then.
void run_producers(harness& h, int producers, int per, unsigned wait_every) {
    std::latch start(producers);
    std::vector<std::thread> ts;
    for (int p = 0; p < producers; ++p) {
        ts.emplace_back([&, p] {
            std::mt19937 rng(static_cast<unsigned>(1000 + p));
            start.arrive_and_wait();
            for (int i = 0; i < per; ++i) {
                int d = static_cast<int>(rng() % n_domains);
                int node = static_cast<int>(rng() % 3) - 1;
                int work = static_cast<int>(rng() % 3000);
                int children = rng() % 8 == 0 ? 1 : 0;
                cookie_t c = h.schedule(d, work, children, node);
                if (c == 0)
                    ++h.book.bad_rc;
                else if (rng() % wait_every == 0)
                    h.random_wait(rng, c, d);
            }
        });
    }
    for (auto& t : ts)
        t.join();
}

}  // namespace

TEST_CASE("stress: producers over three domains, self-synchronising calls") {
    constexpr int producers = 4;
    const int per = kt::scaled(12000);
    harness h(base_options(), producers * per * 2 + 64);
    run_producers(h, producers, per, 12);
    h.verify();
}

TEST_CASE("stress: the same with a small pending limit (fallbacks)") {
    constexpr int producers = 4;
    const int per = kt::scaled(8000);
    kasync::options o = base_options();
    o.max_pending = 16;
    harness h(std::move(o), producers * per * 2 + 64);
    run_producers(h, producers, per, 12);
    h.verify();
    CHECK(h.s.stats().ran_in_caller > 0);
}

TEST_CASE("stress: the same with one worker and waits that sleep at once") {
    constexpr int producers = 3;
    const int per = kt::scaled(6000);
    kasync::options o = kt::config::get().make_options(1);
    o.spin_us = 1;
    harness h(std::move(o), producers * per * 2 + 64);
    run_producers(h, producers, per, 8);
    h.verify();
}

// Scenario 21 at scale: the waiter waits for the cookie it just got, while
// other threads keep taking cookies around it.
TEST_CASE("stress: publication window (S21)") {
    for (unsigned spin : {0u, 1u}) {
        CAPTURE(spin);
        kt::kick("publication window, spin " + std::to_string(spin));
        constexpr int producers = 5;
        constexpr int waiters = 2;
        const int per = kt::scaled(6000);
        const int rounds = kt::scaled(1500);
        kasync::options o = base_options();
        o.spin_us = spin;
        harness h(std::move(o), producers * per + waiters * rounds + 64);

        std::latch start(producers + waiters);
        std::atomic<bool> stop{false};
        std::vector<std::thread> ts;
        for (int p = 0; p < producers; ++p) {
            ts.emplace_back([&, p] {
                std::mt19937 rng(static_cast<unsigned>(p));
                start.arrive_and_wait();
                for (int i = 0; i < per && !stop; ++i)
                    h.schedule(p % 2, static_cast<int>(rng() % 200), 0,
                               kasync::any_node);
            });
        }
        for (int w = 0; w < waiters; ++w) {
            ts.emplace_back([&, w] {
                start.arrive_and_wait();
                for (int r = 0; r < rounds; ++r) {
                    int d = w % 2;
                    cookie_t c = h.schedule(d, 0, 0, kasync::any_node);
                    cookie_t upto = r % 3 == 0 ? c + 1 : c;
                    int rc = r % 2 ? h.s.synchronize_cookie_all(upto,
                                                                kt::long_wait)
                                   : h.s.synchronize_cookie(upto, *h.dom(d),
                                                            kt::long_wait);
                    if (rc == -ETIMEDOUT)
                        ++h.book.lost_wakeups;
                    else if (rc != 0)
                        ++h.book.bad_rc;
                    else if (r % 2)
                        h.check_after_wait(upto, {0, 1});
                    else
                        h.check_after_wait(upto, {d});
                }
                stop = true;
            });
        }
        for (auto& t : ts)
            t.join();
        h.verify();
    }
}

// Waits racing the completion they wait for, with many waiters per call.
TEST_CASE("stress: waits racing completions") {
    kasync::options o = base_options();
    o.spin_us = 1;
    harness h(std::move(o), 16);  // the ledger is not used here
    const int rounds = kt::scaled(10000);
    constexpr int waiters = 4;

    std::atomic<cookie_t> latest{0};
    std::atomic<long> lost{0}, early{0};
    std::atomic<bool> stop{false};
    std::vector<std::atomic<unsigned char>> done(
        static_cast<std::size_t>(rounds) + 8);

    std::vector<std::thread> ts;
    for (int w = 0; w < waiters; ++w) {
        ts.emplace_back([&, w] {
            cookie_t last = 0;
            while (!stop.load()) {
                cookie_t c = latest.load();
                if (c == last) {
                    std::this_thread::yield();
                    continue;
                }
                last = c;
                int rc = w % 2 ? h.s.synchronize_cookie(c + 1, h.reg,
                                                        kt::long_wait)
                               : h.s.synchronize_cookie_all(c + 1,
                                                            kt::long_wait);
                if (rc == -ETIMEDOUT)
                    ++lost;
                else if (rc != 0 || !done[c].load())
                    ++early;
            }
        });
    }
    std::mt19937 rng(7);
    for (int r = 0; r < rounds; ++r) {
        const int work = static_cast<int>(rng() % 4000);
        // Cookies are 1, 2, ...: this scheduler issues nothing else.
        cookie_t c = h.s.schedule(
            [&done, work](cookie_t own) {
                kt::burn(work);
                if (own < done.size())
                    done[own] = 1;
            },
            {.in = &h.reg});
        REQUIRE(c < done.size());
        latest = c;
        if (r % 4 == 3)
            CHECK(h.s.synchronize_full(h.reg, kt::long_wait) == 0);
    }
    stop = true;
    for (auto& t : ts)
        t.join();
    CHECK(lost.load() == 0);
    CHECK(early.load() == 0);
}

// shutdown() racing producers: every call runs exactly once, queued or in
// the caller.
TEST_CASE("stress: shutdown while producers schedule") {
    constexpr int producers = 3;
    const int per = kt::scaled(10000);
    const std::size_t size = producers * static_cast<std::size_t>(per) * 2 + 8;
    std::vector<std::atomic<int>> runs(size);
    std::atomic<long> out_of_range{0}, zero{0};

    auto s = std::make_unique<kasync::scheduler>(base_options());
    std::latch start(producers + 1);
    std::vector<std::thread> ts;
    for (int p = 0; p < producers; ++p) {
        ts.emplace_back([&] {
            start.arrive_and_wait();
            for (int i = 0; i < per; ++i) {
                cookie_t c = s->schedule([&](cookie_t own) {
                    if (own >= runs.size()) {
                        ++out_of_range;
                        return;
                    }
                    ++runs[own];
                    cookie_t child = s->schedule([&](cookie_t c2) {
                        if (c2 < runs.size())
                            ++runs[c2];
                        else
                            ++out_of_range;
                    });
                    if (child == 0)
                        ++zero;
                });
                if (c == 0)
                    ++zero;
            }
        });
    }
    start.arrive_and_wait();
    // Shut down in the middle of the stream.
    const long third = static_cast<long>(size) / 6;
    auto total_runs = [&] {
        long n = 0;
        for (std::size_t k = 0; k < size; k += 97)
            n += runs[k].load();
        return n * 97;
    };
    while (total_runs() < third)
        std::this_thread::yield();
    CHECK(s->shutdown() == 0);
    for (auto& t : ts)
        t.join();
    CHECK(s->shutdown() == 0);

    const kasync::statistics st = s->stats();
    MESSAGE(st.scheduled << " calls, " << st.ran_in_caller
                         << " in the caller (after shutdown)");
    CHECK(out_of_range.load() == 0);
    CHECK(zero.load() == 0);
    CHECK(st.scheduled == producers * static_cast<std::uint64_t>(per) * 2);
    CHECK(st.completed == st.scheduled);
    long wrong = 0;
    for (cookie_t k = 1; k < size; ++k)
        wrong += runs[k].load() != (k <= st.scheduled ? 1 : 0);
    CHECK(wrong == 0);
    s.reset();
}

// Schedulers come and go with calls still queued: the destructor runs them.
TEST_CASE("stress: scheduler lifecycle with calls in flight") {
    const int rounds = kt::scaled(100);
    for (int r = 0; r < rounds; ++r) {
        std::atomic<int> ran{0};
        {
            kasync::scheduler s(base_options());
            kasync::domain d(s);
            for (int i = 0; i < 100; ++i)
                s.schedule([&ran] { ++ran; },
                           {.in = i % 2 ? &d : nullptr, .node = i % 3 - 1});
        }
        CHECK(ran.load() == 100);
    }
}
