/*
 * The kernel's own spellings of <linux/async.h>, as thin inline wrappers
 * over <kasync/kasync.h>, so that kernel-style code ports without edits.
 *
 *     struct async_domain my_domain = ASYNC_DOMAIN_EXCLUSIVE_INIT;
 *
 * is the one kernel idiom that cannot be a wrapper: declare domains with
 * async_domain_init() or ASYNC_DOMAIN(name) / ASYNC_DOMAIN_EXCLUSIVE(name),
 * which create them on first use.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KASYNC_LINUX_ASYNC_H
#define KASYNC_LINUX_ASYNC_H

#include <kasync/kasync.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef kasync_cookie_t async_cookie_t;
typedef kasync_func_t async_func_t;

#define ASYNC_COOKIE_MAX KASYNC_COOKIE_MAX
#ifndef NUMA_NO_NODE
#define NUMA_NO_NODE KASYNC_NUMA_NO_NODE
#endif

/* A kernel-style domain: created lazily, so it can be a static. */
struct async_domain {
	kasync_domain *handle;
	int exclusive;
};

#define ASYNC_DOMAIN(name) struct async_domain name = { 0, 0 }
#define ASYNC_DOMAIN_EXCLUSIVE(name) struct async_domain name = { 0, 1 }

static inline kasync_domain *async_domain_handle(struct async_domain *d)
{
	kasync_domain *h;

	if (!d)
		return 0;
	h = __atomic_load_n(&d->handle, __ATOMIC_ACQUIRE);
	if (h)
		return h;
	h = kasync_domain_create(d->exclusive);
	{
		kasync_domain *expected = 0;

		/* Two first users race: one handle wins, the other is freed. */
		if (!__atomic_compare_exchange_n(&d->handle, &expected, h, 0,
						 __ATOMIC_ACQ_REL,
						 __ATOMIC_ACQUIRE)) {
			kasync_domain_destroy(h);
			h = expected;
		}
	}
	return h;
}

static inline async_cookie_t async_schedule(async_func_t func, void *data)
{
	return kasync_schedule(func, data);
}

static inline async_cookie_t async_schedule_node(async_func_t func,
						 void *data, int node)
{
	return kasync_schedule_node(func, data, node);
}

static inline async_cookie_t async_schedule_domain(async_func_t func,
						   void *data,
						   struct async_domain *domain)
{
	return kasync_schedule_domain(func, data, async_domain_handle(domain));
}

static inline async_cookie_t
async_schedule_node_domain(async_func_t func, void *data, int node,
			   struct async_domain *domain)
{
	return kasync_schedule_node_domain(func, data, node,
					   async_domain_handle(domain));
}

static inline async_cookie_t async_schedule_dev_nocall(async_func_t func,
						       void *dev)
{
	return kasync_schedule_nocall(func, dev, NUMA_NO_NODE, 0);
}

static inline void async_synchronize_full(void)
{
	kasync_synchronize_full();
}

static inline void async_synchronize_full_domain(struct async_domain *domain)
{
	kasync_synchronize_full_domain(async_domain_handle(domain));
}

static inline void async_synchronize_cookie(async_cookie_t cookie)
{
	kasync_synchronize_cookie(cookie);
}

static inline void async_synchronize_cookie_domain(async_cookie_t cookie,
						   struct async_domain *domain)
{
	kasync_synchronize_cookie_domain(cookie, async_domain_handle(domain));
}

static inline void async_unregister_domain(struct async_domain *domain)
{
	kasync_unregister_domain(async_domain_handle(domain));
}

static inline int current_is_async(void)
{
	return kasync_current_is_async();
}

#ifdef __cplusplus
}
#endif

#endif /* KASYNC_LINUX_ASYNC_H */
