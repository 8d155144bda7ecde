// The public C++ classes and the C API over the engine.
//
// Domain handles.  A kasync_domain* is not a pointer but a number:
//   bits 0-19 domain id, 20-31 scheduler serial, 32-63 generation.
// The engine's domain table is never freed while the engine lives, so a
// stale or foreign handle is detected (generation or serial mismatch) and
// answered with -EINVAL instead of a use-after-free.
//
// SPDX-License-Identifier: MIT
#include "engine.hpp"

#include <cerrno>
#include <cstdlib>
#include <mutex>
#include <new>
#include <stdexcept>

namespace kasync {

namespace {

struct decoded {
    std::uint32_t id;
    std::uint32_t serial;
    std::uint64_t gen;
};

kasync_domain* encode(std::uint32_t serial, std::uint32_t id, std::uint64_t gen) {
    auto v = (std::uintptr_t(gen & 0xffffffffu) << 32) |
             (std::uintptr_t(serial & 0xfff) << 20) | std::uintptr_t(id);
    return reinterpret_cast<kasync_domain*>(v);
}

decoded decode(const kasync_domain* h) {
    auto v = reinterpret_cast<std::uintptr_t>(h);
    return {std::uint32_t(v & 0xfffff), std::uint32_t((v >> 20) & 0xfff),
            std::uint64_t(v >> 32)};
}

// The pending set behind handle h of engine e, or nullptr.
detail::pending_set* resolve(detail::engine& e, const kasync_domain* h) {
    decoded d = decode(h);
    if (d.serial != e.serial())
        return nullptr;
    return e.find_domain(d.id, d.gen);
}

}  // namespace

// ---- scheduler ----------------------------------------------------------------

scheduler::scheduler(options opts)
    : engine_(std::make_unique<detail::engine>(std::move(opts))) {
    default_domain_.reset(
        new domain(*this, encode(engine_->serial(), 1, engine_->default_gen())));
}

scheduler::~scheduler() {
    engine_->shutdown();
    default_domain_.reset();
    engine_.reset();
}

cookie_t scheduler::submit(const detail::call_ops* ops, void* obj,
                           const call_options& o, bool nocall) {
    const domain* d = o.in ? o.in : default_domain_.get();
    if (d->sched_ != this)
        return 0;  // a domain of another scheduler
    decoded h = decode(d->handle_);
    return engine_->submit(ops, obj, o, nocall, h.id, h.gen);
}

int scheduler::wait_for_ns(cookie_t c, const domain* d, std::uint64_t timeout_ns) {
    detail::pending_set* s = nullptr;
    if (d) {
        if (d->sched_ != this || !(s = resolve(*engine_, d->handle_)))
            return -EINVAL;
    }
    return engine_->wait(s, c, timeout_ns);
}

int scheduler::synchronize_cookie(cookie_t c) {
    // The default domain lives as long as the engine: no handle to check.
    return engine_->wait(&engine_->default_set(), c, detail::no_timeout);
}
int scheduler::synchronize_cookie(cookie_t c, const domain& d) {
    return wait_for_ns(c, &d, detail::no_timeout);
}
int scheduler::synchronize_cookie_all(cookie_t c) {
    return wait_for_ns(c, nullptr, detail::no_timeout);
}
int scheduler::synchronize_full() {
    return wait_for_ns(cookie_max, nullptr, detail::no_timeout);
}
int scheduler::synchronize_full(const domain& d) {
    return wait_for_ns(cookie_max, &d, detail::no_timeout);
}

cookie_t scheduler::lowest_in_progress() const {
    return engine_->lowest(engine_->registered_set());
}
cookie_t scheduler::lowest_in_progress(const domain& d) const {
    return d.lowest_in_progress();
}

domain& scheduler::default_domain() noexcept { return *default_domain_; }
int scheduler::shutdown() { return engine_->shutdown(); }
statistics scheduler::stats() const { return engine_->stats(); }
unsigned scheduler::threads() const noexcept { return engine_->threads(); }
std::size_t scheduler::nodes() const noexcept { return engine_->nodes(); }

namespace {
scheduler* default_scheduler = nullptr;
std::once_flag default_once;
}  // namespace

scheduler& scheduler::default_instance() {
    std::call_once(default_once, [] {
        // Never destroyed: calls may still arrive from other threads during
        // static destruction.  At exit it is shut down (pending calls run,
        // the trace is written) unless the program already did.
        default_scheduler = new scheduler(options::from_environment());
        std::atexit([] { default_scheduler->shutdown(); });
    });
    return *default_scheduler;
}

// ---- domain -------------------------------------------------------------------

domain::domain(scheduler& s, domain_kind kind) : sched_(&s) {
    std::uint32_t id;
    std::uint64_t gen;
    if (!s.engine_->create_domain(kind == domain_kind::exclusive, &id, &gen))
        throw std::length_error("kasync: no more domains (2^20 alive)");
    handle_ = encode(s.engine_->serial(), id, gen);
}

domain::domain(scheduler& s, kasync_domain* adopted) noexcept
    : sched_(&s), handle_(adopted), owned_(false) {}

domain::~domain() {
    if (owned_ && handle_)
        destroy();
}

domain::domain(domain&& other) noexcept
    : sched_(other.sched_), handle_(other.handle_), owned_(other.owned_) {
    other.handle_ = nullptr;
}

domain& domain::operator=(domain&& other) noexcept {
    if (this != &other) {
        if (owned_ && handle_)
            destroy();
        sched_ = other.sched_;
        handle_ = other.handle_;
        owned_ = other.owned_;
        other.handle_ = nullptr;
    }
    return *this;
}

int domain::unregister() {
    if (!handle_)
        return -EINVAL;
    decoded d = decode(handle_);
    return sched_->engine_->unregister_domain(d.id, d.gen);
}

int domain::destroy() {
    if (!handle_ || !owned_)
        return -EINVAL;
    decoded d = decode(handle_);
    int r = sched_->engine_->destroy_domain(d.id, d.gen);
    if (r == 0)
        handle_ = nullptr;
    return r;
}

cookie_t domain::lowest_in_progress() const {
    detail::pending_set* s = handle_ ? resolve(*sched_->engine_, handle_) : nullptr;
    return s ? sched_->engine_->lowest(*s) : cookie_max;
}

bool domain::registered() const {
    if (!handle_)
        return false;
    decoded d = decode(handle_);
    return sched_->engine_->domain_registered(d.id, d.gen);
}

cookie_t current_cookie() noexcept {
    auto* f = detail::this_thread_state().frame;
    return f ? f->cookie : 0;
}

}  // namespace kasync

// ---- the C API ------------------------------------------------------------------

using kasync::cookie_t;
using kasync::scheduler;

namespace {

// A C call: the function and its data.  Its symbol names it in traces.
struct c_call {
    kasync_func_t f;
    void* data;
};

const kasync::detail::call_ops c_call_ops{
    [](void* dst, void* src) noexcept { ::new (dst) c_call(*static_cast<c_call*>(src)); },
    [](void* obj, cookie_t c) {
        auto* call = static_cast<c_call*>(obj);
        call->f(call->data, c);
    },
    [](void*) noexcept {},
    [](const void* obj) noexcept -> const void* {
        return reinterpret_cast<const void*>(static_cast<const c_call*>(obj)->f);
    },
    &typeid(c_call),
};

kasync::detail::engine& eng() { return scheduler::default_instance().impl(); }

// A C handle resolved to (id, gen) of the default scheduler; NULL means the
// default domain.  False for a foreign or malformed handle.
bool c_domain(kasync_domain* d, std::uint32_t* id, std::uint64_t* gen) {
    kasync::detail::engine& e = eng();
    if (!d) {
        *id = 1;
        *gen = e.default_gen();
        return true;
    }
    auto v = reinterpret_cast<std::uintptr_t>(d);
    if (((v >> 20) & 0xfff) != e.serial())
        return false;
    *id = std::uint32_t(v & 0xfffff);
    *gen = std::uint64_t(v >> 32);
    return true;
}

cookie_t c_schedule(kasync_func_t f, void* data, int node, kasync_domain* d,
                    bool nocall) {
    std::uint32_t id;
    std::uint64_t gen;
    if (!f || !c_domain(d, &id, &gen))
        return 0;
    c_call call{f, data};
    kasync::call_options o;
    o.node = node;
    return eng().submit(&c_call_ops, &call, o, nocall, id, gen);
}

// The set a C wait names: NULL is every registered domain.
int c_wait(cookie_t c, kasync_domain* d, std::uint64_t timeout_ns) {
    kasync::detail::engine& e = eng();
    kasync::detail::pending_set* s = nullptr;
    if (d) {
        std::uint32_t id;
        std::uint64_t gen;
        if (!c_domain(d, &id, &gen) || !(s = e.find_domain(id, gen)))
            return -EINVAL;
    }
    return e.wait(s, c, timeout_ns);
}

}  // namespace

extern "C" {

kasync_domain* kasync_domain_create(int exclusive) {
    try {
        kasync::detail::engine& e = eng();
        std::uint32_t id;
        std::uint64_t gen;
        if (!e.create_domain(exclusive != 0, &id, &gen))
            return nullptr;
        return kasync::encode(e.serial(), id, gen);
    } catch (...) {
        return nullptr;
    }
}

int kasync_domain_destroy(kasync_domain* d) {
    std::uint32_t id;
    std::uint64_t gen;
    if (!d || !c_domain(d, &id, &gen))
        return -EINVAL;
    return eng().destroy_domain(id, gen);
}

kasync_domain* kasync_default_domain(void) {
    return scheduler::default_instance().default_domain().handle();
}

cookie_t kasync_schedule(kasync_func_t f, void* data) {
    return c_schedule(f, data, KASYNC_NUMA_NO_NODE, nullptr, false);
}
cookie_t kasync_schedule_domain(kasync_func_t f, void* data, kasync_domain* d) {
    return c_schedule(f, data, KASYNC_NUMA_NO_NODE, d, false);
}
cookie_t kasync_schedule_node(kasync_func_t f, void* data, int node) {
    return c_schedule(f, data, node, nullptr, false);
}
cookie_t kasync_schedule_node_domain(kasync_func_t f, void* data, int node,
                                     kasync_domain* d) {
    return c_schedule(f, data, node, d, false);
}
cookie_t kasync_schedule_nocall(kasync_func_t f, void* data, int node,
                                kasync_domain* d) {
    return c_schedule(f, data, node, d, true);
}

int kasync_synchronize_full(void) {
    return c_wait(KASYNC_COOKIE_MAX, nullptr, kasync::detail::no_timeout);
}
int kasync_synchronize_full_domain(kasync_domain* d) {
    return c_wait(KASYNC_COOKIE_MAX, d, kasync::detail::no_timeout);
}
int kasync_synchronize_cookie(cookie_t c) {
    kasync::detail::engine& e = eng();
    return e.wait(&e.default_set(), c, kasync::detail::no_timeout);
}
int kasync_synchronize_cookie_domain(cookie_t c, kasync_domain* d) {
    return c_wait(c, d, kasync::detail::no_timeout);
}
int kasync_synchronize_cookie_domain_timeout(cookie_t c, kasync_domain* d,
                                             uint64_t timeout_ns) {
    return c_wait(c, d, timeout_ns);
}

cookie_t kasync_lowest_in_progress(kasync_domain* d) {
    kasync::detail::engine& e = eng();
    if (!d)
        return e.lowest(e.registered_set());
    std::uint32_t id;
    std::uint64_t gen;
    kasync::detail::pending_set* s = nullptr;
    if (!c_domain(d, &id, &gen) || !(s = e.find_domain(id, gen)))
        return KASYNC_COOKIE_MAX;
    return e.lowest(*s);
}

int kasync_unregister_domain(kasync_domain* d) {
    std::uint32_t id;
    std::uint64_t gen;
    if (!d || !c_domain(d, &id, &gen))
        return -EINVAL;
    return eng().unregister_domain(id, gen);
}

int kasync_current_is_async(void) {
    const auto& ts = kasync::detail::this_thread_state();
    return ts.worker_of != nullptr && ts.frame != nullptr;
}

int kasync_shutdown(void) { return scheduler::default_instance().shutdown(); }

void kasync_blocking_begin(void) {
    if (auto* e = kasync::detail::this_thread_state().worker_of)
        const_cast<kasync::detail::engine*>(e)->blocking_begin();
}

void kasync_blocking_end(void) {
    if (auto* e = kasync::detail::this_thread_state().worker_of)
        const_cast<kasync::detail::engine*>(e)->blocking_end();
}

}  // extern "C"
