// The systems kasync-bench compares, behind one small interface, plus the
// helpers every bench program shares (calibrated work, completion counters,
// gates that hold workers, context-switch counters).
//
// Each system offers, for a producer thread's `producer` record:
//   post_empty(p)   queue one empty call
//   wait(p)         return once every call p queued has finished
//   post_gate(g)    queue a call that blocks its worker until g is opened
//   wait_all()      return once everything queued has finished
//
// SPDX-License-Identifier: MIT
#ifndef KASYNC_BENCH_SYSTEMS_HPP
#define KASYNC_BENCH_SYSTEMS_HPP

#include <kasync/kasync.hpp>

#include "seed_design.hpp"

#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/task_scheduler_observer.h>

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>

#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <semaphore>
#include <string>
#include <thread>
#include <vector>

namespace kbench {

inline constexpr unsigned workers = 2;  // every system runs 2 worker threads

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

inline std::uint64_t now_ns() noexcept {
    return static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(
            std::chrono::steady_clock::now().time_since_epoch())
            .count());
}

inline std::uint64_t env_u64(const char* name, std::uint64_t dflt) {
    const char* v = std::getenv(name);
    if (!v || !*v)
        return dflt;
    char* end = nullptr;
    unsigned long long x = std::strtoull(v, &end, 10);
    if (*end) {
        std::fprintf(stderr, "kasync-bench: ignoring bad %s=%s\n", name, v);
        return dflt;
    }
    return x;
}

// ---------------------------------------------------------------- work ----

// A dependent chain of multiplies the compiler cannot fold or vectorise.
inline std::uint64_t spin_work(std::uint64_t iters) noexcept {
    std::uint64_t x = 0x9e3779b97f4a7c15ull;
    for (std::uint64_t i = 0; i < iters; ++i) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        asm volatile("" : "+r"(x));
    }
    return x;
}

// Iterations of spin_work that take about `ns` on this machine (best of a
// few tries, so a noisy neighbour does not inflate the calibration).
inline std::uint64_t calibrate_work(std::uint64_t ns) {
    constexpr std::uint64_t probe = 1u << 20;
    std::uint64_t best = UINT64_MAX;
    for (int i = 0; i < 7; ++i) {
        std::uint64_t t0 = now_ns();
        volatile std::uint64_t sink = spin_work(probe);
        (void)sink;
        best = std::min(best, now_ns() - t0);
    }
    double per_iter = static_cast<double>(best) / probe;
    return std::max<std::uint64_t>(1, static_cast<std::uint64_t>(ns / per_iter));
}

// --------------------------------------------------------- completion ----

// How long a baseline waiter spins before it sleeps on a futex.
inline std::uint64_t baseline_spin_ns() {
    static const std::uint64_t v = env_u64("KASYNC_BENCH_SPIN_NS", 20000);
    return v;
}

// The completion counter of the unordered baselines: calls count up, one
// waiter waits for a target count, spinning first, then on a futex
// (std::atomic::wait).  Only the completion that reaches the target the
// waiter announced sends a wake-up, so calls finishing while nobody sleeps
// make no system call.
struct completion {
    alignas(64) std::atomic<std::uint64_t> done{0};
    alignas(64) std::atomic<std::uint64_t> target{0};

    void arrive() noexcept {
        std::uint64_t n = done.fetch_add(1, std::memory_order_seq_cst) + 1;
        if (n == target.load(std::memory_order_seq_cst))
            done.notify_all();
    }

    void wait_for(std::uint64_t t) noexcept {
        if (done.load(std::memory_order_acquire) >= t)
            return;
        const std::uint64_t deadline = now_ns() + baseline_spin_ns();
        for (unsigned i = 1;; ++i) {
            if (done.load(std::memory_order_acquire) >= t)
                return;
            cpu_relax();
            if ((i & 63) == 0 && now_ns() > deadline)
                break;
        }
        target.store(t, std::memory_order_seq_cst);
        std::uint64_t v = done.load(std::memory_order_seq_cst);
        while (v < t) {
            done.wait(v, std::memory_order_acquire);
            v = done.load(std::memory_order_acquire);
        }
    }
};

// One producer thread's bookkeeping.
struct producer {
    kasync::cookie_t last = 0;   // ordered systems: last cookie taken
    std::uint64_t posted = 0;    // unordered systems: calls queued
    completion comp;             // unordered systems: calls finished
};

// Holds workers: each gate call counts itself in `started`, then blocks
// (futex sleep, no spinning) until open() releases it.
struct gate {
    std::atomic<unsigned> started{0};
    std::counting_semaphore<1024> sem{0};
    unsigned posted = 0;
    void (*after)() = nullptr;  // run by each gate call once released

    void await_started() {
        while (started.load(std::memory_order_acquire) < posted)
            std::this_thread::yield();
    }
    void open() { sem.release(static_cast<std::ptrdiff_t>(posted)); }
    void enter() {
        started.fetch_add(1, std::memory_order_acq_rel);
        sem.acquire();
        if (after)
            after();
    }
};

// ---------------------------------------------------- context switches ----

inline long process_voluntary_switches() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_nvcsw;
}

inline long thread_voluntary_switches(long tid) {
    std::ifstream f("/proc/self/task/" + std::to_string(tid) + "/status");
    std::string line;
    while (std::getline(f, line))
        if (line.rfind("voluntary_ctxt_switches:", 0) == 0)
            return std::stol(line.substr(24));
    return -1;
}

inline long gettid_now() { return static_cast<long>(syscall(SYS_gettid)); }

// ------------------------------------------------------------- systems ----

struct kasync_sys {
    static constexpr const char* name = "kasync";
    kasync::scheduler s;

    static kasync::options opts(unsigned threads) {
        kasync::options o;
        o.threads = threads;
        return o;
    }
    explicit kasync_sys(unsigned threads = workers) : s(opts(threads)) {}

    void post_empty(producer& p) { p.last = s.schedule([] {}); }
    void wait(producer& p) { s.synchronize_cookie(p.last + 1); }
    kasync::cookie_t post_gate(gate& g) {
        ++g.posted;
        return s.schedule([&g] { g.enter(); });
    }
    void wait_all() { s.synchronize_full(); }
};

inline void seed_noop(void*, seed::cookie_t) {}
inline void seed_gate(void* g, seed::cookie_t) { static_cast<gate*>(g)->enter(); }

struct seed_sys {
    static constexpr const char* name = "seed";
    seed::scheduler s;

    explicit seed_sys(unsigned threads = workers) : s(threads) {}

    void post_empty(producer& p) { p.last = s.schedule(&seed_noop, nullptr); }
    void wait(producer& p) { s.synchronize_cookie(p.last + 1); }
    seed::cookie_t post_gate(gate& g) {
        ++g.posted;
        return s.schedule(&seed_gate, &g);
    }
    void wait_all() { s.synchronize_full(); }
};

// A completion counter for wait_all() of the unordered systems.
struct all_counter {
    std::atomic<std::uint64_t> posted{0};
    completion comp;
};

struct tbb_sys {
    static constexpr const char* name = "tbb";
    // The market's default is (hardware threads - 1) workers; raise it so
    // the arena gets `threads` workers of its own, none reserved for a
    // master thread: enqueue-only producers never join it.
    tbb::global_control gc;
    tbb::task_arena arena;
    all_counter all;

    explicit tbb_sys(unsigned threads = workers)
        : gc(tbb::global_control::max_allowed_parallelism, threads + 1),
          arena(static_cast<int>(threads), 0) {
        arena.initialize();
    }
    ~tbb_sys() { wait_all(); }

    void post_empty(producer& p) {
        ++p.posted;
        arena.enqueue([c = &p.comp] { c->arrive(); });
    }
    void wait(producer& p) { p.comp.wait_for(p.posted); }
    std::uint64_t post_gate(gate& g) {
        ++g.posted;
        all.posted.fetch_add(1);
        arena.enqueue([&g, a = &all] {
            g.enter();
            a->comp.arrive();
        });
        return 0;
    }
    void wait_all() { all.comp.wait_for(all.posted.load()); }
};

struct asio_sys {
    static constexpr const char* name = "asio";
    boost::asio::thread_pool pool;
    all_counter all;

    explicit asio_sys(unsigned threads = workers) : pool(threads) {}
    ~asio_sys() { wait_all(); }

    void post_empty(producer& p) {
        ++p.posted;
        boost::asio::post(pool, [c = &p.comp] { c->arrive(); });
    }
    void wait(producer& p) { p.comp.wait_for(p.posted); }
    std::uint64_t post_gate(gate& g) {
        ++g.posted;
        all.posted.fetch_add(1);
        boost::asio::post(pool, [&g, a = &all] {
            g.enter();
            a->comp.arrive();
        });
        return 0;
    }
    void wait_all() { all.comp.wait_for(all.posted.load()); }
};

// ----------------------------------------------------------- placement ----

// The node layout of the placement workload: KASYNC_TOPOLOGY when set,
// otherwise one node per CPU for the first two allowed CPUs ("0:0;1:1").
inline kasync::topology placement_topology() {
    if (const char* env = std::getenv("KASYNC_TOPOLOGY")) {
        std::string err;
        if (auto t = kasync::topology::parse(env, &err))
            return *t;
        std::fprintf(stderr, "kasync-bench: bad KASYNC_TOPOLOGY (%s)\n", err.c_str());
    }
    cpu_set_t set;
    CPU_ZERO(&set);
    sched_getaffinity(0, sizeof set, &set);
    kasync::topology t;
    for (int cpu = 0; cpu < CPU_SETSIZE && t.node_cpus.size() < 2; ++cpu)
        if (CPU_ISSET(cpu, &set))
            t.node_cpus.push_back({cpu});
    return t;
}

inline int node_of_cpu(const kasync::topology& t, int cpu) {
    for (std::size_t n = 0; n < t.node_cpus.size(); ++n)
        for (int c : t.node_cpus[n])
            if (c == cpu)
                return static_cast<int>(n);
    return -1;
}

struct kasync_numa_sys {
    static constexpr const char* name = "kasync";
    kasync::topology topo;
    kasync::scheduler s;

    static kasync::options opts(const kasync::topology& t) {
        kasync::options o;
        o.threads = workers;
        o.topo = t;
        return o;
    }
    kasync_numa_sys() : topo(placement_topology()), s(opts(topo)) {}
};

// Raw oneTBB with one arena per node, its threads pinned to the node's CPUs
// on entry: the floor for node-local scheduling.
class pin_observer : public tbb::task_scheduler_observer {
public:
    pin_observer(tbb::task_arena& a, std::vector<int> cpus)
        : tbb::task_scheduler_observer(a), cpus_(std::move(cpus)) {
        observe(true);
    }
    ~pin_observer() override { observe(false); }
    void on_scheduler_entry(bool) override {
        cpu_set_t set;
        CPU_ZERO(&set);
        for (int c : cpus_)
            CPU_SET(c, &set);
        sched_setaffinity(0, sizeof set, &set);
    }

private:
    std::vector<int> cpus_;
};

struct tbb_numa_sys {
    static constexpr const char* name = "tbb";
    kasync::topology topo;
    tbb::global_control gc;
    std::vector<std::unique_ptr<tbb::task_arena>> arenas;
    std::vector<std::unique_ptr<pin_observer>> observers;

    tbb_numa_sys()
        : topo(placement_topology()),
          gc(tbb::global_control::max_allowed_parallelism, workers + 1) {
        std::size_t n = std::max<std::size_t>(1, topo.nodes());
        int per = static_cast<int>(std::max<std::size_t>(1, workers / n));
        for (std::size_t i = 0; i < n; ++i) {
            arenas.push_back(std::make_unique<tbb::task_arena>(per, 0));
            arenas.back()->initialize();
            observers.push_back(
                std::make_unique<pin_observer>(*arenas.back(), topo.node_cpus[i]));
        }
    }
};

}  // namespace kbench

#endif
