// Placement: one oneTBB task_arena per NUMA node, its threads pinned to the
// node's CPUs.
//
// Sizing.  The scheduler's threads are shared among the nodes in
// proportion to their CPUs (largest remainder), each node with CPUs getting
// at least one while there are threads to give; their sizes add up to the
// thread count.  Arenas reserve no slot for external threads: calls are
// enqueued, never executed in place, so no external thread ever joins.
//
// Pinning.  A task_scheduler_observer per arena pins a worker to its
// node's CPUs when it enters and restores the process mask when it leaves
// (oneTBB's workers are shared by every arena in the process).  We do not
// use oneTBB's own NUMA constraints: they need tbbbind and hwloc, and
// info::numa_nodes() answers {-1} without them.  libnuma or KASYNC_TOPOLOGY
// is the single source of truth.
//
// SPDX-License-Identifier: MIT
#pragma once

#include <kasync/kasync.hpp>

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include <sched.h>

namespace kasync::detail {

class engine;

class placement {
public:
    placement(engine& e, const topology& topo, unsigned threads, bool pin);
    ~placement();

    // Queue a task that runs cookie c on the node's arena (any_node, a node
    // without threads or out of range: the caller's node).  May throw
    // std::bad_alloc.
    void enqueue(int node, cookie_t c);

    // Wait until every queued task has run; idempotent.
    void stop();

    std::size_t nodes() const noexcept { return arenas_.size(); }

private:
    struct arena;
    arena& arena_for(int node) noexcept;

    engine& engine_;
    std::vector<std::unique_ptr<arena>> arenas_;
    std::vector<int> node_to_arena_;   // node -> index in arenas_, or -1
    std::vector<int> cpu_to_arena_;    // cpu  -> index in arenas_, or -1
    unsigned threads_;
    alignas(64) std::atomic<std::int64_t> in_flight_{0};
    bool stopped_ = false;
};

}  // namespace kasync::detail
