// kasync-callgrind-driver: a fixed sequence of schedules and completions
// for valgrind --tool=callgrind, so instruction counts per call can be read
// off on a machine too noisy for timings.
//
//   valgrind --tool=callgrind --separate-threads=yes
//       --callgrind-out-file=/tmp/cg/cg.%p ./kasync-callgrind-driver kasync 10000
//   (one command line; bench/compare --callgrind runs it and does the sums)
//
// Callgrind's client requests zero and dump the counters of the calling
// thread only, so each side marks its own part of the third round (the
// first two warm pools and caches up):
//   1. the one worker (threads = 1) is held on a gate, asleep in a futex;
//   2. the main thread zeroes its counters, schedules N empty calls and
//      dumps "schedule": main thread's Ir / N = the schedule path;
//   3. one more call, "dump", is scheduled after them; the gate opens, the
//      released gate call zeroes the worker's counters, the worker runs the
//      N calls, and the dump call dumps "complete" (then checks that all N
//      had completed): worker's Ir / N = dispatch + run + complete path;
//   4. (kasync, seed) a call k is held; the main thread waits N times for
//      k, already satisfied: dump "satisfied": Ir / N per wait.
//
// SPDX-License-Identifier: MIT
#include "systems.hpp"

#include <valgrind/callgrind.h>

#include <cstring>
#include <string>

namespace {

using namespace kbench;

void zero_counters() { CALLGRIND_ZERO_STATS; }

std::atomic<bool> g_dump_early{false};

// Dumps first, then runs the check (so its cost is not in the figure).
template <class Check>
void dump_complete(Check&& all_done) {
    CALLGRIND_DUMP_STATS_AT("complete");
    if (!all_done())
        g_dump_early = true;
}

// Queue the dump call behind everything `p` queued.
void post_dump(kasync_sys& s, producer& p, bool measure) {
    auto* sched = &s.s;
    p.last = sched->schedule([sched, measure](kasync::cookie_t c) {
        if (measure)
            dump_complete([&] { return sched->lowest_in_progress() == c; });
    });
}
struct seed_dump {
    seed::scheduler* s;
    bool measure;
    seed::cookie_t cookie;
};
void post_dump(seed_sys& s, producer& p, bool measure) {
    static seed_dump d;
    d = {&s.s, measure, 0};
    p.last = s.s.schedule(
        [](void* data, seed::cookie_t c) {
            auto* x = static_cast<seed_dump*>(data);
            if (x->measure)
                dump_complete([&] { return x->s->lowest_in_progress(nullptr) == c; });
        },
        &d);
}
void post_dump(tbb_sys& s, producer& p, bool measure) {
    const std::uint64_t expect = p.posted;
    ++p.posted;
    s.arena.enqueue([c = &p.comp, measure, expect] {
        if (measure)
            dump_complete([&] { return c->done.load() == expect; });
        c->arrive();
    });
}
void post_dump(asio_sys& s, producer& p, bool measure) {
    const std::uint64_t expect = p.posted;
    ++p.posted;
    boost::asio::post(s.pool, [c = &p.comp, measure, expect] {
        if (measure)
            dump_complete([&] { return c->done.load() == expect; });
        c->arrive();
    });
}

template <class S>
int drive(long n, unsigned threads) {
    S s(threads);
    producer p;
    for (int round = 0; round < 3; ++round) {
        const bool measure = round == 2;
        gate g;
        if (measure)
            g.after = &zero_counters;
        for (unsigned w = 0; w < threads; ++w)
            s.post_gate(g);
        g.await_started();
        if (measure)
            CALLGRIND_ZERO_STATS;
        for (long i = 0; i < n; ++i)
            s.post_empty(p);
        if (measure)
            CALLGRIND_DUMP_STATS_AT("schedule");
        post_dump(s, p, measure);
        g.open();
        s.wait(p);
        s.wait_all();
    }
    // 4. The already-satisfied wait: a call (cookie k) is held, the main
    //    thread waits for k N times; dump "satisfied": Ir / N per wait.
    if constexpr (std::is_same_v<S, kasync_sys> || std::is_same_v<S, seed_sys>) {
        gate g;
        const auto k = s.post_gate(g);
        g.await_started();
        CALLGRIND_ZERO_STATS;
        for (long i = 0; i < n; ++i)
            s.s.synchronize_cookie(k);
        CALLGRIND_DUMP_STATS_AT("satisfied");
        g.open();
        s.wait_all();
    }
    if (g_dump_early)
        std::fprintf(stderr, "warning: the dump call ran before every call had completed\n");
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s kasync|seed|tbb|asio [N=10000] [threads=1]\n",
                     argv[0]);
        return 2;
    }
    std::string sys = argv[1];
    long n = argc > 2 ? std::atol(argv[2]) : 10000;
    unsigned threads = argc > 3 ? static_cast<unsigned>(std::atoi(argv[3])) : 1;
    if (sys == "kasync")
        return drive<kasync_sys>(n, threads);
    if (sys == "seed")
        return drive<seed_sys>(n, threads);
    if (sys == "tbb")
        return drive<tbb_sys>(n, threads);
    if (sys == "asio")
        return drive<asio_sys>(n, threads);
    std::fprintf(stderr, "unknown system %s\n", sys.c_str());
    return 2;
}
