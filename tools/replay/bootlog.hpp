// bootlog — a parser for Linux boot logs recorded with initcall_debug.
//
// Independent of kasync: it turns the text that people paste (dmesg with or
// without timestamps, `dmesg -r` syslog levels, journalctl or syslog
// prefixes, printk caller ids, Windows line ends, mail-wrapped or truncated
// lines) into a list of initcalls with their durations, the probes that ran
// inside them, and counts of everything it could not read.  Nothing in the
// input is fatal.
//
// SPDX-License-Identifier: MIT
#ifndef KASYNC_TOOLS_BOOTLOG_HPP
#define KASYNC_TOOLS_BOOTLOG_HPP

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace bootlog {

using usec_t = std::int64_t;

/// What one line of a log is.
enum class kind : std::uint8_t {
    other,       // not an initcall_debug record (most of a dmesg)
    call,        // "calling  <sym> @ <pid>"
    ret,         // "initcall <sym> returned [<ret>] after <n> usecs"
    probe,       // "probe of <dev> returned <ret> after <n> usecs"
    async_wait,  // "async_waiting @ <pid>", "async_continuing @ <pid> after <n> usec"
    note,        // "initcall <sym> blacklisted", "... returned with preemption imbalance"
    bad,         // looks like a record but does not parse (truncated, garbled)
};

const char* to_string(kind k) noexcept;

/// A printed symbol: "fn+0x0/0x260 [mod]", or the async shape "12_fn".
struct symbol {
    std::string_view text;      // as printed, trimmed
    std::string_view function;  // "fn"
    std::string_view module;    // "mod", or empty for built-in code
    std::uint64_t cookie = 0;   // the async cookie prefix, or 0
};

/// One line, taken apart.  The views point into the line given.
struct line_info {
    kind k = kind::other;
    bool prefixed = false;       // a timestamp, level or journal prefix was seen
    bool has_ts = false;         // a "[ secs.usecs]" timestamp was seen
    usec_t ts = 0;               // that timestamp, in microseconds
    long caller = -1;            // printk caller id "[ T123]", or -1
    std::string_view message;    // the text after the prefixes
    symbol sym;                  // call, ret, note
    std::string_view device;     // probe
    long pid = -1;               // call, async_wait
    bool has_ret = false;        // ret (async shape has none), probe
    long ret = 0;
    usec_t usecs = 0;            // ret, probe, async_wait
    std::string_view why;        // bad: what is wrong
    bool salvaged = false;       // found after other text on the same line
};

/// Takes one line apart (without its line end; a trailing '\r' is ignored).
line_info parse_line(std::string_view line);

/// One initcall as the log shows it.
struct call {
    std::string function;        // "fn", the name a replay gives the call
    std::string module;          // "mod", or empty
    std::string symbol;          // as printed: "fn+0x0/0x260 [mod]"
    std::uint64_t cookie = 0;    // async cookie prefix, or 0
    long pid = -1;               // -1: unknown (a return whose call was not logged)
    std::size_t line = 0;        // 1-based line of "calling", or of the return for orphans
    std::size_t return_line = 0; // 0: the log has no return line for it
    bool finished = false;       // a return line was found
    bool orphan = false;         // a return line without its "calling" line
    bool has_ret = false;
    long ret = 0;
    usec_t duration_us = 0;      // as recorded ("after N usecs")
    usec_t start_us = 0;         // log timestamp of "calling" (or estimated)
    usec_t end_us = 0;           // log timestamp of the return (or start + duration)
    unsigned probes = 0;         // probes logged while it ran
    usec_t probe_us = 0;         // their time (already inside duration_us)
};

struct probe {
    std::string device;
    long ret = 0;
    usec_t duration_us = 0;
    std::size_t line = 0;
    long call = -1;              // index into log::calls, or -1: outside any initcall
};

struct problem {
    std::size_t line = 0;
    std::string text;            // the line (cut to 200 characters)
    std::string why;
};

struct log {
    std::vector<call> calls;     // in log order (of the "calling" lines)
    std::vector<probe> probes;
    std::size_t lines = 0;
    std::size_t records = 0;     // call, ret, probe, async_wait, note lines
    std::size_t bad_lines = 0;
    std::size_t joined_lines = 0;    // continuation lines glued to a wrapped record
    std::size_t salvaged_lines = 0;  // records found after other text on a line
    std::size_t orphan_returns = 0;  // returns without a "calling" line
    std::size_t async_waits = 0;
    std::size_t notes = 0;
    std::size_t duplicate_calls = 0; // "calling" of a symbol already open
    std::size_t probes_outside = 0;  // probes outside any open initcall
    bool timestamps = false;     // start/end come from "[ secs.usecs]" stamps
    std::vector<problem> bad;    // the first max_problems bad lines

    static constexpr std::size_t max_problems = 100;

    std::size_t finished() const noexcept;
    std::size_t unfinished() const noexcept { return calls.size() - finished(); }
    usec_t serial_us() const noexcept;     // sum of finished durations
    /// Span of the log's own clock over finished calls: last end - first start.
    usec_t span_us() const noexcept;
};

/// Parses a whole log.  Never throws on bad input (only on out-of-memory).
log parse(std::string_view text);

/// Reads and parses a file: nullopt (and *error) if it cannot be read.
std::optional<log> parse_file(const std::string& path, std::string* error = nullptr);

}  // namespace bootlog

#endif  // KASYNC_TOOLS_BOOTLOG_HPP
