// kasync-bench-suspend: what parking a waiting call costs, two ways.
//
//   kasync-bench-suspend [ROUNDS]
//
// The forward-progress choice of the engine (lib/engine.cpp, "managed
// blocking and spare threads") was between oneTBB's resumable tasks
// (task::suspend / task::resume: the worker leaves the waiting call's stack
// and runs other tasks) and what kasync does: the waiting thread sleeps on
// a futex and a spare thread takes its place.  This measures the round trip
// of each with a second thread that resumes (or wakes) at once:
//
//   suspend: a task in a 2-thread arena suspends; a plain thread resumes it;
//   futex:   a thread sleeps on a futex word; a plain thread wakes it.
//
// Prints one line per way, microseconds per round trip.  Not a test: the
// smoke run in `meson test` only checks that it runs.
//
// SPDX-License-Identifier: MIT
#include <oneapi/tbb/task.h>
#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/task_group.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace {

using clock_type = std::chrono::steady_clock;

double us_per_round(clock_type::duration d, int rounds) {
    return std::chrono::duration<double, std::micro>(d).count() / rounds;
}

double suspend_round_trip(int rounds) {
    std::atomic<oneapi::tbb::task::suspend_point> parked{nullptr};
    std::atomic<bool> stop{false};
    std::thread resumer([&] {
        while (!stop.load(std::memory_order_acquire))
            if (auto p = parked.exchange(nullptr, std::memory_order_acq_rel))
                oneapi::tbb::task::resume(p);
    });
    oneapi::tbb::task_arena arena(2);
    auto t0 = clock_type::now();
    arena.execute([&] {
        oneapi::tbb::task_group g;
        g.run([&] {
            for (int i = 0; i < rounds; ++i)
                oneapi::tbb::task::suspend([&](oneapi::tbb::task::suspend_point p) {
                    parked.store(p, std::memory_order_release);
                });
        });
        g.wait();
    });
    auto t1 = clock_type::now();
    stop.store(true, std::memory_order_release);
    resumer.join();
    return us_per_round(t1 - t0, rounds);
}

long futex(std::atomic<int>* word, int op, int val) {
    return syscall(SYS_futex, reinterpret_cast<int*>(word), op, val, nullptr, nullptr, 0);
}

double futex_round_trip(int rounds) {
    std::atomic<int> word{0};  // 1: asleep (or about to be), 2: woken
    std::atomic<bool> stop{false};
    std::thread waker([&] {
        while (!stop.load(std::memory_order_acquire)) {
            int one = 1;
            if (word.compare_exchange_strong(one, 2, std::memory_order_acq_rel))
                futex(&word, FUTEX_WAKE_PRIVATE, 1);
        }
    });
    auto t0 = clock_type::now();
    for (int i = 0; i < rounds; ++i) {
        word.store(1, std::memory_order_release);
        while (word.load(std::memory_order_acquire) != 2)
            futex(&word, FUTEX_WAIT_PRIVATE, 1);
    }
    auto t1 = clock_type::now();
    stop.store(true, std::memory_order_release);
    waker.join();
    return us_per_round(t1 - t0, rounds);
}

}  // namespace

int main(int argc, char** argv) {
    int rounds = argc > 1 ? std::atoi(argv[1]) : 20000;
    if (rounds <= 0) {
        std::fprintf(stderr, "kasync-bench-suspend: ROUNDS must be a positive number\n");
        return 2;
    }
    std::printf("suspend + resume (oneTBB resumable task): %.2f us per round trip\n",
                suspend_round_trip(rounds));
    std::printf("futex wait + wake (a sleeping thread):    %.2f us per round trip\n",
                futex_round_trip(rounds));
    return 0;
}
