// kasync-bench: kasync against its baselines on the workloads of issue 4,
// side by side in one binary (see bench/README.md).
//
// Benchmark names are "<workload>/<system>/real_time/threads:<producers>".
// Every benchmark reports items (calls) per second; bench/compare turns them
// into ns per call (aggregate over the producers) and ratios.
//
// SPDX-License-Identifier: MIT
#include "systems.hpp"

#include <benchmark/benchmark.h>

#include <oneapi/tbb/parallel_pipeline.h>

#include <array>
#include <cerrno>
#include <memory>
#include <semaphore>
#include <string>
#include <thread>
#include <typeinfo>
#include <vector>

namespace {

using namespace kbench;

constexpr int batch = 256;  // calls per iteration in the batched workloads

std::uint64_t g_work_iters = 1;  // spin_work iterations of ~work_ns
std::uint64_t g_work_ns = 350;
std::uint64_t g_iters_per_100ns = 1;

// The work of call number x: ~work_ns for the constant workload; for the
// variable one, 300..1000 ns spread by a hash of x (the "~0.3-1 us"),
// so neighbouring calls finish out of order.
template <bool Variable>
std::uint64_t work_of(std::uint64_t x) noexcept {
    if constexpr (!Variable) {
        (void)x;
        return g_work_iters;
    } else {
        x = (x ^ (x >> 31)) * 0x7fb5d329728ea185ull;
        x ^= x >> 27;
        std::uint64_t ns = 300 + x % 701;
        return ns * g_iters_per_100ns / 100;
    }
}

// ------------------------------------------------------ system holder ----
//
// Only one system is alive at a time (they all start worker threads, and
// the oneTBB ones set process-wide limits); Setup switches to the system a
// benchmark needs, before the producer threads start.

struct holder_base {
    virtual ~holder_base() = default;
};
template <class S>
struct holder : holder_base {
    S sys;
};
std::unique_ptr<holder_base> g_holder;

template <class S>
void use_system() {
    if (dynamic_cast<holder<S>*>(g_holder.get()))
        return;
    g_holder.reset();
    g_holder = std::make_unique<holder<S>>();
}

template <class S>
S& sys() {
    return static_cast<holder<S>*>(g_holder.get())->sys;
}

template <class S>
void setup_system(const benchmark::State&) {
    use_system<S>();
}

// ------------------------------------------------------------ counters ----
//
// Thread 0 samples process-wide voluntary context switches (a sleep on a
// futex is one) and the schedulers' own statistics around its loop, and
// reports them per call.  Other producers report nothing, so the sums
// Google Benchmark forms are thread 0's figures.

struct sample {
    long vcsw = 0;
    kasync::statistics k{};
    seed::statistics s{};
};

template <class S>
void take(S& s, sample& x) {
    x.vcsw = process_voluntary_switches();
    if constexpr (requires { s.s.stats().waits_slept; }) {
        if constexpr (std::is_same_v<decltype(s.s.stats()), kasync::statistics>)
            x.k = s.s.stats();
        else
            x.s = s.s.stats();
    }
}

template <class S>
void report(benchmark::State& st, S& s, const sample& a, double calls) {
    sample b;
    take(s, b);
    if (calls <= 0)
        return;
    auto per = [&](double v) { return benchmark::Counter(v / calls); };
    st.counters["vcsw/call"] = per(static_cast<double>(b.vcsw - a.vcsw));
    if constexpr (requires { s.s.stats().waits_slept; }) {
        if constexpr (std::is_same_v<decltype(s.s.stats()), kasync::statistics>) {
            st.counters["wakes/call"] = per(static_cast<double>(b.k.wakeups - a.k.wakeups));
            st.counters["slept/call"] = per(static_cast<double>(b.k.waits_slept - a.k.waits_slept));
            st.counters["futile/call"] =
                per(static_cast<double>(b.k.futile_wakeups - a.k.futile_wakeups));
            st.counters["helped/call"] = per(static_cast<double>(b.k.helped - a.k.helped));
            st.counters["in_caller/call"] =
                per(static_cast<double>(b.k.ran_in_caller - a.k.ran_in_caller));
        } else {
            st.counters["wakes/call"] = per(static_cast<double>(b.s.wakeups - a.s.wakeups));
            st.counters["slept/call"] = per(static_cast<double>(b.s.waits_slept - a.s.waits_slept));
            st.counters["futile/call"] =
                per(static_cast<double>(b.s.futile_wakeups - a.s.futile_wakeups));
        }
    }
}

// ------------------------------------------- 1. schedule throughput ----

template <class S>
void bm_throughput(benchmark::State& st) {
    S& s = sys<S>();
    producer p;
    sample a;
    if (st.thread_index() == 0)
        take(s, a);
    for (auto _ : st) {
        for (int i = 0; i < batch; ++i)
            s.post_empty(p);
        s.wait(p);
    }
    st.SetItemsProcessed(st.iterations() * batch);
    if (st.thread_index() == 0)
        report(st, s, a, static_cast<double>(st.iterations()) * batch * st.threads());
}

// ------------------------------------------------ 2. ordered commit ----
//
// Each call works ~work_ns (ordered_commit) or 300..1000 ns
// (ordered_commit_var), waits for its own cookie, then commits: the commits
// must come in cookie order (checked: "violations").

struct commit_log {
    std::atomic<std::uint64_t> last{0};
    std::atomic<std::uint64_t> violations{0};

    void commit(std::uint64_t c) noexcept {
        if (c <= last.load(std::memory_order_relaxed))
            violations.fetch_add(1, std::memory_order_relaxed);
        last.store(c, std::memory_order_relaxed);
    }
};
commit_log g_log;

template <class S>
void setup_commit(const benchmark::State& st) {
    setup_system<S>(st);
    g_log.last = 0;
    g_log.violations = 0;
}

template <bool Variable>
void bm_commit_kasync(benchmark::State& st) {
    auto& s = sys<kasync_sys>();
    auto* sched = &s.s;
    producer p;
    sample a;
    if (st.thread_index() == 0)
        take(s, a);
    for (auto _ : st) {
        for (int i = 0; i < batch; ++i)
            p.last = sched->schedule([sched](kasync::cookie_t c) {
                spin_work(work_of<Variable>(c));
                if (sched->synchronize_cookie(c) != 0)
                    g_log.violations.fetch_add(1, std::memory_order_relaxed);
                g_log.commit(c);
            });
        s.wait(p);
    }
    st.SetItemsProcessed(st.iterations() * batch);
    if (st.thread_index() == 0) {
        report(st, s, a, static_cast<double>(st.iterations()) * batch * st.threads());
        st.counters["violations"] = static_cast<double>(g_log.violations.load());
    }
}

template <bool Variable>
void seed_commit_call(void* data, seed::cookie_t c) {
    auto* sched = static_cast<seed::scheduler*>(data);
    spin_work(work_of<Variable>(c));
    sched->synchronize_cookie(c);
    g_log.commit(c);
}

template <bool Variable>
void bm_commit_seed(benchmark::State& st) {
    auto& s = sys<seed_sys>();
    producer p;
    sample a;
    if (st.thread_index() == 0)
        take(s, a);
    for (auto _ : st) {
        for (int i = 0; i < batch; ++i)
            p.last = s.s.schedule(&seed_commit_call<Variable>, &s.s);
        s.wait(p);
    }
    st.SetItemsProcessed(st.iterations() * batch);
    if (st.thread_index() == 0) {
        report(st, s, a, static_cast<double>(st.iterations()) * batch * st.threads());
        st.counters["violations"] = static_cast<double>(g_log.violations.load());
    }
}

// oneTBB's nearest equivalent: a pipeline whose parallel stage does the
// work and whose serial_in_order last stage commits, run inside the
// 2-worker arena (a producer that finds no free slot hands the pipeline to
// the arena's workers and waits).
template <bool Variable>
void bm_commit_tbb(benchmark::State& st) {
    auto& s = sys<tbb_sys>();
    commit_log log;
    sample a;
    if (st.thread_index() == 0)
        take(s, a);
    std::uint64_t seq = 0;
    for (auto _ : st) {
        s.arena.execute([&] {
            int left = batch;
            tbb::parallel_pipeline(
                4 * workers,
                tbb::make_filter<void, std::uint64_t>(
                    tbb::filter_mode::serial_in_order,
                    [&](tbb::flow_control& fc) -> std::uint64_t {
                        if (left-- == 0) {
                            fc.stop();
                            return 0;
                        }
                        return ++seq;
                    }) &
                    tbb::make_filter<std::uint64_t, std::uint64_t>(
                        tbb::filter_mode::parallel,
                        [](std::uint64_t x) {
                            spin_work(work_of<Variable>(x));
                            return x;
                        }) &
                    tbb::make_filter<std::uint64_t, void>(
                        tbb::filter_mode::serial_in_order,
                        [&](std::uint64_t x) { log.commit(x); }));
        });
    }
    st.SetItemsProcessed(st.iterations() * batch);
    if (st.thread_index() == 0) {
        report(st, s, a, static_cast<double>(st.iterations()) * batch * st.threads());
        st.counters["violations"] = static_cast<double>(log.violations.load());
    }
}

// The work alone, serially on the producer: the reference the pipelines
// are measured against (two workers could at best halve it).
template <bool Variable>
void bm_commit_work_alone(benchmark::State& st) {
    commit_log log;
    std::uint64_t seq = 0;
    for (auto _ : st) {
        for (int i = 0; i < batch; ++i) {
            ++seq;
            benchmark::DoNotOptimize(spin_work(work_of<Variable>(seq)));
            log.commit(seq);
        }
    }
    st.SetItemsProcessed(st.iterations() * batch);
}

// ---------------------------------------------- 3. wake round trip ----

template <class S>
void bm_round_trip(benchmark::State& st) {
    S& s = sys<S>();
    producer p;
    sample a;
    if (st.thread_index() == 0)
        take(s, a);
    for (auto _ : st) {
        s.post_empty(p);
        s.wait(p);
    }
    st.SetItemsProcessed(st.iterations());
    if (st.thread_index() == 0)
        report(st, s, a, static_cast<double>(st.iterations()) * st.threads());
}

// ----------------------------------------- 4. already-satisfied wait ----
//
// One call (cookie k) is held on a gate; a wait for k is satisfied (every
// pending call is >= k) and must return at once.

std::unique_ptr<gate> g_gate;
std::uint64_t g_held_cookie = 0;

template <class S>
void setup_held(const benchmark::State& st) {
    setup_system<S>(st);
    S& s = sys<S>();
    s.wait_all();
    g_gate = std::make_unique<gate>();
    g_held_cookie = s.post_gate(*g_gate);
    g_gate->await_started();
}

template <class S>
void teardown_held(const benchmark::State&) {
    g_gate->open();
    sys<S>().wait_all();
    g_gate.reset();
}

template <class S, bool All>
void bm_satisfied(benchmark::State& st) {
    S& s = sys<S>();
    const auto k = g_held_cookie;
    for (auto _ : st) {
        if constexpr (std::is_same_v<S, kasync_sys>) {
            if constexpr (All)
                benchmark::DoNotOptimize(s.s.synchronize_cookie_all(k));
            else
                benchmark::DoNotOptimize(s.s.synchronize_cookie(k));
        } else {
            s.s.synchronize_cookie(k, All ? nullptr : &s.s.default_domain());
            benchmark::ClobberMemory();
        }
    }
    st.SetItemsProcessed(st.iterations());
}

// ---------------------------------------------------- 5. isolation ----
//
// Two threads wait on domain A (a cookie wait and a full wait) while A's
// only call is held on a gate; the producers stream empty calls through
// domain B.  "A_wakes/call" is the waiters' voluntary context switches
// (each wake-up of a sleeping waiter that goes back to sleep is one) per
// call of B: it should be 0.

struct isolation_state {
    gate g;
    std::vector<std::thread> waiters;
    std::array<std::atomic<long>, 2> tids{};
    std::uint64_t a_cookie = 0;
    // kasync
    std::unique_ptr<kasync::domain> ka, kb;
    // seed
    std::unique_ptr<seed::domain> sa, sb;
};
std::unique_ptr<isolation_state> g_iso;

template <class S>
void setup_isolation(const benchmark::State& st) {
    setup_system<S>(st);
    S& s = sys<S>();
    s.wait_all();
    g_iso = std::make_unique<isolation_state>();
    auto* iso = g_iso.get();
    ++iso->g.posted;
    if constexpr (std::is_same_v<S, kasync_sys>) {
        iso->ka = std::make_unique<kasync::domain>(s.s);
        iso->kb = std::make_unique<kasync::domain>(s.s);
        kasync::call_options o;
        o.in = iso->ka.get();
        iso->a_cookie = s.s.schedule([iso] { iso->g.enter(); }, o);
        iso->waiters.emplace_back([iso, &s] {
            iso->tids[0] = gettid_now();
            s.s.synchronize_cookie(iso->a_cookie + 1, *iso->ka);
        });
        iso->waiters.emplace_back([iso, &s] {
            iso->tids[1] = gettid_now();
            s.s.synchronize_full(*iso->ka);
        });
    } else {
        iso->sa = std::make_unique<seed::domain>();
        iso->sb = std::make_unique<seed::domain>();
        iso->a_cookie = s.s.schedule(&seed_gate, &iso->g, iso->sa.get());
        iso->waiters.emplace_back([iso, &s] {
            iso->tids[0] = gettid_now();
            s.s.synchronize_cookie(iso->a_cookie + 1, iso->sa.get());
        });
        iso->waiters.emplace_back([iso, &s] {
            iso->tids[1] = gettid_now();
            s.s.synchronize_full(iso->sa.get());
        });
    }
    iso->g.await_started();
    // Let both waiters finish spinning and fall asleep.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
}

template <class S>
void teardown_isolation(const benchmark::State&) {
    g_iso->g.open();
    for (auto& t : g_iso->waiters)
        t.join();
    sys<S>().wait_all();
    g_iso.reset();  // domains are empty now
}

template <class S>
void bm_isolation(benchmark::State& st) {
    S& s = sys<S>();
    auto* iso = g_iso.get();
    long w0 = 0;
    sample a;
    if (st.thread_index() == 0) {
        take(s, a);
        w0 = thread_voluntary_switches(iso->tids[0]) + thread_voluntary_switches(iso->tids[1]);
    }
    std::uint64_t last = 0;
    for (auto _ : st) {
        if constexpr (std::is_same_v<S, kasync_sys>) {
            kasync::call_options o;
            o.in = iso->kb.get();
            for (int i = 0; i < batch; ++i)
                last = s.s.schedule([] {}, o);
            s.s.synchronize_cookie(last + 1, *iso->kb);
        } else {
            for (int i = 0; i < batch; ++i)
                last = s.s.schedule(&seed_noop, nullptr, iso->sb.get());
            s.s.synchronize_cookie(last + 1, iso->sb.get());
        }
    }
    st.SetItemsProcessed(st.iterations() * batch);
    if (st.thread_index() == 0) {
        double calls = static_cast<double>(st.iterations()) * batch * st.threads();
        long w1 = thread_voluntary_switches(iso->tids[0]) +
                  thread_voluntary_switches(iso->tids[1]);
        report(st, s, a, calls);
        st.counters["A_wakes/call"] = static_cast<double>(w1 - w0) / calls;
        st.counters["A_wakes"] = static_cast<double>(w1 - w0);
    }
}

// ---------------------------------------------------- 6. placement ----
//
// Calls record the CPU they run on; "on_node" is the fraction that ran on a
// CPU of the node asked for (node-local), or of the producer's node at the
// time it scheduled (any-node: SPEC runs those on the caller's node).

struct alignas(64) hit_counter {
    std::atomic<std::uint64_t> hits{0};
    std::atomic<std::uint64_t> total{0};
};
struct placement_state {
    std::vector<int> node_of;            // cpu -> node
    std::array<hit_counter, 64> per_cpu;  // counted by the CPU a call ran on
    int nodes = 1;

    void record(int want) noexcept {
        int cpu = sched_getcpu();
        auto& h = per_cpu[static_cast<unsigned>(cpu) % per_cpu.size()];
        h.total.fetch_add(1, std::memory_order_relaxed);
        if (cpu >= 0 && static_cast<std::size_t>(cpu) < node_of.size() && node_of[cpu] == want)
            h.hits.fetch_add(1, std::memory_order_relaxed);
    }
    int here() const {
        int cpu = sched_getcpu();
        return cpu >= 0 && static_cast<std::size_t>(cpu) < node_of.size() ? node_of[cpu] : -1;
    }
    double fraction() const {
        std::uint64_t h = 0, t = 0;
        for (auto& c : per_cpu) {
            h += c.hits.load();
            t += c.total.load();
        }
        return t ? static_cast<double>(h) / static_cast<double>(t) : 0.0;
    }
};
std::unique_ptr<placement_state> g_place;

template <class S>
void setup_placement(const benchmark::State& st) {
    setup_system<S>(st);
    S& s = sys<S>();
    g_place = std::make_unique<placement_state>();
    g_place->nodes = static_cast<int>(std::max<std::size_t>(1, s.topo.nodes()));
    for (std::size_t n = 0; n < s.topo.nodes(); ++n)
        for (int cpu : s.topo.node_cpus[n]) {
            if (static_cast<std::size_t>(cpu) >= g_place->node_of.size())
                g_place->node_of.resize(static_cast<std::size_t>(cpu) + 1, -1);
            g_place->node_of[static_cast<std::size_t>(cpu)] = static_cast<int>(n);
        }
}

template <bool NodeLocal>
void bm_placement_kasync(benchmark::State& st) {
    auto& s = sys<kasync_numa_sys>();
    auto* pl = g_place.get();
    const int nodes = pl->nodes;
    kasync::cookie_t last = 0;
    int rr = st.thread_index();
    for (auto _ : st) {
        for (int i = 0; i < batch; ++i) {
            // Both variants ask which node the producer is on, so they do
            // the same work apart from the node they pass.
            kasync::call_options o;
            int want = pl->here();
            if constexpr (NodeLocal) {
                want = rr++ % nodes;
                o.node = want;
            }
            last = s.s.schedule([pl, want] { pl->record(want); }, o);
        }
        s.s.synchronize_cookie(last + 1);
    }
    st.SetItemsProcessed(st.iterations() * batch);
    if (st.thread_index() == 0)
        st.counters["on_node"] = pl->fraction();
}

void bm_placement_tbb(benchmark::State& st) {
    auto& s = sys<tbb_numa_sys>();
    auto* pl = g_place.get();
    const int nodes = static_cast<int>(s.arenas.size());
    producer p;
    int rr = st.thread_index();
    for (auto _ : st) {
        for (int i = 0; i < batch; ++i) {
            benchmark::DoNotOptimize(pl->here());  // as the kasync variants do
            int want = rr++ % nodes;
            ++p.posted;
            s.arenas[static_cast<std::size_t>(want)]->enqueue([pl, want, c = &p.comp] {
                pl->record(want);
                c->arrive();
            });
        }
        p.comp.wait_for(p.posted);
    }
    st.SetItemsProcessed(st.iterations() * batch);
    if (st.thread_index() == 0)
        st.counters["on_node"] = pl->fraction();
}

// ------------------------------------------------------ registration ----

std::vector<int> producer_counts() {
    std::vector<int> v{1, 2};
    int hw = static_cast<int>(std::thread::hardware_concurrency());
    if (hw > 2)
        v.push_back(hw);
    return v;
}

benchmark::internal::Benchmark* with_producers(benchmark::internal::Benchmark* b) {
    for (int t : producer_counts())
        b->Threads(t);
    return b->UseRealTime();
}

template <class S>
void reg(const char* workload, void (*fn)(benchmark::State&),
         void (*setup)(const benchmark::State&) = &setup_system<S>,
         void (*teardown)(const benchmark::State&) = nullptr) {
    std::string name = std::string(workload) + "/" + S::name;
    auto* b = with_producers(benchmark::RegisterBenchmark(name.c_str(), fn));
    b->Setup(setup);
    if (teardown)
        b->Teardown(teardown);
}

void register_all() {
    reg<kasync_sys>("throughput", &bm_throughput<kasync_sys>);
    reg<seed_sys>("throughput", &bm_throughput<seed_sys>);
    reg<tbb_sys>("throughput", &bm_throughput<tbb_sys>);
    reg<asio_sys>("throughput", &bm_throughput<asio_sys>);

    reg<kasync_sys>("ordered_commit", &bm_commit_kasync<false>, &setup_commit<kasync_sys>);
    reg<seed_sys>("ordered_commit", &bm_commit_seed<false>, &setup_commit<seed_sys>);
    reg<tbb_sys>("ordered_commit", &bm_commit_tbb<false>);
    benchmark::RegisterBenchmark("ordered_commit/work_alone", &bm_commit_work_alone<false>)
        ->UseRealTime();
    reg<kasync_sys>("ordered_commit_var", &bm_commit_kasync<true>, &setup_commit<kasync_sys>);
    reg<seed_sys>("ordered_commit_var", &bm_commit_seed<true>, &setup_commit<seed_sys>);
    reg<tbb_sys>("ordered_commit_var", &bm_commit_tbb<true>);
    benchmark::RegisterBenchmark("ordered_commit_var/work_alone", &bm_commit_work_alone<true>)
        ->UseRealTime();

    reg<kasync_sys>("round_trip", &bm_round_trip<kasync_sys>);
    reg<seed_sys>("round_trip", &bm_round_trip<seed_sys>);
    reg<tbb_sys>("round_trip", &bm_round_trip<tbb_sys>);
    reg<asio_sys>("round_trip", &bm_round_trip<asio_sys>);

    reg<kasync_sys>("satisfied_wait", &bm_satisfied<kasync_sys, false>,
                    &setup_held<kasync_sys>, &teardown_held<kasync_sys>);
    reg<seed_sys>("satisfied_wait", &bm_satisfied<seed_sys, false>,
                  &setup_held<seed_sys>, &teardown_held<seed_sys>);
    reg<kasync_sys>("satisfied_wait_all", &bm_satisfied<kasync_sys, true>,
                    &setup_held<kasync_sys>, &teardown_held<kasync_sys>);
    reg<seed_sys>("satisfied_wait_all", &bm_satisfied<seed_sys, true>,
                  &setup_held<seed_sys>, &teardown_held<seed_sys>);

    reg<kasync_sys>("isolation", &bm_isolation<kasync_sys>,
                    &setup_isolation<kasync_sys>, &teardown_isolation<kasync_sys>);
    reg<seed_sys>("isolation", &bm_isolation<seed_sys>,
                  &setup_isolation<seed_sys>, &teardown_isolation<seed_sys>);

    // placement_node: node-local calls, alternating over the nodes;
    // placement_any: the same calls for any node.
    {
        auto* b = with_producers(benchmark::RegisterBenchmark(
            "placement_node/kasync", &bm_placement_kasync<true>));
        b->Setup(&setup_placement<kasync_numa_sys>);
        b = with_producers(benchmark::RegisterBenchmark(
            "placement_any/kasync", &bm_placement_kasync<false>));
        b->Setup(&setup_placement<kasync_numa_sys>);
        b = with_producers(
            benchmark::RegisterBenchmark("placement_node/tbb", &bm_placement_tbb));
        b->Setup(&setup_placement<tbb_numa_sys>);
    }
}

}  // namespace

int main(int argc, char** argv) {
    g_work_ns = env_u64("KASYNC_BENCH_WORK_NS", 350);
    g_work_iters = calibrate_work(g_work_ns);
    g_iters_per_100ns = std::max<std::uint64_t>(1, g_work_iters * 100 / g_work_ns);
    benchmark::AddCustomContext("work_ns", std::to_string(g_work_ns));
    benchmark::AddCustomContext("work_iters", std::to_string(g_work_iters));
    benchmark::AddCustomContext("workers", std::to_string(workers));
    benchmark::AddCustomContext("batch", std::to_string(batch));
    benchmark::AddCustomContext("baseline_spin_ns", std::to_string(baseline_spin_ns()));
    register_all();
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv))
        return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    g_holder.reset();
    return 0;
}
