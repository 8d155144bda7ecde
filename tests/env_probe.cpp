// A helper that test_bad_input runs as a child process: it prints the
// effective configuration as key=value lines on stdout, so the parent can
// compare runs with different KASYNC_* environments.
//
//   env_probe --options        options::from_environment(), no scheduler
//   env_probe --default        the default scheduler: threads, nodes
//   env_probe --run            --default, then a named C++ call, a C call
//                              and a wait (KASYNC_DEBUG lines), then shutdown
//                              (KASYNC_TRACE file)
//   env_probe --throw          a call that throws, default error handler
//   env_probe --bogus-handle   the C API with made-up domain handles
//
// Exit status 0 unless something the probe itself needs failed.
//
// SPDX-License-Identifier: MIT
#include <kasync/kasync.h>
#include <kasync/kasync.hpp>

#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>

namespace {

std::string describe(const kasync::topology& t) {
    std::string out;
    for (std::size_t n = 0; n < t.node_cpus.size(); ++n) {
        if (n)
            out += ';';
        out += std::to_string(n) + ':';
        for (std::size_t i = 0; i < t.node_cpus[n].size(); ++i) {
            if (i)
                out += ',';
            out += std::to_string(t.node_cpus[n][i]);
        }
    }
    return out;
}

int print_options() {
    kasync::options o = kasync::options::from_environment();
    std::printf("options.threads=%u\n", o.threads);
    std::printf("options.max_pending=%zu\n", o.max_pending);
    std::printf("options.topology=%s\n",
                o.topo ? describe(*o.topo).c_str() : "detect");
    std::printf("options.debug=%d\n", o.debug ? 1 : 0);
    std::printf("options.trace=%s\n", o.trace_path.c_str());
    return 0;
}

int print_default() {
    kasync::scheduler& s = kasync::scheduler::default_instance();
    std::printf("threads=%u\n", s.threads());
    std::printf("nodes=%zu\n", s.nodes());
    std::fflush(stdout);
    return 0;
}

}  // namespace

// A C function whose symbol name the debug lines should show.
extern "C" void probe_c_fn(void*, kasync_cookie_t) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
}

namespace {

int run_calls() {
    print_default();
    kasync::scheduler& s = kasync::scheduler::default_instance();
    kasync::cookie_t c = s.schedule(
        [] { std::this_thread::sleep_for(std::chrono::milliseconds(20)); },
        {.name = "probe_call"});
    int rc = s.synchronize_cookie(c + 1);
    kasync_cookie_t c2 = kasync_schedule(probe_c_fn, nullptr);
    int rc2 = kasync_synchronize_full();
    std::printf("cookie=%" PRIu64 " wait=%d\n", c, rc);
    std::printf("c_cookie=%" PRIu64 " c_wait=%d\n", c2, rc2);
    std::printf("shutdown=%d\n", kasync_shutdown());
    return rc == 0 && rc2 == 0 ? 0 : 1;
}

int throw_call() {
    kasync::scheduler& s = kasync::scheduler::default_instance();
    s.schedule([] { throw std::runtime_error("probe exception"); },
               {.name = "probe_thrower"});
    int rc = s.synchronize_full();
    std::printf("wait=%d exceptions=%" PRIu64 "\n", rc, s.stats().exceptions);
    return rc == 0 ? 0 : 1;
}

std::atomic<int> ran_bogus{0};

void bogus_fn(void*, kasync_cookie_t) { ++ran_bogus; }

int bogus_handles() {
    static int some_object[64];
    const std::uintptr_t values[] = {
        0x1,
        0x10,
        0xdeadbeef0,
        reinterpret_cast<std::uintptr_t>(&some_object[8]),
        ~std::uintptr_t{0} & ~std::uintptr_t{0xf},
    };
    for (std::size_t i = 0; i < sizeof values / sizeof values[0]; ++i) {
        auto* d = reinterpret_cast<kasync_domain*>(values[i]);
        std::printf("bogus %zu:", i);
        std::fflush(stdout);
        std::printf(" schedule=%" PRIu64,
                    kasync_schedule_domain(bogus_fn, nullptr, d));
        std::printf(" node=%" PRIu64,
                    kasync_schedule_node_domain(bogus_fn, nullptr, 0, d));
        std::printf(" nocall=%" PRIu64,
                    kasync_schedule_nocall(bogus_fn, nullptr, 0, d));
        std::printf(" full=%d", kasync_synchronize_full_domain(d));
        std::printf(" cookie=%d", kasync_synchronize_cookie_domain(1, d));
        std::printf(" timeout=%d",
                    kasync_synchronize_cookie_domain_timeout(1, d, 1000));
        std::printf(" unregister=%d", kasync_unregister_domain(d));
        std::printf(" destroy=%d", kasync_domain_destroy(d));
        std::printf("\n");
        std::fflush(stdout);
    }
    kasync_synchronize_full();
    std::printf("ran=%d\n", ran_bogus.load());
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    const char* mode = argc > 1 ? argv[1] : "--options";
    if (!std::strcmp(mode, "--options"))
        return print_options();
    if (!std::strcmp(mode, "--default"))
        return print_default();
    if (!std::strcmp(mode, "--run"))
        return run_calls();
    if (!std::strcmp(mode, "--throw"))
        return throw_call();
    if (!std::strcmp(mode, "--bogus-handle"))
        return bogus_handles();
    std::fprintf(stderr, "env_probe: unknown mode %s\n", mode);
    return 2;
}
