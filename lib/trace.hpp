// Debug lines (KASYNC_DEBUG) and the Chrome trace timeline (KASYNC_TRACE).
//
// Free when off: every hook tests one immutable bool first.  When on, the
// debug lines go straight to stderr (one fprintf per line, so lines from
// different threads do not interleave), and trace events are appended to a
// per-thread buffer (no lock on the call path) that write() merges.
//
// SPDX-License-Identifier: MIT
#pragma once

#include <kasync/kasync.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace kasync::detail {

// The name debug lines and traces show: the given one, else the function's
// symbol (dladdr), else the callable's demangled type.
std::string call_name(const char* given, const call_ops* ops, const void* obj);

class tracer {
public:
    tracer(bool debug, std::string path,
           std::function<void(const call_record&)> sink);
    ~tracer();

    bool active() const noexcept { return active_; }

    // Brackets one call on the thread that runs it.
    class call_scope {
    public:
        call_scope(tracer& t, cookie_t c, const char* name, const call_ops* ops,
                   const void* obj, int node, bool in_caller);
        std::string_view name();  // resolved on first use
        void finish();

    private:
        tracer& t_;
        cookie_t cookie_;
        const char* given_;
        const call_ops* ops_;
        const void* obj_;
        int node_;
        bool in_caller_;
        bool resolved_ = false;
        std::string name_;
        std::uint64_t start_ = 0;
    };

    void wait_begin();
    void wait_end(std::uint64_t start_ns, std::uint64_t waited_ns);

    // Writes the trace file (once); called by shutdown.
    void write();

    struct event {
        std::string name;
        cookie_t cookie;
        int tid;
        int node;
        bool in_caller;
        bool is_wait;
        std::uint64_t start_ns, dur_ns;
    };
    struct buffer;

private:
    void record(event e);

    const bool debug_;
    const bool active_;
    const std::string path_;
    const std::function<void(const call_record&)> sink_;
    const std::uint64_t epoch_;
    const std::uint64_t id_;
    std::mutex mu_;                                // guards buffers_, written_
    std::vector<std::unique_ptr<buffer>> buffers_;  // under mu_
    bool written_ = false;          // under mu_
};

}  // namespace kasync::detail
