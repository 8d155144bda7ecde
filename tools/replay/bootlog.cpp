// bootlog — parser for initcall_debug boot logs.  See bootlog.hpp.
//
// SPDX-License-Identifier: MIT
#include "bootlog.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iterator>
#include <unordered_map>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace bootlog {

namespace {

using sv = std::string_view;

// Durations and timestamps beyond ~115 days are garbage; the bound keeps
// every sum of them far from overflow.
constexpr std::uint64_t max_usecs = 10'000'000'000'000ULL;

usec_t sat_add(usec_t a, usec_t b) noexcept {
    usec_t r;
    return __builtin_add_overflow(a, b, &r) ? INT64_MAX : r;
}

bool is_space(char c) noexcept { return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v'; }
bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }
bool is_alpha(char c) noexcept { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_hex(char c) noexcept {
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
bool is_ident(char c) noexcept { return is_alpha(c) || is_digit(c) || c == '_' || c == '.' || c == '$'; }

sv trim_left(sv s) noexcept {
    while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
    return s;
}
sv trim_right(sv s) noexcept {
    while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
    return s;
}
sv trim(sv s) noexcept { return trim_right(trim_left(s)); }

bool eat(sv& s, sv word) noexcept {
    if (s.substr(0, word.size()) != word) return false;
    s.remove_prefix(word.size());
    return true;
}

// Unsigned decimal; false on no digits or overflow.
bool eat_uint(sv& s, std::uint64_t& out) noexcept {
    std::size_t i = 0;
    std::uint64_t v = 0;
    while (i < s.size() && is_digit(s[i])) {
        std::uint64_t d = static_cast<std::uint64_t>(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10) return false;
        v = v * 10 + d;
        ++i;
    }
    if (i == 0) return false;
    out = v;
    s.remove_prefix(i);
    return true;
}

bool eat_long(sv& s, long& out) noexcept {
    sv t = s;
    bool neg = eat(t, "-");
    if (!neg) eat(t, "+");
    std::uint64_t v = 0;
    if (!eat_uint(t, v) || v > static_cast<std::uint64_t>(INT64_MAX)) return false;
    out = neg ? -static_cast<long>(v) : static_cast<long>(v);
    s = t;
    return true;
}

// "<7>" or "<30>": a syslog level (with facility).
bool eat_level(sv& s) noexcept {
    sv t = s;
    std::uint64_t v;
    if (!eat(t, "<") || !eat_uint(t, v) || !eat(t, ">")) return false;
    s = t;
    return true;
}

// "[    0.123456]": a printk timestamp, in microseconds.
bool eat_timestamp(sv& s, usec_t& ts) noexcept {
    sv t = s;
    if (!eat(t, "[")) return false;
    t = trim_left(t);
    std::uint64_t secs;
    if (!eat_uint(t, secs) || !eat(t, ".")) return false;
    usec_t frac = 0;
    int digits = 0;
    while (!t.empty() && is_digit(t.front())) {
        if (digits < 6) {
            frac = frac * 10 + (t.front() - '0');
            ++digits;
        }
        t.remove_prefix(1);
    }
    if (digits == 0) return false;
    for (; digits < 6; ++digits) frac *= 10;
    t = trim_left(t);
    if (!eat(t, "]")) return false;
    if (secs > max_usecs / 1000000) return false;
    ts = static_cast<usec_t>(secs) * 1000000 + frac;
    s = t;
    return true;
}

// "[  T944]" or "[    C1]": CONFIG_PRINTK_CALLER's task or CPU id.
bool eat_caller(sv& s, long& caller) noexcept {
    sv t = s;
    if (!eat(t, "[")) return false;
    t = trim_left(t);
    if (t.empty() || (t.front() != 'T' && t.front() != 'C')) return false;
    bool task = t.front() == 'T';
    t.remove_prefix(1);
    std::uint64_t v;
    if (!eat_uint(t, v) || !eat(t, "]")) return false;
    if (task) caller = static_cast<long>(v);
    s = t;
    return true;
}

bool eat_token(sv& s, sv& tok) noexcept {
    std::size_t i = 0;
    while (i < s.size() && !is_space(s[i])) ++i;
    if (i == 0) return false;
    tok = s.substr(0, i);
    s.remove_prefix(i);
    return true;
}

// "kernel: " or "host kernel: " (journalctl, syslog), after a date or not.
bool eat_kernel_tag(sv& s) noexcept {
    sv t = s;
    if (eat(t, "kernel:")) {
        s = trim_left(t);
        return true;
    }
    sv host;
    if (!eat_token(t, host)) return false;
    t = trim_left(t);
    if (!eat(t, "kernel:")) return false;
    s = trim_left(t);
    return true;
}

// Journal and syslog dates: "Feb  1 18:05:31[.123456]" or
// "2025-02-01T18:05:31[.123][+0100]", followed by the kernel tag.
bool eat_journal(sv& s) noexcept {
    static constexpr sv months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    sv t = s;
    bool dated = false;
    for (sv m : months) {
        if (t.size() > 4 && t.substr(0, 3) == m && t[3] == ' ') {
            t.remove_prefix(4);
            t = trim_left(t);
            std::uint64_t day;
            if (!eat_uint(t, day) || t.empty() || t.front() != ' ') return false;
            t = trim_left(t);
            sv clock;
            if (!eat_token(t, clock) || clock.size() < 8 || clock[2] != ':' || clock[5] != ':')
                return false;
            dated = true;
            break;
        }
    }
    if (!dated) {
        // ISO 8601: 4 digits '-' 2 digits '-' 2 digits 'T' ...
        if (t.size() < 19 || !is_digit(t[0]) || !is_digit(t[3]) || t[4] != '-' || t[7] != '-' ||
            t[10] != 'T' || t[13] != ':')
            return false;
        sv stamp;
        eat_token(t, stamp);
    }
    t = trim_left(t);
    if (!eat_kernel_tag(t)) return false;
    s = t;
    return true;
}

bool valid_function(sv f) noexcept {
    if (f.empty()) return false;
    if (f.size() > 2 && f[0] == '0' && (f[1] == 'x' || f[1] == 'X'))  // a bare address
        return std::all_of(f.begin() + 2, f.end(), is_hex);
    if (is_digit(f.front())) return false;
    return std::all_of(f.begin(), f.end(), is_ident);
}

// "+0x0/0x260": the offset and size %pS prints after the function.
bool valid_offset(sv o) noexcept {
    if (!eat(o, "+0x")) return false;
    std::size_t i = 0;
    while (i < o.size() && is_hex(o[i])) ++i;
    if (i == 0) return false;
    o.remove_prefix(i);
    if (o.empty()) return true;  // some printers omit the size
    if (!eat(o, "/0x")) return false;
    if (o.empty()) return false;
    return std::all_of(o.begin(), o.end(), is_hex);
}

// Parses "fn+0x0/0x260 [mod]", "12_fn+0x0/0x20", or the library's own
// "12_any name".  False when the text cannot be a symbol.
bool parse_symbol(sv text, symbol& out) noexcept {
    text = trim(text);
    if (text.empty()) return false;
    out = symbol{};
    out.text = text;
    sv t = text;
    // Module suffix " [mod]".
    if (t.back() == ']') {
        auto open = t.rfind(" [");
        if (open == sv::npos) return false;
        sv mod = t.substr(open + 2, t.size() - open - 3);
        if (mod.empty() || !std::all_of(mod.begin(), mod.end(), [](char c) {
                return is_ident(c) || c == '-';
            }))
            return false;
        out.module = mod;
        t = trim_right(t.substr(0, open));
    }
    // Async cookie prefix "12_": identifiers cannot start with a digit.
    if (!t.empty() && is_digit(t.front())) {
        sv u = t;
        std::uint64_t c;
        if (eat_uint(u, c) && eat(u, "_") && !u.empty()) {
            out.cookie = c;
            t = u;
            // The library names calls freely: keep any non-empty name.
            auto plus = t.find("+0x");
            if (plus != sv::npos && valid_offset(t.substr(plus)) && valid_function(t.substr(0, plus)))
                t = t.substr(0, plus);
            out.function = t;
            return true;
        }
        if (!(t.size() > 2 && t[1] == 'x')) return false;
    }
    auto plus = t.find('+');
    sv fn = plus == sv::npos ? t : t.substr(0, plus);
    if (plus != sv::npos && !valid_offset(t.substr(plus))) return false;
    if (!valid_function(fn)) return false;
    out.function = fn;
    return true;
}

// "after 12 usecs" (also "usec", "us", "msecs", "ms"), then the end.
bool parse_after(sv t, usec_t& usecs) noexcept {
    t = trim_left(t);
    if (!eat(t, "after")) return false;
    if (t.empty() || !is_space(t.front())) return false;
    t = trim_left(t);
    std::uint64_t v;
    if (!eat_uint(t, v) || t.empty() || !is_space(t.front())) return false;
    t = trim(t);
    std::uint64_t scale;
    if (t == "usecs" || t == "usec" || t == "us")
        scale = 1;
    else if (t == "msecs" || t == "msec" || t == "ms")
        scale = 1000;
    else
        return false;
    if (v > max_usecs / scale) return false;  // beyond any boot: garbled
    usecs = static_cast<usec_t>(v * scale);
    return true;
}

// True when `word` could be the start of `full` cut short ("retur").
bool prefix_of(sv word, sv full) noexcept {
    return !word.empty() && word.size() <= full.size() && full.substr(0, word.size()) == word;
}

void classify_message(line_info& li) {
    sv m = li.message;
    auto bad = [&](const char* why) {
        li.k = kind::bad;
        li.why = why;
    };

    if (m.starts_with("calling") && (m.size() == 7 || is_space(m[7]))) {
        sv rest = trim(m.substr(7));
        auto at = rest.rfind(" @ ");
        if (at == sv::npos) {
            // "calling  fn+0x0/0x20 @" (pid cut off) or no pid at all.
            return bad(rest.ends_with(" @") ? "calling: pid missing" : "calling: no ' @ <pid>'");
        }
        sv pid_text = trim(rest.substr(at + 3));
        std::uint64_t pid;
        sv p = pid_text;
        if (!eat_uint(p, pid) || !p.empty()) return bad("calling: pid is not a number");
        if (!parse_symbol(rest.substr(0, at), li.sym)) return bad("calling: not a symbol");
        li.pid = static_cast<long>(pid);
        li.k = kind::call;
        return;
    }

    if (m.starts_with("initcall") && (m.size() == 8 || is_space(m[8]))) {
        sv rest = trim(m.substr(8));
        if (rest.ends_with(" blacklisted")) {
            if (!parse_symbol(rest.substr(0, rest.size() - 12), li.sym))
                return bad("initcall: not a symbol");
            li.k = kind::note;
            return;
        }
        auto r = rest.find(" returned");
        if (r == sv::npos) return bad("initcall: no 'returned'");
        if (!parse_symbol(rest.substr(0, r), li.sym)) return bad("initcall: not a symbol");
        sv t = rest.substr(r + 9);
        if (!t.empty() && !is_space(t.front())) return bad("initcall: garbled 'returned'");
        t = trim_left(t);
        if (t.starts_with("with ")) {  // "returned with preemption imbalance"
            li.k = kind::note;
            return;
        }
        if (!t.empty() && (is_digit(t.front()) || t.front() == '-' || t.front() == '+')) {
            if (!eat_long(t, li.ret)) return bad("initcall: return value is not a number");
            if (t.empty() || !is_space(t.front())) return bad("initcall: garbled return value");
            li.has_ret = true;
        }
        if (!parse_after(t, li.usecs)) return bad("initcall: no 'after <n> usecs'");
        li.k = kind::ret;
        return;
    }

    if (m.starts_with("probe of ")) {
        sv rest = trim(m.substr(9));
        auto r = rest.rfind(" returned ");
        if (r == sv::npos) {
            // Another probe message ("... rejects match -19"), unless it is
            // a return line cut short or garbled.
            sv dev, next;
            sv t = rest;
            eat_token(t, dev);
            t = trim_left(t);
            if (!eat_token(t, next) || prefix_of(next, "returned"))
                return bad("probe: cut short");
            if (rest.ends_with(" usecs") || rest.find(" after ") != sv::npos)
                return bad("probe: no 'returned'");
            return;  // other
        }
        sv dev = trim(rest.substr(0, r));
        if (dev.empty()) return bad("probe: no device");
        sv t = rest.substr(r + 10);
        t = trim_left(t);
        if (!eat_long(t, li.ret) || t.empty() || !is_space(t.front()))
            return bad("probe: return value is not a number");
        li.has_ret = true;
        if (!parse_after(t, li.usecs)) return bad("probe: no 'after <n> usecs'");
        li.device = dev;
        li.k = kind::probe;
        return;
    }

    if (m.starts_with("async_waiting") || m.starts_with("async_continuing")) {
        sv t = m.substr(m.find(' ') == sv::npos ? m.size() : m.find(' '));
        t = trim_left(t);
        std::uint64_t pid;
        if (!eat(t, "@") || (t = trim_left(t), !eat_uint(t, pid)))
            return bad("async wait: no ' @ <pid>'");
        li.pid = static_cast<long>(pid);
        t = trim(t);
        if (!t.empty()) {
            sv u = t;
            if (!parse_after(u, li.usecs)) return bad("async wait: garbled 'after'");
        }
        li.k = kind::async_wait;
        return;
    }
}

}  // namespace

namespace {

line_info parse_prefixed(sv line);

// A console capture can glue a record to the end of other output ("arm
// login: [   47.92] calling  ..."): look for a timestamped record inside.
// Each candidate is parsed without salvaging again, so a line full of
// timestamps costs one pass per '[' (a recursive salvage was exponential:
// found by fuzz_replay_parser, corpus file timeout-salvage-recursion).
void salvage(sv line, line_info& li) {
    if (line.find("calling") == sv::npos && line.find("initcall") == sv::npos &&
        line.find("probe of") == sv::npos)
        return;
    for (std::size_t at = line.find('[', 1); at != sv::npos; at = line.find('[', at + 1)) {
        sv t = line.substr(at);
        usec_t ts;
        if (!eat_timestamp(t, ts)) continue;
        line_info inner = parse_prefixed(line.substr(at));
        if (inner.k == kind::other || inner.k == kind::bad) continue;
        inner.salvaged = true;
        li = inner;
        return;
    }
}

}  // namespace

const char* to_string(kind k) noexcept {
    switch (k) {
        case kind::other: return "other";
        case kind::call: return "call";
        case kind::ret: return "ret";
        case kind::probe: return "probe";
        case kind::async_wait: return "async_wait";
        case kind::note: return "note";
        case kind::bad: return "bad";
    }
    return "?";
}

namespace {

// One record with its prefixes, as the line starts; no salvage.
line_info parse_prefixed(sv line) {
    line_info li;
    sv s = trim_right(line);
    // Prefixes come in several orders ("<7>[ts]", "date host kernel: [ts]",
    // "[ts] host kernel:", "[ts][ T12]"); peel them off until none is left.
    for (int round = 0; round < 8; ++round) {
        s = trim_left(s);
        usec_t ts;
        if (eat_level(s)) {
            li.prefixed = true;
            continue;
        }
        if (!li.has_ts && eat_timestamp(s, ts)) {
            li.prefixed = li.has_ts = true;
            li.ts = ts;
            continue;
        }
        if (eat_caller(s, li.caller)) {
            li.prefixed = true;
            continue;
        }
        if (eat_journal(s)) {
            li.prefixed = true;
            continue;
        }
        if (li.prefixed && eat_kernel_tag(s)) continue;  // "[ts] host kernel: "
        if (!li.prefixed && s.starts_with("kernel: ")) {
            eat_kernel_tag(s);
            li.prefixed = true;
            continue;
        }
        break;
    }
    li.message = trim_left(s);
    classify_message(li);
    return li;
}

}  // namespace

line_info parse_line(std::string_view line) {
    line_info li = parse_prefixed(line);
    if (li.k == kind::other || li.k == kind::bad) salvage(line, li);
    return li;
}

std::size_t log::finished() const noexcept {
    return static_cast<std::size_t>(
        std::count_if(calls.begin(), calls.end(), [](const call& c) { return c.finished; }));
}

usec_t log::serial_us() const noexcept {
    usec_t sum = 0;
    for (const call& c : calls)
        if (c.finished) sum = sat_add(sum, c.duration_us);
    return sum;
}

usec_t log::span_us() const noexcept {
    bool any = false;
    usec_t lo = 0, hi = 0;
    for (const call& c : calls) {
        if (!c.finished) continue;
        lo = any ? std::min(lo, c.start_us) : c.start_us;
        hi = any ? std::max(hi, c.end_us) : c.end_us;
        any = true;
    }
    return any ? hi - lo : 0;
}

namespace {

struct builder {
    log out;
    // Open calls by printed symbol, oldest first.
    std::unordered_map<std::string, std::vector<std::size_t>> open;
    std::vector<std::size_t> open_stack;  // in order of opening, for probes
    std::vector<bool> call_ts;            // each call's start had a timestamp
    std::vector<bool> ret_ts;             // each call's end had a timestamp
    std::size_t open_count = 0;

    void problem(std::size_t line_no, sv text, sv why) {
        ++out.bad_lines;
        if (out.bad.size() < log::max_problems)
            out.bad.push_back({line_no, std::string(text.substr(0, 200)), std::string(why)});
    }

    void drop_from_stack(std::size_t idx) {
        auto it = std::find(open_stack.rbegin(), open_stack.rend(), idx);
        if (it != open_stack.rend()) open_stack.erase(std::next(it).base());
    }

    void add(const line_info& li, std::size_t line_no) {
        switch (li.k) {
            case kind::other:
                return;
            case kind::bad:
                return;  // counted by the caller
            case kind::note:
                ++out.records;
                ++out.notes;
                return;
            case kind::async_wait:
                ++out.records;
                ++out.async_waits;
                return;
            case kind::call: {
                ++out.records;
                call c;
                c.function = std::string(li.sym.function);
                c.module = std::string(li.sym.module);
                c.symbol = std::string(li.sym.text);
                c.cookie = li.sym.cookie;
                c.pid = li.pid;
                c.line = line_no;
                c.start_us = li.ts;
                std::size_t idx = out.calls.size();
                auto& slot = open[c.symbol];
                if (!slot.empty()) ++out.duplicate_calls;
                slot.push_back(idx);
                open_stack.push_back(idx);
                out.calls.push_back(std::move(c));
                call_ts.push_back(li.has_ts);
                ret_ts.push_back(false);
                return;
            }
            case kind::ret: {
                ++out.records;
                std::string key(li.sym.text);
                auto it = open.find(key);
                std::size_t idx;
                if (it == open.end() || it->second.empty()) {
                    // The log began after this call started: keep it, its
                    // duration is known; its start is the return minus it.
                    ++out.orphan_returns;
                    call c;
                    c.function = std::string(li.sym.function);
                    c.module = std::string(li.sym.module);
                    c.symbol = std::move(key);
                    c.cookie = li.sym.cookie;
                    c.pid = li.caller;
                    c.line = line_no;
                    c.orphan = true;
                    c.start_us = std::max<usec_t>(0, li.ts - li.usecs);
                    idx = out.calls.size();
                    out.calls.push_back(std::move(c));
                    call_ts.push_back(li.has_ts);
                    ret_ts.push_back(false);
                } else {
                    idx = it->second.front();
                    it->second.erase(it->second.begin());
                    drop_from_stack(idx);
                }
                call& c = out.calls[idx];
                c.finished = true;
                c.return_line = line_no;
                c.has_ret = li.has_ret;
                c.ret = li.ret;
                c.duration_us = li.usecs;
                c.end_us = li.ts;
                ret_ts[idx] = li.has_ts;
                return;
            }
            case kind::probe: {
                ++out.records;
                probe p;
                p.device = std::string(li.device);
                p.ret = li.ret;
                p.duration_us = li.usecs;
                p.line = line_no;
                // The innermost open initcall (of the caller's task when the
                // log says which) ran it; its time is already in that call's.
                for (auto it = open_stack.rbegin(); it != open_stack.rend(); ++it) {
                    const call& c = out.calls[*it];
                    if (li.caller >= 0 && c.pid >= 0 && c.pid != li.caller) continue;
                    p.call = static_cast<long>(*it);
                    break;
                }
                if (p.call >= 0) {
                    call& c = out.calls[static_cast<std::size_t>(p.call)];
                    ++c.probes;
                    c.probe_us += p.duration_us;
                } else {
                    ++out.probes_outside;
                }
                out.probes.push_back(std::move(p));
                return;
            }
        }
    }

    // Start and end times: from the stamps when every call has them,
    // otherwise a clock rebuilt from the order of the lines.
    void finish(const std::vector<std::pair<std::size_t, bool>>& events) {
        bool all = !out.calls.empty();
        for (std::size_t i = 0; i < out.calls.size(); ++i) {
            const call& c = out.calls[i];
            if (!call_ts[i] || (c.finished && !ret_ts[i])) all = false;
        }
        out.timestamps = all;
        if (all) {
            for (call& c : out.calls) {
                if (!c.finished) continue;
                // Keep end >= start + duration: a stamp may round down.
                c.end_us = std::max(c.end_us, sat_add(c.start_us, c.duration_us));
            }
            return;
        }
        // events: (call index, is_return) in line order.
        usec_t clock = 0;
        for (auto [idx, is_ret] : events) {
            call& c = out.calls[idx];
            if (!is_ret) {
                c.start_us = clock;
            } else {
                if (c.orphan) c.start_us = clock;
                c.end_us = sat_add(c.start_us, c.duration_us);
                clock = std::max(clock, c.end_us);
            }
        }
    }
};

// Splits into lines without their '\n' (a '\r' before it stays; parse_line
// ignores it).  A lone '\r' also ends a line (old Mac, or a CR-only paste).
struct line_splitter {
    sv text;
    std::size_t pos = 0;
    bool next(sv& line) {
        if (pos >= text.size()) return false;
        std::size_t i = pos;
        while (i < text.size() && text[i] != '\n') {
            if (text[i] == '\r' && i + 1 < text.size() && text[i + 1] != '\n' && text[i + 1] != '\r')
                break;
            ++i;
        }
        line = text.substr(pos, i - pos);
        pos = i + 1;
        return true;
    }
};

}  // namespace

log parse(std::string_view text) {
    builder b;
    std::vector<sv> lines;
    {
        line_splitter sp{text};
        sv l;
        while (sp.next(l)) lines.push_back(l);
    }
    b.out.lines = lines.size();
    std::vector<std::pair<std::size_t, bool>> events;
    events.reserve(lines.size() / 2);
    std::string joined, best;

    for (std::size_t i = 0; i < lines.size(); ++i) {
        line_info li = parse_line(lines[i]);
        std::size_t used = 0;  // continuation lines consumed

        // A wrapped record: glue on up to two continuation lines (ones that
        // are not records themselves and carry no prefix of their own).
        // Without a space first (a hard fold inside a word), then with one.
        bool wrapped_candidate =
            li.k == kind::bad ||
            ((li.k == kind::call || li.k == kind::ret || li.k == kind::probe) && li.prefixed);
        if (wrapped_candidate) {
            std::string base(trim_right(lines[i]));
            line_info best_li;
            std::size_t best_used = 0;
            for (std::size_t extra = 1; extra <= 2 && i + extra < lines.size(); ++extra) {
                sv cont = trim(lines[i + extra]);
                if (cont.empty()) break;
                line_info ci = parse_line(lines[i + extra]);
                if (ci.prefixed || (ci.k != kind::other && ci.k != kind::bad)) break;
                if (li.k != kind::bad && !li.prefixed) break;
                bool found = false;
                for (sv sep : {sv(""), sv(" ")}) {
                    joined = base;
                    joined += sep;
                    joined += cont;
                    line_info ji = parse_line(joined);
                    if (ji.k == kind::call || ji.k == kind::ret || ji.k == kind::probe ||
                        ji.k == kind::note) {
                        // A complete record glued to a stray line must stay
                        // the same kind, and only digits may extend it.
                        if (li.k != kind::bad &&
                            (ji.k != li.k || !std::all_of(cont.begin(), cont.end(), is_digit)))
                            continue;
                        best = joined;
                        best_used = extra;
                        found = true;
                        break;
                    }
                }
                if (found) break;
                base += ' ';
                base += cont;
            }
            if (best_used) {
                best_li = parse_line(best);  // views into `best`
                li = best_li;
                used = best_used;
                b.out.joined_lines += used;
            }
        }

        std::size_t line_no = i + 1;
        if (li.salvaged && li.k != kind::bad) ++b.out.salvaged_lines;
        if (li.k == kind::bad) {
            b.problem(line_no, trim_right(lines[i]), li.why);
        } else {
            std::size_t before = b.out.calls.size();
            bool was_ret = li.k == kind::ret;
            std::size_t ret_idx = 0;
            if (was_ret) {
                // Find which call the return closes, for the clock rebuild.
                auto it = b.open.find(std::string(li.sym.text));
                if (it != b.open.end() && !it->second.empty()) ret_idx = it->second.front();
                else ret_idx = before;
            }
            b.add(li, line_no);
            if (li.k == kind::call) events.emplace_back(before, false);
            if (was_ret) events.emplace_back(ret_idx, true);
        }
        i += used;
    }
    b.finish(events);
    return std::move(b.out);
}

std::optional<log> parse_file(const std::string& path, std::string* error) {
    auto fail = [&](int err) -> std::optional<log> {
        if (error) *error = path + ": " + std::strerror(err);
        return std::nullopt;
    };
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fail(errno);
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        int err = errno;
        ::close(fd);
        return fail(err);
    }
    if (S_ISDIR(st.st_mode)) {
        ::close(fd);
        return fail(EISDIR);
    }
    std::string text;
    if (S_ISREG(st.st_mode)) text.reserve(static_cast<std::size_t>(st.st_size));
    char buf[65536];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            int err = errno;
            ::close(fd);
            return fail(err);
        }
        if (n == 0) break;
        text.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fd);
    return parse(text);
}

}  // namespace bootlog
