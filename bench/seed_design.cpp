// The seed design: see seed_design.hpp.
// SPDX-License-Identifier: MIT
#include "seed_design.hpp"

namespace seed {

struct entry {
    // Links in the domain's pending list, the global list and the queue.
    entry* dprev = nullptr;
    entry* dnext = nullptr;
    entry* gprev = nullptr;
    entry* gnext = nullptr;
    entry* qnext = nullptr;
    cookie_t cookie = 0;
    func_t func = nullptr;
    void* data = nullptr;
    domain* dom = nullptr;
};

namespace {

// Append / unlink for one pair of link fields, selected by member pointers.
template <entry* entry::*Prev, entry* entry::*Next>
void append(list& l, entry* e) {
    e->*Prev = l.tail;
    e->*Next = nullptr;
    if (l.tail)
        l.tail->*Next = e;
    else
        l.head = e;
    l.tail = e;
}

template <entry* entry::*Prev, entry* entry::*Next>
void unlink(list& l, entry* e) {
    if (e->*Prev)
        (e->*Prev)->*Next = e->*Next;
    else
        l.head = e->*Next;
    if (e->*Next)
        (e->*Next)->*Prev = e->*Prev;
    else
        l.tail = e->*Prev;
}

}  // namespace

scheduler::scheduler(unsigned threads) {
    if (threads == 0)
        threads = 1;
    workers_.reserve(threads);
    for (unsigned i = 0; i < threads; ++i)
        workers_.emplace_back([this] { worker(); });
}

scheduler::~scheduler() {
    {
        std::lock_guard<std::mutex> g(lock_);
        stop_ = true;
    }
    work_.notify_all();
    for (auto& t : workers_)
        t.join();
}

cookie_t scheduler::schedule(func_t f, void* data, domain* d) {
    if (!d)
        d = &default_;
    auto* e = new entry;  // the kernel allocates an entry per call, too
    e->func = f;
    e->data = data;
    e->dom = d;
    cookie_t c;
    {
        std::lock_guard<std::mutex> g(lock_);
        c = e->cookie = next_cookie_++;
        append<&entry::dprev, &entry::dnext>(d->pending_, e);
        if (d->registered_)
            append<&entry::gprev, &entry::gnext>(global_, e);
        if (queue_tail_)
            queue_tail_->qnext = e;
        else
            queue_head_ = e;
        queue_tail_ = e;
        ++stats_.scheduled;
    }
    work_.notify_one();
    return c;
}

void scheduler::worker() {
    for (;;) {
        entry* e;
        {
            std::unique_lock<std::mutex> g(lock_);
            work_.wait(g, [this] { return queue_head_ != nullptr || stop_; });
            if (!queue_head_)
                return;  // stopping and the queue is drained
            e = queue_head_;
            queue_head_ = e->qnext;
            if (!queue_head_)
                queue_tail_ = nullptr;
        }
        e->func(e->data, e->cookie);
        {
            std::lock_guard<std::mutex> g(lock_);
            unlink<&entry::dprev, &entry::dnext>(e->dom->pending_, e);
            if (e->dom->registered_)
                unlink<&entry::gprev, &entry::gnext>(global_, e);
            ++stats_.completed;
            ++stats_.notifies;
        }
        done_.notify_all();  // wake every waiter; each re-checks
        delete e;
    }
}

cookie_t scheduler::lowest_locked(const domain* d) const {
    const entry* h = d ? d->pending_.head : global_.head;
    return h ? h->cookie : cookie_max;
}

cookie_t scheduler::lowest_in_progress(domain* d) {
    std::lock_guard<std::mutex> g(lock_);
    return lowest_locked(d);
}

void scheduler::synchronize_cookie(cookie_t c, domain* d) {
    std::unique_lock<std::mutex> g(lock_);
    ++stats_.waits;
    bool slept = false;
    while (lowest_locked(d) < c) {
        if (!slept) {
            slept = true;
            ++stats_.waits_slept;
        }
        done_.wait(g);
        ++stats_.wakeups;
        if (lowest_locked(d) < c)
            ++stats_.futile_wakeups;
    }
}

statistics scheduler::stats() {
    std::lock_guard<std::mutex> g(lock_);
    return stats_;
}

}  // namespace seed
