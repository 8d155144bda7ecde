// kasync-replay: the replay model and its runner.
//
// SPDX-License-Identifier: MIT
#ifndef KASYNC_TOOLS_REPLAY_HPP
#define KASYNC_TOOLS_REPLAY_HPP

#include "bootlog.hpp"

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace replay {

enum class mode { async, as_logged };
enum class work { sleep, cpu };

/// Share of each call that is its in-order step (registration) by default:
/// see the README, "Model", for why 5 %.
inline constexpr double default_ordered_fraction = 0.05;

struct config {
    mode how = mode::async;
    double speed = 1.0;            // divides every duration
    unsigned threads = 0;          // kasync::options::threads (0: hardware)
    work kind = work::sleep;
    double ordered_fraction = default_ordered_fraction;
    bool progress = true;          // progress line on stderr after 1 s
    bool low_timer_slack = true;   // 1 us timer slack on threads that sleep
    bool warmup = true;            // start the pool's threads before timing
    std::int64_t spin_below_ns = 0;  // sleeps shorter than this (real ns) spin
};

/// One finished initcall to replay, in log order.  Times in log microseconds.
struct item {
    std::size_t call = 0;          // index into bootlog::log::calls
    double duration_us = 0;        // as recorded
    double parallel_us = 0;        // async: body before the ordered step
    double ordered_us = 0;         // async: the ordered step
    double ideal_end_us = 0;       // async: its registration with unbounded threads
    double start_us = 0;           // as-logged: planned start, from the first call
    std::size_t after = SIZE_MAX;  // as-logged: previous item of the same pid
};

/// What is to be replayed, computed from the log alone.
struct plan {
    std::vector<item> items;
    double serial_us = 0;          // sum of durations
    double span_us = 0;            // the log's own clock, first start to last end
    double ideal_us = 0;           // async: exact bound with unbounded threads;
                                   // as-logged: the planned makespan
};

plan make_plan(const bootlog::log& log, const config& cfg);

/// Measured times of one call, ns from the start of the replay.
struct timing {
    std::int64_t scheduled = 0;    // schedule() called (as-logged: dispatch)
    std::int64_t start = 0;        // body entered
    std::int64_t parallel_end = 0; // parallel part over (as-logged: = end)
    std::int64_t ordered_start = 0;// own cookie reached
    std::int64_t end = 0;          // registered, body about to return
    std::uint64_t cookie = 0;
    int thread = 0;                // kernel tid
    int wait_rc = 0;               // synchronize_cookie's result
};

struct distribution {
    std::size_t n = 0;
    double mean = 0, p50 = 0, p99 = 0, max = 0, sum = 0;  // microseconds of real time
};

/// Where the critical path (the chain that ended last) spent its time,
/// in log microseconds.
struct critical_path {
    std::size_t head = 0;          // the item whose parallel part started the chain
    std::size_t length = 0;        // registrations on the chain after the head
    double start_delay_us = 0;     // replay start to head's body
    double parallel_us = 0;        // head's parallel part as run
    double parallel_planned_us = 0;
    double ordered_us = 0;         // ordered steps on the chain
    double handoff_us = 0;         // gaps between one registration and the next
};

struct result {
    bool ran = false;
    double wall_us = 0;            // replayed wall time, in log microseconds
    bool order_ok = false;
    bool order_checked = false;    // async only
    std::string order_error;       // first violation
    std::vector<std::size_t> registration;  // item index per registration slot
    std::vector<timing> times;     // per item
    unsigned threads = 0;          // the scheduler's thread count
    std::size_t worker_threads_seen = 0;    // distinct threads that ran calls
    int wait_errors = 0;
    // Diagnostics (real-time microseconds).
    distribution start_delay;      // scheduled -> body
    distribution oversleep;        // parallel part run - planned (sleeping, > 0 planned)
    distribution handoff;          // previous registration -> own, when already waiting
    critical_path path;
    std::uint64_t helped = 0, spare_runs = 0, waits_slept = 0;  // scheduler statistics
};

/// Runs the plan through a kasync::scheduler.
result run(const bootlog::log& log, const plan& p, const config& cfg);

/// Efficiency = ideal / replayed; fidelity = replayed / log span (as-logged).
inline double efficiency(const plan& p, const result& r) {
    return r.wall_us > 0 ? p.ideal_us / r.wall_us : 0.0;
}
inline double fidelity(const plan& p, const result& r) {
    return p.span_us > 0 ? r.wall_us / p.span_us : 0.0;
}

// ---- output (report.cpp) ---------------------------------------------------

struct report_input {
    std::string log_path;
    const bootlog::log* log = nullptr;
    const plan* p = nullptr;
    const result* r = nullptr;
    const config* cfg = nullptr;
    std::size_t top = 10;          // slowest calls listed
    double parse_ms = 0;
};

std::string summary_text(const report_input& in);
std::string json_text(const report_input& in);
std::string svg_text(const report_input& in);
std::string chrome_trace_text(const report_input& in);

}  // namespace replay

#endif  // KASYNC_TOOLS_REPLAY_HPP
