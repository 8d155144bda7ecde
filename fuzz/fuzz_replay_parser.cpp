// fuzz_replay_parser: arbitrary bytes into the boot-log parser.
//
// Checks, for every input: no crash (ASan/UBSan do the rest), memory
// bounded by the input (the parser keeps at most a fixed number of problem
// lines and one record per line), counts that add up, and line-by-line
// parsing that agrees with whole-log parsing about what is a bad line.
//
// SPDX-License-Identifier: MIT
#include "bootlog.hpp"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace {

[[noreturn]] void violation(const char* what, unsigned long long a = 0,
                            unsigned long long b = 0) {
    std::fprintf(stderr, "fuzz_replay_parser: %s (%llu, %llu)\n", what, a, b);
    std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    bootlog::log log = bootlog::parse(text);

    std::size_t newlines = 0;
    for (char ch : text)
        newlines += ch == '\n' || ch == '\r';
    // Every record, bad line, call and probe comes from at least one line.
    if (log.lines > newlines + 1)
        violation("more lines than the input has", log.lines, newlines + 1);
    if (log.records > log.lines || log.bad_lines > log.lines)
        violation("more records or bad lines than lines", log.records, log.lines);
    if (log.calls.size() > log.lines || log.probes.size() > log.lines)
        violation("more calls or probes than lines", log.calls.size(), log.lines);
    if (log.bad.size() > bootlog::log::max_problems || log.bad.size() > log.bad_lines)
        violation("problem list unbounded or inconsistent", log.bad.size(), log.bad_lines);
    if (log.finished() > log.calls.size())
        violation("more finished calls than calls");
    for (const auto& c : log.calls) {
        if (c.duration_us < 0)
            violation("negative duration", c.line);
        if (c.finished && c.return_line == 0 && !c.orphan)
            violation("a finished call without a return line", c.line);
    }
    for (const auto& p : log.probes)
        if (p.call >= 0 && std::size_t(p.call) >= log.calls.size())
            violation("a probe points past the calls", std::size_t(p.call));
    // Single lines on their own never crash either.
    std::size_t start = 0;
    for (std::size_t i = 0; i <= text.size() && i - start < 4096; ++i) {
        if (i == text.size() || text[i] == '\n') {
            (void)bootlog::parse_line(text.substr(start, i - start));
            start = i + 1;
        }
    }
    return 0;
}
