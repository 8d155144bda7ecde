/*
 * kasync — the Linux kernel's asynchronous function calls in user space.
 *
 * Work runs out of order on a pool of threads; what others can see happens
 * in order, checkpointed by a monotonically increasing cookie.  This header
 * is the C API of docs/SPEC.md section 3.  Every call here acts on the
 * process-wide default scheduler, created on first use and configured from
 * the KASYNC_* environment variables (see README).
 *
 * Error values are negative errno codes.  No call here throws.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KASYNC_KASYNC_H
#define KASYNC_KASYNC_H

#include <stdint.h>

#if defined(KASYNC_BUILDING_LIBRARY)
#define KASYNC_API __attribute__((visibility("default")))
#else
#define KASYNC_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/** A cookie: the position of a call in the scheduler's single order. */
typedef uint64_t kasync_cookie_t;

/** "Infinity": waiting for it means waiting until a domain is empty. */
#define KASYNC_COOKIE_MAX UINT64_MAX

/** "Any node": run on the caller's node. */
#define KASYNC_NUMA_NO_NODE (-1)

/** A scheduled function: receives its data and its own cookie. */
typedef void (*kasync_func_t)(void *data, kasync_cookie_t cookie);

/** A set of calls that can be waited for together.  Opaque handle. */
typedef struct kasync_domain kasync_domain;

/**
 * Create a domain.  exclusive == 0: registered, part of "all registered
 * domains"; otherwise exclusive, waited for only by name.
 * Returns NULL when no domain can be created (ENOMEM, or 2^20 alive).
 */
KASYNC_API kasync_domain *kasync_domain_create(int exclusive);

/**
 * Wait until d is empty, then free it.  0; -EINVAL for the default domain,
 * an unknown or already destroyed handle; -EDEADLK from inside a call of d.
 * Later use of the handle returns -EINVAL (handles carry a generation).
 */
KASYNC_API int kasync_domain_destroy(kasync_domain *d);

/** The default domain (registered).  Never NULL. */
KASYNC_API kasync_domain *kasync_default_domain(void);

/*
 * Scheduling.  Each takes the next cookie and queues f(data, cookie) for a
 * worker.  When more calls are pending than the limit (KASYNC_MAX_PENDING),
 * when memory runs out or after kasync_shutdown(), f runs in the caller
 * before the call returns, still with its own cookie and still pending
 * while it runs.  A NULL domain means the default domain; an unknown or
 * destroyed domain makes the call return 0 without running f.
 *
 * Memory ordering: everything the caller did before scheduling is visible
 * to f; everything f did is visible to a waiter whose wait covers f.
 * Lock-free; may be called from inside a call.  Not async-signal-safe.
 */
KASYNC_API kasync_cookie_t kasync_schedule(kasync_func_t f, void *data);
KASYNC_API kasync_cookie_t kasync_schedule_domain(kasync_func_t f, void *data,
                                                  kasync_domain *d);
KASYNC_API kasync_cookie_t kasync_schedule_node(kasync_func_t f, void *data,
                                                int node);
KASYNC_API kasync_cookie_t kasync_schedule_node_domain(kasync_func_t f,
                                                       void *data, int node,
                                                       kasync_domain *d);
/** As schedule_node_domain, but never runs f in the caller: 0 instead. */
KASYNC_API kasync_cookie_t kasync_schedule_nocall(kasync_func_t f, void *data,
                                                  int node, kasync_domain *d);

/*
 * Waiting.  synchronize_cookie_domain(c, d) returns once no call of d (of
 * every registered domain when d is NULL) with a cookie below c is pending.
 * Returns 0; -EDEADLK at once when the wait could only end after the
 * caller's own call finished; -ETIMEDOUT; -EINVAL for a bad domain.
 *
 * A waiter spins briefly, then sleeps on a futex; a completion wakes only
 * the waiters whose condition now holds.  On a worker thread the wait first
 * runs queued calls it waits for, so it never holds back a lower cookie.
 */
KASYNC_API int kasync_synchronize_full(void);
KASYNC_API int kasync_synchronize_full_domain(kasync_domain *d);
KASYNC_API int kasync_synchronize_cookie(kasync_cookie_t c);
KASYNC_API int kasync_synchronize_cookie_domain(kasync_cookie_t c,
                                                kasync_domain *d);
KASYNC_API int kasync_synchronize_cookie_domain_timeout(kasync_cookie_t c,
                                                        kasync_domain *d,
                                                        uint64_t timeout_ns);

/** Lowest pending cookie of d (NULL: all registered), or COOKIE_MAX. */
KASYNC_API kasync_cookie_t kasync_lowest_in_progress(kasync_domain *d);

/** Take an idle registered domain out of "all": 0, -EBUSY, -EINVAL. */
KASYNC_API int kasync_unregister_domain(kasync_domain *d);

/** 1 on a worker thread while it runs a scheduled call, 0 elsewhere. */
KASYNC_API int kasync_current_is_async(void);

/**
 * Run every pending call to completion, then stop the workers.  Later
 * schedule calls run in the caller.  Idempotent: 0.  From inside a call:
 * -EDEADLK and nothing stops.
 */
KASYNC_API int kasync_shutdown(void);

/*
 * Managed blocking (kasync's own extension).  Bracket code in a call that
 * may block on something other than a kasync wait (a lock, a condition, a
 * sleep, I/O): while a worker is inside, the pool runs queued calls on a
 * spare thread, so N blocked workers never starve call N + 1.  Nests.
 * Outside a worker thread they do nothing.
 */
KASYNC_API void kasync_blocking_begin(void);
KASYNC_API void kasync_blocking_end(void);

#ifdef __cplusplus
}
#endif

#endif /* KASYNC_KASYNC_H */
