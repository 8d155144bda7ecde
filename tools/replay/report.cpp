// kasync-replay: summary, JSON, SVG timeline and Chrome trace.
//
// SPDX-License-Identifier: MIT
#include "replay.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <numeric>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace replay {

namespace {

using ojson = nlohmann::ordered_json;

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
    char buf[512];
    va_list ap, again;
    va_start(ap, f);
    va_copy(again, ap);
    int n = std::vsnprintf(buf, sizeof buf, f, ap);
    va_end(ap);
    std::string out;
    if (n < 0) {
        va_end(again);
        return out;
    }
    if (static_cast<std::size_t>(n) < sizeof buf) {
        out.assign(buf, static_cast<std::size_t>(n));
    } else {
        out.resize(static_cast<std::size_t>(n) + 1);
        std::vsnprintf(out.data(), out.size(), f, again);
        out.resize(static_cast<std::size_t>(n));
    }
    va_end(again);
    return out;
}

// "1 line", "2 lines".
std::string count(std::size_t n, const char* noun) {
    return fmt("%zu %s%s", n, noun, n == 1 ? "" : "s");
}

// "12.3 ms", "1.234 s", "850 us": a log duration for people.
std::string human_us(double us) {
    double a = std::fabs(us);
    if (a >= 10e6) return fmt("%.2f s", us / 1e6);
    if (a >= 1e3) return fmt("%.1f ms", us / 1e3);
    return fmt("%.0f us", us);
}

std::string display_name(const bootlog::call& c) {
    return c.module.empty() ? c.function : c.function + " [" + c.module + "]";
}

std::string base_name(const std::string& path) {
    auto slash = path.find_last_of('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

const char* mode_name(const config& cfg) { return cfg.how == mode::async ? "async" : "as-logged"; }
const char* work_name(const config& cfg) { return cfg.kind == work::sleep ? "sleep" : "cpu"; }

// Items by duration, longest first.
std::vector<std::size_t> slowest(const plan& p, std::size_t top) {
    std::vector<std::size_t> idx(p.items.size());
    std::iota(idx.begin(), idx.end(), std::size_t{0});
    std::stable_sort(idx.begin(), idx.end(), [&](std::size_t a, std::size_t b) {
        return p.items[a].duration_us > p.items[b].duration_us;
    });
    if (idx.size() > top) idx.resize(top);
    return idx;
}

double speedup(const plan& p, const result& r) { return r.wall_us > 0 ? p.serial_us / r.wall_us : 0.0; }

std::string xml_escape(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (char c : s) {
        switch (c) {
            case '&': out += "&amp;"; break;
            case '<': out += "&lt;"; break;
            case '>': out += "&gt;"; break;
            case '"': out += "&quot;"; break;
            default:
                if (static_cast<unsigned char>(c) < 0x20) out += ' ';
                else out += c;
        }
    }
    return out;
}

std::size_t probes_inside(const bootlog::log& log) { return log.probes.size() - log.probes_outside; }

}  // namespace

std::string summary_text(const report_input& in) {
    const bootlog::log& log = *in.log;
    const plan& p = *in.p;
    const result& r = *in.r;
    const config& cfg = *in.cfg;
    std::string s;
    s += "kasync-replay: " + base_name(in.log_path) + "\n";
    s += fmt("  log              %s, %s", count(log.lines, "line").c_str(),
             count(log.finished(), "initcall").c_str());
    if (log.unfinished()) s += fmt(" (+%zu unfinished)", log.unfinished());
    s += fmt(", %s (%zu inside initcalls, %zu outside), %s\n", count(log.probes.size(), "probe").c_str(),
             probes_inside(log), log.probes_outside, count(log.bad_lines, "bad line").c_str());
    s += fmt("                   parsed in %.2f ms; timestamps: %s", in.parse_ms,
             log.timestamps ? "yes" : "no (times rebuilt from line order)");
    if (log.joined_lines) s += fmt("; %zu wrapped lines joined", log.joined_lines);
    if (log.salvaged_lines) s += fmt("; %zu records found mid-line", log.salvaged_lines);
    if (log.orphan_returns) s += fmt("; %zu returns without a calling line", log.orphan_returns);
    s += "\n";
    if (cfg.how == mode::async)
        s += fmt("  model            async: body, wait own cookie, ordered step %.0f%%; work %s; speed %g; %u threads\n",
                 cfg.ordered_fraction * 100, work_name(cfg), cfg.speed, r.threads);
    else
        s += fmt("  model            as logged: each pid's calls in turn, at their logged starts; work %s; speed %g; %u threads\n",
                 work_name(cfg), cfg.speed, r.threads);
    s += fmt("  serial sum       %12s   every initcall one after another\n", human_us(p.serial_us).c_str());
    s += fmt("  as-logged span   %12s   the log's own clock, first call to last return\n",
             human_us(p.span_us).c_str());
    s += fmt("  replayed wall    %12s   in log time (%.1f ms real)\n", human_us(r.wall_us).c_str(),
             r.wall_us / cfg.speed / 1000.0);
    if (cfg.how == mode::async)
        s += fmt("  ideal bound      %12s   unbounded threads, exact\n", human_us(p.ideal_us).c_str());
    else
        s += fmt("  planned span     %12s   the as-logged model's own makespan\n", human_us(p.ideal_us).c_str());
    if (cfg.how == mode::async)  // as logged, the replay is as slow as the log on purpose
        s += fmt("  speedup          %11.2fx   serial sum / replayed wall\n", speedup(p, r));
    s += fmt("  efficiency       %12.3f   %s / replayed wall\n", efficiency(p, r),
             cfg.how == mode::async ? "ideal bound" : "planned span");
    if (cfg.how == mode::as_logged)
        s += fmt("  fidelity         %12.3f   replayed wall / as-logged span (%+.1f%%)\n", fidelity(p, r),
                 (fidelity(p, r) - 1) * 100);
    if (r.order_checked)
        s += r.order_ok ? fmt("  order            verified: %s in log order\n",
                                 count(p.items.size(), "registration").c_str())
                        : "  order            VIOLATED: " + r.order_error + "\n";
    else
        s += "  order            not applicable (as-logged calls do not register)\n";

    s += "  slowest calls:\n";
    for (std::size_t k : slowest(p, in.top)) {
        const bootlog::call& c = log.calls[p.items[k].call];
        s += fmt("    %12s  %s", human_us(p.items[k].duration_us).c_str(), display_name(c).c_str());
        s += fmt("  (line %zu", c.line);
        if (c.probes) s += fmt(", %u probe%s", c.probes, c.probes == 1 ? "" : "s");
        if (c.has_ret && c.ret != 0) s += fmt(", returned %ld", c.ret);
        s += ")\n";
    }
    if (cfg.how == mode::async && r.ran) {
        const critical_path& cp = r.path;
        s += fmt("  critical path    %s: start %s, parallel part %s (planned %s), %s %s, "
                 "hand-offs %s\n",
                 display_name(log.calls[p.items[cp.head].call]).c_str(), human_us(cp.start_delay_us).c_str(),
                 human_us(cp.parallel_us).c_str(), human_us(cp.parallel_planned_us).c_str(),
                 count(cp.length + 1, "ordered step").c_str(),
                 human_us(cp.ordered_us).c_str(), human_us(cp.handoff_us).c_str());
    }
    if (r.ran) {
        s += fmt("  real-time costs  %s p50 %s p99 %s", cfg.how == mode::async ? "start delay" : "lateness",
                 human_us(r.start_delay.p50).c_str(), human_us(r.start_delay.p99).c_str());
        if (r.oversleep.n)
            s += fmt("; sleep overshoot p50 %s p99 %s", human_us(r.oversleep.p50).c_str(),
                     human_us(r.oversleep.p99).c_str());
        if (r.handoff.n)
            s += fmt("; hand-off p50 %s p99 %s (%zu)", human_us(r.handoff.p50).c_str(),
                     human_us(r.handoff.p99).c_str(), r.handoff.n);
        s += fmt("; %zu threads ran calls\n", r.worker_threads_seen);
    }
    if (log.unfinished()) {
        s += fmt("  unfinished       %zu call(s) with no return line, not replayed:\n", log.unfinished());
        std::size_t shown = 0;
        for (const bootlog::call& c : log.calls) {
            if (c.finished) continue;
            if (++shown > 5) {
                s += "    ...\n";
                break;
            }
            s += fmt("    %s (line %zu, pid %ld)\n", c.symbol.c_str(), c.line, c.pid);
        }
    }
    if (log.bad_lines) {
        s += fmt("  bad lines        %zu, skipped:\n", log.bad_lines);
        for (std::size_t k = 0; k < log.bad.size() && k < 5; ++k)
            s += fmt("    line %zu: %s: %.100s\n", log.bad[k].line, log.bad[k].why.c_str(), log.bad[k].text.c_str());
        if (log.bad_lines > 5) s += "    ...\n";
    }
    return s;
}

std::string json_text(const report_input& in) {
    const bootlog::log& log = *in.log;
    const plan& p = *in.p;
    const result& r = *in.r;
    const config& cfg = *in.cfg;
    ojson j;
    j["tool"] = "kasync-replay";
    j["log"] = in.log_path;
    j["mode"] = mode_name(cfg);
    j["work"] = work_name(cfg);
    j["speed"] = cfg.speed;
    j["threads"] = r.threads;
    j["ordered_fraction"] = cfg.how == mode::async ? ojson(cfg.ordered_fraction) : ojson(nullptr);
    j["calls"] = log.finished();
    j["unfinished"] = log.unfinished();
    j["probes"] = log.probes.size();
    j["probes_outside_initcalls"] = log.probes_outside;
    j["lines"] = log.lines;
    j["bad_lines"] = log.bad_lines;
    j["joined_lines"] = log.joined_lines;
    j["salvaged_lines"] = log.salvaged_lines;
    j["orphan_returns"] = log.orphan_returns;
    j["timestamps"] = log.timestamps;
    j["parse_ms"] = in.parse_ms;
    j["serial_us"] = p.serial_us;
    j["span_us"] = p.span_us;
    j["wall_us"] = r.wall_us;
    j["ideal_us"] = p.ideal_us;
    j["speedup"] = speedup(p, r);
    j["efficiency"] = efficiency(p, r);
    j["fidelity"] = cfg.how == mode::as_logged ? ojson(fidelity(p, r)) : ojson(nullptr);
    j["order_ok"] = r.order_ok;
    j["order_checked"] = r.order_checked;
    if (!r.order_error.empty()) j["order_error"] = r.order_error;

    ojson slow = ojson::array();
    for (std::size_t k : slowest(p, in.top)) {
        const bootlog::call& c = log.calls[p.items[k].call];
        slow.push_back({{"name", c.function}, {"module", c.module}, {"us", p.items[k].duration_us},
                        {"line", c.line}, {"probes", c.probes}});
    }
    j["slowest"] = std::move(slow);
    ojson unf = ojson::array();
    for (const bootlog::call& c : log.calls)
        if (!c.finished) unf.push_back({{"symbol", c.symbol}, {"line", c.line}, {"pid", c.pid}});
    j["unfinished_calls"] = std::move(unf);
    ojson bad = ojson::array();
    for (const bootlog::problem& b : log.bad) bad.push_back({{"line", b.line}, {"why", b.why}, {"text", b.text}});
    j["bad"] = std::move(bad);

    auto dist = [](const distribution& d) {
        return ojson{{"n", d.n}, {"mean_us", d.mean}, {"p50_us", d.p50}, {"p99_us", d.p99}, {"max_us", d.max}};
    };
    ojson diag;
    diag["note"] = "real-time microseconds (not scaled by speed)";
    diag["start_delay"] = dist(r.start_delay);
    diag["sleep_overshoot"] = dist(r.oversleep);
    diag["handoff"] = dist(r.handoff);
    diag["threads_that_ran_calls"] = r.worker_threads_seen;
    diag["helped"] = r.helped;
    diag["spare_runs"] = r.spare_runs;
    diag["waits_slept"] = r.waits_slept;
    if (cfg.how == mode::async)
        diag["critical_path_log_us"] = {{"head", log.calls[p.items[r.path.head].call].function},
                                        {"start_delay", r.path.start_delay_us},
                                        {"parallel", r.path.parallel_us},
                                        {"parallel_planned", r.path.parallel_planned_us},
                                        {"ordered_steps", r.path.length + 1},
                                        {"ordered", r.path.ordered_us},
                                        {"handoff", r.path.handoff_us}};
    j["diagnostics"] = std::move(diag);

    // Per call, in log time (microseconds from the start of the replay).
    double to_log = cfg.speed / 1000.0;
    ojson tl = ojson::array();
    for (std::size_t k = 0; k < p.items.size() && k < r.times.size(); ++k) {
        const item& it = p.items[k];
        const timing& t = r.times[k];
        const bootlog::call& c = log.calls[it.call];
        ojson e = {{"name", c.function},
                   {"module", c.module},
                   {"line", c.line},
                   {"pid", c.pid},
                   {"cookie", t.cookie},
                   {"thread", t.thread},
                   {"duration_us", it.duration_us},
                   {"scheduled_us", static_cast<double>(t.scheduled) * to_log},
                   {"start_us", static_cast<double>(t.start) * to_log},
                   {"parallel_end_us", static_cast<double>(t.parallel_end) * to_log},
                   {"ordered_start_us", static_cast<double>(t.ordered_start) * to_log},
                   {"end_us", static_cast<double>(t.end) * to_log},
                   {"ideal_end_us", it.ideal_end_us}};
        tl.push_back(std::move(e));
    }
    j["timeline"] = std::move(tl);
    return j.dump(2) + "\n";
}

std::string chrome_trace_text(const report_input& in) {
    const bootlog::log& log = *in.log;
    const plan& p = *in.p;
    const result& r = *in.r;
    const config& cfg = *in.cfg;
    double to_log = cfg.speed / 1000.0;
    ojson ev = ojson::array();
    ev.push_back({{"ph", "M"}, {"name", "process_name"}, {"pid", 1}, {"tid", 0},
                  {"args", {{"name", fmt("replay (%s, log time = real x %g)", mode_name(cfg), cfg.speed)}}}});
    ev.push_back({{"ph", "M"}, {"name", "process_name"}, {"pid", 2}, {"tid", 0},
                  {"args", {{"name", "boot log as recorded (tid = log pid)"}}}});
    std::set<int> tids;
    double log_first = 0;
    for (std::size_t k = 0; k < p.items.size(); ++k) {
        double st = static_cast<double>(log.calls[p.items[k].call].start_us);
        log_first = k ? std::min(log_first, st) : st;
    }
    for (std::size_t k = 0; k < p.items.size() && k < r.times.size(); ++k) {
        const item& it = p.items[k];
        const timing& t = r.times[k];
        const bootlog::call& c = log.calls[it.call];
        std::string name = display_name(c);
        ojson args = {{"cookie", t.cookie}, {"log_line", c.line}, {"recorded_us", it.duration_us}};
        tids.insert(t.thread);
        auto slice = [&](const char* cat, std::string nm, std::int64_t a, std::int64_t b) {
            ev.push_back({{"ph", "X"}, {"cat", cat}, {"name", std::move(nm)}, {"pid", 1}, {"tid", t.thread},
                          {"ts", static_cast<double>(a) * to_log},
                          {"dur", static_cast<double>(std::max<std::int64_t>(b - a, 0)) * to_log},
                          {"args", args}});
        };
        if (cfg.how == mode::async) {
            slice("parallel", name, t.start, t.parallel_end);
            if (t.ordered_start > t.parallel_end) slice("wait", "wait for cookie", t.parallel_end, t.ordered_start);
            slice("ordered", "register " + name, t.ordered_start, t.end);
        } else {
            slice("call", name, t.start, t.end);
        }
        // The log's own timeline, from its first call.
        ev.push_back({{"ph", "X"}, {"cat", "log"}, {"name", name}, {"pid", 2}, {"tid", c.pid < 0 ? 0 : c.pid},
                      {"ts", static_cast<double>(c.start_us) - log_first}, {"dur", it.duration_us},
                      {"args", {{"log_line", c.line}, {"probes", c.probes}}}});
    }
    for (int tid : tids)
        ev.push_back({{"ph", "M"}, {"name", "thread_name"}, {"pid", 1}, {"tid", tid},
                      {"args", {{"name", fmt("worker %d", tid)}}}});
    ojson j;
    j["traceEvents"] = std::move(ev);
    j["displayTimeUnit"] = "ms";
    j["otherData"] = {{"log", in.log_path}, {"mode", mode_name(cfg)}, {"speed", cfg.speed}};
    return j.dump() + "\n";
}

// ---- SVG timeline -----------------------------------------------------------

namespace {

// A round step for about `want` ticks over `range`.
double tick_step(double range, int want) {
    double raw = range / want;
    double mag = std::pow(10.0, std::floor(std::log10(raw)));
    for (double m : {1.0, 2.0, 5.0, 10.0})
        if (m * mag >= raw) return m * mag;
    return 10 * mag;
}

std::string tick_label(double us, double step) {
    if (step >= 1e6) return fmt("%.0f s", us / 1e6);
    if (step >= 1e5) return fmt("%.1f s", us / 1e6);
    if (step >= 1e3) return fmt("%.0f ms", us / 1e3);
    return fmt("%.0f us", us);
}

}  // namespace

std::string svg_text(const report_input& in) {
    const bootlog::log& log = *in.log;
    const plan& p = *in.p;
    const result& r = *in.r;
    const config& cfg = *in.cfg;
    const bool async = cfg.how == mode::async;
    const double to_log = cfg.speed / 1000.0;
    const std::size_t n = std::min(p.items.size(), r.times.size());

    // Rows: the longest calls (and the critical path's head), in log order.
    const std::size_t max_rows = 36;
    std::vector<std::size_t> rows = slowest(p, max_rows);
    if (async && n && std::find(rows.begin(), rows.end(), r.path.head) == rows.end()) {
        if (!rows.empty() && rows.size() >= max_rows) rows.back() = r.path.head;
        else rows.push_back(r.path.head);
    }
    std::sort(rows.begin(), rows.end());
    std::set<std::size_t> in_rows(rows.begin(), rows.end());
    double row_min_us = 0;
    if (!rows.empty()) {
        row_min_us = p.items[rows.front()].duration_us;
        for (std::size_t k : rows) row_min_us = std::min(row_min_us, p.items[k].duration_us);
    }

    double t_max = std::max({r.wall_us, p.ideal_us, 1.0});
    if (!async) t_max = std::max(t_max, p.span_us);
    t_max *= 1.02;

    const double W = 1280, label_w = 320, x0 = label_w + 10, x1 = W - 20;
    const double row_h = 17, top = 96;
    const double rows_h = (static_cast<double>(rows.size()) + 1) * row_h;
    const double panel_top = top + rows_h + 34, panel_h = 110;
    const double H = panel_top + panel_h + 46;
    auto X = [&](double log_us) { return x0 + (x1 - x0) * std::clamp(log_us / t_max, 0.0, 1.0); };
    auto RX = [&](std::int64_t ns) { return X(static_cast<double>(ns) * to_log); };

    std::ostringstream o;
    o << fmt("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" "
             "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"11\">\n",
             W, H, W, H);
    o << "<defs><pattern id=\"wait\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" "
         "patternTransform=\"rotate(45)\"><rect width=\"6\" height=\"6\" fill=\"#fdf1d6\"/>"
         "<line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"6\" stroke=\"#e8b04a\" stroke-width=\"2\"/></pattern></defs>\n";
    o << fmt("<rect width=\"%.0f\" height=\"%.0f\" fill=\"white\"/>\n", W, H);

    // Title and figures.
    o << fmt("<text x=\"12\" y=\"22\" font-size=\"16\" font-weight=\"bold\">kasync-replay: %s</text>\n",
             xml_escape(base_name(in.log_path)).c_str());
    std::string line2 =
        async ? fmt("async model, ordered step %.0f%%, work %s, speed %g, %u threads  |  %zu initcalls, serial %s",
                    cfg.ordered_fraction * 100, work_name(cfg), cfg.speed, r.threads, p.items.size(),
                    human_us(p.serial_us).c_str())
              : fmt("as-logged model, work %s, speed %g, %u threads  |  %zu initcalls, serial %s, log span %s",
                    work_name(cfg), cfg.speed, r.threads, p.items.size(), human_us(p.serial_us).c_str(),
                    human_us(p.span_us).c_str());
    o << fmt("<text x=\"12\" y=\"40\" font-size=\"12\">%s</text>\n", xml_escape(line2).c_str());
    std::string line3 =
        async ? fmt("replayed %s  |  ideal %s  |  efficiency %.2f  |  speedup %.2fx over serial  |  order %s",
                    human_us(r.wall_us).c_str(), human_us(p.ideal_us).c_str(), efficiency(p, r), speedup(p, r),
                    r.order_ok ? "verified" : "VIOLATED")
              : fmt("replayed %s  |  planned %s  |  fidelity %.3f (replayed / log span)",
                    human_us(r.wall_us).c_str(), human_us(p.ideal_us).c_str(), fidelity(p, r));
    o << fmt("<text x=\"12\" y=\"57\" font-size=\"12\" font-weight=\"bold\" fill=\"%s\">%s</text>\n",
             r.order_ok ? "#1a5e20" : "#b00020", xml_escape(line3).c_str());

    // Legend.
    double lx = 12, ly = 68;
    auto legend = [&](const char* fill, const char* stroke, const char* text) {
        o << fmt("<rect x=\"%.0f\" y=\"%.0f\" width=\"14\" height=\"10\" fill=\"%s\" stroke=\"%s\"/>", lx, ly, fill,
                 stroke);
        o << fmt("<text x=\"%.0f\" y=\"%.0f\">%s</text>\n", lx + 18, ly + 9, text);
        lx += 26 + 6.2 * static_cast<double>(std::char_traits<char>::length(text));
    };
    if (async) {
        legend("#4a7fc1", "none", "parallel part (slow work)");
        legend("url(#wait)", "#e8b04a", "waiting for its cookie");
        legend("#c62828", "none", "ordered step (registration, in cookie order)");
        o << fmt("<path d=\"M%.0f %.0f l5 10 l-10 0 z\" fill=\"none\" stroke=\"#333\"/>", lx + 5, ly);
        o << fmt("<text x=\"%.0f\" y=\"%.0f\">ideal registration</text>\n", lx + 14, ly + 9);
    } else {
        legend("#4a7fc1", "none", "replayed call");
        legend("none", "#333", "as logged (planned)");
    }

    // Time grid.
    double step = tick_step(t_max, 10);
    double grid_bottom = panel_top + panel_h;
    for (double t = 0; t <= t_max; t += step) {
        double x = X(t);
        o << fmt("<line x1=\"%.1f\" y1=\"%.0f\" x2=\"%.1f\" y2=\"%.0f\" stroke=\"#e4e4e4\"/>\n", x, top - 4, x,
                 grid_bottom);
        o << fmt("<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\" fill=\"#555\">%s</text>\n", x,
                 grid_bottom + 14, tick_label(t, step).c_str());
    }
    o << fmt("<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\" fill=\"#555\">time in the log's clock "
             "(real replay time x %g)</text>\n",
             (x0 + x1) / 2, grid_bottom + 32, cfg.speed);

    // Rows.
    auto draw_call = [&](std::size_t k, double y, double h, bool faint) {
        const timing& t = r.times[k];
        double op = faint ? 0.35 : 1.0;
        if (async) {
            double xs = RX(t.start), xp = RX(t.parallel_end), xo = RX(t.ordered_start), xe = RX(t.end);
            if (!faint && xs > RX(t.scheduled) + 1)
                o << fmt("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#aaa\"/>", RX(t.scheduled),
                         y + h / 2, xs, y + h / 2);
            o << fmt("<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#4a7fc1\" "
                     "fill-opacity=\"%.2f\"/>",
                     xs, y, std::max(xp - xs, 0.8), h, op);
            if (!faint && xo - xp > 0.5)
                o << fmt("<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"url(#wait)\"/>", xp,
                         y + 2, xo - xp, h - 4);
            o << fmt("<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#c62828\" "
                     "fill-opacity=\"%.2f\"/>",
                     xo, y - 1, std::max(xe - xo, faint ? 1.0 : 2.0), h + 2, op);
        } else {
            const item& it = p.items[k];
            double xs = RX(t.start), xe = RX(t.end);
            o << fmt("<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#4a7fc1\" "
                     "fill-opacity=\"%.2f\"/>",
                     xs, y, std::max(xe - xs, 1.0), h, op);
            if (!faint)
                o << fmt("<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
                         "stroke=\"#333\" stroke-width=\"0.8\"/>",
                         X(it.start_us), y - 1.5, std::max(X(it.start_us + it.duration_us) - X(it.start_us), 1.0),
                         h + 3);
        }
    };

    double y = top;
    for (std::size_t k : rows) {
        if (k >= n) continue;
        const bootlog::call& c = log.calls[p.items[k].call];
        const timing& t = r.times[k];
        std::string label = display_name(c);
        if (label.size() > 40) label = label.substr(0, 38) + "..";
        if (async && t.cookie) label = fmt("#%zu ", k + 1) + label;
        bool head = async && k == r.path.head;
        o << fmt("<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\"%s>%s</text>", label_w, y + row_h - 6,
                 head ? " font-weight=\"bold\"" : "", xml_escape(label).c_str());
        o << fmt("<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"%s\"/>", x0, y, x1 - x0,
                 row_h, (static_cast<int>((y - top) / row_h) % 2) ? "#fafafa" : "#f2f5f9");
        draw_call(k, y + 3, row_h - 6, false);
        if (async) {
            double xi = X(p.items[k].ideal_end_us);
            o << fmt("<path d=\"M%.1f %.1f l4 7 l-8 0 z\" fill=\"none\" stroke=\"#333\" stroke-width=\"0.9\"/>",
                     xi, y + row_h - 8);
        }
        // The recorded duration after the bar, or before it when the bar
        // reaches the right edge.
        std::string note = human_us(p.items[k].duration_us) + (head ? "  (critical path)" : "");
        double note_w = 6.0 * static_cast<double>(note.size());
        double xe = RX(t.end), xs = RX(t.start);
        if (xe + 4 + note_w <= x1)
            o << fmt("<text x=\"%.1f\" y=\"%.1f\" fill=\"#333\" font-size=\"10\">%s</text>\n", xe + 4,
                     y + row_h - 6, note.c_str());
        else
            o << fmt("<text x=\"%.1f\" y=\"%.1f\" fill=\"#333\" font-size=\"10\" text-anchor=\"end\">%s</text>\n",
                     std::max(xs - 4, x0 + note_w), y + row_h - 6, note.c_str());
        y += row_h;
    }
    // Everything else on one row.
    std::size_t others = n > rows.size() ? n - rows.size() : 0;
    if (others) {
        o << fmt("<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\" fill=\"#555\">%zu other calls (each &lt; %s)</text>",
                 label_w, y + row_h - 6, others, xml_escape(human_us(row_min_us)).c_str());
        o << fmt("<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"#f2f2f2\"/>", x0, y, x1 - x0, row_h);
        for (std::size_t k = 0; k < n; ++k)
            if (!in_rows.count(k)) draw_call(k, y + 3, row_h - 6, true);
        o << "\n";
    }

    // Bottom panel: how many calls have finished (async: registered, in
    // order) over time, replayed against the ideal (or the log's own).
    o << fmt("<text x=\"%.0f\" y=\"%.0f\" font-weight=\"bold\">%s</text>\n", x0, panel_top - 8,
             async ? "registrations so far (in cookie order): replayed vs. ideal"
                   : "calls finished so far: replayed vs. as logged");
    o << fmt("<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" stroke=\"#bbb\"/>\n", x0,
             panel_top, x1 - x0, panel_h);
    o << fmt("<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"end\" fill=\"#555\">%zu</text>", x0 - 4, panel_top + 10, n);
    o << fmt("<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"end\" fill=\"#555\">0</text>\n", x0 - 4, panel_top + panel_h);
    auto curve = [&](std::vector<double> ends, const char* stroke, const char* dash) {
        std::sort(ends.begin(), ends.end());
        std::string d = fmt("M%.1f %.1f", x0, panel_top + panel_h);
        // One step per pixel column: the last count reached in it.
        for (std::size_t k = 0; k < ends.size(); ++k) {
            double xx = X(ends[k]);
            if (k + 1 < ends.size() && X(ends[k + 1]) - xx < 0.5) continue;
            double yy = panel_top + panel_h - panel_h * static_cast<double>(k + 1) / static_cast<double>(ends.size());
            d += fmt(" H%.1f V%.1f", xx, yy);
        }
        o << fmt("<path d=\"%s\" fill=\"none\" stroke=\"%s\" stroke-width=\"1.6\"%s/>\n", d.c_str(), stroke, dash);
    };
    std::vector<double> replayed, reference;
    for (std::size_t k = 0; k < n; ++k) {
        replayed.push_back(static_cast<double>(r.times[k].end) * to_log);
        reference.push_back(async ? p.items[k].ideal_end_us : p.items[k].start_us + p.items[k].duration_us);
    }
    curve(reference, "#777", " stroke-dasharray=\"5 3\"");
    curve(replayed, "#c62828", "");
    double ly2 = panel_top + panel_h - 12;
    o << fmt("<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"#c62828\" stroke-width=\"1.6\"/>"
             "<text x=\"%.0f\" y=\"%.0f\">replayed</text>",
             x1 - 150, ly2, x1 - 130, ly2, x1 - 126, ly2 + 4);
    o << fmt("<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"#777\" stroke-width=\"1.6\" "
             "stroke-dasharray=\"5 3\"/><text x=\"%.0f\" y=\"%.0f\">%s</text>\n",
             x1 - 150, ly2 - 14, x1 - 130, ly2 - 14, x1 - 126, ly2 - 10, async ? "ideal" : "as logged");

    // End markers across the whole picture.
    auto vmark = [&](double us, const char* color, const char* dash, const std::string& text, double ty) {
        double x = X(us);
        o << fmt("<line x1=\"%.1f\" y1=\"%.0f\" x2=\"%.1f\" y2=\"%.0f\" stroke=\"%s\" stroke-width=\"1.2\"%s/>", x,
                 top - 6, x, grid_bottom, color, dash);
        o << fmt("<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"end\" fill=\"%s\" font-size=\"10\">%s</text>\n", x - 3,
                 ty, color, xml_escape(text).c_str());
    };
    vmark(p.ideal_us, "#2e7d32", " stroke-dasharray=\"4 3\"",
          (async ? "ideal " : "planned ") + human_us(p.ideal_us), top - 8);
    vmark(r.wall_us, "#000", "", "replayed " + human_us(r.wall_us), panel_top - 8 - 12);

    o << "</svg>\n";
    return o.str();
}

}  // namespace replay
