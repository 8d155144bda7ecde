// kasync-bench-probe: allocation and memory measurements, and a quiet
// schedule stream to count futex system calls under strace.
//
//   kasync-bench-probe [SYSTEM...]      memory per pending call, then allocations
//                                       per call, for the systems named (kasync,
//                                       seed, tbb, asio; default all): JSON on stdout
//   kasync-bench-probe --quick          the same, small counts (smoke test)
//   kasync-bench-probe futex SYSTEM N   schedule N empty calls with nobody
//                                       waiting, then wait once; run it under
//                                       strace -f -c -e trace=futex with N and
//                                       with 0 and divide the difference by N
//
// This binary replaces the global operator new (counting) and interposes
// malloc & co. (counting calls and live bytes, forwarding to glibc), so it
// also sees allocations made inside libkasync and libtbb.  oneTBB's own
// task objects come from its pools (tbbmalloc, mmap): those show only in the
// RSS figures.
//
// SPDX-License-Identifier: MIT
#include "systems.hpp"

#include <malloc.h>

#include <cstring>
#include <new>
#include <string>

// ------------------------------------------------------------ counting ----

namespace {
std::atomic<std::uint64_t> g_mallocs{0};     // malloc-family calls, all threads
std::atomic<std::int64_t> g_live{0};         // live bytes (usable sizes)
std::atomic<std::uint64_t> g_news{0};        // operator new calls
thread_local std::uint64_t t_mallocs = 0;    // this thread's malloc-family calls

inline void* counted(void* p) noexcept {
    if (p) {
        g_mallocs.fetch_add(1, std::memory_order_relaxed);
        ++t_mallocs;
        g_live.fetch_add(static_cast<std::int64_t>(malloc_usable_size(p)),
                         std::memory_order_relaxed);
    }
    return p;
}
inline void uncounted(void* p) noexcept {
    if (p)
        g_live.fetch_sub(static_cast<std::int64_t>(malloc_usable_size(p)),
                         std::memory_order_relaxed);
}
}  // namespace

extern "C" {
void* __libc_malloc(size_t);
void __libc_free(void*);
void* __libc_calloc(size_t, size_t);
void* __libc_realloc(void*, size_t);
void* __libc_memalign(size_t, size_t);

void* malloc(size_t n) noexcept { return counted(__libc_malloc(n)); }
void free(void* p) noexcept {
    uncounted(p);
    __libc_free(p);
}
void* calloc(size_t n, size_t s) noexcept { return counted(__libc_calloc(n, s)); }
void* realloc(void* p, size_t n) noexcept {
    uncounted(p);
    void* q = __libc_realloc(p, n);
    if (!q && p && n) {  // failed: p is still live
        g_live.fetch_add(static_cast<std::int64_t>(malloc_usable_size(p)));
        return nullptr;
    }
    return counted(q);
}
void* memalign(size_t a, size_t n) noexcept { return counted(__libc_memalign(a, n)); }
void* aligned_alloc(size_t a, size_t n) noexcept { return counted(__libc_memalign(a, n)); }
int posix_memalign(void** out, size_t a, size_t n) noexcept {
    void* p = counted(__libc_memalign(a, n));
    if (!p)
        return ENOMEM;
    *out = p;
    return 0;
}
}

void* operator new(std::size_t n) {
    g_news.fetch_add(1, std::memory_order_relaxed);
    if (void* p = std::malloc(n ? n : 1))
        return p;
    throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return ::operator new(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
    g_news.fetch_add(1, std::memory_order_relaxed);
    return std::malloc(n ? n : 1);
}
void* operator new[](std::size_t n, const std::nothrow_t& t) noexcept {
    return ::operator new(n, t);
}
void* operator new(std::size_t n, std::align_val_t a) {
    g_news.fetch_add(1, std::memory_order_relaxed);
    void* p = nullptr;
    if (posix_memalign(&p, std::max(sizeof(void*), static_cast<std::size_t>(a)), n ? n : 1))
        throw std::bad_alloc();
    return p;
}
void* operator new[](std::size_t n, std::align_val_t a) { return ::operator new(n, a); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

// ------------------------------------------------------------- helpers ----

namespace {

using namespace kbench;

long rss_bytes() {
    std::ifstream f("/proc/self/statm");
    long size = 0, resident = 0;
    f >> size >> resident;
    return resident * sysconf(_SC_PAGESIZE);
}

struct snapshot {
    std::uint64_t mallocs, news;
    std::int64_t live;
    long rss;
    static snapshot now() {
        return {g_mallocs.load(), g_news.load(), g_live.load(), rss_bytes()};
    }
};

std::string out;  // JSON being built
void field(const char* sys, const char* key, double v) {
    char buf[256];
    std::snprintf(buf, sizeof buf, "%s\"%s.%s\": %.4f", out.size() > 1 ? ",\n  " : "\n  ",
                  sys, key, v);
    out += buf;
    std::fprintf(stderr, "%-8s %-26s %12.4f\n", sys, key, v);
}

// A callable larger than kasync's inline storage (boxed on the heap).
struct big_call {
    std::uint64_t pad[6] = {};
    void operator()() const noexcept { asm volatile("" ::"r"(pad[0])); }
};

// Allocations per call in steady state: all threads, and the producer's
// own (schedule path only).
template <class S>
void alloc_probe(int warm_batches, int batches) {
    constexpr int b = 256;
    S s;
    producer p;
    for (int i = 0; i < warm_batches; ++i) {
        for (int j = 0; j < b; ++j)
            s.post_empty(p);
        s.wait(p);
    }
    std::uint64_t sched_allocs = 0;
    snapshot a = snapshot::now();
    for (int i = 0; i < batches; ++i) {
        std::uint64_t t0 = t_mallocs;
        for (int j = 0; j < b; ++j)
            s.post_empty(p);
        sched_allocs += t_mallocs - t0;
        s.wait(p);
    }
    snapshot z = snapshot::now();
    double calls = static_cast<double>(batches) * b;
    field(S::name, "allocs_per_call", static_cast<double>(z.mallocs - a.mallocs) / calls);
    field(S::name, "new_per_call", static_cast<double>(z.news - a.news) / calls);
    field(S::name, "schedule_allocs_per_call", static_cast<double>(sched_allocs) / calls);

    if constexpr (std::is_same_v<S, kasync_sys>) {
        // A callable too big for the inline storage: one box per call.
        for (int j = 0; j < b; ++j)
            p.last = s.s.schedule(big_call{});
        s.wait(p);
        std::uint64_t t0 = t_mallocs;
        for (int j = 0; j < b; ++j)
            p.last = s.s.schedule(big_call{});
        double big = static_cast<double>(t_mallocs - t0) / b;
        s.wait(p);
        field(S::name, "schedule_allocs_per_call_48B_callable", big);
    }
}

// Memory per pending call: hold every worker on a gate, queue n calls,
// measure heap and RSS growth, release.  Cycle 1 is cold (first use of the
// memory), cycle 2 warm (pools filled by cycle 1).
template <class S>
void pending_probe(int n) {
    snapshot c0 = snapshot::now();
    S s;
    snapshot c1 = snapshot::now();
    field(S::name, "construct_heap_bytes", static_cast<double>(c1.live - c0.live));
    field(S::name, "construct_rss_bytes", static_cast<double>(c1.rss - c0.rss));
    producer p;
    for (int cycle = 1; cycle <= 2; ++cycle) {
        gate g;
        for (unsigned w = 0; w < workers; ++w)
            s.post_gate(g);
        g.await_started();
        snapshot a = snapshot::now();
        for (int i = 0; i < n; ++i)
            s.post_empty(p);
        snapshot z = snapshot::now();
        g.open();
        s.wait(p);
        s.wait_all();
        std::string k = cycle == 1 ? "cold" : "warm";
        field(S::name, ("pending_heap_bytes_per_call_" + k).c_str(),
              static_cast<double>(z.live - a.live) / n);
        field(S::name, ("pending_rss_bytes_per_call_" + k).c_str(),
              static_cast<double>(z.rss - a.rss) / n);
        field(S::name, ("pending_allocs_per_call_" + k).c_str(),
              static_cast<double>(z.mallocs - a.mallocs) / n);
    }
}

template <class S>
int futex_stream(long n) {
    S s;
    producer p;
    for (int i = 0; i < 1000; ++i)
        s.post_empty(p);
    s.wait(p);
    long v0 = process_voluntary_switches();
    for (long i = 0; i < n; ++i)
        s.post_empty(p);
    s.wait(p);
    long v1 = process_voluntary_switches();
    std::fprintf(stderr, "%s: %ld calls, %ld voluntary context switches\n", S::name, n,
                 v1 - v0);
    return 0;
}

template <class F>
int for_system(const std::string& name, F&& f) {
    if (name == "kasync")
        return f(static_cast<kasync_sys*>(nullptr));
    if (name == "seed")
        return f(static_cast<seed_sys*>(nullptr));
    if (name == "tbb")
        return f(static_cast<tbb_sys*>(nullptr));
    if (name == "asio")
        return f(static_cast<asio_sys*>(nullptr));
    std::fprintf(stderr, "unknown system %s (kasync, seed, tbb, asio)\n", name.c_str());
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc >= 2 && std::strcmp(argv[1], "futex") == 0) {
        if (argc != 4) {
            std::fprintf(stderr, "usage: %s futex SYSTEM N\n", argv[0]);
            return 2;
        }
        long n = std::atol(argv[3]);
        return for_system(argv[2], [n](auto* tag) {
            return futex_stream<std::remove_pointer_t<decltype(tag)>>(n);
        });
    }
    bool quick = false;
    std::vector<std::string> systems;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--quick") == 0)
            quick = true;
        else
            systems.emplace_back(argv[i]);
    }
    if (systems.empty())
        systems = {"kasync", "seed", "tbb", "asio"};
    int warm = quick ? 2 : 50, batches = quick ? 4 : 400, pending = quick ? 512 : 16384;

    out = "{";
    for (const auto& name : systems) {
        // Memory first, while every pool in the process is still cold (run
        // one system per process for cold figures that do not depend on
        // which system ran before: bench/compare does).
        int rc = for_system(name, [&](auto* tag) {
            using S = std::remove_pointer_t<decltype(tag)>;
            pending_probe<S>(pending);
            alloc_probe<S>(warm, batches);
            return 0;
        });
        if (rc)
            return rc;
    }
    out += "\n}\n";
    std::fputs(out.c_str(), stdout);
    return 0;
}
