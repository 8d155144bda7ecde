// Placement: one oneTBB task_arena per NUMA node, its threads pinned to the
// node's CPUs.
//
// Sizing.  The scheduler's threads are shared among the nodes in
// proportion to their CPUs (largest remainder), each node with CPUs getting
// at least one while there are threads to give; their sizes add up to the
// thread count.  Arenas reserve no slot for external threads: calls are
// enqueued, never executed in place, so no external thread ever joins.
//
// Dispatch.  A call is not a oneTBB task of its own: each arena has a
// queue of cookies (cookie_queue.hpp) and at most one "drain" task per
// thread, which runs queued cookies until the queue is empty.  A schedule
// is then a push and, while the arena has fewer drainers than threads, one
// task enqueue; a stream of calls costs no task at all.  A full queue (it
// holds as many cookies as the ring, but a cookie that a waiting worker ran
// itself stays queued until a drainer pops it) falls back to one task per
// call.
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
    // queue_bits: log2 of each arena's queue size (the ring's).
    placement(engine& e, const topology& topo, unsigned threads, bool pin,
              unsigned queue_bits);
    ~placement();

    // Have cookie c run on the node's arena (any_node, a node without
    // threads or out of range: the caller's node).  May throw
    // std::bad_alloc, only when the arena's queue is full.
    void enqueue(int node, cookie_t c);

    // Wait until every queued task has run; idempotent.
    void stop();

    std::size_t nodes() const noexcept { return arenas_.size(); }

    // Statistics: drain tasks started, calls queued as tasks of their own.
    std::uint64_t drain_tasks() const noexcept;
    std::uint64_t queue_full() const noexcept;

private:
    struct arena;
    arena& arena_for(int node) noexcept;
    void spawn_drainer(arena& a) noexcept;
    void drain(arena& a) noexcept;
    void enqueue_task(arena& a, cookie_t c);

    engine& engine_;
    std::vector<std::unique_ptr<arena>> arenas_;
    std::vector<int> node_to_arena_;   // node -> index in arenas_, or -1
    std::vector<int> cpu_to_arena_;    // cpu  -> index in arenas_, or -1
    unsigned threads_;
    alignas(64) std::atomic<std::int64_t> in_flight_{0};
    alignas(64) std::atomic<std::uint64_t> drain_tasks_{0};
    std::atomic<std::uint64_t> queue_full_{0};
    bool stopped_ = false;
};

}  // namespace kasync::detail
