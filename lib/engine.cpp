// The ordering core.  Read the theory of operation in engine.hpp first.
//
// Memory-ordering vocabulary used below:
//   "count before cookie": every pending_set count a call belongs to is
//     incremented (seq_cst RMW) before the call's cookie is taken (seq_cst
//     RMW on next_).  A scanner that loads next_ and then a count (both
//     seq_cst) and finds the count zero knows no member below that next_
//     value is pending.
//   "tag publishes record": a slot's non-atomic fields are written before
//     the release store of its tag; the thread that claims the slot with an
//     acquire CAS reads them.
//   "done publishes effects": the completer's release store of st_done is
//     what a waiter acquires (directly, or through a frontier it acquires)
//     before returning; so a waiter sees everything the call did.
//
// SPDX-License-Identifier: MIT
#include "engine.hpp"

#include "placement.hpp"
#include "trace.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <new>

#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

namespace kasync::detail {

namespace {

// initial-exec: a direct %fs-relative access instead of __tls_get_addr (about
// 50 instructions per call measured with callgrind); libkasync is linked,
// not dlopen()ed late, so its few bytes of static TLS are always there.
__attribute__((tls_model("initial-exec"))) thread_local thread_state tls_state;
__attribute__((tls_model("initial-exec"))) thread_local int tls_tid = 0;

std::atomic<std::uint32_t> engine_serials{1};

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

// Spinning on another thread's progress (a publication, a claim): pause
// first, then give the CPU away so a preempted publisher can finish.
struct backoff {
    unsigned n = 0;
    void operator()() noexcept {
        if (++n < 64)
            cpu_relax();
        else
            sched_yield();
    }
};

unsigned ceil_log2(std::size_t v) {
    unsigned b = 0;
    while ((std::size_t{1} << b) < v)
        ++b;
    return b;
}

// Advance an atomic frontier to at least v.
inline void raise_to(std::atomic<cookie_t>& a, cookie_t v) noexcept {
    // relaxed first read: the CAS below re-validates it.
    cookie_t cur = a.load(std::memory_order_relaxed);
    // release: a reader that acquires the frontier sees the done tags (and
    // through them the calls' effects) that justified moving it.
    // release on success (above); relaxed on failure: we only retry.
    while (cur < v && !a.compare_exchange_weak(cur, v, std::memory_order_release,
                                               std::memory_order_relaxed)) {  // retry
    }
}

}  // namespace

thread_state& this_thread_state() noexcept { return tls_state; }

int current_tid() noexcept {
    if (!tls_tid)
        tls_tid = static_cast<int>(::syscall(SYS_gettid));
    return tls_tid;
}

std::uint64_t now_ns() noexcept {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return std::uint64_t(ts.tv_sec) * 1000000000u + std::uint64_t(ts.tv_nsec);
}

// ---- statistics: sharded so the hot paths never share a counter line ------

enum counter_id {
    c_completed, c_ran_in_caller, c_refused, c_exceptions, c_waits,
    c_waits_slept, c_wait_ns, c_wakeups, c_futile, c_deadlocks, c_timeouts,
    c_helped, c_spare_runs, c_displaced, c_count
};

struct engine::counters {
    static constexpr unsigned shards = 16;
    struct alignas(64) shard {
        std::atomic<std::uint64_t> v[c_count] = {};
    };
    shard s[shards];
    alignas(64) std::atomic<std::uint64_t> peak{0};

    void add(counter_id id, std::uint64_t n = 1) noexcept {
        auto& cell = s[unsigned(current_tid()) % shards].v[id];
        // relaxed: statistics only, read without ordering by stats().
        cell.fetch_add(n, std::memory_order_relaxed);
    }
    std::uint64_t sum(counter_id id) const noexcept {
        std::uint64_t t = 0;
        for (const auto& sh : s)
            // relaxed: a snapshot of independent counters.
            t += sh.v[id].load(std::memory_order_relaxed);
        return t;
    }
};

// ---- construction ---------------------------------------------------------

engine::engine(options opts)
    : ring_bits_(std::clamp(ceil_log2(std::max<std::size_t>(opts.max_pending, 1)),
                            4u, 24u)),
      mask_((cookie_t{1} << ring_bits_) - 1),
      ring_(new slot[std::size_t{1} << ring_bits_]),
      opts_(std::move(opts)),
      // relaxed: a distinct number per engine, nothing to order.
      serial_(engine_serials.fetch_add(1, std::memory_order_relaxed) & 0xfff),
      counters_(std::make_unique<counters>()) {
    // Slot i starts as "lap -1 done", so cookie i (lap 0) finds it free;
    // slot 0 as "lap 0 done": cookie 0 is never issued.
    for (std::size_t i = 0; i <= mask_; ++i) {
        auto t = make_tag(i == 0 ? 0 : lap_mask, 0, false, st_done);
        // relaxed: not yet shared with any other thread.
        ring_[i].tag.store(t, std::memory_order_relaxed);
    }
    if (opts_.max_pending > pending_set::count_mask / 2)
        opts_.max_pending = pending_set::count_mask / 2;

    all_.kind = set_kind::all;
    registered_.kind = set_kind::registered;

    topology topo = opts_.topo ? *opts_.topo : topology::detect();
    threads_ = opts_.threads ? opts_.threads
                             : std::max(1u, std::thread::hardware_concurrency());
    spin_ns_ = std::uint64_t(opts_.spin_us ? opts_.spin_us : 64) * 1000;
    tracer_ = std::make_unique<tracer>(opts_.debug, opts_.trace_path,
                                       opts_.on_call);
    placement_ = std::make_unique<placement>(*this, topo, threads_, opts_.pin, ring_bits_);

    std::uint32_t id;
    create_domain(false, &id, &default_gen_);  // the default domain: id 1
    default_set_ = domain_slot(id);
}

engine::~engine() {
    shutdown();
    for (auto& chunk : chunks_) {
        if (!chunk)
            continue;
        for (std::size_t i = 0; i < (std::size_t{1} << chunk_bits); ++i)
            // relaxed: every other thread is gone.
            delete chunk[i].load(std::memory_order_relaxed);
    }
}

std::size_t engine::nodes() const noexcept { return placement_->nodes(); }

// ---- domains ----------------------------------------------------------------

pending_set* engine::domain_slot(std::uint32_t id) const {
    if (id == 0 || id >= max_domains)
        return nullptr;
    const auto& chunk = chunks_[id >> chunk_bits];
    // Chunks are created once, under domains_mu_, before any handle that
    // points into them is handed out; the handle's hand-off orders this.
    auto* c = chunk.get();
    if (!c)
        return nullptr;
    // acquire: pairs with the release store that installed the set.
    return c[id & ((1u << chunk_bits) - 1)].load(std::memory_order_acquire);
}

static std::uint64_t gen_of(std::uint64_t word) {
    return (word >> pending_set::gen_shift) & 0xffffffffu;
}

pending_set* engine::find_domain(std::uint32_t id, std::uint64_t gen) const {
    pending_set* s = domain_slot(id);
    if (!s)
        return nullptr;
    std::uint64_t w = s->word.load(std::memory_order_acquire);  // validity only
    if ((w & pending_set::dead_bit) || gen_of(w) != (gen & 0xffffffffu))
        return nullptr;
    return s;
}

bool engine::domain_registered(std::uint32_t id, std::uint64_t gen) const {
    pending_set* s = find_domain(id, gen);
    // acquire: a snapshot of the flag for the caller.
    return s && (s->word.load(std::memory_order_acquire) & pending_set::reg_bit);
}

bool engine::create_domain(bool exclusive, std::uint32_t* id_out,
                           std::uint64_t* gen_out) {
    std::lock_guard lock(domains_mu_);
    std::uint32_t id;
    if (!free_ids_.empty()) {
        id = free_ids_.back();
        free_ids_.pop_back();
    } else if (next_id_ < max_domains) {
        id = next_id_++;
    } else {
        return false;
    }
    auto& chunk = chunks_[id >> chunk_bits];
    if (!chunk)
        chunk.reset(new (std::nothrow) std::atomic<pending_set*>[std::size_t{1} << chunk_bits]());
    if (!chunk) {
        free_ids_.push_back(id);
        return false;
    }
    auto& cell = chunk[id & ((1u << chunk_bits) - 1)];
    // relaxed: only domains_mu_ holders store into cells.
    pending_set* s = cell.load(std::memory_order_relaxed);
    if (!s) {
        s = new (std::nothrow) pending_set;
        if (!s) {
            free_ids_.push_back(id);
            return false;
        }
        s->id = id;
        s->word.store(pending_set::dead_bit, std::memory_order_relaxed);  // unpublished
        // release: publishes the initialised set to domain_slot().
        cell.store(s, std::memory_order_release);
    }
    // A stale handle may have bumped the dead word's count for an instant
    // (submit undoes it); revive the word only at count zero.
    std::uint64_t w = s->word.load(std::memory_order_acquire);  // CAS revalidates
    std::uint64_t gen;
    for (backoff wait;;) {
        gen = (gen_of(w) + 1) & 0xffffffffu;
        std::uint64_t fresh = (gen << pending_set::gen_shift) |
                              (exclusive ? 0 : pending_set::reg_bit);
        // The frontier must be set before the word makes the set usable.
        // seq_cst load of next_: no cookie of this domain can be below it.
        s->frontier.store(next_.load(std::memory_order_seq_cst),
                          std::memory_order_relaxed);  // published by the CAS
        // release: publishes the frontier with the revived word; acquire on
        // failure: we look at the new word.
        bool idle = (w & pending_set::count_mask) == 0;
        // (orders as said above)
        if (idle && s->word.compare_exchange_strong(w, fresh, std::memory_order_release, std::memory_order_acquire))
            break;
        wait();
        w = s->word.load(std::memory_order_acquire);  // retry
    }
    *id_out = id;
    *gen_out = gen;
    return true;
}

int engine::destroy_domain(std::uint32_t id, std::uint64_t gen) {
    if (id == 1)
        return -EINVAL;  // the default domain lives as long as the engine
    pending_set* s = find_domain(id, gen);
    if (!s)
        return -EINVAL;
    if (in_call_of(s, cookie_max))
        return -EDEADLK;
    for (;;) {
        int r = wait(s, cookie_max, no_timeout);
        if (r)
            return r;
        // acquire: re-validate the generation before killing the word.
        std::uint64_t w = s->word.load(std::memory_order_acquire);
        if ((w & pending_set::dead_bit) || gen_of(w) != (gen & 0xffffffffu))
            return -EINVAL;  // someone else destroyed it meanwhile
        if (w & pending_set::count_mask)
            continue;        // new calls arrived: wait for them too
        std::uint64_t dead = (w & ~pending_set::reg_bit) | pending_set::dead_bit;
        // acq_rel: later schedulers that see dead_bit also see we are done.
        if (s->word.compare_exchange_strong(w, dead, std::memory_order_acq_rel))
            break;
    }
    std::lock_guard lock(domains_mu_);
    free_ids_.push_back(id);
    return 0;
}

int engine::unregister_domain(std::uint32_t id, std::uint64_t gen) {
    pending_set* s = find_domain(id, gen);
    if (!s)
        return -EINVAL;
    // acquire: start from a current word; the CAS below re-validates.
    std::uint64_t w = s->word.load(std::memory_order_acquire);
    for (;;) {
        if ((w & pending_set::dead_bit) || gen_of(w) != (gen & 0xffffffffu) ||
            !(w & pending_set::reg_bit))
            return -EINVAL;
        if (w & pending_set::count_mask)
            return -EBUSY;
        // seq_cst: a scheduler's fetch_add either precedes this (count != 0,
        // the CAS fails) or reads the cleared flag.
        if (s->word.compare_exchange_weak(w, w & ~pending_set::reg_bit,
                                          std::memory_order_seq_cst))
            return 0;
    }
}

// ---- scheduling -------------------------------------------------------------

cookie_t engine::submit(const call_ops* ops, void* obj, const call_options& o,
                        bool nocall, std::uint32_t domain_id, std::uint64_t gen) {
    pending_set* dom = domain_slot(domain_id);
    if (!dom)
        return 0;

    // Count before cookie (file comment): the domain, then all, then
    // registered.  seq_cst RMWs; the result also validates the handle.
    std::uint64_t w = dom->word.fetch_add(1, std::memory_order_seq_cst);
    if ((w & pending_set::dead_bit) || gen_of(w) != (gen & 0xffffffffu)) {
        dom->word.fetch_sub(1, std::memory_order_seq_cst);  // undo, same order
        return 0;
    }
    std::uint64_t before = all_.word.fetch_add(1, std::memory_order_seq_cst) &
                           pending_set::count_mask;
    // seq_cst: pairs with shutdown()'s store then count check (Dekker).
    bool in_caller = before > opts_.max_pending ||
                     stopped_.load(std::memory_order_seq_cst);
    if (in_caller && nocall) {
        all_.word.fetch_sub(1, std::memory_order_seq_cst);  // undo, same order
        dom->word.fetch_sub(1, std::memory_order_seq_cst);
        counters_->add(c_refused);
        return 0;
    }
    bool reg = w & pending_set::reg_bit;
    if (reg)
        registered_.word.fetch_add(1, std::memory_order_seq_cst);  // count before cookie
    cookie_t c = next_.fetch_add(1, std::memory_order_seq_cst);

    // relaxed: the peak is statistics only.
    if (before + 1 > counters_->peak.load(std::memory_order_relaxed))
        raise_to(counters_->peak, before + 1);

    std::uint64_t tag = make_tag(lap_of(c), domain_id, reg,
                                 in_caller ? st_running : st_queued);
    publish(c, tag, ops, in_caller ? nullptr : obj, o);
    if (in_caller) {
        counters_->add(c_ran_in_caller);
        execute(c, tag, ops, obj, o.name, o.node, true);
        return c;
    }
    try {
        placement_->enqueue(o.node, c);
    } catch (...) {
        // Out of memory for the arena task: run it here, still exactly once.
        counters_->add(c_ran_in_caller);
        run_cookie(c);
    }
    // relaxed: a hint; spares also poll while workers are blocked.
    if (blocked_.load(std::memory_order_relaxed) > 0)
        poke_spares();
    return c;
}

// Write cookie c's record into its slot.  The slot must have seen the
// previous lap published; a previous lap still pending is displaced.
void engine::publish(cookie_t c, std::uint64_t tag, const call_ops* ops,
                     void* obj, const call_options& o) noexcept {
    slot& s = slot_of(c);
    const std::uint64_t lap = lap_of(c);
    for (backoff wait;;) {
        // acquire: we may read (displace) the previous lap's record.
        std::uint64_t t = s.tag.load(std::memory_order_acquire);
        std::int64_t d = lap_diff(tag_lap(t), lap);
        if (d == -1 && tag_state(t) == st_done)
            break;
        if (d == -1) {
            if (displace(s, c - (mask_ + 1), with_state(tag, st_claimed)))
                break;  // the slot holds our tag, claimed by us
            continue;   // the old call finished meanwhile
        }
        wait();  // the previous lap's publisher has its cookie but no tag yet
    }
    s.name = o.name;
    s.ops = ops;
    s.node = o.node;
    if (obj)
        ops->move_to(s.storage, obj);
    // release: tag publishes record.
    s.tag.store(tag, std::memory_order_release);
}

// Move the pending record of old_cookie out of slot s into the overflow
// table and install `ours` (the next lap's tag, claimed by its publisher).
// Rare: old_cookie stayed pending while a whole ring of later cookies was
// taken.  Returns false when old_cookie completed meanwhile.
bool engine::displace(slot& s, cookie_t old_cookie, std::uint64_t ours) noexcept {
    std::unique_lock lock(overflow_mu_);
    overflow_call oc{};
    bool requeue = false;
    for (backoff wait;;) {
        // acquire: tag publishes record.
        std::uint64_t t = s.tag.load(std::memory_order_acquire);
        if (tag_lap(t) != (lap_of(old_cookie) & lap_mask) || tag_state(t) == st_done)
            return false;  // completed meanwhile: nothing to move
        std::uint64_t st = tag_state(t);
        if (st == st_claimed) {
            wait();  // a runner is moving the callable out; it is quick
            continue;
        }
        if (st == st_queued) {
            auto claimed = with_state(t, st_claimed);
            // acquire: we take over the record, as any claimer would.
            if (!s.tag.compare_exchange_strong(t, claimed, std::memory_order_acquire))
                continue;
            s.ops->move_to(oc.storage, s.storage);
            s.ops->destroy(s.storage);
            requeue = true;
        }
        oc.tag = t;  // queued or running, as it was
        oc.name = s.name;
        oc.ops = s.ops;
        oc.node = s.node;
        overflow_.emplace(old_cookie, oc);
        // relaxed: published by the release on the tag below.
        overflow_count_.fetch_add(1, std::memory_order_relaxed);
        std::uint64_t expect = requeue ? with_state(t, st_claimed) : t;
        // release: a scanner that sees the new lap also sees the entry.
        if (s.tag.compare_exchange_strong(expect, ours, std::memory_order_release, std::memory_order_relaxed))
            break;
        // A running call finished between our load and CAS: undo, retry.
        overflow_.erase(old_cookie);
        overflow_count_.fetch_sub(1, std::memory_order_relaxed);  // under lock
    }
    counters_->add(c_displaced);
    lock.unlock();
    if (requeue) {
        try {
            placement_->enqueue(oc.node, old_cookie);
        } catch (...) {
            run_overflow(old_cookie);
        }
    }
    return true;
}

// ---- running and completing -------------------------------------------------

// The overflow entry of cookie c, if c was displaced and is still pending.
bool engine::overflow_state(cookie_t c, std::uint64_t* tag) {
    std::lock_guard lock(overflow_mu_);
    auto it = overflow_.find(c);
    if (it == overflow_.end())
        return false;
    *tag = it->second.tag;
    return true;
}

void engine::run_overflow(cookie_t c) noexcept {
    std::unique_lock lock(overflow_mu_);
    auto it = overflow_.find(c);
    if (it == overflow_.end() || tag_state(it->second.tag) != st_queued)
        return;  // already run, or running
    overflow_call& oc = it->second;
    oc.tag = with_state(oc.tag, st_running);
    alignas(8) unsigned char buf[inline_capacity];
    const call_ops* ops = oc.ops;
    ops->move_to(buf, oc.storage);
    ops->destroy(oc.storage);
    std::uint64_t tag = oc.tag;
    const char* name = oc.name;
    int node = oc.node;
    lock.unlock();
    execute(c, tag, ops, buf, name, node, false);
    ops->destroy(buf);
}

// Claim cookie c (whose tag was t, queued) and run it here.  False when
// another thread claimed it first.
bool engine::try_run(cookie_t c, std::uint64_t t) noexcept {
    slot& s = slot_of(c);
    auto claimed = with_state(t, st_claimed);
    // acquire: tag publishes record; we read the record after this.
    if (!s.tag.compare_exchange_strong(t, claimed, std::memory_order_acquire, std::memory_order_relaxed))
        return false;
    alignas(8) unsigned char buf[inline_capacity];
    const call_ops* ops = s.ops;
    const char* name = s.name;
    int node = s.node;
    ops->move_to(buf, s.storage);
    ops->destroy(s.storage);
    std::uint64_t running = with_state(t, st_running);
    // release: we are done with the record; a displacer may now take it.
    s.tag.store(running, std::memory_order_release);
    execute(c, running, ops, buf, name, node, false);
    ops->destroy(buf);
    return true;
}

void engine::run_cookie(cookie_t c) noexcept {
    thread_state& ts = tls_state;
    const engine* outer = ts.worker_of;
    ts.worker_of = this;
    slot& s = slot_of(c);
    // acquire: tag publishes record.
    std::uint64_t t = s.tag.load(std::memory_order_acquire);
    std::int64_t d = lap_diff(tag_lap(t), lap_of(c));
    if (d == 0 && tag_state(t) == st_queued)
        try_run(c, t);
    else if (d > 0)
        run_overflow(c);
    // d == 0 and not queued: a waiting worker or a spare ran it already.
    ts.worker_of = outer;
}

void engine::execute(cookie_t c, std::uint64_t tag, const call_ops* ops,
                     void* obj, const char* name, int node,
                     bool in_caller) noexcept {
    thread_state& ts = tls_state;
    call_frame frame{this, c, tag_id(tag), tag_reg(tag), ts.frame};
    ts.frame = &frame;
    if (!tracer_->active()) {
        try {
            ops->invoke(obj, c);
        } catch (...) {
            counters_->add(c_exceptions);
            report_exception(c, call_name(name, ops, obj), std::current_exception());
        }
    } else {
        tracer::call_scope scope(*tracer_, c, name, ops, obj, node, in_caller);
        try {
            ops->invoke(obj, c);
        } catch (...) {
            counters_->add(c_exceptions);
            report_exception(c, scope.name(), std::current_exception());
        }
        scope.finish();
    }
    ts.frame = frame.outer;
    complete(c, tag);
}

void engine::report_exception(cookie_t c, std::string_view name,
                              std::exception_ptr e) noexcept {
    try {
        if (opts_.on_error) {
            opts_.on_error(call_error{c, name, e});
            return;
        }
        std::string what = "unknown exception";
        try {
            std::rethrow_exception(e);
        } catch (const std::exception& ex) {
            what = ex.what();
        } catch (...) {
        }
        std::fprintf(stderr, "kasync: call %llu_%.*s threw: %s\n",
                     static_cast<unsigned long long>(c), int(name.size()),
                     name.data(), what.c_str());
    } catch (...) {
        std::fprintf(stderr, "kasync: the error handler threw for call %llu\n",
                     static_cast<unsigned long long>(c));
    }
}

void engine::complete(cookie_t c, std::uint64_t running) noexcept {
    slot& s = slot_of(c);
    std::uint64_t expect = running;
    auto done = with_state(running, st_done);
    // release: done publishes effects.
    if (!s.tag.compare_exchange_strong(expect, done, std::memory_order_release, std::memory_order_relaxed)) {
        // Displaced while running: the record is in the overflow table.
        std::lock_guard lock(overflow_mu_);
        overflow_.erase(c);
        // release: pairs with the acquire in scanners that then find the
        // entry gone and read the call's effects through the table's lock.
        overflow_count_.fetch_sub(1, std::memory_order_release);
    }
    pending_set* dom = domain_slot(tag_id(running));
    // seq_cst: counts drop after done is published (the empty fast path
    // relies on it), and they are the completer's half of the Dekker pair.
    dom->word.fetch_sub(1, std::memory_order_seq_cst);
    if (tag_reg(running))
        registered_.word.fetch_sub(1, std::memory_order_seq_cst);
    all_.word.fetch_sub(1, std::memory_order_seq_cst);
    counters_->add(c_completed);

    // The completer's half of the sleep/wake Dekker pair (engine.hpp):
    //   completer: done; counts--; FENCE; sleepers?    waiter: sleepers++;
    //   FENCE; re-check.  Either the waiter's re-check sees done, or we see
    //   its sleepers count.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    // relaxed loads: ordered by the fence above.
    if (dom->sleepers.load(std::memory_order_relaxed))
        wake_reached(*dom);
    if (tag_reg(running) && registered_.sleepers.load(std::memory_order_relaxed))
        wake_reached(registered_);
    // relaxed: as above.
    if (all_.sleepers.load(std::memory_order_relaxed))
        wake_reached(all_);
}

// ---- lowest in progress ----------------------------------------------------

// How long a scanner waits for a taken cookie to be published before it
// reports that cookie as "pending, set unknown": about 64 pauses and 16
// yields.  A publisher only stalls there if it is preempted, or if a
// callable's move constructor blocks; lowest() stays lock-free either way.
constexpr unsigned publish_patience = 80;

cookie_t engine::lowest(pending_set& s, bool* unpublished, bool patient) {
    // seq_cst next_ then seq_cst count: "count before cookie".
    cookie_t n = next_.load(std::memory_order_seq_cst);
    if (s.pending() == 0) {
        raise_to(s.frontier, n);
        return cookie_max;
    }
    // acquire: pairs with raise_to's release (effects of skipped calls).
    cookie_t f = s.frontier.load(std::memory_order_acquire);
    backoff wait;
    for (;;) {
        if (f >= n) {
            n = next_.load(std::memory_order_seq_cst);
            if (f >= n) {
                // Every member below n is complete, and the member still
                // counted has not taken its cookie: at this instant none is
                // pending.
                raise_to(s.frontier, f);
                return cookie_max;
            }
        }
        // acquire: done publishes effects; tag publishes record.
        std::uint64_t t = slot_of(f).tag.load(std::memory_order_acquire);
        std::int64_t d = lap_diff(tag_lap(t), lap_of(f));
        if (d == 0) {
            if (tag_state(t) != st_done && s.member(t))
                break;
            ++f;
        } else if (d > 0) {
            std::uint64_t ot;
            // acquire: pairs with displace()'s publication of the new lap.
            if (overflow_count_.load(std::memory_order_acquire) &&
                overflow_state(f, &ot) && s.member(ot))
                break;
            ++f;
        } else if (patient || wait.n < publish_patience) {
            wait();  // cookie f is taken but not yet published: it is pending
        } else {
            if (unpublished)
                *unpublished = true;
            break;   // report it: it may be a member, we cannot tell yet
        }
    }
    raise_to(s.frontier, f);
    return f;
}

bool engine::reached(pending_set& s, cookie_t target, bool* unpublished) {
    // acquire: the frontier carries the effects of every call below it.
    return s.frontier.load(std::memory_order_acquire) >= target ||
           lowest(s, unpublished) >= target;
}

bool engine::in_call_of(const pending_set* s, cookie_t target) const {
    for (const call_frame* f = tls_state.frame; f; f = f->outer) {
        if (f->owner != this || f->cookie >= target)
            continue;
        switch (s->kind) {
        case set_kind::domain:
            if (f->domain_id == s->id)
                return true;
            break;
        case set_kind::registered:
            if (f->registered)
                return true;
            break;
        case set_kind::all:
            return true;
        }
    }
    return false;
}

bool engine::in_any_call() const noexcept {
    for (const call_frame* f = tls_state.frame; f; f = f->outer)
        if (f->owner == this)
            return true;
    return false;
}

// ---- waiting ----------------------------------------------------------------

// A waiting worker runs queued members of s below target itself, lowest
// first, so it never holds back a call it waits for.  Only lower cookies
// are run, so nested helping cannot form a cycle.
bool engine::help(pending_set& s, cookie_t target) {
    // acquire (both): start and end points; every slot is re-read below.
    cookie_t c = s.frontier.load(std::memory_order_acquire);
    // acquire: as above.
    cookie_t end = std::min(target, next_.load(std::memory_order_acquire));
    bool ran = false;
    for (; c < end; ++c) {
        // acquire: tag publishes record.
        std::uint64_t t = slot_of(c).tag.load(std::memory_order_acquire);
        std::int64_t d = lap_diff(tag_lap(t), lap_of(c));
        if (d == 0 && tag_state(t) == st_queued && s.member(t)) {
            if (try_run(c, t)) {
                counters_->add(c_helped);
                ran = true;
            }
        // acquire: pairs with displace()'s release of the new lap.
        } else if (d > 0 && overflow_count_.load(std::memory_order_acquire)) {
            std::uint64_t ot;
            if (overflow_state(c, &ot) && tag_state(ot) == st_queued &&
                s.member(ot)) {
                run_overflow(c);
                ran = true;
            }
        }
    }
    return ran;
}

// True when at most one member of s below target is pending, so that the
// next completion may reach target.  Looks at 64 slots at most.
bool engine::next_in_line(pending_set& s, cookie_t target) {
    cookie_t low = lowest(s);
    if (low >= target)
        return true;
    if (target - low > 64)
        return false;
    for (cookie_t c = low + 1; c < target; ++c) {
        // acquire: done publishes effects (we only classify here).
        std::uint64_t t = slot_of(c).tag.load(std::memory_order_acquire);
        std::int64_t d = lap_diff(tag_lap(t), lap_of(c));
        if (d < 0 || (d == 0 && tag_state(t) != st_done && s.member(t)))
            return false;  // pending, or not yet published
    }
    return true;
}

int engine::wait(pending_set* sp, cookie_t target, std::uint64_t timeout_ns) {
    pending_set& s = sp ? *sp : registered_;
    if (reached(s, target))
        return 0;
    counters_->add(c_waits);
    if (in_call_of(&s, target)) {
        counters_->add(c_deadlocks);
        return -EDEADLK;
    }
    if (timeout_ns == 0) {
        counters_->add(c_timeouts);
        return -ETIMEDOUT;
    }
    // A worker first runs what it waits for, if that is still queued.
    const bool worker = tls_state.worker_of == this;
    if (worker && help(s, target) && reached(s, target))
        return 0;
    // Pause, then yield, then sleep.  The waiter next in line (at most one
    // pending call ahead of it) pauses for half the spin budget and yields
    // for the other half: what it waits for is running, or preempted, and a
    // yield hands the CPU to a preempted call.  The others need several
    // completions first, and their spinning would take the CPUs those
    // completions need: they pause for a thirty-second of the budget and
    // yield at most four times.  Chosen with kasync-bench on the 2-core VM
    // (ordered_commit with two producers: four threads on two CPUs).
    // Without those few yields, a waiter whose predecessor was preempted
    // slept, a spare thread took its place, the extra thread preempted the
    // next call, and the run locked into 25-35 us per call, every call
    // sleeping, instead of 0.6-0.9 us.  More yields, or yielding for longer,
    // delayed the lending of sleeping workers' places and cost
    // kasync-replay up to a tenth of its efficiency.  Phases are measured in
    // time, not in pauses: a pause takes 1 ns on some CPUs, 17 ns on this
    // one, 40 on others.
    const std::uint64_t start = now_ns();
    const bool first = next_in_line(s, target);
    const std::uint64_t pause_end = start + (first ? spin_ns_ / 2 : spin_ns_ / 32);
    const std::uint64_t yield_end = start + (first ? spin_ns_ : spin_ns_ / 8);
    const unsigned max_yields = first ? ~0u : 4;
    const std::uint64_t give_up =
        timeout_ns >= no_timeout - start ? no_timeout : start + timeout_ns;
    bool yielding = false;
    unsigned yielded = 0;
    for (unsigned i = 0;; ++i) {
        // Every 16 pauses, or after every yield (which may take a time slice
        // on a busy machine): look at the clock, and help.
        if ((i & 15) == 0 || yielding) {
            if (worker && i && (i & 15) == 0)
                help(s, target);
            std::uint64_t now = now_ns();
            if (now >= give_up) {
                counters_->add(c_timeouts);
                return -ETIMEDOUT;
            }
            if (now >= yield_end)
                break;
            yielding = now >= pause_end;
        }
        bool stalled = false;
        if (reached(s, target, &stalled))
            return 0;
        if (stalled || yielded == max_yields)
            break;  // a publisher is stalled (spinning will not help), or done
        if (yielding) {
            sched_yield();
            ++yielded;
        } else {
            cpu_relax();
        }
    }
    return sleep_until_reached(s, target, timeout_ns);
}

int engine::sleep_until_reached(pending_set& s, cookie_t target,
                                std::uint64_t timeout_ns) {
    const std::uint64_t start = now_ns();
    // A time-out too long to add is no time-out (centuries).
    const std::uint64_t deadline =
        timeout_ns >= no_timeout - start ? no_timeout : start + timeout_ns;
    waiter w;
    w.target = target;
    {
        std::lock_guard lock(s.wait_mu);
        w.next = s.waiters;
        if (w.next)
            w.next->prev = &w;
        s.waiters = &w;
        // relaxed: ordered by the fence below (Dekker pair, see complete()).
        s.sleepers.fetch_add(1, std::memory_order_relaxed);
    }
    // The waiter's half of the Dekker pair with complete(): registered, fence,
    // re-check.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    // A publisher stalled inside schedule() wakes nobody when it finally
    // publishes; a waiter held up by it re-checks on a doubling timer.
    bool stalled = false;
    if (reached(s, target, &stalled)) {
        std::lock_guard lock(s.wait_mu);
        // relaxed: under wait_mu, which the waker also holds.
        if (!w.word.load(std::memory_order_relaxed))
            unlink(s, w);
        return 0;
    }

    counters_->add(c_waits_slept);
    tracer_->wait_begin();
    // A worker that sleeps lends its place to a spare thread at once.  A
    // grace period (1 ms was tried) left the pool a thread short for that
    // long on every sleep, which an in-order chain of sleeping waiters pays
    // again at every link (kasync-replay).
    const bool worker = tls_state.worker_of == this;
    if (worker)
        blocking_begin();
    int result = 0;
    std::uint64_t poll_ns = 50'000;
    // acquire: pairs with the waker's release; the waker saw the calls
    // done, so their effects are visible to us.
    while (!w.word.load(std::memory_order_acquire)) {
        std::uint64_t now = now_ns();
        if (now >= deadline) {
            std::lock_guard lock(s.wait_mu);
            // acquire: as above; a wake may have raced the time-out.
            if (w.word.load(std::memory_order_acquire))
                break;
            unlink(s, w);
            counters_->add(c_timeouts);
            result = -ETIMEDOUT;
            break;
        }
        std::uint64_t nap = deadline == no_timeout ? no_timeout : deadline - now;
        if (stalled) {
            nap = std::min(nap, poll_ns);
            poll_ns = std::min<std::uint64_t>(poll_ns * 2, 10'000'000);
        }
        bool woken = futex_wait(w.word, 0, nap) == wait_result::woken;
        // relaxed: statistics only; the loop condition re-reads with acquire.
        if (woken && !w.word.load(std::memory_order_relaxed))
            counters_->add(c_futile);
        if (stalled) {
            stalled = false;
            if (reached(s, target, &stalled)) {
                std::lock_guard lock(s.wait_mu);
                // relaxed: under wait_mu, which the waker also holds.
                if (!w.word.load(std::memory_order_relaxed))
                    unlink(s, w);
                break;
            }
        }
    }
    if (worker)
        blocking_end();
    if (result == 0) {
        // The waker may still be inside futex_wake on our word: it holds
        // wait_mu until it is done with `w`, which lives on our stack.
        std::lock_guard lock(s.wait_mu);
    }
    std::uint64_t waited = now_ns() - start;
    counters_->add(c_wait_ns, waited);
    tracer_->wait_end(start, waited);
    return result;
}

void engine::unlink(pending_set& s, waiter& w) noexcept {
    if (w.prev)
        w.prev->next = w.next;
    else
        s.waiters = w.next;
    if (w.next)
        w.next->prev = w.prev;
    w.next = w.prev = nullptr;
    // relaxed: under wait_mu.
    s.sleepers.fetch_sub(1, std::memory_order_relaxed);
}

// Wake exactly the waiters of s whose target the set's lowest now reached.
void engine::wake_reached(pending_set& s) {
    std::lock_guard lock(s.wait_mu);
    if (!s.waiters)
        return;
    // Patient: a waiter asleep behind a cookie that is still being published
    // would never be woken if we stopped there (the cookie may belong to
    // another set, whose completion wakes only its own waiters).  Found by
    // the stress test under ThreadSanitizer, where publishers are preempted
    // for long.
    cookie_t low = lowest(s, nullptr, true);
    for (waiter* w = s.waiters; w;) {
        waiter* next = w->next;
        if (w->target <= low) {
            unlink(s, *w);
            // release: the waiter acquires this and then sees what we saw.
            w->word.store(1, std::memory_order_release);
            futex_wake(w->word, 1);
            counters_->add(c_wakeups);
        }
        w = next;
    }
}

// ---- managed blocking and spare threads ------------------------------------
//
// Why spare threads and not oneTBB's resumable tasks (task::suspend, which
// lets a worker leave a waiting call's stack and run other tasks):
//   - blocking_region covers any blocking, a read() or a lock as well as a
//     kasync wait, and no task can be suspended out of a system call: the
//     pool must add a thread for those anyway;
//   - waits also come from threads that are not oneTBB workers (main, the
//     C API's callers), which cannot suspend: the futex path exists anyway;
//   - a suspended task keeps its stack, so parking costs a stack either way;
//   - measured (kasync-bench-suspend, 2-core VM, a busy resumer): a suspend
//     and resume round trip took 1.05-1.64 us, a futex sleep and wake
//     0.60-0.85 us.
// So one mechanism serves all three: the waiting thread sleeps on its futex
// and a spare takes its place in the pool.

void engine::blocking_begin() {
    thread_state& ts = tls_state;
    if (ts.worker_of != this || ts.blocking_depth++ > 0)
        return;
    // seq_cst: spares compare it with active_spares_.
    blocked_.fetch_add(1, std::memory_order_seq_cst);
    poke_spares();
}

void engine::blocking_end() {
    thread_state& ts = tls_state;
    if (ts.worker_of != this || --ts.blocking_depth > 0)
        return;
    blocked_.fetch_sub(1, std::memory_order_seq_cst);  // as in blocking_begin
}

// Make sure a spare thread looks for queued calls.
void engine::poke_spares() {
    // relaxed: a hint; a spare re-checks everything under the futex word.
    if (idle_spares_.load(std::memory_order_relaxed) == 0) {
        std::lock_guard lock(spares_mu_);
        int have = static_cast<int>(spares_.size());
        // acquire: read the current number of blocked workers.
        bool stopping = spares_stop_.load(std::memory_order_acquire);
        // acquire: as above.
        if (!stopping && have < blocked_.load(std::memory_order_acquire) && have < 1024) {
            try {
                spares_.emplace_back([this] { spare_main(); });
            } catch (...) {
                // No thread: the workers still make progress by helping.
            }
        }
    }
    // release: a spare that reads the new value sees why it was poked.
    spare_seq_.fetch_add(1, std::memory_order_release);
    futex_wake(spare_seq_, 1);
}

void engine::spare_main() {
    tls_state.worker_of = this;
    // acquire: pairs with shutdown's release of spares_stop_.
    while (!spares_stop_.load(std::memory_order_acquire)) {
        // acquire: read before the checks, so a poke after them wakes us.
        std::uint32_t seq = spare_seq_.load(std::memory_order_acquire);
        for (;;) {
            // acquire: a current count of spares at work.
            int active = active_spares_.load(std::memory_order_acquire);
            // Run calls only while a worker owes its place.
            if (active >= blocked_.load(std::memory_order_acquire))
                break;
            // acq_rel: the token that lets this spare run a call.
            if (!active_spares_.compare_exchange_weak(active, active + 1, std::memory_order_acq_rel))
                continue;
            bool ran = run_one_queued();
            active_spares_.fetch_sub(1, std::memory_order_acq_rel);  // token back
            if (!ran)
                break;
            counters_->add(c_spare_runs);
        }
        idle_spares_.fetch_add(1, std::memory_order_relaxed);  // hint only
        // Poked on every schedule while workers are blocked; the time-out
        // is a safety net, not the mechanism.
        futex_wait(spare_seq_, seq, 50'000'000);
        idle_spares_.fetch_sub(1, std::memory_order_relaxed);  // hint only
    }
    tls_state.worker_of = nullptr;
}

// Find the lowest queued call and run it.  The cursor skips, for good,
// slots that are claimed, running or done.
bool engine::run_one_queued() {
    // acquire (all three): start and end points; every slot is re-read.
    cookie_t cursor = spare_cursor_.load(std::memory_order_acquire);
    cookie_t c = std::max(cursor, all_.frontier.load(std::memory_order_acquire));  // acquire: as above
    cookie_t n = next_.load(std::memory_order_acquire);  // acquire: as above
    bool contiguous = true;
    for (; c < n; ++c) {
        // acquire: tag publishes record.
        std::uint64_t t = slot_of(c).tag.load(std::memory_order_acquire);
        std::int64_t d = lap_diff(tag_lap(t), lap_of(c));
        if (d == 0 && tag_state(t) == st_queued) {
            if (try_run(c, t))
                return true;
        // acquire: pairs with displace()'s release of the new lap.
        } else if (d > 0 && overflow_count_.load(std::memory_order_acquire)) {
            std::uint64_t ot;
            if (overflow_state(c, &ot) && tag_state(ot) == st_queued) {
                run_overflow(c);
                return true;
            }
        } else if (d < 0) {
            contiguous = false;  // not yet published: may become queued
        }
        if (contiguous)
            raise_to(spare_cursor_, c + 1);
    }
    return false;
}

// ---- shutdown and statistics -------------------------------------------------

int engine::shutdown() {
    if (in_any_call())
        return -EDEADLK;
    std::lock_guard lock(shutdown_mu_);
    // seq_cst: pairs with submit()'s count-then-check (Dekker): a call
    // either sees stopped_ and runs in its caller, or is counted in all_.
    stopped_.store(true, std::memory_order_seq_cst);
    wait(&all_, cookie_max, no_timeout);
    placement_->stop();
    {
        std::lock_guard sl(spares_mu_);
        // release: spares that see it exit.
        spares_stop_.store(true, std::memory_order_release);
    }
    spare_seq_.fetch_add(1, std::memory_order_release);  // as in poke_spares
    futex_wake(spare_seq_, INT32_MAX);
    std::vector<std::thread> spares;
    {
        std::lock_guard sl(spares_mu_);
        spares.swap(spares_);
    }
    for (auto& t : spares)
        t.join();
    tracer_->write();
    return 0;
}

statistics engine::stats() const {
    statistics st;
    // relaxed: statistics are a snapshot, not a synchronisation point.
    st.scheduled = next_.load(std::memory_order_relaxed) - 1;
    st.completed = counters_->sum(c_completed);
    st.ran_in_caller = counters_->sum(c_ran_in_caller);
    st.refused = counters_->sum(c_refused);
    st.pending = all_.word.load(std::memory_order_relaxed) &  // relaxed: snapshot
                 pending_set::count_mask;
    // relaxed: snapshot.
    st.peak_pending = counters_->peak.load(std::memory_order_relaxed);
    st.exceptions = counters_->sum(c_exceptions);
    st.waits = counters_->sum(c_waits);
    st.waits_slept = counters_->sum(c_waits_slept);
    st.wait_ns = counters_->sum(c_wait_ns);
    st.wakeups = counters_->sum(c_wakeups);
    st.futile_wakeups = counters_->sum(c_futile);
    st.deadlocks = counters_->sum(c_deadlocks);
    st.timeouts = counters_->sum(c_timeouts);
    st.helped = counters_->sum(c_helped);
    st.spare_runs = counters_->sum(c_spare_runs);
    st.displaced = counters_->sum(c_displaced);
    st.drain_tasks = placement_->drain_tasks();
    st.queue_full = placement_->queue_full();
    return st;
}

}  // namespace kasync::detail
