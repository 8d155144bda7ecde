// Dispatch: the per-arena cookie queue and its drain tasks (placement.cpp,
// cookie_queue.hpp).
//
// What a naive version gets wrong, and what each test catches:
//   - a queue that loses or repeats a cookie under several producers and
//     consumers ("the queue: every cookie once, under two producers and two
//     consumers");
//   - a drainer that leaves just as a producer, seeing it still there,
//     decides not to start another: the pushed cookie then waits forever
//     ("round trips ...": thousands of leave/push races, a hang trips the
//     watchdog);
//   - a full queue that drops or blocks the call ("a full queue ...");
//   - one oneTBB task per call after all ("a stream ...").
//
// SPDX-License-Identifier: MIT
#define KASYNC_TEST_MAIN
#include "support.hpp"

#include "cookie_queue.hpp"

#include <atomic>
#include <thread>
#include <vector>

using kasync::cookie_t;
using kasync::detail::cookie_queue;

namespace {

// A gate a worker spins on without telling the pool: the worker stays
// busy, and nothing compensates for it.
struct busy_gate {
    std::atomic<bool> open{false};
    void wait() const {
        while (!open.load(std::memory_order_acquire))
            std::this_thread::yield();
    }
};

}  // namespace

TEST_CASE("the queue: FIFO, full at its size, and reusable across laps") {
    cookie_queue q(4);  // 16 cells
    cookie_t c = 0;
    CHECK_FALSE(q.pop(&c));
    CHECK_FALSE(q.busy());
    for (int lap = 0; lap < 5; ++lap) {
        for (cookie_t i = 1; i <= 16; ++i)
            REQUIRE(q.push(lap * 100 + i));
        CHECK(q.busy());
        CHECK_FALSE(q.push(999));  // full: refused, nothing overwritten
        for (cookie_t i = 1; i <= 16; ++i) {
            REQUIRE(q.pop(&c));
            CHECK(c == lap * 100 + i);
        }
        CHECK_FALSE(q.pop(&c));
        CHECK_FALSE(q.busy());
    }
}

TEST_CASE("the queue: every cookie once, under two producers and two consumers") {
    constexpr cookie_t per_producer = 200000;
    const cookie_t n = cookie_t(kt::scaled(int(per_producer)));
    cookie_queue q(6);  // 64 cells: producers often find it full
    std::vector<std::atomic<int>> seen(2 * n + 1);
    std::atomic<cookie_t> popped{0};
    std::atomic<bool> reordered{false};

    auto produce = [&](cookie_t first) {
        for (cookie_t c = first; c < first + n; ++c)
            while (!q.push(c))
                std::this_thread::yield();
    };
    auto consume = [&] {
        cookie_t last[2] = {0, 0};  // per producer: FIFO within one consumer
        cookie_t c;
        while (popped.load() < 2 * n) {
            if (!q.pop(&c)) {
                std::this_thread::yield();
                continue;
            }
            seen[c].fetch_add(1);
            int from = c > n;
            if (c <= last[from])
                reordered = true;
            last[from] = c;
            popped.fetch_add(1);
        }
    };
    std::thread p1(produce, cookie_t(1)), p2(produce, n + 1);
    std::thread c1(consume), c2(consume);
    p1.join();
    p2.join();
    c1.join();
    c2.join();

    int lost = 0, twice = 0;
    for (cookie_t c = 1; c <= 2 * n; ++c) {
        lost += seen[c].load() == 0;
        twice += seen[c].load() > 1;
    }
    CHECK(lost == 0);
    CHECK(twice == 0);
    CHECK_FALSE(reordered.load());
    CHECK_FALSE(q.busy());
}

// Each round schedules one empty call and waits for it: the arena's
// drainer finds its queue empty and leaves about when the next push comes.
void round_trips(unsigned threads, int producers) {
    auto o = kt::config::get().make_options(threads);
    kasync::scheduler s(o);
    const int rounds = kt::scaled(20000);
    std::atomic<long> ran{0};
    auto producer = [&] {
        for (int i = 0; i < rounds; ++i) {
            cookie_t c = s.schedule([&] { ran.fetch_add(1); });
            REQUIRE(c != 0);
            REQUIRE(s.synchronize_cookie(c + 1) == 0);
        }
    };
    std::vector<std::thread> ps;
    for (int p = 0; p < producers; ++p)
        ps.emplace_back(producer);
    for (auto& t : ps)
        t.join();
    CHECK(s.synchronize_full() == 0);
    CHECK(ran.load() == long(producers) * rounds);
    auto st = s.stats();
    CHECK(st.completed == st.scheduled);
    CHECK(st.drain_tasks >= 1);
}

TEST_CASE("round trips: a drainer leaving never strands a pushed cookie") {
    // With one thread there is one drainer at most, and nobody else to
    // rescue a cookie it leaves behind: a lost hand-off hangs (watchdog).
    SUBCASE("one thread, one producer") { round_trips(1, 1); }
    SUBCASE("this run's threads, two producers") {
        round_trips(kt::config::get().threads, 2);
    }
}

TEST_CASE("a stream behind a busy worker costs no oneTBB task per call") {
    auto o = kt::config::get().make_options(1);
    o.topo.reset();  // one arena, one thread: one drainer at most
    kasync::scheduler s(o);
    busy_gate g;
    std::atomic<long> ran{0};
    // Its drainer is the one the arena may have, and it stays (running,
    // or about to run, the call): every push below finds it present.
    s.schedule([&] { g.wait(); });
    const int n = 1000;
    for (int i = 0; i < n; ++i)
        s.schedule([&] { ran.fetch_add(1); });
    auto before = s.stats();
    CHECK(before.drain_tasks == 1);
    CHECK(before.queue_full == 0);
    g.open = true;
    CHECK(s.synchronize_full() == 0);
    CHECK(ran.load() == n);
}

TEST_CASE("a full queue: calls still run, once, as tasks of their own") {
    // One thread, a pending limit of 16 (a 16-cell queue).  The first call
    // blocks, declared, in another domain: its drainer stays, so every
    // cookie pushed after it stays in the queue; the spare thread that
    // takes the worker's place runs those calls from the ring.  Their queue
    // cells are only freed when a drainer pops them, so after 15 rounds
    // the queue is full and the rest go out as tasks.
    auto o = kt::config::get().make_options(1);
    o.topo.reset();
    o.max_pending = 16;
    kasync::scheduler s(o);
    kasync::domain other(s, kasync::domain_kind::exclusive);
    kt::gate g;
    kt::opener open_at_exit{&g};
    std::atomic<bool> first_running{false};
    s.schedule([&] { first_running = true; g.wait(); }, {.in = &other});
    while (!first_running.load())
        std::this_thread::yield();

    const int rounds = 100;
    std::vector<std::atomic<int>> runs(rounds);
    for (int i = 0; i < rounds; ++i) {
        cookie_t c = s.schedule([&runs, i] { runs[i].fetch_add(1); });
        REQUIRE(c != 0);
        REQUIRE(s.synchronize_cookie(c + 1) == 0);
    }
    auto mid = s.stats();
    CHECK(mid.queue_full > 0);
    CHECK(mid.ran_in_caller == 0);

    g.open();
    CHECK(s.synchronize_full(other) == 0);
    CHECK(s.synchronize_full() == 0);
    for (int i = 0; i < rounds; ++i) {
        CAPTURE(i);
        CHECK(runs[i].load() == 1);
    }
    // The queue drained its stale cells: a new stream is queued again.
    auto before = s.stats().queue_full;
    std::atomic<int> more{0};
    for (int i = 0; i < 8; ++i)
        s.schedule([&] { more.fetch_add(1); });
    CHECK(s.synchronize_full() == 0);
    CHECK(more.load() == 8);
    CHECK(s.stats().queue_full == before);
}
