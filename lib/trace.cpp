// Debug lines and Chrome trace-event output.  See trace.hpp.
//
// SPDX-License-Identifier: MIT
#include "trace.hpp"

#include "engine.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cxxabi.h>
#include <dlfcn.h>
#include <fstream>
#include <memory>

namespace kasync::detail {

std::string call_name(const char* given, const call_ops* ops, const void* obj) {
    if (given)
        return given;
    if (const void* sym = ops->symbol(obj)) {
        Dl_info info{};
        if (dladdr(sym, &info) && info.dli_sname)
            return info.dli_sname;
        char buf[32];
        std::snprintf(buf, sizeof buf, "%p", sym);
        return buf;
    }
    int status = 0;
    std::unique_ptr<char, void (*)(void*)> demangled(
        abi::__cxa_demangle(ops->type->name(), nullptr, nullptr, &status),
        std::free);
    return status == 0 && demangled ? demangled.get() : ops->type->name();
}

// One thread's events.  Only its thread appends; the lock is uncontended
// except against write(), and is taken only while tracing to a file.
struct tracer::buffer {
    std::mutex mu;
    std::vector<event> events;  // under mu
};

namespace {
std::atomic<std::uint64_t> tracer_ids{1};
// This thread's buffer for each tracer it has written to, by tracer id
// (ids are never reused, so a stale entry is never matched).
thread_local std::vector<std::pair<std::uint64_t, tracer::buffer*>> tls_buffers;
}  // namespace

tracer::tracer(bool debug, std::string path,
               std::function<void(const call_record&)> sink)
    : debug_(debug),
      active_(debug || !path.empty() || bool(sink)),
      path_(std::move(path)),
      sink_(std::move(sink)),
      epoch_(now_ns()),
      // relaxed: a unique number, nothing to order.
      id_(tracer_ids.fetch_add(1, std::memory_order_relaxed)) {}

tracer::~tracer() = default;

void tracer::record(event e) {
    buffer* mine = nullptr;
    for (auto& [id, b] : tls_buffers)
        if (id == id_)
            mine = b;
    if (!mine) {
        auto owned = std::make_unique<buffer>();
        mine = owned.get();
        std::lock_guard lock(mu_);
        buffers_.push_back(std::move(owned));
        tls_buffers.emplace_back(id_, mine);
    }
    std::lock_guard lock(mine->mu);
    mine->events.push_back(std::move(e));
}

tracer::call_scope::call_scope(tracer& t, cookie_t c, const char* name,
                               const call_ops* ops, const void* obj, int node,
                               bool in_caller)
    : t_(t), cookie_(c), given_(name), ops_(ops), obj_(obj), node_(node),
      in_caller_(in_caller) {
    if (!t_.active_)
        return;
    start_ = now_ns();
    if (t_.debug_) {
        std::string_view n = this->name();
        std::fprintf(stderr, "calling  %llu_%.*s @ %d\n",
                     static_cast<unsigned long long>(c), int(n.size()), n.data(),
                     current_tid());
    }
}

std::string_view tracer::call_scope::name() {
    if (!resolved_) {
        name_ = call_name(given_, ops_, obj_);
        resolved_ = true;
    }
    return name_;
}

void tracer::call_scope::finish() {
    if (!t_.active_)
        return;
    std::uint64_t end = now_ns();
    std::string_view n = name();
    if (t_.debug_)
        std::fprintf(stderr, "initcall %llu_%.*s returned after %llu usecs\n",
                     static_cast<unsigned long long>(cookie_), int(n.size()),
                     n.data(),
                     static_cast<unsigned long long>((end - start_) / 1000));
    if (t_.sink_)
        t_.sink_(call_record{cookie_, n, node_, current_tid(), start_, end,
                             in_caller_});
    if (!t_.path_.empty())
        t_.record(event{std::string(n), cookie_, current_tid(), node_,
                        in_caller_, false, start_, end - start_});
}

void tracer::wait_begin() {
    if (debug_)
        std::fprintf(stderr, "async_waiting @ %d\n", current_tid());
}

void tracer::wait_end(std::uint64_t start_ns, std::uint64_t waited_ns) {
    if (!active_)
        return;
    if (debug_)
        std::fprintf(stderr, "async_continuing @ %d after %llu usec\n",
                     current_tid(),
                     static_cast<unsigned long long>(waited_ns / 1000));
    if (!path_.empty())
        record(event{"wait", 0, current_tid(), -1, false, true, start_ns,
                     waited_ns});
}

void tracer::write() {
    std::lock_guard lock(mu_);
    if (path_.empty() || written_)
        return;
    written_ = true;
    nlohmann::json events = nlohmann::json::array();
    std::vector<int> tids;
    for (auto& b : buffers_) {
        std::lock_guard bl(b->mu);
        for (const event& e : b->events) {
            nlohmann::json ev = {
                {"name", e.is_wait ? std::string("wait") : e.name},
                {"cat", e.is_wait ? "wait" : (e.in_caller ? "call,in_caller" : "call")},
                {"ph", "X"},
                {"pid", 1},
                {"tid", e.tid},
                {"ts", double(e.start_ns - epoch_) / 1000.0},
                {"dur", double(e.dur_ns) / 1000.0},
            };
            if (!e.is_wait)
                ev["args"] = {{"cookie", e.cookie}, {"node", e.node}};
            events.push_back(std::move(ev));
            if (std::find(tids.begin(), tids.end(), e.tid) == tids.end())
                tids.push_back(e.tid);
        }
    }
    for (int tid : tids)
        events.push_back({{"name", "thread_name"}, {"ph", "M"}, {"pid", 1},
                          {"tid", tid},
                          {"args", {{"name", "kasync " + std::to_string(tid)}}}});
    std::ofstream out(path_);
    out << nlohmann::json{{"traceEvents", events}, {"displayTimeUnit", "ns"}}.dump()
        << '\n';
    if (!out)
        std::fprintf(stderr, "kasync: KASYNC_TRACE: cannot write %s\n",
                     path_.c_str());
}

}  // namespace kasync::detail
