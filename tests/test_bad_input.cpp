// Misuse and hostile input: unknown, foreign and destroyed domains; bad
// KASYNC_* environment values (checked in child processes running
// env_probe); calls after shutdown; exceptions from calls; statistics that
// must add up; callables of every kind, including their destruction.
//
// SPDX-License-Identifier: MIT
#define KASYNC_TEST_MAIN
#include "support.hpp"

#include <kasync/kasync.h>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <climits>
#include <cstring>
#include <fstream>
#include <functional>
#include <latch>
#include <map>
#include <memory>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

using namespace std::chrono_literals;
using kasync::cookie_max;
using kasync::cookie_t;
using kt::long_wait;
using kt::short_wait;

namespace {

kasync::options opts() { return kt::config::get().make_options(); }

// ---------------------------------------------------------------------------
// Child processes

struct child_result {
    int status = -1;  // exit status, or -1 when it did not exit normally
    std::string out, err;
    std::map<std::string, std::string> values;  // key=value lines of out

    std::vector<std::string> err_lines() const {
        std::vector<std::string> lines;
        std::istringstream in(err);
        for (std::string l; std::getline(in, l);)
            if (!l.empty())
                lines.push_back(l);
        return lines;
    }
};

std::string probe_path() {
    if (const char* p = std::getenv("KASYNC_ENV_PROBE"))
        return p;
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return "env_probe";
    std::string dir(self, static_cast<std::size_t>(n));
    return dir.substr(0, dir.rfind('/') + 1) + "env_probe";
}

std::string slurp(const std::string& path) {
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

// Runs env_probe `mode` with the parent's environment minus every KASYNC_*
// variable, plus `env`.
child_result run_probe(const std::string& mode,
                       const std::vector<std::string>& env) {
    std::vector<std::string> envs;
    for (char** e = environ; *e; ++e)
        if (std::strncmp(*e, "KASYNC_", 7) != 0)
            envs.emplace_back(*e);
    for (const auto& e : env)
        envs.push_back(e);
    std::vector<char*> envp;
    for (auto& e : envs)
        envp.push_back(e.data());
    envp.push_back(nullptr);

    char out_name[] = "/tmp/kasync-probe-out-XXXXXX";
    char err_name[] = "/tmp/kasync-probe-err-XXXXXX";
    int out_fd = mkstemp(out_name);
    int err_fd = mkstemp(err_name);
    REQUIRE(out_fd >= 0);
    REQUIRE(err_fd >= 0);

    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
    posix_spawn_file_actions_adddup2(&fa, err_fd, 2);
    std::string path = probe_path();
    std::string mode_arg = mode;
    char* argv[] = {path.data(), mode_arg.data(), nullptr};
    pid_t pid = -1;
    int rc = posix_spawn(&pid, path.c_str(), &fa, nullptr, argv, envp.data());
    posix_spawn_file_actions_destroy(&fa);
    close(out_fd);
    close(err_fd);
    INFO("spawning " << path);
    REQUIRE(rc == 0);

    int wstatus = 0;
    while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
    }
    child_result r;
    r.status = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1;
    r.out = slurp(out_name);
    r.err = slurp(err_name);
    unlink(out_name);
    unlink(err_name);

    std::istringstream in(r.out);
    for (std::string l; std::getline(in, l);) {
        auto eq = l.find('=');
        if (eq != std::string::npos && l.find(' ') == std::string::npos)
            r.values[l.substr(0, eq)] = l.substr(eq + 1);
    }
    return r;
}

}  // namespace

// ===========================================================================
// Environment

TEST_CASE("environment: good values are used, silently") {
    child_result base = run_probe("--options", {});
    REQUIRE(base.status == 0);
    CHECK(base.err_lines().empty());
    CHECK(base.values["options.max_pending"] == "32768");
    CHECK(base.values["options.topology"] == "detect");
    CHECK(base.values["options.debug"] == "0");

    child_result t = run_probe("--default", {"KASYNC_THREADS=3"});
    CHECK(t.status == 0);
    CHECK(t.values["threads"] == "3");
    CHECK(t.err_lines().empty());

    child_result p = run_probe("--options", {"KASYNC_MAX_PENDING=7"});
    CHECK(p.values["options.max_pending"] == "7");
    CHECK(p.err_lines().empty());

    child_result d = run_probe("--options", {"KASYNC_DEBUG=1"});
    CHECK(d.values["options.debug"] == "1");

    child_result tr =
        run_probe("--options", {"KASYNC_TRACE=/tmp/kasync-trace.json"});
    CHECK(tr.values["options.trace"] == "/tmp/kasync-trace.json");

    if (std::thread::hardware_concurrency() >= 2) {
        child_result two = run_probe("--default", {"KASYNC_TOPOLOGY=0:0;1:1"});
        CHECK(two.status == 0);
        CHECK(two.values["nodes"] == "2");
        CHECK(two.err_lines().empty());
        child_result opt = run_probe("--options", {"KASYNC_TOPOLOGY=0:0;1:1"});
        CHECK(opt.values["options.topology"] == "0:0;1:1");
    }
    child_result one = run_probe("--default", {"KASYNC_TOPOLOGY=0:0"});
    CHECK(one.values["nodes"] == "1");
}

TEST_CASE("environment: a bad value gives one line naming the variable, "
          "and the default") {
    const child_result base_opt = run_probe("--options", {});
    const child_result base_def = run_probe("--default", {});
    REQUIRE(base_opt.status == 0);
    REQUIRE(base_def.status == 0);

    struct bad {
        const char* var;
        const char* value;
        const char* key;  // the --options key it would change
    };
    const bad cases[] = {
        {"KASYNC_THREADS", "abc", "options.threads"},
        {"KASYNC_THREADS", "-3", "options.threads"},
        {"KASYNC_THREADS", "4x", "options.threads"},
        {"KASYNC_THREADS", "99999999999999999999999", "options.threads"},
        {"KASYNC_MAX_PENDING", "-5", "options.max_pending"},
        {"KASYNC_MAX_PENDING", "abc", "options.max_pending"},
        {"KASYNC_MAX_PENDING", "12z", "options.max_pending"},
        {"KASYNC_TOPOLOGY", "garbage", "options.topology"},
        {"KASYNC_TOPOLOGY", "0:0;2:1", "options.topology"},
        {"KASYNC_TOPOLOGY", "1:0", "options.topology"},
        {"KASYNC_TOPOLOGY", "0:", "options.topology"},
        {"KASYNC_TOPOLOGY", "0:3-1", "options.topology"},
        {"KASYNC_DEBUG", "maybe", "options.debug"},
    };
    for (const bad& b : cases) {
        const std::string assignment = std::string(b.var) + "=" + b.value;
        CAPTURE(assignment);
        for (const char* mode : {"--options", "--default"}) {
            CAPTURE(mode);
            child_result r = run_probe(mode, {assignment});
            CHECK(r.status == 0);
            auto lines = r.err_lines();
            CHECK(lines.size() == 1);
            if (!lines.empty())
                CHECK(lines[0].find(b.var) != std::string::npos);
            const child_result& base =
                std::strcmp(mode, "--options") ? base_def : base_opt;
            CHECK(r.values == base.values);
        }
    }

    // Two bad variables: a line each.
    child_result two = run_probe(
        "--options", {"KASYNC_THREADS=abc", "KASYNC_MAX_PENDING=-5"});
    auto lines = two.err_lines();
    CHECK(lines.size() == 2);
    CHECK(two.err.find("KASYNC_THREADS") != std::string::npos);
    CHECK(two.err.find("KASYNC_MAX_PENDING") != std::string::npos);
    CHECK(two.values == base_opt.values);
}

TEST_CASE("environment: KASYNC_DEBUG=1 prints initcall_debug lines") {
    child_result r = run_probe("--run", {"KASYNC_DEBUG=1"});
    CHECK(r.status == 0);
    CHECK(r.values["shutdown"] == "0");

    const std::regex calling(R"(^calling  (\d+)_probe_call @ \d+$)");
    const std::regex returned(
        R"(^initcall (\d+)_probe_call returned after \d+ usecs$)");
    const std::regex c_calling(R"(^calling  (\d+)_probe_c_fn @ \d+$)");
    const std::regex waiting(R"(^async_waiting @ \d+$)");
    const std::regex continuing(R"(^async_continuing @ \d+ after \d+ usec$)");
    int n_calling = 0, n_returned = 0, n_c = 0, n_wait = 0, n_cont = 0;
    for (const std::string& l : r.err_lines()) {
        n_calling += std::regex_match(l, calling);
        n_returned += std::regex_match(l, returned);
        n_c += std::regex_match(l, c_calling);
        n_wait += std::regex_match(l, waiting);
        n_cont += std::regex_match(l, continuing);
    }
    INFO("stderr was:\n" << r.err);
    CHECK(n_calling == 1);
    CHECK(n_returned == 1);
    CHECK(n_c == 1);
    CHECK(n_wait >= 1);
    CHECK(n_cont >= 1);

    // Without it: silence.
    child_result quiet = run_probe("--run", {});
    CHECK(quiet.status == 0);
    CHECK(quiet.err_lines().empty());
}

TEST_CASE("environment: KASYNC_TRACE writes a Chrome trace at shutdown") {
    const std::string path =
        "/tmp/kasync-test-trace-" + std::to_string(getpid()) + ".json";
    unlink(path.c_str());
    child_result r = run_probe("--run", {"KASYNC_TRACE=" + path});
    CHECK(r.status == 0);
    std::string json = slurp(path);
    unlink(path.c_str());
    REQUIRE_FALSE(json.empty());
    auto first = json.find_first_not_of(" \t\r\n");
    REQUIRE(first != std::string::npos);
    CHECK((json[first] == '[' || json[first] == '{'));
    CHECK(json.find("\"ph\"") != std::string::npos);
    CHECK(json.find("probe_call") != std::string::npos);
    CHECK(json.find("probe_c_fn") != std::string::npos);
}

TEST_CASE("default error handler: one line on stderr and a count") {
    child_result r = run_probe("--throw", {});
    CHECK(r.status == 0);
    CHECK(r.out.find("wait=0 exceptions=1") != std::string::npos);
    auto lines = r.err_lines();
    CHECK(lines.size() == 1);
    CHECK(r.err.find("probe exception") != std::string::npos);
}

// ===========================================================================
// Domains

TEST_CASE("made-up C domain handles are refused, f never runs") {
    child_result r = run_probe("--bogus-handle", {});
    INFO("stdout:\n" << r.out << "\nstderr:\n" << r.err);
    CHECK(r.status == 0);  // no crash
    std::istringstream in(r.out);
    int lines = 0;
    for (std::string l; std::getline(in, l);) {
        if (l.rfind("bogus", 0) != 0)
            continue;
        ++lines;
        CAPTURE(l);
        CHECK(l.find(" schedule=0 node=0 nocall=0 full=-22 cookie=-22 "
                     "timeout=-22 unregister=-22 destroy=-22") !=
              std::string::npos);
    }
    CHECK(lines == 5);
    CHECK(r.values["ran"] == "0");
}

namespace {

std::atomic<int> c_ran{0};
void c_count(void*, kasync_cookie_t) { ++c_ran; }

}  // namespace

TEST_CASE("C API: destroyed and foreign handles return -EINVAL or 0") {
    c_ran = 0;
    kasync_domain* d = kasync_domain_create(0);
    REQUIRE(d != nullptr);
    CHECK(kasync_domain_destroy(d) == 0);
    CHECK(kasync_schedule_domain(c_count, nullptr, d) == 0);
    CHECK(kasync_schedule_node_domain(c_count, nullptr, 1, d) == 0);
    CHECK(kasync_schedule_nocall(c_count, nullptr, -1, d) == 0);
    CHECK(kasync_synchronize_full_domain(d) == -EINVAL);
    CHECK(kasync_synchronize_cookie_domain(10, d) == -EINVAL);
    CHECK(kasync_synchronize_cookie_domain_timeout(10, d, 1000) == -EINVAL);
    CHECK(kasync_unregister_domain(d) == -EINVAL);
    CHECK(kasync_domain_destroy(d) == -EINVAL);

    // A domain of another scheduler is foreign to the C API's.
    kasync::scheduler other(opts());
    kasync::domain od(other);
    CHECK(kasync_schedule_domain(c_count, nullptr, od.handle()) == 0);
    CHECK(kasync_schedule_nocall(c_count, nullptr, -1, od.handle()) == 0);
    CHECK(kasync_synchronize_full_domain(od.handle()) == -EINVAL);
    CHECK(kasync_synchronize_cookie_domain(10, od.handle()) == -EINVAL);
    CHECK(kasync_unregister_domain(od.handle()) == -EINVAL);
    CHECK(kasync_domain_destroy(od.handle()) == -EINVAL);
    CHECK(od.registered());  // the refused calls changed nothing

    CHECK(kasync_synchronize_full() == 0);
    CHECK(c_ran.load() == 0);
}

TEST_CASE("C++ API: foreign, destroyed and unregistered domains") {
    std::atomic<int> ran{0};
    kasync::scheduler s1(opts());
    kasync::scheduler s2(opts());
    kasync::domain foreign(s2);

    CHECK(s1.schedule([&] { ++ran; }, {.in = &foreign}) == 0);
    CHECK(s1.try_schedule([&] { ++ran; }, {.in = &foreign}) == 0);
    CHECK(s1.synchronize_full(foreign) == -EINVAL);
    CHECK(s1.synchronize_cookie(5, foreign) == -EINVAL);
    CHECK(s1.synchronize_cookie(5, foreign, 1ms) == -EINVAL);
    CHECK(s1.synchronize_full(foreign, 1ms) == -EINVAL);

    kasync::domain gone(s1);
    CHECK(gone.registered());
    CHECK(gone.destroy() == 0);
    CHECK(gone.destroy() == -EINVAL);
    CHECK(gone.unregister() == -EINVAL);
    CHECK(s1.schedule([&] { ++ran; }, {.in = &gone}) == 0);
    CHECK(s1.synchronize_full(gone) == -EINVAL);
    CHECK(s1.synchronize_cookie(3, gone, 1ms) == -EINVAL);

    kasync::domain reg(s1);
    CHECK(reg.unregister() == 0);
    CHECK_FALSE(reg.registered());
    CHECK(reg.unregister() == -EINVAL);
    kasync::domain excl(s1, kasync::domain_kind::exclusive);
    CHECK_FALSE(excl.registered());
    CHECK(excl.unregister() == -EINVAL);

    // A moved domain keeps working under its new name.
    kasync::domain from(s1);
    kasync::domain to(std::move(from));
    // The moved-from object is no domain at all (not the default one).
    CHECK(s1.schedule([&] { ++ran; }, {.in = &from}) == 0);
    CHECK(s1.synchronize_full(from) == -EINVAL);
    CHECK(from.destroy() == -EINVAL);
    CHECK(s1.schedule([&] { ++ran; }, {.in = &to}) != 0);
    CHECK(s1.synchronize_full(to, long_wait) == 0);
    kasync::domain assigned(s1, kasync::domain_kind::exclusive);
    assigned = std::move(to);
    CHECK(s1.schedule([&] { ++ran; }, {.in = &assigned}) != 0);
    CHECK(s1.synchronize_full(assigned, long_wait) == 0);
    CHECK(assigned.registered());

    CHECK(s1.synchronize_cookie_all(cookie_max, long_wait) == 0);
    CHECK(ran.load() == 2);

    // The default domain cannot be destroyed or unregistered away.
    CHECK(s1.default_domain().destroy() == -EINVAL);
    CHECK(s1.schedule([&] { ++ran; }) != 0);
    CHECK(s1.synchronize_full(s1.default_domain(), long_wait) == 0);
    CHECK(ran.load() == 3);
}

// ===========================================================================
// After shutdown

TEST_CASE("calls after shutdown run in the caller; nothing is lost") {
    kasync::scheduler s(opts());
    kasync::domain d(s);
    CHECK(s.shutdown() == 0);
    const kasync::statistics before = s.stats();

    constexpr int threads = 3, per = 200;
    std::atomic<int> ran{0}, wrong_thread{0}, async_true{0}, not_ordered{0};
    std::atomic<int> refused_ran{0}, nonzero_refusals{0};
    std::latch start(threads);
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t) {
        ts.emplace_back([&, t] {
            const auto me = std::this_thread::get_id();
            start.arrive_and_wait();
            cookie_t prev = 0;
            for (int i = 0; i < per; ++i) {
                cookie_t c = s.schedule(
                    [&, me] {
                        if (std::this_thread::get_id() != me)
                            ++wrong_thread;
                        if (kasync::current_is_async())
                            ++async_true;
                        ++ran;
                        // Nested: runs at once, in the same thread.
                        s.schedule([&] { ++ran; }, {.in = &d});
                    },
                    {.in = t % 2 ? &d : nullptr});
                if (c <= prev)
                    ++not_ordered;
                prev = c;
                if (s.try_schedule([&] { ++refused_ran; }) != 0)
                    ++nonzero_refusals;
            }
        });
    }
    for (auto& t : ts)
        t.join();
    CHECK(ran.load() == threads * per * 2);
    CHECK(wrong_thread.load() == 0);
    CHECK(async_true.load() == 0);
    CHECK(not_ordered.load() == 0);
    CHECK(refused_ran.load() == 0);
    CHECK(nonzero_refusals.load() == 0);

    const kasync::statistics after = s.stats();
    CHECK(after.scheduled - before.scheduled == threads * per * 2);
    CHECK(after.ran_in_caller - before.ran_in_caller == threads * per * 2);
    CHECK(after.refused - before.refused == threads * per);
    CHECK(after.pending == 0);
    CHECK(s.synchronize_full() == 0);
    CHECK(s.synchronize_full(d) == 0);
}

// ===========================================================================
// Exceptions

TEST_CASE("exceptions reach on_error; the call still completes for "
          "ordering") {
    struct seen {
        cookie_t cookie;
        std::string name;
        std::string what;
    };
    std::mutex m;
    std::vector<seen> errors;  // under m
    kt::gate go;
    std::atomic<int> b_rc{INT_MIN};

    kasync::options o = opts();
    o.on_error = [&](const kasync::call_error& e) {
        std::string what = "?";
        try {
            std::rethrow_exception(e.exception);
        } catch (const std::exception& x) {
            what = x.what();
        } catch (int i) {
            what = "int " + std::to_string(i);
        } catch (...) {
        }
        std::lock_guard<std::mutex> l(m);
        errors.push_back({e.cookie, std::string(e.name), what});
    };
    kasync::scheduler s(std::move(o));
    kt::opener open_on_exit{&go};

    cookie_t ca = s.schedule(
        [&] {
            go.wait();
            throw std::runtime_error("boom");
        },
        {.name = "thrower"});
    cookie_t cb = s.schedule([&](cookie_t own) {
        b_rc = s.synchronize_cookie(own);
    });
    cookie_t ci = s.schedule([] { throw 42; }, {.name = "int_thrower"});
    CHECK(s.synchronize_cookie(cb + 1, s.default_domain(), short_wait) ==
          -ETIMEDOUT);
    go.open();
    CHECK(s.synchronize_cookie(ci + 1, s.default_domain(), long_wait) == 0);
    CHECK(b_rc.load() == 0);

    // A throwing call in the caller (after shutdown): schedule() returns.
    CHECK(s.shutdown() == 0);
    cookie_t cf = 0;
    CHECK_NOTHROW(cf = s.schedule([] { throw std::logic_error("inline"); },
                                  {.name = "inline_thrower"}));
    CHECK(cf == ci + 1);

    std::lock_guard<std::mutex> l(m);
    REQUIRE(errors.size() == 3);
    std::sort(errors.begin(), errors.end(),
              [](const seen& a, const seen& b) { return a.cookie < b.cookie; });
    CHECK(errors[0].cookie == ca);
    CHECK(errors[0].name == "thrower");
    CHECK(errors[0].what == "boom");
    CHECK(errors[1].cookie == ci);
    CHECK(errors[1].name == "int_thrower");
    CHECK(errors[1].what == "int 42");
    CHECK(errors[2].cookie == cf);
    CHECK(errors[2].name == "inline_thrower");
    CHECK(errors[2].what == "inline");
    CHECK(s.stats().exceptions == 3);
}

// ===========================================================================
// Statistics

TEST_CASE("statistics add up") {
    constexpr std::size_t limit = 4;
    kt::gate g;
    std::atomic<int> held_in_caller{0}, thrown{0}, deadlock_rc{INT_MIN};
    std::atomic<int> caught{0};
    const auto me = std::this_thread::get_id();
    kasync::options o = opts();
    o.max_pending = limit;
    o.on_error = [&](const kasync::call_error&) { ++caught; };
    kasync::scheduler s(std::move(o));
    kasync::domain d(s);
    kt::opener open_on_exit{&g};
    std::uint64_t waits = 0;

    // limit + 1 queue and hold; 3 fall back; 2 are refused.
    for (std::size_t i = 0; i < limit + 1; ++i) {
        s.schedule([&] {
            if (std::this_thread::get_id() == me) {
                ++held_in_caller;
                return;
            }
            g.wait();
        });
    }
    for (int i = 0; i < 3; ++i)
        s.schedule([] {});
    CHECK(s.try_schedule([] {}) == 0);
    CHECK(s.try_schedule([] {}, {.in = &d}) == 0);
    kasync::statistics mid = s.stats();
    CHECK(mid.pending == limit + 1);
    CHECK(mid.peak_pending >= limit + 1);
    CHECK(mid.peak_pending <= limit + 2);
    CHECK(s.lowest_in_progress() == 1);

    // One wait that times out.
    CHECK(s.synchronize_cookie(cookie_max, s.default_domain(), 1ms) ==
          -ETIMEDOUT);
    ++waits;
    g.open();
    CHECK(s.synchronize_full(s.default_domain(), long_wait) == 0);
    ++waits;

    // Ten plain calls, two that throw, one self-deadlock.  Some may fall
    // back (the limit is small): they count themselves.
    std::atomic<int> more_in_caller{0};
    auto count_caller = [&] {
        if (std::this_thread::get_id() == me)
            ++more_in_caller;
    };
    for (int i = 0; i < 10; ++i)
        s.schedule([&] { count_caller(); }, {.in = &d});
    for (int i = 0; i < 2; ++i) {
        s.schedule([&] {
            count_caller();
            ++thrown;
            throw std::runtime_error("stats");
        });
    }
    s.schedule([&] {
        count_caller();
        deadlock_rc = s.synchronize_full();
    });
    CHECK(s.synchronize_cookie_all(cookie_max, long_wait) == 0);
    ++waits;
    // Waits whose condition already holds (not counted in statistics).
    CHECK(s.synchronize_cookie(1, s.default_domain()) == 0);
    CHECK(s.synchronize_full() == 0);
    waits += 2;

    const kasync::statistics st = s.stats();
    CHECK(held_in_caller.load() == 0);
    CHECK(deadlock_rc.load() == -EDEADLK);
    CHECK(caught.load() == 2);
    CHECK(st.scheduled == (limit + 1) + 3 + 10 + 2 + 1);
    CHECK(st.completed == st.scheduled);
    CHECK(st.pending == 0);
    CHECK(st.ran_in_caller == 3 + static_cast<unsigned>(more_in_caller));
    CHECK(st.refused == 2);
    CHECK(st.exceptions == 2);
    CHECK(st.deadlocks == 1);
    CHECK(st.timeouts == 1);
    // "waits: synchronize calls that had to wait" (kasync.hpp): the one that
    // timed out and the refused one at least; a satisfied wait is not
    // counted, so ours are an upper bound.
    CHECK(st.waits >= 2);
    CHECK(st.waits <= waits + 1);
    CHECK(st.waits_slept <= st.waits);
    CHECK(st.peak_pending >= limit + 1);
}

// ===========================================================================
// Callables

namespace {

std::atomic<int> fn_ran{0};
void plain_fn() { ++fn_ran; }
void cookie_fn(cookie_t c) {
    if (c != 0)
        ++fn_ran;
}

// Counts live copies, to catch leaks and double destruction.
struct tracked {
    static inline std::atomic<int> live{0};
    static inline std::atomic<int> calls{0};
    tracked() { ++live; }
    tracked(const tracked&) { ++live; }
    tracked(tracked&&) noexcept { ++live; }
    tracked& operator=(const tracked&) = default;
    ~tracked() { --live; }
    void operator()(cookie_t) const { ++calls; }
};

}  // namespace

TEST_CASE("callables of every kind run once and are destroyed once") {
    std::mutex m;
    std::vector<kasync::call_record> records;  // under m (names copied)
    std::vector<std::string> names;            // under m
    kasync::options o = opts();
    o.on_call = [&](const kasync::call_record& r) {
        std::lock_guard<std::mutex> l(m);
        records.push_back(r);
        names.emplace_back(r.name);
    };
    kasync::scheduler s(std::move(o));
    kasync::domain d(s);
    std::atomic<int> ran{0};
    std::atomic<cookie_t> cookie_arg{0};

    fn_ran = 0;
    tracked::live = 0;
    tracked::calls = 0;
    CHECK(s.schedule(&plain_fn) != 0);
    CHECK(s.schedule(cookie_fn) != 0);
    cookie_t named = s.schedule([&](cookie_t c) { cookie_arg = c; ++ran; },
                                {.node = 0, .name = "named_call"});
    std::array<char, 200> big{};
    big[199] = 1;
    CHECK(s.schedule([&ran, big] { ran += big[199]; }) != 0);  // boxed
    auto owned = std::make_unique<int>(5);
    CHECK(s.schedule([&ran, p = std::move(owned)] { ran += *p; }) != 0);
    std::function<void()> fobj = [&ran] { ++ran; };
    CHECK(s.schedule(fobj) != 0);
    int state = 0;
    CHECK(s.schedule([&ran, state]() mutable { ran += ++state; }) != 0);
    {
        tracked t;
        CHECK(s.schedule(t, {.in = &d}) != 0);
        CHECK(s.schedule(tracked{}) != 0);
        CHECK(s.schedule(std::move(t)) != 0);
    }
    CHECK(s.synchronize_cookie_all(cookie_max, long_wait) == 0);

    CHECK(fn_ran.load() == 2);
    CHECK(ran.load() == 1 + 1 + 5 + 1 + 1);
    CHECK(cookie_arg.load() == named);
    CHECK(tracked::calls.load() == 3);

    // Refused calls are destroyed too, without running.
    kasync::domain gone(s);
    gone.destroy();
    CHECK(s.schedule(tracked{}, {.in = &gone}) == 0);
    s.shutdown();
    CHECK(s.try_schedule(tracked{}) == 0);
    CHECK(tracked::calls.load() == 3);
    CHECK(tracked::live.load() == 0);

    // The trace hook saw every call, with its name and node.
    std::lock_guard<std::mutex> l(m);
    CHECK(records.size() == 10);
    bool found = false;
    for (std::size_t i = 0; i < records.size(); ++i) {
        if (records[i].cookie != named)
            continue;
        found = true;
        CHECK(names[i] == "named_call");
        CHECK(records[i].node == 0);
        CHECK_FALSE(records[i].in_caller);
        CHECK(records[i].end_ns >= records[i].start_ns);
    }
    CHECK(found);
}

TEST_CASE("current_cookie() and current_is_async() in each context") {
    kasync::scheduler s(opts());
    std::atomic<cookie_t> inside{0}, own{0}, in_caller{0};
    std::atomic<int> async_inside{-1}, async_in_caller{-1};
    CHECK(kasync::current_cookie() == 0);
    CHECK_FALSE(kasync::current_is_async());
    s.schedule([&](cookie_t c) {
        own = c;
        inside = kasync::current_cookie();
        async_inside = kasync::current_is_async();
    });
    CHECK(s.synchronize_full(s.default_domain(), long_wait) == 0);
    CHECK(inside.load() == own.load());
    CHECK(async_inside.load() == 1);
    CHECK(kasync::current_cookie() == 0);

    s.shutdown();
    cookie_t c = s.schedule([&] {
        in_caller = kasync::current_cookie();
        async_in_caller = kasync::current_is_async();
    });
    CHECK(in_caller.load() == c);
    CHECK(async_in_caller.load() == 0);
    CHECK(kasync::current_cookie() == 0);
}

// ===========================================================================
// Topology

TEST_CASE("topology::parse accepts the documented form, refuses the rest") {
    std::string err;
    auto t = kasync::topology::parse("0:0-3;1:4-7", &err);
    REQUIRE(t);
    CHECK(t->nodes() == 2);
    CHECK(t->node_cpus[0] == std::vector<int>{0, 1, 2, 3});
    CHECK(t->node_cpus[1] == std::vector<int>{4, 5, 6, 7});
    auto u = kasync::topology::parse("0:0,2,4-5");
    REQUIRE(u);
    CHECK(u->node_cpus[0] == std::vector<int>{0, 2, 4, 5});
    auto v = kasync::topology::parse("0:0;1:1");
    REQUIRE(v);
    CHECK(v->nodes() == 2);

    for (const char* bad : {"", "garbage", "0:", "1:0", "0:0;0:1", "0:3-1",
                            "0:-1", "0:0;2:1", ":0", "0:a", "0:0-", "x:0",
                            "0:0;1:0"}) {
        const std::string spec = bad;
        CAPTURE(spec);
        err.clear();
        CHECK_FALSE(kasync::topology::parse(bad, &err));
        CHECK_FALSE(err.empty());
    }

    auto detected = kasync::topology::detect();
    CHECK(detected.nodes() >= 1);
    for (const auto& cpus : detected.node_cpus)
        CHECK_FALSE(cpus.empty());
}

TEST_CASE("schedulers report the threads and nodes they were given") {
    for (unsigned n : {1u, 2u, 4u}) {
        kasync::scheduler s(kt::config::get().make_options(n));
        CHECK(s.threads() == n);
    }
    kasync::options o;
    o.topo = kasync::topology::parse("0:0");
    o.threads = 2;
    kasync::scheduler one(std::move(o));
    CHECK(one.nodes() == 1);
    if (std::thread::hardware_concurrency() >= 2) {
        kasync::options o2;
        o2.topo = kasync::topology::parse("0:0;1:1");
        o2.threads = 2;
        kasync::scheduler two(std::move(o2));
        CHECK(two.nodes() == 2);
    }
    kasync::scheduler hw{kasync::options{}};
    CHECK(hw.threads() >= 1);
}
