// Configuration: KASYNC_* environment variables and KASYNC_TOPOLOGY's
// grammar.  Bad values never stop the program: one line on stderr names
// the variable and the default that stays in force.
//
// SPDX-License-Identifier: MIT
#include <kasync/kasync.hpp>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <thread>

namespace kasync {

namespace {

constexpr unsigned max_threads = 1024;
constexpr std::size_t max_pending_limit = std::size_t{1} << 23;
constexpr int max_cpu = 1024;  // CPU_SETSIZE

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
        s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
        s.remove_suffix(1);
    return s;
}

// A whole unsigned decimal number, nothing else.
template <class T>
bool parse_number(std::string_view s, T* out) {
    s = trim(s);
    if (s.empty())
        return false;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
    return ec == std::errc() && end == s.data() + s.size();
}

void warn(const char* var, const char* value, const std::string& why,
          const std::string& keeping) {
    std::fprintf(stderr, "kasync: %s='%s' %s; using %s\n", var, value,
                 why.c_str(), keeping.c_str());
}

bool parse_cpus(std::string_view list, std::vector<int>* cpus, std::string* why) {
    while (!list.empty()) {
        auto comma = list.find(',');
        std::string_view item = trim(list.substr(0, comma));
        list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
        auto dash = item.find('-');
        int lo, hi;
        if (!parse_number(item.substr(0, dash), &lo) ||
            (dash != std::string_view::npos && !parse_number(item.substr(dash + 1), &hi))) {
            *why = "'" + std::string(item) + "' is not a CPU number or range";
            return false;
        }
        if (dash == std::string_view::npos)
            hi = lo;
        if (lo > hi || hi >= max_cpu) {
            *why = "CPU range '" + std::string(item) + "' is empty or beyond " +
                   std::to_string(max_cpu - 1);
            return false;
        }
        for (int c = lo; c <= hi; ++c)
            cpus->push_back(c);
    }
    if (cpus->empty()) {
        *why = "a node has no CPUs";
        return false;
    }
    return true;
}

}  // namespace

std::optional<topology> topology::parse(std::string_view spec, std::string* error) {
    std::string why;
    topology t;
    std::set<int> seen_cpus;
    std::vector<bool> seen_nodes;
    std::string_view rest = trim(spec);
    if (rest.empty())
        why = "it is empty";
    while (why.empty() && !rest.empty()) {
        auto semi = rest.find(';');
        std::string_view part = trim(rest.substr(0, semi));
        rest = semi == std::string_view::npos ? std::string_view{} : rest.substr(semi + 1);
        if (part.empty())
            continue;  // a trailing ';'
        auto colon = part.find(':');
        unsigned node;
        if (colon == std::string_view::npos || !parse_number(part.substr(0, colon), &node) ||
            node >= 1024) {
            why = "'" + std::string(part) + "' is not node:cpus";
            break;
        }
        std::vector<int> cpus;
        if (!parse_cpus(part.substr(colon + 1), &cpus, &why))
            break;
        if (node >= seen_nodes.size())
            seen_nodes.resize(node + 1, false);
        if (seen_nodes[node]) {
            why = "node " + std::to_string(node) + " appears twice";
            break;
        }
        seen_nodes[node] = true;
        if (t.node_cpus.size() <= node)
            t.node_cpus.resize(node + 1);
        for (int c : cpus)
            if (!seen_cpus.insert(c).second) {
                why = "CPU " + std::to_string(c) + " is in two nodes";
                break;
            }
        t.node_cpus[node] = std::move(cpus);
    }
    if (why.empty())
        for (std::size_t n = 0; n < seen_nodes.size(); ++n)
            if (!seen_nodes[n]) {
                why = "node " + std::to_string(n) + " is missing (nodes are 0..n-1)";
                break;
            }
    if (!why.empty()) {
        if (error)
            *error = why;
        return std::nullopt;
    }
    return t;
}

options options::from_environment() {
    options o;
    unsigned hw = std::max(1u, std::thread::hardware_concurrency());
    if (const char* v = std::getenv("KASYNC_THREADS"); v && *v) {
        unsigned n;
        if (parse_number(std::string_view(v), &n) && n >= 1 && n <= max_threads)
            o.threads = n;
        else
            warn("KASYNC_THREADS", v,
                 "is not a whole number from 1 to " + std::to_string(max_threads),
                 std::to_string(hw) + " (hardware threads)");
    }
    if (const char* v = std::getenv("KASYNC_MAX_PENDING"); v && *v) {
        std::size_t n;
        if (parse_number(std::string_view(v), &n) && n <= max_pending_limit)
            o.max_pending = n;
        else
            warn("KASYNC_MAX_PENDING", v,
                 "is not a whole number from 0 to " + std::to_string(max_pending_limit),
                 std::to_string(o.max_pending));
    }
    if (const char* v = std::getenv("KASYNC_TOPOLOGY"); v && *v) {
        std::string why;
        if (auto t = topology::parse(v, &why))
            o.topo = std::move(*t);
        else
            warn("KASYNC_TOPOLOGY", v, "is not a topology (" + why + ")",
                 "libnuma's view");
    }
    if (const char* v = std::getenv("KASYNC_DEBUG"); v && *v) {
        std::string_view s = trim(v);
        if (s == "1")
            o.debug = true;
        else if (s != "0")
            warn("KASYNC_DEBUG", v, "is neither 0 nor 1", "0 (off)");
    }
    if (const char* v = std::getenv("KASYNC_TRACE"); v && *v)
        o.trace_path = v;
    return o;
}

}  // namespace kasync
