// kasync-replay: replays a Linux boot log recorded with initcall_debug
// through kasync.  See the README, section "kasync-replay".
//
// Exit status: 0 the order held, 1 it did not, 2 bad input (or arguments,
// or an output file that cannot be written).
//
// SPDX-License-Identifier: MIT
#include "bootlog.hpp"
#include "replay.hpp"

#include <CLI/CLI.hpp>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>

namespace {

bool write_file(const std::string& path, const std::string& text) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    if (!out) return false;
    out << text;
    out.close();
    return static_cast<bool>(out);
}

// A check for a number option that says what it wants.  (CLI11's own
// PositiveNumber answers "--speed 0" with "not in range 0 to 1.79769e308",
// spelt out to three hundred digits.)
CLI::Validator number(std::string want, bool (*ok)(double)) {
    return CLI::Validator(
        [want, ok](std::string& text) -> std::string {
            char* end = nullptr;
            errno = 0;
            double v = std::strtod(text.c_str(), &end);
            if (text.empty() || *end || errno || !std::isfinite(v) || !ok(v))
                return "'" + text + "' is not " + want;
            return {};
        },
        "");
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{
        "kasync-replay: replay a Linux boot log recorded with initcall_debug through kasync.\n"
        "Default (async) model: every initcall is scheduled in log order; its body lasts its\n"
        "recorded time, then it waits for its own cookie and registers (a short ordered step).\n"
        "Registration order must equal log order, and is verified.\n"
        "Exit status: 0 order held, 1 order violated, 2 bad input.",
        "kasync-replay"};
    app.get_formatter()->column_width(34);

    std::string log_path, json_path, svg_path, trace_path, work_text = "sleep";
    replay::config cfg;
    bool as_logged = false, quiet = false, no_warmup = false, default_slack = false;
    double spin_below_us = 0;
    std::size_t top = 10;

    app.add_option("log", log_path, "boot log (dmesg, dmesg -r, journalctl -k, serial console)")
        ->required();
    app.add_flag("--as-logged", as_logged,
                 "replay as the log ran: each pid's calls one after another, each at its logged start");
    app.add_option("--speed", cfg.speed, "divide every duration by X (figures stay in log time)")
        ->default_val(1.0)
        ->check(number("a positive number", [](double v) { return v > 0; }));
    app.add_option("--threads", cfg.threads, "worker threads of the scheduler (0: hardware threads)")
        ->default_val(0u)
        ->check(CLI::Range(0u, 1024u));  // KASYNC_THREADS's range
    app.add_option("--work", work_text, "how a call spends its time: sleep (declared blocking) or cpu (spin)")
        ->default_val("sleep")
        ->check(CLI::IsMember({"sleep", "cpu"}));
    app.add_option("--ordered-fraction", cfg.ordered_fraction,
                   "share of each call that is its in-order step (async model)")
        ->default_val(replay::default_ordered_fraction)
        ->check(CLI::Range(0.0, 1.0));
    app.add_option("--json", json_path, "write the figures (and a per-call timeline) as JSON");
    app.add_option("--svg", svg_path, "write a timeline picture");
    app.add_option("--trace", trace_path, "write a Chrome trace-event JSON (Perfetto, chrome://tracing)");
    app.add_option("--top", top, "slowest calls to list")->default_val(10u);
    app.add_flag("-q,--quiet", quiet, "no progress line on stderr");
    app.add_flag("--no-warmup", no_warmup, "do not start the pool's threads before the timed replay");
    app.add_flag("--default-timer-slack", default_slack,
                 "keep the threads' default timer slack (50 us) instead of 1 us");
    app.add_option("--spin-below", spin_below_us,
                   "with --work sleep, calls shorter than this many real microseconds spin instead")
        ->check(number("a number of microseconds, 0 or more", [](double v) { return v >= 0; }));

    app.set_version_flag("--version", "kasync-replay 0.1.0");

    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForVersion& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        std::fprintf(stderr, "kasync-replay: %s (--help lists the options)\n", e.what());
        return 2;
    }

    cfg.how = as_logged ? replay::mode::as_logged : replay::mode::async;
    cfg.kind = work_text == "cpu" ? replay::work::cpu : replay::work::sleep;
    cfg.progress = !quiet;
    cfg.warmup = !no_warmup;
    cfg.low_timer_slack = !default_slack;
    cfg.spin_below_ns = static_cast<std::int64_t>(spin_below_us * 1000);
    if (!std::isfinite(cfg.speed) || cfg.speed <= 0) {
        std::fprintf(stderr, "kasync-replay: --speed must be a positive number\n");
        return 2;
    }

    std::string error;
    auto t0 = std::chrono::steady_clock::now();
    auto log = bootlog::parse_file(log_path, &error);
    double parse_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (!log) {
        std::fprintf(stderr, "kasync-replay: cannot read %s\n", error.c_str());
        return 2;
    }
    if (log->finished() == 0) {
        if (log->calls.empty())
            std::fprintf(stderr,
                         "kasync-replay: %s: no initcalls found (%zu lines, %zu bad); was the log "
                         "recorded with initcall_debug?\n",
                         log_path.c_str(), log->lines, log->bad_lines);
        else
            std::fprintf(stderr, "kasync-replay: %s: %zu initcalls started but none returned\n",
                         log_path.c_str(), log->calls.size());
        return 2;
    }

    replay::plan plan = replay::make_plan(*log, cfg);
    replay::result result = replay::run(*log, plan, cfg);

    replay::report_input in{log_path, &*log, &plan, &result, &cfg, top, parse_ms};
    std::fputs(replay::summary_text(in).c_str(), stdout);
    std::fflush(stdout);

    int status = result.order_ok ? 0 : 1;
    auto out = [&](const std::string& path, const std::string& text, const char* what) {
        if (path.empty()) return;
        if (!write_file(path, text)) {
            std::fprintf(stderr, "kasync-replay: cannot write %s %s\n", what, path.c_str());
            status = 2;
        }
    };
    out(json_path, replay::json_text(in), "JSON");
    out(svg_path, replay::svg_text(in), "SVG");
    out(trace_path, replay::chrome_trace_text(in), "trace");
    return status;
}
