// The 24 scenarios of docs/SCENARIOS.md, one TEST_CASE each, on scheduler
// instances configured by KASYNC_TEST_THREADS / KASYNC_TEST_TOPOLOGY (meson
// registers this binary for 1, 2 and 4 threads and a two-node layout).
//
// Order is forced with gates the test opens, never with sleeps.  "Does not
// return yet" is a timed wait that must time out (kt::short_wait, 50 ms);
// "returns" is a wait with a generous limit (kt::long_wait) that a correct
// library meets at once.  Each scenario notes the naive design it catches.
//
// Two tricks reach inside schedule() without hooks in the library:
//   - a callable whose move constructor stalls: the library moves the
//     callable into its slot between taking the cookie and publishing it,
//     so S21 can hold a cookie "taken but not yet visible" for as long as
//     it likes;
//   - a call that computes (spins) rather than blocks occupies a worker
//     without the pool compensating, so S4 can keep a call queued.
//
// Checked against deliberately broken builds of lib/engine.cpp (a copy,
// outside the tree): pending from start instead of from cookie, a fixed
// pool without helping or compensation, no re-check before sleeping, wake
// everybody, exclusive domains counted in "all", no -EDEADLK, unpublished
// cookies skipped.  Each made at least one scenario fail or hang (the
// watchdog then names it).
//
// SPDX-License-Identifier: MIT
#define KASYNC_TEST_MAIN
#include "support.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <barrier>
#include <climits>
#include <latch>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using kasync::cookie_max;
using kasync::cookie_t;
using kt::finished;
using kt::long_wait;
using kt::short_wait;
using kt::still_waiting;

namespace {

kasync::options opts(unsigned threads = 0) {
    return kt::config::get().make_options(threads);
}

kasync::options opts_limit(std::size_t max_pending) {
    kasync::options o = opts();
    o.max_pending = max_pending;
    return o;
}

// Time-out for waits that must return -EDEADLK at once: long enough that a
// slow machine never reaches it, short enough that a library which waits
// instead does not stall the suite.
constexpr auto deadlock_limit = 5s;

}  // namespace

// ===========================================================================
// Ordering

// Naive design: one global pending list that every wait scans.
TEST_CASE("S1 cross-domain over-wait: another domain's blocked call never "
          "delays a default-domain wait") {
    for (auto kind : {kasync::domain_kind::registered,
                      kasync::domain_kind::exclusive}) {
        CAPTURE(static_cast<int>(kind));
        kt::gate blocker;
        std::atomic<bool> d1_done{false}, default_ran{false};
        kasync::scheduler s(opts());
        kasync::domain d1(s, kind);
        kt::opener open_on_exit{&blocker};

        cookie_t c1 = s.schedule([&] { blocker.wait(); d1_done = true; },
                                 {.in = &d1});
        cookie_t c2 = s.schedule([&] { default_ran = true; });
        REQUIRE(c1 != 0);
        REQUIRE(c2 > c1);

        int rc = s.synchronize_cookie(c2 + 1, s.default_domain(), long_wait);
        CHECK(rc == 0);
        CHECK(default_ran);
        if (rc == 0) {
            CHECK(s.synchronize_cookie(c2 + 1) == 0);
            CHECK(s.synchronize_full(s.default_domain()) == 0);
        }
        CHECK(s.lowest_in_progress(s.default_domain()) == cookie_max);

        // D1's call is still there, and still counted in D1.
        CHECK_FALSE(d1_done);
        CHECK(s.lowest_in_progress(d1) == c1);
        CHECK(s.synchronize_full(d1, short_wait) == -ETIMEDOUT);

        blocker.open();
        CHECK(s.synchronize_full(d1, long_wait) == 0);
        CHECK(d1_done);
    }
}

// Naive design: a call leaves the pending set when a worker picks it up.
TEST_CASE("S2 a running call of D1 keeps synchronize_full(D1) waiting") {
    for (auto kind : {kasync::domain_kind::registered,
                      kasync::domain_kind::exclusive}) {
        CAPTURE(static_cast<int>(kind));
        kt::gate started, release;
        std::atomic<bool> done{false};
        kasync::scheduler s(opts());
        kasync::domain d1(s, kind);
        kt::opener open_on_exit{&release};

        cookie_t c = s.schedule(
            [&] {
                started.open();
                release.wait();
                done = true;
            },
            {.in = &d1});
        REQUIRE(started.wait_for(long_wait));

        CHECK(s.lowest_in_progress(d1) == c);
        CHECK(s.synchronize_full(d1, short_wait) == -ETIMEDOUT);
        CHECK(s.synchronize_cookie(c + 1, d1, 1ms) == -ETIMEDOUT);
        CHECK(s.synchronize_cookie(cookie_max, d1, 1ms) == -ETIMEDOUT);

        auto full = kt::in_background([&] { return s.synchronize_full(d1); });
        CHECK(still_waiting(full));
        CHECK_FALSE(done);

        release.open();
        CHECK(finished(full) == 0);
        CHECK(done);  // what the call did is visible to the waiter
        CHECK(s.lowest_in_progress(d1) == cookie_max);
    }
}

namespace {

// A call that schedules its successor before returning, `left` times.
struct chain_link {
    kasync::scheduler* s;
    kasync::domain* d;
    std::atomic<bool>* done;
    int left;

    void operator()() const {
        if (left == 0) {
            done->store(true);
            return;
        }
        s->schedule(chain_link{s, d, done, left - 1}, {.in = d});
    }
};

}  // namespace

// Naive design: the predecessor is removed before the successor is added,
// so a waiter can see the domain empty in between.
TEST_CASE("S3 chained scheduling: a full wait started before B existed "
          "still waits for B") {
    SUBCASE("gated chain") {
        kt::gate a_started, a_go, b_started, b_go;
        std::atomic<cookie_t> cb{0};
        std::atomic<bool> b_done{false};
        kasync::scheduler s(opts());
        kt::opener open_on_exit{&a_go, &b_go};

        cookie_t ca = s.schedule([&] {
            a_started.open();
            a_go.wait();
            cb = s.schedule([&](cookie_t own) {
                cb = own;  // B may start before schedule() returns in A
                b_started.open();
                b_go.wait();
                b_done = true;
            });
        });
        REQUIRE(a_started.wait_for(long_wait));

        auto full = kt::in_background([&] { return s.synchronize_full(); });
        CHECK(still_waiting(full));

        a_go.open();
        REQUIRE(b_started.wait_for(long_wait));
        CHECK(cb.load() > ca);
        // Once nothing below B's cookie is pending, A has returned.
        CHECK(s.synchronize_cookie(cb, s.default_domain(), long_wait) == 0);
        CHECK(still_waiting(full));

        b_go.open();
        CHECK(finished(full) == 0);
        CHECK(b_done);
    }

    SUBCASE("a long chain is never observed empty") {
        std::atomic<bool> chain_done{false};
        kasync::scheduler s(opts());
        kasync::domain d(s);

        const int links = kt::scaled(2000);
        s.schedule(chain_link{&s, &d, &chain_done, links}, {.in = &d});
        auto full = kt::in_background([&] { return s.synchronize_full(d); });

        // lowest == MAX while the last link has not run means the domain
        // was seen empty between two links.
        long seen_empty = 0;
        while (true) {
            cookie_t low = s.lowest_in_progress(d);
            bool done = chain_done.load();
            if (done)
                break;
            if (low == cookie_max)
                ++seen_empty;
        }
        CHECK(seen_empty == 0);
        CHECK(finished(full) == 0);
        CHECK(chain_done);
    }
}

// Naive design: a cookie becomes pending when its call starts.
TEST_CASE("S4 out-of-order start: B waits for A although B started first") {
    SUBCASE("registration order is A, B") {
        kt::gate a_go, b_started;
        std::mutex m;
        std::string log;
        std::atomic<int> b_rc{INT_MIN};
        kasync::scheduler s(opts());
        kt::opener open_on_exit{&a_go};

        cookie_t ca = s.schedule([&] {
            a_go.wait();
            std::lock_guard<std::mutex> l(m);
            log += 'A';
        });
        cookie_t cb = s.schedule([&](cookie_t own) {
            b_started.open();
            b_rc = s.synchronize_cookie(own);
            std::lock_guard<std::mutex> l(m);
            log += 'B';
        });
        REQUIRE(cb == ca + 1);
        REQUIRE(b_started.wait_for(long_wait));

        CHECK(s.synchronize_cookie(cb + 1, s.default_domain(), short_wait) ==
              -ETIMEDOUT);
        {
            std::lock_guard<std::mutex> l(m);
            CHECK(log.empty());
        }
        CHECK(b_rc.load() == INT_MIN);

        a_go.open();
        CHECK(s.synchronize_cookie(cb + 1, s.default_domain(), long_wait) == 0);
        CHECK(b_rc.load() == 0);
        std::lock_guard<std::mutex> l(m);
        CHECK(log == "AB");
    }

    SUBCASE("a queued, not yet started call is pending") {
        // A call W occupies a worker by computing (spinning, not blocking),
        // and schedules A and B from there.  With one worker neither can
        // start while W spins; with more, the check still holds.
        kt::gate a_go, scheduled;
        std::atomic<bool> w_release{false}, a_started{false};
        std::atomic<cookie_t> ca{0}, cb{0}, low_in_w{0};
        std::atomic<int> b_rc{INT_MIN};
        kasync::scheduler s(opts());
        kasync::domain d(s);
        kt::opener open_on_exit{&a_go};

        s.schedule([&] {
            ca = s.schedule(
                [&] {
                    a_started = true;
                    a_go.wait();
                },
                {.in = &d});
            cb = s.schedule(
                [&](cookie_t own) { b_rc = s.synchronize_cookie(own, d); },
                {.in = &d});
            low_in_w = s.lowest_in_progress(d);
            scheduled.open();
            while (!w_release.load())
                std::this_thread::yield();
        });
        REQUIRE(scheduled.wait_for(long_wait));

        CHECK(low_in_w.load() == ca.load());
        CHECK(s.lowest_in_progress(d) == ca.load());
        CHECK(s.synchronize_cookie(cb + 1, d, short_wait) == -ETIMEDOUT);
        CHECK(s.synchronize_cookie(cb, d, 1ms) == -ETIMEDOUT);
        if (s.threads() == 1)
            CHECK_FALSE(a_started);  // W holds the only worker

        w_release = true;
        CHECK(s.synchronize_cookie(cb, d, short_wait) == -ETIMEDOUT);
        a_go.open();
        CHECK(s.synchronize_full(d, long_wait) == 0);
        CHECK(b_rc.load() == 0);
        CHECK(s.synchronize_full(s.default_domain(), long_wait) == 0);
    }
}

// Naive design: "all" means the default domain only.
TEST_CASE("S5 every registered domain counts for all") {
    kt::gate g1, g2;
    kasync::scheduler s(opts());
    kasync::domain d1(s), d2(s);
    kt::opener open_on_exit{&g1, &g2};

    cookie_t c1 = s.schedule([&] { g1.wait(); }, {.in = &d1});
    cookie_t c2 = s.schedule([&] { g2.wait(); }, {.in = &d2});
    cookie_t cx = s.schedule([] {});
    REQUIRE(c1 != 0);
    REQUIRE(c2 > c1);
    REQUIRE(cx > c2);

    CHECK(s.lowest_in_progress() == c1);
    CHECK(s.synchronize_cookie_all(c1 + 1, short_wait) == -ETIMEDOUT);
    CHECK(s.synchronize_cookie_all(cx + 1, 1ms) == -ETIMEDOUT);
    CHECK(s.synchronize_cookie_all(cookie_max, 1ms) == -ETIMEDOUT);
    // The default domain alone is not held up.
    CHECK(s.synchronize_cookie(cx + 1, s.default_domain(), long_wait) == 0);

    auto full = kt::in_background([&] { return s.synchronize_full(); });
    auto upto = kt::in_background(
        [&] { return s.synchronize_cookie_all(c1 + 1); });
    CHECK(still_waiting(full));
    CHECK(still_waiting(upto, 1ms));

    g1.open();
    CHECK(finished(upto) == 0);
    CHECK(s.lowest_in_progress() == c2);
    CHECK(still_waiting(full));  // d2 still counts

    g2.open();
    CHECK(finished(full) == 0);
    CHECK(s.lowest_in_progress() == cookie_max);
}

// Naive design: every domain is part of "all".
TEST_CASE("S6 exclusive domains are invisible to all") {
    kt::gate g;
    std::atomic<bool> e_done{false};
    kasync::scheduler s(opts());
    kasync::domain e(s, kasync::domain_kind::exclusive);
    kt::opener open_on_exit{&g};

    cookie_t ce = s.schedule([&] { g.wait(); e_done = true; }, {.in = &e});
    cookie_t cx = s.schedule([] {});
    REQUIRE(ce != 0);
    REQUIRE(cx > ce);

    CHECK(s.lowest_in_progress(e) == ce);

    int rc = s.synchronize_cookie_all(ce + 1, long_wait);
    CHECK(rc == 0);
    CHECK(s.synchronize_cookie_all(cx + 1, long_wait) == 0);
    CHECK(s.synchronize_cookie_all(cookie_max, long_wait) == 0);
    CHECK(s.lowest_in_progress() == cookie_max);  // cx is done, ce invisible
    if (rc == 0) {
        auto full = kt::in_background([&] { return s.synchronize_full(); });
        int r = finished(full);
        CHECK(r == 0);
        if (r == kt::hung)
            g.open();
        CHECK(s.synchronize_cookie_all(ce + 1) == 0);
    }

    CHECK(s.synchronize_full(e, short_wait) == -ETIMEDOUT);
    CHECK(s.synchronize_cookie(ce + 1, e, 1ms) == -ETIMEDOUT);
    CHECK_FALSE(e_done);

    g.open();
    CHECK(s.synchronize_full(e, long_wait) == 0);
    CHECK(e_done);
}

// Naive design: a wait for a cookie not yet issued waits for it to be.
TEST_CASE("S7 empty and future cookies") {
    kt::gate g;
    kasync::scheduler s(opts());
    kasync::domain d(s);
    kt::opener open_on_exit{&g};

    CHECK(s.lowest_in_progress() == cookie_max);
    CHECK(s.lowest_in_progress(d) == cookie_max);
    int rc = s.synchronize_cookie(123456, s.default_domain(), long_wait);
    CHECK(rc == 0);
    if (rc == 0) {
        CHECK(s.synchronize_cookie(123456) == 0);
        CHECK(s.synchronize_cookie(123456, d) == 0);
        CHECK(s.synchronize_cookie_all(123456) == 0);
        CHECK(s.synchronize_cookie(cookie_max, d) == 0);
        CHECK(s.synchronize_full(d) == 0);
        CHECK(s.synchronize_full() == 0);
    }

    // After some calls have come and gone.
    for (int i = 0; i < 10; ++i)
        s.schedule([] {}, {.in = &d});
    CHECK(s.synchronize_full(d, long_wait) == 0);
    CHECK(s.synchronize_cookie(123456, d, long_wait) == 0);

    // MAX is "until empty"; cookies at or below the lowest pending return.
    cookie_t c = s.schedule([&] { g.wait(); }, {.in = &d});
    REQUIRE(c != 0);
    CHECK(s.synchronize_cookie(cookie_max, d, short_wait) == -ETIMEDOUT);
    CHECK(s.synchronize_cookie(123456, d, 1ms) == -ETIMEDOUT);
    CHECK(s.synchronize_cookie(c, d, long_wait) == 0);
    CHECK(s.synchronize_cookie(1, d, long_wait) == 0);
    CHECK(s.synchronize_cookie(0, d, long_wait) == 0);

    auto by_max = kt::in_background(
        [&] { return s.synchronize_cookie(cookie_max, d); });
    auto by_full = kt::in_background([&] { return s.synchronize_full(d); });
    CHECK(still_waiting(by_max));
    CHECK(still_waiting(by_full, 1ms));
    g.open();
    CHECK(finished(by_max) == 0);
    CHECK(finished(by_full) == 0);
}

// Naive design: off by one in either direction.
TEST_CASE("S8 the +1 idiom, and cookies start at 1") {
    kt::gate g;
    std::atomic<bool> ran{false};
    std::atomic<cookie_t> seen{0};
    kasync::scheduler s(opts());
    kasync::domain d(s);
    kt::opener open_on_exit{&g};

    cookie_t c = s.schedule([&](cookie_t own) {
        seen = own;
        g.wait();
        ran = true;
    });
    CHECK(c == 1);

    int rc = s.synchronize_cookie(c, s.default_domain(), long_wait);
    CHECK(rc == 0);
    if (rc == 0)
        CHECK(s.synchronize_cookie(c) == 0);
    CHECK(s.synchronize_cookie(c + 1, s.default_domain(), short_wait) ==
          -ETIMEDOUT);

    auto plus1 = kt::in_background([&] { return s.synchronize_cookie(c + 1); });
    CHECK(still_waiting(plus1));
    g.open();
    CHECK(finished(plus1) == 0);
    CHECK(ran);
    CHECK(seen.load() == c);

    // Every schedule variant takes the next cookie; 0 is never issued.
    cookie_t prev = c;
    for (int i = 0; i < 100; ++i) {
        cookie_t n = 0;
        switch (i % 4) {
        case 0: n = s.schedule([] {}); break;
        case 1: n = s.schedule([](cookie_t) {}, {.in = &d}); break;
        case 2: n = s.try_schedule([] {}); break;
        default: n = s.schedule([] {}, {.node = 0}); break;
        }
        CHECK(n != 0);
        CHECK(n == prev + 1);
        prev = n;
    }

    // The same idiom inside a domain.
    kt::gate g2;
    kt::opener open_g2{&g2};
    cookie_t cd = s.schedule([&] { g2.wait(); }, {.in = &d});
    CHECK(cd == prev + 1);
    CHECK(s.synchronize_cookie(cd, d, long_wait) == 0);
    CHECK(s.synchronize_cookie(cd + 1, d, short_wait) == -ETIMEDOUT);
    g2.open();
    CHECK(s.synchronize_cookie(cd + 1, d, long_wait) == 0);
    CHECK(s.synchronize_full(s.default_domain(), long_wait) == 0);
}

// Naive design: synchronize_cookie(c) waits for every registered domain.
TEST_CASE("S9 synchronize_cookie(c) is the default domain only") {
    kt::gate g;
    std::atomic<bool> x_ran{false};
    kasync::scheduler s(opts());
    kasync::domain d(s);
    kt::opener open_on_exit{&g};

    cookie_t cd = s.schedule([&] { g.wait(); }, {.in = &d});
    cookie_t cx = s.schedule([&] { x_ran = true; });
    REQUIRE(cx > cd);

    int rc = s.synchronize_cookie(cx + 1, s.default_domain(), long_wait);
    CHECK(rc == 0);
    CHECK(x_ran);
    if (rc == 0)
        CHECK(s.synchronize_cookie(cx + 1) == 0);

    CHECK(s.synchronize_cookie_all(cx + 1, short_wait) == -ETIMEDOUT);
    auto full = kt::in_background([&] { return s.synchronize_full(); });
    auto all = kt::in_background(
        [&] { return s.synchronize_cookie_all(cx + 1); });
    CHECK(still_waiting(full));
    CHECK(still_waiting(all, 1ms));

    g.open();
    CHECK(finished(full) == 0);
    CHECK(finished(all) == 0);
}

// Naive design: the wait reads the wrong entry and returns at once.
TEST_CASE("S10 full waits are exact, whatever order calls finish in") {
    const std::array<std::array<int, 4>, 2> orders{{{2, 0, 3, 1},
                                                    {1, 3, 0, 2}}};
    for (const auto& order : orders) {
        CAPTURE(order[0]);
        std::array<kt::gate, 4> go, done;
        std::array<cookie_t, 4> c{};
        kasync::scheduler s(opts());
        kasync::domain d(s);
        kt::opener open_on_exit{&go[0], &go[1], &go[2], &go[3]};

        for (int i = 0; i < 4; ++i) {
            c[i] = s.schedule(
                [&go, &done, i] {
                    go[i].wait();
                    done[i].open();
                },
                {.in = &d});
        }
        REQUIRE(c[0] == 1);  // a fresh scheduler: cookies 1..4
        REQUIRE(c[3] == 4);

        auto full_all = kt::in_background([&] { return s.synchronize_full(); });
        auto upto3_all = kt::in_background(
            [&] { return s.synchronize_cookie_all(c[2]); });
        auto full_d = kt::in_background([&] { return s.synchronize_full(d); });
        auto upto3_d = kt::in_background(
            [&] { return s.synchronize_cookie(c[2], d); });

        bool released[4] = {false, false, false, false};
        bool upto3_done = false;
        for (int step = 0; step < 4; ++step) {
            CAPTURE(step);
            int k = order[step];
            go[k].open();
            released[k] = true;
            REQUIRE(done[k].wait_for(long_wait));

            if (released[0] && released[1]) {
                if (!upto3_done) {
                    CHECK(finished(upto3_all) == 0);
                    CHECK(finished(upto3_d) == 0);
                    upto3_done = true;
                }
            } else {
                CHECK(still_waiting(upto3_all));
                CHECK(still_waiting(upto3_d, 1ms));
            }
            if (step < 3) {
                CHECK(still_waiting(full_all, upto3_done ? short_wait : 1ms));
                CHECK(still_waiting(full_d, 1ms));
            }
        }
        CHECK(finished(full_all) == 0);
        CHECK(finished(full_d) == 0);
    }
}

// Naive design: per-node counters or queues with their own order.
TEST_CASE("S11 cross-node ordering, and nodes without CPUs") {
    SUBCASE("waits across nodes") {
        for (int first_node : {0, 1}) {
            CAPTURE(first_node);
            kt::gate a_go, b_started;
            std::atomic<bool> a_done{false}, b_saw_a{false};
            std::atomic<int> b_rc{INT_MIN};
            kasync::scheduler s(opts());
            kt::opener open_on_exit{&a_go};

            cookie_t ca = s.schedule(
                [&] {
                    a_go.wait();
                    a_done = true;
                },
                {.node = first_node});
            cookie_t cb = s.schedule(
                [&](cookie_t own) {
                    b_started.open();
                    b_rc = s.synchronize_cookie(own);
                    b_saw_a = a_done.load();
                },
                {.node = 1 - first_node});
            REQUIRE(cb == ca + 1);
            REQUIRE(b_started.wait_for(long_wait));

            CHECK(s.synchronize_cookie(cb + 1, s.default_domain(),
                                       short_wait) == -ETIMEDOUT);
            CHECK(b_rc.load() == INT_MIN);

            a_go.open();
            CHECK(s.synchronize_cookie(cb + 1, s.default_domain(),
                                       long_wait) == 0);
            CHECK(b_rc.load() == 0);
            CHECK(b_saw_a);
        }
    }

    SUBCASE("self-synchronising calls spread over nodes commit in order") {
        kasync::scheduler s(opts());
        const int n = kt::scaled(300);
        std::vector<cookie_t> commits(static_cast<std::size_t>(n));
        std::atomic<std::size_t> pos{0};
        std::atomic<int> bad_rc{0};
        for (int i = 0; i < n; ++i) {
            s.schedule(
                [&](cookie_t own) {
                    if (s.synchronize_cookie(own) != 0)
                        ++bad_rc;
                    commits[pos++] = own;
                },
                {.node = i % 2});
        }
        CHECK(s.synchronize_full(s.default_domain(), long_wait) == 0);
        CHECK(bad_rc.load() == 0);
        REQUIRE(pos.load() == commits.size());
        CHECK(std::is_sorted(commits.begin(), commits.end()));
    }

    SUBCASE("a call for a node with no CPUs, or out of range, still runs") {
        kasync::scheduler s(opts());
        const int n = static_cast<int>(s.nodes());
        CHECK(n >= 1);
        const std::vector<int> nodes{n, n + 5, 1000, INT_MAX, -2, -1000,
                                     INT_MIN, kasync::any_node};
        std::vector<std::atomic<int>> ran(nodes.size() * 2);
        for (std::size_t i = 0; i < nodes.size(); ++i) {
            CAPTURE(nodes[i]);
            CHECK(s.schedule([&ran, i] { ++ran[i]; }, {.node = nodes[i]}) !=
                  0);
            CHECK(s.try_schedule([&ran, i, &nodes] { ++ran[nodes.size() + i]; },
                                 {.node = nodes[i]}) != 0);
        }
        CHECK(s.synchronize_full(s.default_domain(), long_wait) == 0);
        for (std::size_t i = 0; i < ran.size(); ++i) {
            CAPTURE(i);
            CHECK(ran[i].load() == 1);
        }
    }

    SUBCASE("a node that exists but has no CPUs (memory-only)") {
        // libnuma reports such nodes; topology::parse cannot express them,
        // so the layout is built by hand: node 1 has no CPUs.
        kasync::options o = opts();
        o.topo = kasync::topology{};
        o.topo->node_cpus = {{0}, {}};
        std::atomic<int> ran{0};
        std::unique_ptr<kasync::scheduler> s;
        try {
            s = std::make_unique<kasync::scheduler>(std::move(o));
        } catch (const std::exception& e) {
            FAIL("a topology with a CPU-less node was refused: " << e.what());
        }
        for (int node : {1, 0, 1, kasync::any_node})
            CHECK(s->schedule([&ran] { ++ran; }, {.node = node}) != 0);
        CHECK(s->synchronize_full(s->default_domain(), long_wait) == 0);
        CHECK(ran.load() == 4);
    }
}

// ===========================================================================
// Fallback and back-pressure

namespace {

// A call that blocks on g on a worker, but returns at once (recording it)
// if it was run in the scheduling thread, so a fallback never hangs a test.
struct held_call {
    kt::gate* g;
    std::thread::id scheduler_thread;
    std::atomic<int>* in_caller;

    void operator()() const {
        if (std::this_thread::get_id() == scheduler_thread) {
            ++*in_caller;
            return;
        }
        g->wait();
    }
};

}  // namespace

// Naive design (the kernel's): the fallback runs before taking a cookie, or
// is not pending while it runs.
TEST_CASE("S12 the fallback consumes a cookie and is pending while it runs") {
    constexpr std::size_t limit = 3;
    kt::gate g;
    std::atomic<int> held_in_caller{0};
    std::atomic<bool> f_ran{false}, f_in_caller{false}, f_async{true};
    std::atomic<cookie_t> f_seen{0}, f_lowest{0};
    std::atomic<int> f_waiter_rc{INT_MIN};
    const auto me = std::this_thread::get_id();
    kasync::scheduler s(opts_limit(limit));
    kasync::domain df(s);
    kt::opener open_on_exit{&g};

    std::vector<cookie_t> held;
    for (std::size_t i = 0; i < limit + 1; ++i)
        held.push_back(s.schedule(held_call{&g, me, &held_in_caller}));
    REQUIRE(held_in_caller.load() == 0);
    REQUIRE(s.stats().ran_in_caller == 0);

    cookie_t cf = s.schedule(
        [&](cookie_t own) {
            f_in_caller = std::this_thread::get_id() == me;
            f_async = kasync::current_is_async();
            f_seen = own;
            f_lowest = s.lowest_in_progress(df);
            // A waiter for a higher cookie of its domain waits for it.
            auto w = std::async(std::launch::async, [&] {
                return s.synchronize_cookie(own + 1, df, short_wait);
            });
            f_waiter_rc = w.get();
            f_ran = true;
        },
        {.in = &df});

    CHECK(f_ran);  // ran before schedule() returned
    CHECK(f_in_caller);
    CHECK_FALSE(f_async);  // a fallback run by a plain thread
    CHECK(cf == held.back() + 1);
    CHECK(f_seen.load() == cf);
    CHECK(f_lowest.load() == cf);
    CHECK(f_waiter_rc.load() == -ETIMEDOUT);
    CHECK(s.stats().ran_in_caller == 1);
    CHECK(s.lowest_in_progress(df) == cookie_max);

    g.open();
    CHECK(s.synchronize_cookie_all(cookie_max, long_wait) == 0);
    cookie_t later = s.schedule([] {});
    CHECK(later == cf + 1);
    CHECK(s.synchronize_cookie_all(cookie_max, long_wait) == 0);
    CHECK(held_in_caller.load() == 0);
}

// Naive design: nocall still takes a cookie, or still runs f.
TEST_CASE("S13 fallback under the caller's lock: try_schedule refuses") {
    constexpr std::size_t limit = 2;
    kt::gate g;
    std::atomic<int> held_in_caller{0};
    std::mutex m;
    bool f_ran = false;  // under m
    std::atomic<bool> late_ran{false};
    const auto me = std::this_thread::get_id();
    kasync::scheduler s(opts_limit(limit));
    kt::opener open_on_exit{&g};

    cookie_t last = 0;
    for (std::size_t i = 0; i < limit + 1; ++i)
        last = s.schedule(held_call{&g, me, &held_in_caller});
    REQUIRE(held_in_caller.load() == 0);

    auto f = [&] {
        std::lock_guard<std::mutex> l(m);
        f_ran = true;
    };
    {
        std::unique_lock<std::mutex> lock(m);
        cookie_t c = s.try_schedule(f);
        CHECK(c == 0);
        CHECK_FALSE(f_ran);
    }
    f();  // the caller, lock dropped, runs it itself
    CHECK(f_ran);
    CHECK(s.stats().refused == 1);

    // No cookie was taken: the next one follows the last queued call.
    cookie_t fb = s.schedule([] {});
    CHECK(fb == last + 1);
    CHECK(s.stats().ran_in_caller == 1);

    g.open();
    CHECK(s.synchronize_full(s.default_domain(), long_wait) == 0);

    // With room, try_schedule queues like schedule().
    cookie_t q = s.try_schedule([&] { late_ran = true; });
    CHECK(q == fb + 1);
    CHECK(s.synchronize_full(s.default_domain(), long_wait) == 0);
    CHECK(late_ran);
}

// Naive design: off-by-one at the limit, or an unbounded overshoot.
TEST_CASE("S14 the limit's edge") {
    SUBCASE("one scheduler: exactly limit + 1 queue") {
        for (std::size_t limit : {std::size_t{1}, std::size_t{4},
                                  std::size_t{16}}) {
            CAPTURE(limit);
            kt::gate g;
            const auto me = std::this_thread::get_id();
            const std::size_t total = limit + 4;
            std::vector<std::atomic<int>> in_caller(total);
            kasync::scheduler s(opts_limit(limit));
            kt::opener open_on_exit{&g};

            for (std::size_t i = 0; i < total; ++i)
                s.schedule(held_call{&g, me, &in_caller[i]});
            for (std::size_t i = 0; i < total; ++i) {
                CAPTURE(i);
                CHECK(in_caller[i].load() == (i <= limit ? 0 : 1));
            }
            kasync::statistics st = s.stats();
            CHECK(st.ran_in_caller == total - (limit + 1));
            CHECK(st.peak_pending >= limit + 1);

            g.open();
            CHECK(s.synchronize_full(s.default_domain(), long_wait) == 0);
        }
    }

    SUBCASE("racing schedulers overshoot by less than their number") {
        constexpr std::size_t limit = 8;
        constexpr int producers = 4;
        constexpr int per_producer = 8;
        kt::gate g;
        std::atomic<int> in_caller{0};
        kasync::scheduler s(opts_limit(limit));
        kt::opener open_on_exit{&g};

        // The producers stay alive until every call has run, so that no
        // other thread can reuse their thread ids meanwhile.
        std::latch start(producers), scheduled(producers), leave(1);
        std::vector<std::thread> ts;
        for (int p = 0; p < producers; ++p) {
            ts.emplace_back([&] {
                const auto me = std::this_thread::get_id();
                start.arrive_and_wait();
                for (int i = 0; i < per_producer; ++i)
                    s.schedule(held_call{&g, me, &in_caller});
                scheduled.count_down();
                leave.wait();
            });
        }
        scheduled.wait();

        const long queued = producers * per_producer - in_caller.load();
        const kasync::statistics st = s.stats();
        MESSAGE("limit " << limit << ": " << queued << " queued by "
                         << producers << " racing schedulers (overshoot "
                         << queued - static_cast<long>(limit + 1)
                         << "); stats: " << st.ran_in_caller
                         << " ran in the caller, peak pending "
                         << st.peak_pending);
        CHECK(st.ran_in_caller ==
              static_cast<std::uint64_t>(in_caller.load()));
        CHECK(queued >= static_cast<long>(limit + 1));
        CHECK(queued <= static_cast<long>(limit) + producers);

        g.open();
        CHECK(s.synchronize_full(s.default_domain(), long_wait) == 0);
        leave.count_down();
        for (auto& t : ts)
            t.join();
    }
}

// Naive design: calls after shutdown are dropped, or waits hang on
// stopped workers.
TEST_CASE("S15 engine off: after shutdown calls run in the caller") {
    SUBCASE("shutdown drains everything, then runs calls in the caller") {
        std::atomic<int> count{0};
        std::atomic<cookie_t> max_seen{0};
        std::atomic<bool> after_ran{false}, after_async{true},
            after_in_caller{false}, nested_ran{false}, refused_ran{false};
        std::atomic<cookie_t> after_seen{0}, nested{0};
        const auto me = std::this_thread::get_id();
        auto note = [&](cookie_t c) {
            cookie_t m = max_seen.load();
            while (c > m && !max_seen.compare_exchange_weak(m, c)) {
            }
        };
        kasync::scheduler s(opts());
        kasync::domain d(s);

        for (int i = 0; i < 20; ++i) {
            s.schedule(
                [&](cookie_t c) {
                    note(c);
                    ++count;
                    for (int j = 0; j < 2; ++j) {
                        s.schedule([&](cookie_t c2) {
                            note(c2);
                            ++count;
                        });
                    }
                },
                {.in = i % 2 ? &d : nullptr});
        }
        CHECK(s.shutdown() == 0);
        CHECK(count.load() == 60);
        CHECK(s.shutdown() == 0);  // idempotent
        CHECK(s.stats().pending == 0);

        cookie_t c = s.schedule([&](cookie_t own) {
            after_seen = own;
            after_in_caller = std::this_thread::get_id() == me;
            after_async = kasync::current_is_async();
            nested = s.schedule([&] { nested_ran = true; });
            after_ran = true;
        });
        CHECK(after_ran);
        CHECK(after_in_caller);
        CHECK_FALSE(after_async);
        CHECK(c == after_seen.load());
        CHECK(c > max_seen.load());
        CHECK(nested_ran);
        CHECK(nested.load() == c + 1);

        CHECK(s.try_schedule([&] { refused_ran = true; }) == 0);
        CHECK_FALSE(refused_ran);

        cookie_t cd = s.schedule([] {}, {.in = &d});
        CHECK(cd == nested.load() + 1);

        CHECK(s.synchronize_cookie_all(cookie_max, long_wait) == 0);
        CHECK(s.synchronize_full() == 0);
        CHECK(s.synchronize_full(d) == 0);
        CHECK(s.synchronize_cookie(cd + 100) == 0);
        CHECK(s.synchronize_cookie_all(cd + 100) == 0);
        CHECK(s.lowest_in_progress() == cookie_max);
    }

    SUBCASE("shutdown from inside a call: -EDEADLK, nothing stops") {
        std::atomic<int> inner_rc{INT_MIN};
        std::atomic<bool> later_async{false}, later_in_caller{true};
        const auto me = std::this_thread::get_id();
        kasync::scheduler s(opts());

        s.schedule([&] { inner_rc = s.shutdown(); });
        CHECK(s.synchronize_full(s.default_domain(), long_wait) == 0);
        CHECK(inner_rc.load() == -EDEADLK);

        s.schedule([&] {
            later_async = kasync::current_is_async();
            later_in_caller = std::this_thread::get_id() == me;
        });
        CHECK(s.synchronize_full(s.default_domain(), long_wait) == 0);
        CHECK(later_async);
        CHECK_FALSE(later_in_caller);
        CHECK(s.shutdown() == 0);
    }
}

// ===========================================================================
// Deadlocks and forward progress

// Naive design: "this thread scheduled nothing, so there is nothing to wait
// for".
TEST_CASE("S16 waits are not a thread's business") {
    SUBCASE("a helper thread schedules; the main thread waits") {
        kt::gate g;
        std::atomic<bool> done{false};
        std::atomic<cookie_t> hc{0};
        kasync::scheduler s(opts());
        kt::opener open_on_exit{&g};

        std::thread helper([&] {
            hc = s.schedule([&] {
                g.wait();
                done = true;
            });
        });
        helper.join();  // the thread that scheduled is gone

        auto full = kt::in_background([&] { return s.synchronize_full(); });
        CHECK(still_waiting(full));
        CHECK(s.synchronize_cookie(hc + 1, s.default_domain(), 1ms) ==
              -ETIMEDOUT);
        g.open();
        CHECK(finished(full) == 0);
        CHECK(done);
    }

    SUBCASE("a call hands the scheduling to a helper thread") {
        kt::gate y_scheduled, y_go;
        std::atomic<bool> y_done{false};
        std::atomic<cookie_t> cy{0};
        kasync::scheduler s(opts());
        kt::opener open_on_exit{&y_go};

        cookie_t cx = s.schedule([&] {
            std::thread t([&] {
                cy = s.schedule([&] {
                    y_go.wait();
                    y_done = true;
                });
                y_scheduled.open();
            });
            kasync::blocking_region br;
            t.join();
        });
        auto full = kt::in_background([&] { return s.synchronize_full(); });

        REQUIRE(y_scheduled.wait_for(long_wait));
        CHECK(cy.load() > cx);
        CHECK(s.synchronize_cookie(cy, s.default_domain(), long_wait) == 0);
        CHECK(still_waiting(full));

        y_go.open();
        CHECK(finished(full) == 0);
        CHECK(y_done);
    }
}

// Naive design (the kernel's): a wait for one's own completion hangs.
TEST_CASE("S17 self-wait returns -EDEADLK at once") {
    using clock = std::chrono::steady_clock;
    struct results {
        std::atomic<int> plus5{INT_MIN}, plus5_untimed{INT_MIN};
        std::atomic<int> full_all{INT_MIN}, full_all_untimed{INT_MIN};
        std::atomic<int> full_own{INT_MIN}, full_own_untimed{INT_MIN};
        std::atomic<int> all_plus1{INT_MIN}, own_k{INT_MIN};
        std::atomic<int> other_domain{INT_MIN}, destroy{INT_MIN};
        std::atomic<int> shutdown{INT_MIN}, child_plus1{INT_MIN};
        std::atomic<bool> async{false}, own_cookie{false}, slow{false};
    };

    SUBCASE("a call of a registered domain") {
        results r;
        kasync::scheduler s(opts());
        kasync::domain reg(s);

        cookie_t c = s.schedule(
            [&](cookie_t k) {
                auto t0 = clock::now();
                r.plus5 = s.synchronize_cookie(k + 5, reg, deadlock_limit);
                if (r.plus5 == -EDEADLK)
                    r.plus5_untimed = s.synchronize_cookie(k + 5, reg);
                r.full_all = s.synchronize_cookie_all(cookie_max,
                                                      deadlock_limit);
                if (r.full_all == -EDEADLK)
                    r.full_all_untimed = s.synchronize_full();
                r.full_own = s.synchronize_full(reg, deadlock_limit);
                if (r.full_own == -EDEADLK)
                    r.full_own_untimed = s.synchronize_full(reg);
                r.all_plus1 = s.synchronize_cookie_all(k + 1, deadlock_limit);
                r.destroy = reg.destroy();
                r.shutdown = s.shutdown();
                r.slow = clock::now() - t0 > deadlock_limit / 2;

                r.own_k = s.synchronize_cookie(k, reg);
                r.other_domain = s.synchronize_cookie(k + 5);  // default
                r.async = kasync::current_is_async();
                r.own_cookie = kasync::current_cookie() == k;

                // A child waiting past its parent's cookie is fine (the
                // parent does not wait for it); the parent waiting past the
                // child's is a self-wait.
                cookie_t m = s.schedule(
                    [&](cookie_t own) { (void)s.synchronize_cookie(own, reg); },
                    {.in = &reg});
                r.child_plus1 = s.synchronize_cookie(m + 1, reg,
                                                     deadlock_limit);
            },
            {.in = &reg});
        REQUIRE(c != 0);
        CHECK(s.synchronize_full(reg, long_wait * 2) == 0);

        CHECK(r.plus5 == -EDEADLK);
        CHECK(r.plus5_untimed == -EDEADLK);
        CHECK(r.full_all == -EDEADLK);
        CHECK(r.full_all_untimed == -EDEADLK);
        CHECK(r.full_own == -EDEADLK);
        CHECK(r.full_own_untimed == -EDEADLK);
        CHECK(r.all_plus1 == -EDEADLK);
        CHECK(r.destroy == -EDEADLK);
        CHECK(r.shutdown == -EDEADLK);
        CHECK_FALSE(r.slow);
        CHECK(r.own_k == 0);
        CHECK(r.other_domain == 0);
        CHECK(r.async);
        CHECK(r.own_cookie);
        CHECK(r.child_plus1 == -EDEADLK);
        CHECK(s.stats().deadlocks >= 8);  // the waits; not destroy, shutdown

        // The refused destroy changed nothing: the domain still works.
        std::atomic<bool> ran{false};
        CHECK(s.schedule([&] { ran = true; }, {.in = &reg}) != 0);
        CHECK(s.synchronize_full(reg, long_wait) == 0);
        CHECK(ran);
    }

    SUBCASE("a call of the default domain") {
        results r;
        kasync::scheduler s(opts());
        s.schedule([&](cookie_t k) {
            r.plus5_untimed = s.synchronize_cookie(k + 5);
            r.full_all_untimed = s.synchronize_full();
            r.own_k = s.synchronize_cookie(k);
        });
        CHECK(s.synchronize_full(s.default_domain(), long_wait) == 0);
        CHECK(r.plus5_untimed == -EDEADLK);
        CHECK(r.full_all_untimed == -EDEADLK);
        CHECK(r.own_k == 0);
    }

    SUBCASE("a call of an exclusive domain is not part of all") {
        results r;
        kasync::scheduler s(opts());
        kasync::domain e(s, kasync::domain_kind::exclusive);
        kasync::domain reg(s);
        s.schedule(
            [&](cookie_t k) {
                r.full_all = s.synchronize_cookie_all(cookie_max, long_wait);
                r.all_plus1 = s.synchronize_cookie_all(k + 5, long_wait);
                r.other_domain = s.synchronize_cookie(k + 1, reg, long_wait);
                r.full_own = s.synchronize_full(e, deadlock_limit);
                r.plus5 = s.synchronize_cookie(k + 1, e, deadlock_limit);
            },
            {.in = &e});
        CHECK(s.synchronize_full(e, long_wait * 2) == 0);
        CHECK(r.full_all == 0);
        CHECK(r.all_plus1 == 0);
        CHECK(r.other_domain == 0);
        CHECK(r.full_own == -EDEADLK);
        CHECK(r.plus5 == -EDEADLK);
    }
}

// Naive design: a fixed pool whose workers all block.
TEST_CASE("S18 worker starvation: N + 1 blocked calls on N workers") {
    SUBCASE("each call waits, in a blocking region, for a later call") {
        kasync::scheduler s(opts());
        const unsigned n = s.threads();
        REQUIRE(n >= 1);
        for (unsigned waiting : {n + 1, 3 * n + 1}) {
            CAPTURE(waiting);
            std::vector<kt::gate> g(waiting);
            std::vector<kt::gate*> all;
            for (auto& x : g)
                all.push_back(&x);
            kt::opener open_on_exit(all);

            // Call i opens gate i - 1, then waits for call i + 1 to open
            // gate i; the last call only signals.
            for (unsigned i = 0; i <= waiting; ++i) {
                s.schedule([&g, i, waiting] {
                    if (i > 0)
                        g[i - 1].open();
                    if (i < waiting)
                        g[i].wait();
                });
            }
            int rc = s.synchronize_cookie_all(cookie_max, long_wait);
            CHECK(rc == 0);
            if (rc != 0) {
                for (auto& x : g)
                    x.open();
                CHECK(s.synchronize_cookie_all(cookie_max, long_wait) == 0);
            }
        }
    }

    SUBCASE("calls wait in kasync waits for a lower cookie held back by a "
            "later call") {
        kasync::scheduler s(opts());
        const unsigned n = s.threads();
        kt::gate first;
        kt::opener open_on_exit{&first};
        std::atomic<int> bad_rc{0};

        s.schedule([&] { first.wait(); });
        for (unsigned i = 0; i < n + 1; ++i) {
            s.schedule([&](cookie_t own) {
                if (s.synchronize_cookie(own) != 0)
                    ++bad_rc;
            });
        }
        s.schedule([&] { first.open(); });

        int rc = s.synchronize_cookie_all(cookie_max, long_wait);
        CHECK(rc == 0);
        if (rc != 0) {
            first.open();
            CHECK(s.synchronize_cookie_all(cookie_max, long_wait) == 0);
        }
        CHECK(bad_rc.load() == 0);
    }

    SUBCASE("calls wait in kasync waits for a later call of another domain") {
        // Each call i waits for the domain of call i + 1 to empty; call
        // i + 1 is queued behind it.  Only helping or compensation can run
        // it.
        kasync::scheduler s(opts());
        const unsigned n = s.threads();
        const unsigned count = n + 2;
        std::vector<std::unique_ptr<kasync::domain>> doms;
        for (unsigned i = 0; i < count; ++i)
            doms.push_back(std::make_unique<kasync::domain>(
                s, kasync::domain_kind::exclusive));
        std::vector<kt::gate> scheduled(count);
        std::vector<kt::gate*> all;
        for (auto& x : scheduled)
            all.push_back(&x);
        kt::opener open_on_exit(all);
        std::atomic<int> bad_rc{0};

        for (unsigned i = 0; i < count; ++i) {
            s.schedule(
                [&, i] {
                    if (i + 1 == count)
                        return;
                    scheduled[i + 1].wait();  // call i + 1 exists
                    if (s.synchronize_full(*doms[i + 1]) != 0)
                        ++bad_rc;
                },
                {.in = doms[i].get()});
            scheduled[i].open();
        }
        for (unsigned i = 0; i < count; ++i) {
            int rc = s.synchronize_full(*doms[i], long_wait);
            CAPTURE(i);
            CHECK(rc == 0);
        }
        CHECK(bad_rc.load() == 0);
    }
}

// Naive design: a single worker blocks in cookie 6's wait while cookie 5
// sits behind it in the queue.
TEST_CASE("S19 racing enqueue with one worker") {
    for (unsigned threads : {1u, kt::config::get().threads}) {
        CAPTURE(threads);
        kasync::scheduler s(opts(threads));
        constexpr int producers = 3;
        const int per = kt::scaled(300);
        const std::size_t total = producers * static_cast<std::size_t>(per);
        std::vector<std::atomic<int>> ran(total + 1);
        std::vector<cookie_t> commits(total);
        std::atomic<std::size_t> pos{0};
        std::atomic<int> bad_rc{0}, out_of_range{0};

        std::latch start(producers);
        std::vector<std::thread> ts;
        for (int p = 0; p < producers; ++p) {
            ts.emplace_back([&] {
                start.arrive_and_wait();
                for (int i = 0; i < per; ++i) {
                    s.schedule([&](cookie_t own) {
                        if (own == 0 || own > total) {
                            ++out_of_range;
                            return;
                        }
                        ++ran[own];
                        if (s.synchronize_cookie(own) != 0)
                            ++bad_rc;
                        commits[pos++] = own;
                    });
                }
            });
        }
        for (auto& t : ts)
            t.join();
        CHECK(s.synchronize_full(s.default_domain(), long_wait) == 0);

        CHECK(out_of_range.load() == 0);
        CHECK(bad_rc.load() == 0);
        REQUIRE(pos.load() == total);
        CHECK(std::is_sorted(commits.begin(), commits.end()));
        int wrong = 0;
        for (std::size_t c = 1; c <= total; ++c)
            wrong += ran[c].load() != 1;
        CHECK(wrong == 0);
    }
}

// The deadlock itself cannot be detected; current_is_async() lets code
// refuse to build it.
TEST_CASE("S20 module-load style: current_is_async() lets code refuse") {
    kasync::scheduler s(opts());
    std::atomic<bool> in_async{false}, own_cookie{false}, helper_async{true},
        helper_saw_done{false}, call_done{false};
    std::atomic<int> refused{INT_MIN}, helper_rc{INT_MIN};
    std::thread helper;

    // Loads a "module": waits, in a helper thread, for all async work.
    auto module_load = [&]() -> int {
        if (kasync::current_is_async())
            return -EDEADLK;  // would wait for ourselves through the helper
        int rc = INT_MIN;
        std::thread t([&] { rc = s.synchronize_full(); });
        t.join();
        return rc;
    };

    CHECK_FALSE(kasync::current_is_async());
    CHECK(kasync::current_cookie() == 0);

    cookie_t c = s.schedule([&](cookie_t own) {
        in_async = kasync::current_is_async();
        own_cookie = kasync::current_cookie() == own;
        refused = module_load();
        // A helper that the call does not wait for: its wait ends after
        // the call returns.
        helper = std::thread([&] {
            helper_async = kasync::current_is_async();
            helper_rc = s.synchronize_full();
            helper_saw_done = call_done.load();
        });
        call_done = true;
    });
    REQUIRE(c != 0);
    CHECK(s.synchronize_full(s.default_domain(), long_wait) == 0);
    helper.join();

    CHECK(in_async);
    CHECK(own_cookie);
    CHECK(refused.load() == -EDEADLK);
    CHECK_FALSE(helper_async);
    CHECK(helper_rc.load() == 0);
    CHECK(helper_saw_done);
    CHECK(module_load() == 0);  // from a plain thread it works
}

// ===========================================================================
// Lock-free traps

namespace {

// A callable whose move constructor can stall: the library moves a callable
// into its queue slot inside schedule(), between taking the cookie and
// making it visible, so a stalled move holds a cookie taken but not yet
// published (scenario 21's "preempted" thread, on demand).
struct stalling_call {
    struct control {
        std::thread::id stall_in;       // the thread whose move stalls
        std::atomic<bool> armed{false};  // stall once
        kt::gate stalled, resume;
        std::atomic<int> ran{0};
    };
    control* ctl;

    explicit stalling_call(control* c) : ctl(c) {}
    stalling_call(const stalling_call&) = default;
    stalling_call(stalling_call&& o) noexcept : ctl(o.ctl) {
        if (std::this_thread::get_id() == ctl->stall_in &&
            ctl->armed.exchange(false)) {
            ctl->stalled.open();
            ctl->resume.wait();
        }
    }
    void operator()(cookie_t) const { ++ctl->ran; }
};

// Shared state of the publication-window stress.
struct window_state {
    explicit window_state(std::size_t n) : finished_at(n) {}
    std::vector<std::atomic<unsigned char>> finished_at;
    std::atomic<cookie_t> passed{0};  // highest cookie a wait returned for
    std::atomic<int> overtaken{0}, out_of_range{0}, early_returns{0};
};

// A call whose move is slow (a few microseconds): it widens the window
// between taking a cookie and publishing it, as a preemption would.
struct slow_move_call {
    window_state* st;
    int move_cost;

    slow_move_call(window_state* s, int cost) : st(s), move_cost(cost) {}
    slow_move_call(const slow_move_call&) = default;
    slow_move_call(slow_move_call&& o) noexcept
        : st(o.st), move_cost(o.move_cost) {
        kt::burn(move_cost);
    }

    // Fails the check when a wait for a higher cookie has already returned
    // while this call is still running.
    void operator()(cookie_t own) const {
        if (own >= st->finished_at.size()) {
            ++st->out_of_range;
            return;
        }
        kt::burn(static_cast<int>(own % 64));
        if (st->passed.load() > own)
            ++st->overtaken;
        st->finished_at[own].store(1);
    }
};

}  // namespace

// Naive design: take the cookie, then publish it as pending.
TEST_CASE("S21 publication window: a wait never passes a cookie still to "
          "be published") {
    SUBCASE("a publisher stalled inside schedule()") {
        stalling_call::control ctl;
        std::atomic<cookie_t> ca{0};
        kt::gate b_done;
        kasync::scheduler s(opts());
        kt::opener open_on_exit{&ctl.resume};

        // A takes cookie 1 and stalls before it is visible.
        std::thread a([&] {
            ctl.stall_in = std::this_thread::get_id();
            ctl.armed = true;
            stalling_call call(&ctl);
            ca = s.schedule(call);  // copied in, then moved into the slot
        });
        REQUIRE(ctl.stalled.wait_for(long_wait));

        // B takes cookie 2, runs and completes.
        cookie_t cb = s.schedule([&] { b_done.open(); });
        if (cb != 2) {
            MESSAGE("this library moves the callable before taking its "
                    "cookie: the window cannot be held open from outside");
            ctl.resume.open();
            a.join();
            CHECK(s.synchronize_full(s.default_domain(), long_wait) == 0);
            return;
        }
        REQUIRE(b_done.wait_for(long_wait));

        // C waits for 3: it must wait for cookie 1.
        auto c_wait = kt::in_background(
            [&] { return s.synchronize_cookie(cb + 1); });
        auto all_wait = kt::in_background(
            [&] { return s.synchronize_cookie_all(cb + 1); });
        CHECK(still_waiting(c_wait));
        CHECK(still_waiting(all_wait, 1ms));

        // Neither a timed wait nor lowest_in_progress() (lock-free, SPEC
        // section 3) may be held hostage by the stalled publisher.
        auto timed = kt::in_background([&] {
            return s.synchronize_cookie(cb + 1, s.default_domain(),
                                        short_wait);
        });
        auto lowest = kt::in_background(
            [&] { return s.lowest_in_progress(s.default_domain()); });
        bool timed_returned = timed.wait_for(2s) == std::future_status::ready;
        bool lowest_returned =
            lowest.wait_for(1s) == std::future_status::ready;
        CHECK_MESSAGE(timed_returned,
                      "a timed wait did not time out while a publisher "
                      "stalled");
        CHECK_MESSAGE(lowest_returned,
                      "lowest_in_progress() blocked while a publisher "
                      "stalled");
        if (timed_returned)
            CHECK(timed.get() == -ETIMEDOUT);
        if (lowest_returned)
            CHECK(lowest.get() == 1);
        CHECK(still_waiting(c_wait, 1ms));

        ctl.resume.open();
        a.join();
        CHECK(ca.load() == 1);
        CHECK(finished(c_wait) == 0);
        CHECK(finished(all_wait) == 0);
        CHECK(ctl.ran.load() == 1);
    }

    SUBCASE("many schedulers, one waiter using the cookie it just got") {
        kasync::scheduler s(opts());
        constexpr int producers = 4;
        const int per = kt::scaled(1500);
        const int rounds = kt::scaled(400);
        window_state st(static_cast<std::size_t>(producers) * per + rounds +
                        16);

        std::latch start(producers + 1);
        std::vector<std::thread> ts;
        for (int p = 0; p < producers; ++p) {
            ts.emplace_back([&, p] {
                start.arrive_and_wait();
                for (int i = 0; i < per; ++i)
                    s.schedule(slow_move_call(&st, (i + p) % 4 * 1000));
            });
        }
        ts.emplace_back([&] {
            start.arrive_and_wait();
            cookie_t checked = 1;
            for (int r = 0; r < rounds; ++r) {
                cookie_t c = s.schedule(slow_move_call(&st, 0));
                cookie_t upto = r % 2 ? c + 1 : c;
                if (s.synchronize_cookie(upto) != 0) {
                    ++st.early_returns;
                    continue;
                }
                cookie_t p = st.passed.load();
                while (upto > p && !st.passed.compare_exchange_weak(p, upto)) {
                }
                for (; checked < upto && checked < st.finished_at.size();
                     ++checked)
                    if (!st.finished_at[checked].load())
                        ++st.early_returns;
            }
        });
        for (auto& t : ts)
            t.join();
        CHECK(s.synchronize_full(s.default_domain(), long_wait) == 0);
        CHECK(st.out_of_range.load() == 0);
        CHECK(st.early_returns.load() == 0);
        CHECK(st.overtaken.load() == 0);
    }
}

// Naive design: check, then sleep, with the wake-up in between lost.
TEST_CASE("S22 lost wake-up: a waiter whose condition comes true wakes") {
    SUBCASE("waiters released at random moments") {
        kasync::options o = opts();
        o.spin_us = 1;  // go to sleep at once, so the futex path is exercised
        kasync::scheduler s(std::move(o));
        kasync::domain d(s);
        const int rounds = kt::scaled(1000);
        constexpr int waiters = 3;

        // A wake-up comes at once or never: 5 s is "never", and keeps a
        // lost one from stalling the suite for long.
        constexpr auto never = 5s;
        std::atomic<cookie_t> current{0};
        std::atomic<int> lost{0}, early{0}, entering{0};
        std::atomic<bool> done_flag{false}, go{false};
        std::barrier sync(waiters + 1);
        std::vector<std::thread> ts;
        for (int w = 0; w < waiters; ++w) {
            ts.emplace_back([&, w] {
                for (int r = 0; r < rounds; ++r) {
                    sync.arrive_and_wait();  // a call is scheduled
                    cookie_t c = current.load();
                    ++entering;
                    int rc = w == 0 ? s.synchronize_cookie(c + 1, d, never)
                           : w == 1 ? s.synchronize_cookie_all(c + 1, never)
                                    : s.synchronize_full(d, never);
                    if (rc == -ETIMEDOUT)
                        ++lost;
                    else if (rc != 0 || !done_flag.load())
                        ++early;
                    sync.arrive_and_wait();  // all waits are over
                }
            });
        }

        // The call finishes when the test says go, a random moment after the
        // waiters entered their waits: sometimes before they check,
        // sometimes between their check and their sleep, sometimes after.
        std::mt19937 rng(12345);
        for (int r = 0; r < rounds; ++r) {
            done_flag = false;
            go = false;
            current = s.schedule(
                [&] {
                    kasync::blocking_region br;
                    go.wait(false);
                    done_flag = true;
                },
                {.in = &d});
            sync.arrive_and_wait();
            while (entering.load() < waiters * (r + 1))
                std::this_thread::yield();
            // Microseconds (the waiters still check or spin) or up to a
            // millisecond (they are going to sleep, or asleep).
            if (r % 2)
                kt::burn(static_cast<int>(rng() % 40000));
            else
                std::this_thread::sleep_for(
                    std::chrono::microseconds(rng() % 1000));
            go = true;
            go.notify_all();
            sync.arrive_and_wait();
        }
        for (auto& t : ts)
            t.join();
        CHECK(lost.load() == 0);
        CHECK(early.load() == 0);
        MESSAGE("waits that slept: " << s.stats().waits_slept << " of "
                                     << s.stats().waits);
    }

    SUBCASE("a stream of self-synchronising calls, waits that sleep") {
        // Every call sleeps in its wait for its own cookie while the calls
        // below it complete, on workers and (limit 4) in the callers: a
        // completion that slips between a waiter's check and its sleep
        // leaves that waiter asleep until its time-out.
        kasync::options o = opts();
        o.spin_us = 1;
        o.max_pending = 4;
        kasync::scheduler s(std::move(o));
        constexpr auto never = 5s;  // a wake-up comes at once or never
        constexpr int producers = 3;
        const int per = kt::scaled(3000);
        std::atomic<int> lost{0}, bad{0};
        std::latch start(producers);
        std::vector<std::thread> ts;
        for (int p = 0; p < producers; ++p) {
            ts.emplace_back([&, p] {
                start.arrive_and_wait();
                for (int i = 0; i < per; ++i) {
                    cookie_t c = s.schedule([&, i](cookie_t own) {
                        kt::burn(i % 7 * 300);
                        int rc = s.synchronize_cookie(own, s.default_domain(),
                                                      never);
                        if (rc == -ETIMEDOUT)
                            ++lost;
                        else if (rc != 0)
                            ++bad;
                    });
                    if ((i + p) % 16 == 0 &&
                        s.synchronize_cookie(c + 1, s.default_domain(),
                                             never) == -ETIMEDOUT)
                        ++lost;
                }
            });
        }
        for (auto& t : ts)
            t.join();
        CHECK(s.synchronize_full(s.default_domain(), long_wait) == 0);
        CHECK(lost.load() == 0);
        CHECK(bad.load() == 0);
    }
}


// Naive design: one futex for everything, every completion wakes everyone.
TEST_CASE("S23 thundering herd: completions wake only waiters they "
          "concern") {
    kasync::options o = opts();
    o.spin_us = 1;
    kasync::scheduler s(std::move(o));
    kasync::domain a(s), b(s), e(s, kasync::domain_kind::exclusive);
    const int herd =
        static_cast<int>(kt::env_long("KASYNC_TEST_HERD", 1000));
    const int stream = kt::scaled(200);

    // Lets `extra` more waits go to sleep (or 5 s pass).
    auto wait_asleep = [&](std::uint64_t base, std::uint64_t extra) {
        auto until = std::chrono::steady_clock::now() + 5s;
        while (s.stats().waits_slept < base + extra &&
               std::chrono::steady_clock::now() < until)
            std::this_thread::sleep_for(1ms);
        std::this_thread::sleep_for(short_wait);
    };
    // Runs `n` no-op calls in d, without any kasync wait in this thread.
    auto run_stream = [&](kasync::domain& d, int n) {
        kt::counter ran;
        for (int i = 0; i < n; ++i)
            s.schedule([&] { ran.add(); }, {.in = &d});
        CHECK(ran.wait_for(n, long_wait));
        while (s.lowest_in_progress(d) != cookie_max)
            std::this_thread::yield();
        std::this_thread::sleep_for(short_wait);  // let woken waiters count
    };

    SUBCASE("waiters on one domain") {
        kt::gate ga;
        kt::opener open_on_exit{&ga};
        s.schedule([&] { ga.wait(); }, {.in = &a});

        std::atomic<int> returned{0}, bad{0};
        std::latch started(herd);
        std::vector<std::thread> ts;
        const std::uint64_t slept0 = s.stats().waits_slept;
        for (int i = 0; i < herd; ++i) {
            ts.emplace_back([&] {
                started.count_down();
                if (s.synchronize_full(a) != 0)
                    ++bad;
                ++returned;
            });
        }
        started.wait();
        wait_asleep(slept0, static_cast<std::uint64_t>(herd));

        kasync::statistics before = s.stats();
        run_stream(b, stream);
        run_stream(e, stream);
        kasync::statistics after = s.stats();
        CHECK(returned.load() == 0);
        CHECK(after.futile_wakeups - before.futile_wakeups == 0);
        CHECK(after.wakeups - before.wakeups == 0);

        ga.open();
        for (auto& t : ts)
            t.join();
        CHECK(returned.load() == herd);
        CHECK(bad.load() == 0);
        MESSAGE("releasing " << herd << " waiters: "
                             << s.stats().wakeups - after.wakeups
                             << " wake-ups, "
                             << s.stats().futile_wakeups -
                                    after.futile_wakeups
                             << " futile");
        CHECK(s.stats().futile_wakeups - after.futile_wakeups == 0);
    }

    SUBCASE("waiters on all registered domains") {
        kt::gate ga;
        kt::opener open_on_exit{&ga};
        s.schedule([&] { ga.wait(); }, {.in = &a});
        const int n = std::min(herd, 100);

        std::atomic<int> returned{0}, bad{0};
        std::latch started(n);
        std::vector<std::thread> ts;
        const std::uint64_t slept0 = s.stats().waits_slept;
        for (int i = 0; i < n; ++i) {
            ts.emplace_back([&] {
                started.count_down();
                if (s.synchronize_full() != 0)
                    ++bad;
                ++returned;
            });
        }
        started.wait();
        wait_asleep(slept0, static_cast<std::uint64_t>(n));

        // Exclusive completions never wake them.
        kasync::statistics before = s.stats();
        run_stream(e, stream);
        kasync::statistics after = s.stats();
        CHECK(returned.load() == 0);
        CHECK(after.wakeups - before.wakeups == 0);
        CHECK(after.futile_wakeups - before.futile_wakeups == 0);

        // Registered completions may wake them (futilely, A is pending).
        run_stream(b, stream);
        kasync::statistics after_b = s.stats();
        MESSAGE(n << " all-domain waiters, " << stream
                  << " registered completions: "
                  << after_b.futile_wakeups - after.futile_wakeups
                  << " futile wake-ups");
        CHECK(returned.load() == 0);

        ga.open();
        for (auto& t : ts)
            t.join();
        CHECK(returned.load() == n);
        CHECK(bad.load() == 0);
    }
}

// Naive design: a lost or repeated call somewhere in the mix.
TEST_CASE("S24 exactly once, and current_is_async() tells who runs it") {
    struct record {
        std::atomic<int> runs{0};
        std::atomic<int> async{-1};
        std::thread::id ran_on;
        std::thread::id scheduled_from;
        bool scheduler_async = false;
        bool refused = false;
        bool scheduled = false;
    };
    constexpr int producers = 3;
    const int per = kt::scaled(600);
    const int top = producers * per;
    std::vector<record> rec(static_cast<std::size_t>(top) * 2);
    std::atomic<long> errors_seen{0};

    kasync::options o = opts_limit(8);  // some calls fall back
    o.on_error = [&](const kasync::call_error&) { ++errors_seen; };
    auto s = std::make_unique<kasync::scheduler>(std::move(o));
    auto reg = std::make_unique<kasync::domain>(*s);
    auto excl = std::make_unique<kasync::domain>(
        *s, kasync::domain_kind::exclusive);
    std::atomic<long> thrown{0}, propagated{0};

    struct runner {
        record* r;
        std::atomic<long>* thrown;
        bool throws;
        void operator()() const {
            r->ran_on = std::this_thread::get_id();
            r->async = kasync::current_is_async() ? 1 : 0;
            ++r->runs;
            if (throws) {
                ++*thrown;
                throw std::runtime_error("S24 test exception");
            }
        }
    };

    auto submit = [&](int id, int kind) {
        record& r = rec[static_cast<std::size_t>(id)];
        r.scheduled_from = std::this_thread::get_id();
        r.scheduler_async = kasync::current_is_async();
        r.scheduled = true;
        runner fn{&r, &thrown, kind == 5};
        cookie_t c = 0;
        switch (kind) {
        case 1: c = s->schedule(fn, {.in = reg.get()}); break;
        case 2: c = s->schedule(fn, {.in = excl.get()}); break;
        case 3: c = s->schedule(fn, {.node = id % 2}); break;
        case 4:
            c = s->try_schedule(fn);
            r.refused = c == 0;
            break;
        default: c = s->schedule(fn); break;
        }
        return c;
    };

    // Producers stay alive until every call has run: a thread started
    // later must not reuse a producer's id and pass for it.
    std::latch start(producers), scheduled(producers), leave(1);
    std::vector<std::thread> ts;
    for (int p = 0; p < producers; ++p) {
        ts.emplace_back([&, p] {
            start.arrive_and_wait();
            for (int i = 0; i < per; ++i) {
                const int id = p * per + i;
                const int kind = id % 8;
                if (kind == 6 || kind == 7) {
                    // A call that schedules a child (which may fall back
                    // inside the call), and self-synchronises.
                    record& r = rec[static_cast<std::size_t>(id)];
                    r.scheduled_from = std::this_thread::get_id();
                    r.scheduler_async = kasync::current_is_async();
                    r.scheduled = true;
                    s->schedule([&r, &submit, &s, id, top](cookie_t own) {
                        r.ran_on = std::this_thread::get_id();
                        r.async = kasync::current_is_async() ? 1 : 0;
                        ++r.runs;
                        submit(top + id, id % 3);
                        (void)s->synchronize_cookie(own);
                    });
                } else {
                    try {
                        submit(id, kind);
                    } catch (...) {
                        ++propagated;  // a fallback's exception escaped
                    }
                }
            }
            scheduled.count_down();
            leave.wait();
        });
    }
    scheduled.wait();
    CHECK(s->shutdown() == 0);  // whatever is still queued runs now
    kasync::statistics st = s->stats();
    leave.count_down();
    for (auto& t : ts)
        t.join();

    int wrong_runs = 0, wrong_async = 0, refused = 0;
    for (std::size_t i = 0; i < rec.size(); ++i) {
        record& r = rec[i];
        if (!r.scheduled)
            continue;
        int expect = r.refused ? 0 : 1;
        if (r.runs.load() != expect) {
            if (++wrong_runs <= 5)
                MESSAGE("call " << i << " ran " << r.runs.load()
                                << " times, expected " << expect);
        }
        if (r.refused) {
            ++refused;
            continue;
        }
        bool same = r.ran_on == r.scheduled_from;
        int want = same ? (r.scheduler_async ? 1 : 0) : 1;
        if (r.async.load() != want && ++wrong_async <= 5)
            MESSAGE("call " << i << ": current_is_async() "
                            << r.async.load() << ", expected " << want);
    }
    CHECK(wrong_runs == 0);
    CHECK(wrong_async == 0);
    CHECK(propagated.load() == 0);
    CHECK(errors_seen.load() == thrown.load());
    CHECK(st.exceptions == static_cast<std::uint64_t>(thrown.load()));
    CHECK(st.refused == static_cast<std::uint64_t>(refused));
    CHECK(st.completed == st.scheduled);
    CHECK(st.pending == 0);
    MESSAGE(st.scheduled << " calls, " << st.ran_in_caller
                         << " in the caller, " << refused << " refused, "
                         << thrown.load() << " threw");
    reg.reset();
    excl.reset();
    s.reset();
}
