// Arenas per NUMA node, pinning, topology detection.  See placement.hpp.
//
// SPDX-License-Identifier: MIT
#include "placement.hpp"

#include "cookie_queue.hpp"
#include "engine.hpp"

#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/task_scheduler_observer.h>

#include <numa.h>

#include <algorithm>
#include <cstdio>
#include <mutex>
#include <pthread.h>
#include <thread>

namespace kasync::detail {

namespace {

cpu_set_t allowed_cpus() {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        for (int i = 0; i < int(std::max(1u, std::thread::hardware_concurrency())); ++i)
            CPU_SET(i, &set);
    return set;
}

// oneTBB's worker pool is process-wide and sized by the *smallest* live
// global_control; every scheduler needs its own threads on top of the
// others', so one process-wide control holds the sum.
struct worker_budget {
    std::mutex mu;
    std::size_t total = 0;                          // under mu
    std::unique_ptr<tbb::global_control> control;   // under mu

    void change(long delta) {
        std::lock_guard lock(mu);
        total = std::size_t(long(total) + delta);
        // The new control must exist before the old one goes, or the pool
        // would shrink to the default for an instant.
        std::unique_ptr<tbb::global_control> fresh;
        if (total)
            fresh = std::make_unique<tbb::global_control>(
                tbb::global_control::max_allowed_parallelism, total + 1);
        control = std::move(fresh);
    }
};

worker_budget& budget() {
    static worker_budget* b = new worker_budget;  // outlives every scheduler
    return *b;
}

// Threads per node: proportional to CPUs, at least one per node while
// there are threads, summing to `threads`.
std::vector<unsigned> share(const std::vector<std::size_t>& cpus, unsigned threads) {
    std::vector<unsigned> out(cpus.size(), 0);
    std::size_t total = 0;
    for (auto c : cpus)
        total += c;
    if (!total)
        return out;
    unsigned given = 0;
    std::vector<std::pair<double, std::size_t>> rest;
    for (std::size_t i = 0; i < cpus.size(); ++i) {
        double exact = double(threads) * double(cpus[i]) / double(total);
        out[i] = unsigned(exact);
        given += out[i];
        rest.emplace_back(exact - out[i], i);
    }
    std::sort(rest.begin(), rest.end(), [](auto a, auto b) { return a.first > b.first; });
    for (std::size_t k = 0; given < threads; k = (k + 1) % rest.size(), ++given)
        ++out[rest[k].second];
    // A node with CPUs but no thread takes one from the largest, if it can.
    for (std::size_t i = 0; i < out.size(); ++i) {
        if (out[i] || !cpus[i])
            continue;
        auto big = std::max_element(out.begin(), out.end());
        if (*big > 1) {
            --*big;
            out[i] = 1;
        }
    }
    return out;
}

}  // namespace

// Pins an arena's workers while they are in it.
class pinner final : public tbb::task_scheduler_observer {
public:
    pinner(tbb::task_arena& a, const cpu_set_t& cpus, bool pin)
        : tbb::task_scheduler_observer(a), cpus_(cpus),
          process_cpus_(allowed_cpus()), pin_(pin) {
        // release: oneTBB hands the observer to its workers through its own
        // (uninstrumented) lock; this flag makes the hand-off of the fields
        // visible to ThreadSanitizer too.
        ready_.store(true, std::memory_order_release);
        observe(true);
    }
    ~pinner() override {
        observe(false);  // oneTBB waits for callbacks in progress...
        // ...and so do we, visibly to ThreadSanitizer.  acquire: pairs with
        // the release at the end of each callback.
        while (busy_.load(std::memory_order_acquire))
            std::this_thread::yield();
    }

    void on_scheduler_entry(bool worker) override {
        // A failure to pin is harmless (placement is best effort): a CPU
        // may be offline.
        bool pin = enter();
        if (worker && pin)
            pthread_setaffinity_np(pthread_self(), sizeof cpus_, &cpus_);
        leave();
    }
    void on_scheduler_exit(bool worker) override {
        bool pin = enter();
        if (worker && pin)
            pthread_setaffinity_np(pthread_self(), sizeof process_cpus_,
                                   &process_cpus_);
        leave();
    }

private:
    bool enter() noexcept {
        // acquire: pairs with the constructor's release of the fields.
        bool ready = ready_.load(std::memory_order_acquire);
        // relaxed: only counts; the destructor's acquire pairs with leave().
        busy_.fetch_add(1, std::memory_order_relaxed);
        return ready && pin_;
    }
    void leave() noexcept {
        // release: our reads of the fields happen before the destructor.
        busy_.fetch_sub(1, std::memory_order_release);
    }

    const cpu_set_t cpus_;
    const cpu_set_t process_cpus_;
    const bool pin_;
    std::atomic<bool> ready_{false};
    std::atomic<int> busy_{0};
};

struct placement::arena {
    tbb::task_arena tbb_arena;
    pinner pins;  // after tbb_arena: it observes it
    cookie_queue queue;
    const int max_drainers;               // the arena's threads
    alignas(64) std::atomic<int> drainers{0};  // drain tasks queued or running
    std::atomic<bool> ready{false};            // constructed (see drain())

    arena(unsigned threads, const cpu_set_t& cpus, bool pin, unsigned queue_bits)
        : tbb_arena(int(threads), 0), pins((tbb_arena.initialize(), tbb_arena), cpus, pin),
          queue(queue_bits), max_drainers(int(threads)) {
        // release: oneTBB hands a drain task to its worker through its own
        // uninstrumented code; drain()'s acquire of this flag makes the
        // queue's construction visibly ordered for ThreadSanitizer too.
        ready.store(true, std::memory_order_release);
    }
};

placement::placement(engine& e, const topology& topo, unsigned threads, bool pin,
                     unsigned queue_bits)
    : engine_(e), threads_(threads) {
    cpu_set_t allowed = allowed_cpus();
    std::vector<cpu_set_t> sets;
    std::vector<std::size_t> counts;
    for (const auto& node : topo.node_cpus) {
        cpu_set_t set;
        CPU_ZERO(&set);
        for (int cpu : node)
            if (cpu >= 0 && cpu < CPU_SETSIZE && CPU_ISSET(cpu, &allowed))
                CPU_SET(cpu, &set);
        sets.push_back(set);
        counts.push_back(std::size_t(CPU_COUNT(&set)));
    }
    auto per_node = share(counts, threads);
    if (std::all_of(per_node.begin(), per_node.end(), [](unsigned n) { return n == 0; })) {
        // No usable node (a topology naming CPUs we may not use): one
        // unpinned arena of every thread.
        sets.assign(1, allowed);
        per_node.assign(1, threads);
        pin = false;
    }
    node_to_arena_.assign(sets.size(), -1);
    cpu_to_arena_.assign(CPU_SETSIZE, -1);
    budget().change(long(threads));
    for (std::size_t n = 0; n < sets.size(); ++n) {
        if (!per_node[n])
            continue;
        node_to_arena_[n] = int(arenas_.size());
        for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu)
            if (CPU_ISSET(cpu, &sets[n]) && cpu_to_arena_[cpu] < 0)
                cpu_to_arena_[cpu] = int(arenas_.size());
        arenas_.push_back(std::make_unique<arena>(per_node[n], sets[n], pin, queue_bits));
    }
}

placement::~placement() {
    stop();
    arenas_.clear();
    budget().change(-long(threads_));
}

placement::arena& placement::arena_for(int node) noexcept {
    if (arenas_.size() == 1)
        return *arenas_[0];  // no choice to make: skip sched_getcpu()
    if (node >= 0 && std::size_t(node) < node_to_arena_.size() &&
        node_to_arena_[node] >= 0)
        return *arenas_[node_to_arena_[node]];
    int cpu = sched_getcpu();
    if (cpu >= 0 && cpu < int(cpu_to_arena_.size()) && cpu_to_arena_[cpu] >= 0)
        return *arenas_[cpu_to_arena_[cpu]];
    return *arenas_[0];
}

// The drain hand-off, a Dekker pair between a producer and a drainer that
// is leaving:
//
//   producer                          drainer
//   push: seq_cst CAS on the tail     drainers.fetch_sub (seq_cst)
//   drainers.load (seq_cst)           queue.busy(): seq_cst loads of tail
//   < max: start a drainer            busy: stay (take the count back)
//
// In the single total order of seq_cst operations one of the two comes
// first: either the producer sees the drainer gone and starts one, or the
// drainer sees the push (written or still being written) and stays.  So a
// queued cookie always has a drainer coming for it.
void placement::enqueue(int node, cookie_t c) {
    arena& a = arena_for(node);
    if (!a.queue.push(c)) {
        enqueue_task(a, c);  // full: one task for this call
        return;
    }
    // seq_cst: the producer's half of the hand-off above.
    int d = a.drainers.load(std::memory_order_seq_cst);
    while (d < a.max_drainers) {
        if (a.drainers.compare_exchange_weak(
                d, d + 1,
                // seq_cst: as above; relaxed on failure: we only look again.
                std::memory_order_seq_cst, std::memory_order_relaxed)) {
            spawn_drainer(a);
            return;
        }
    }
}

// Start a drain task for `a`, whose drainer count the caller has raised.
void placement::spawn_drainer(arena& a) noexcept {
    // relaxed: statistics only.
    drain_tasks_.fetch_add(1, std::memory_order_relaxed);
    // relaxed: stop() waits for zero with acquire; only the count matters.
    in_flight_.fetch_add(1, std::memory_order_relaxed);
    try {
        a.tbb_arena.enqueue([this, &a] {
            drain(a);
            // release: stop() acquires it before the engine is torn down.
            in_flight_.fetch_sub(1, std::memory_order_release);
        });
    } catch (...) {
        // No memory for a task: this thread drains instead (the calls run
        // in the caller, as SPEC's fallback says they may).
        in_flight_.fetch_sub(1, std::memory_order_relaxed);  // never queued
        drain(a);
    }
}

// Run queued cookies until the queue is empty and leave, unless a push
// raced the leaving (the hand-off above).  A cookie that a waiting worker
// or a spare already ran is skipped by run_cookie().
void placement::drain(arena& a) noexcept {
    // acquire: pairs with the arena constructor's release (see there).
    if (!a.ready.load(std::memory_order_acquire))
        return;  // unreachable: tasks are only queued on built arenas
    for (unsigned idle = 0;;) {
        cookie_t c;
        bool ran = false;
        while (a.queue.pop(&c)) {
            engine_.run_cookie(c);
            ran = true;
        }
        idle = ran ? 0 : idle + 1;
        // seq_cst: the drainer's half of the hand-off above.
        a.drainers.fetch_sub(1, std::memory_order_seq_cst);
        if (!a.queue.busy())
            return;
        // A push came (or is still writing its cell): stay, unless enough
        // drainers are there, every one of which will look again.
        // relaxed: a guess; the CAS below decides.
        int d = a.drainers.load(std::memory_order_relaxed);
        do {
            if (d >= a.max_drainers)
                return;
        } while (!a.drainers.compare_exchange_weak(
                     d, d + 1,
                     // relaxed (both): the count alone is the token; the pops
                     // that follow are ordered by the queue's own acquire loads.
                     std::memory_order_relaxed, std::memory_order_relaxed));
        if (idle > 1)  // a pusher is between claiming and writing its cell
            std::this_thread::yield();
    }
}

// One oneTBB task for one cookie: used only when the arena's queue is full.
void placement::enqueue_task(arena& a, cookie_t c) {
    // relaxed: statistics only.
    queue_full_.fetch_add(1, std::memory_order_relaxed);
    // relaxed: as in spawn_drainer().
    in_flight_.fetch_add(1, std::memory_order_relaxed);
    try {
        a.tbb_arena.enqueue([this, c] {
            engine_.run_cookie(c);
            // release: stop() acquires it before the engine is torn down.
            in_flight_.fetch_sub(1, std::memory_order_release);
        });
    } catch (...) {
        in_flight_.fetch_sub(1, std::memory_order_relaxed);  // never queued
        throw;
    }
}

std::uint64_t placement::drain_tasks() const noexcept {
    // relaxed: a statistics snapshot.
    return drain_tasks_.load(std::memory_order_relaxed);
}

std::uint64_t placement::queue_full() const noexcept {
    // relaxed: a statistics snapshot.
    return queue_full_.load(std::memory_order_relaxed);
}

void placement::stop() {
    if (stopped_)
        return;
    stopped_ = true;
    // Every call has run; the drainers and tasks left only skip cookies
    // that waiting workers or spares ran themselves.  Let them finish.
    for (unsigned n = 0; in_flight_.load(std::memory_order_acquire) > 0; ++n)
        n < 64 ? std::this_thread::yield()
               : std::this_thread::sleep_for(std::chrono::microseconds(100));
}

}  // namespace kasync::detail

namespace kasync {

topology topology::detect() {
    topology t;
    cpu_set_t allowed = detail::allowed_cpus();
    // numa_available() < 0: no NUMA, or a container that forbids its calls.
    if (numa_available() >= 0) {
        int max_node = numa_max_node();
        struct bitmask* mask = numa_allocate_cpumask();
        for (int node = 0; mask && node <= max_node; ++node) {
            std::vector<int> cpus;
            if (numa_node_to_cpus(node, mask) == 0)
                for (unsigned cpu = 0; cpu < mask->size && cpu < CPU_SETSIZE; ++cpu)
                    if (numa_bitmask_isbitset(mask, cpu) && CPU_ISSET(cpu, &allowed))
                        cpus.push_back(int(cpu));
            t.node_cpus.push_back(std::move(cpus));
        }
        if (mask)
            numa_free_cpumask(mask);
    }
    bool any = std::any_of(t.node_cpus.begin(), t.node_cpus.end(),
                           [](const auto& c) { return !c.empty(); });
    if (!any) {
        t.node_cpus.assign(1, {});
        for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu)
            if (CPU_ISSET(cpu, &allowed))
                t.node_cpus[0].push_back(cpu);
    }
    return t;
}

}  // namespace kasync
