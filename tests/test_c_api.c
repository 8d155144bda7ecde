/*
 * The C API of <kasync/kasync.h> and the kernel spellings of
 * <kasync/linux_async.h>, from C99, on the process-wide default scheduler.
 *
 * Each check prints "file:line: test: FAILED: expression" and counts; main
 * returns 1 when any failed.  An alarm-based watchdog aborts, naming the
 * running test, if one hangs for more than 30 s.  Order is forced with gates
 * (mutex + condition variable) the test opens; "does not return yet" is a
 * wait with a short time-out, or a thread checked after 50 ms.
 *
 * SPDX-License-Identifier: MIT
 */
#define _POSIX_C_SOURCE 200809L

#include <kasync/kasync.h>
#include <kasync/linux_async.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MS 1000000ull              /* nanoseconds */
#define LONG_WAIT_NS (20000 * MS)  /* "returns": met at once when correct */
#define SHORT_WAIT_NS (50 * MS)    /* "does not return yet" */

/* ------------------------------------------------------------------------
 * Checks and watchdog */

static int failures;
static const char *volatile current_test = "(startup)";

#define EXPECT(cond)                                                        \
	do {                                                                \
		if (!(cond)) {                                              \
			fprintf(stderr, "%s:%d: %s: FAILED: %s\n", __FILE__, \
				__LINE__, current_test, #cond);             \
			++failures;                                         \
		}                                                           \
	} while (0)

#define EXPECT_EQ(a, b)                                                      \
	do {                                                                 \
		long long va_ = (long long)(a), vb_ = (long long)(b);        \
		if (va_ != vb_) {                                            \
			fprintf(stderr,                                      \
				"%s:%d: %s: FAILED: %s == %s (%lld != %lld)\n", \
				__FILE__, __LINE__, current_test, #a, #b,    \
				va_, vb_);                                   \
			++failures;                                          \
		}                                                            \
	} while (0)

static void on_alarm(int sig)
{
	static const char head[] = "\nWATCHDOG: test \"";
	static const char tail[] = "\" still running after 30 s; aborting\n";
	const char *name = current_test;
	ssize_t ignored;

	(void)sig;
	ignored = write(2, head, sizeof head - 1);
	ignored = write(2, name, strlen(name));
	ignored = write(2, tail, sizeof tail - 1);
	(void)ignored;
	abort();
}

static void begin(const char *name)
{
	current_test = name;
	alarm(30);
	fprintf(stderr, "-- %s\n", name);
}

static void sleep_ms(long ms)
{
	struct timespec ts;

	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (ms % 1000) * 1000000L;
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* ------------------------------------------------------------------------
 * Gates */

struct gate {
	pthread_mutex_t m;
	pthread_cond_t cv;
	int open;
};

static void gate_init(struct gate *g)
{
	pthread_mutex_init(&g->m, NULL);
	pthread_cond_init(&g->cv, NULL);
	g->open = 0;
}

static void gate_open(struct gate *g)
{
	pthread_mutex_lock(&g->m);
	g->open = 1;
	pthread_cond_broadcast(&g->cv);
	pthread_mutex_unlock(&g->m);
}

/* Inside a call: declares the block so the pool compensates. */
static void gate_wait(struct gate *g)
{
	kasync_blocking_begin();
	pthread_mutex_lock(&g->m);
	while (!g->open)
		pthread_cond_wait(&g->cv, &g->m);
	pthread_mutex_unlock(&g->m);
	kasync_blocking_end();
}

static void gate_destroy(struct gate *g)
{
	pthread_cond_destroy(&g->cv);
	pthread_mutex_destroy(&g->m);
}

/* ------------------------------------------------------------------------
 * Calls */

struct rec {
	int runs;
	int async;
	kasync_cookie_t cookie;
	pthread_t thread;
	struct gate *gate; /* waited for first, when set */
};

static void rec_call(void *data, kasync_cookie_t cookie)
{
	struct rec *r = data;

	if (r->gate)
		gate_wait(r->gate);
	r->cookie = cookie;
	r->async = kasync_current_is_async();
	r->thread = pthread_self();
	__atomic_fetch_add(&r->runs, 1, __ATOMIC_SEQ_CST);
}

static int runs_of(struct rec *r)
{
	return __atomic_load_n(&r->runs, __ATOMIC_SEQ_CST);
}

/* ------------------------------------------------------------------------
 * Waits in a background thread */

enum wait_kind {
	W_FULL,
	W_FULL_DOMAIN,
	W_COOKIE,
	W_COOKIE_DOMAIN,
	W_DESTROY,
};

struct bg {
	pthread_t thread;
	enum wait_kind kind;
	kasync_cookie_t cookie;
	kasync_domain *domain;
	int rc;
	int done;
};

static void *bg_main(void *arg)
{
	struct bg *b = arg;
	int rc = -12345;

	switch (b->kind) {
	case W_FULL: rc = kasync_synchronize_full(); break;
	case W_FULL_DOMAIN: rc = kasync_synchronize_full_domain(b->domain); break;
	case W_COOKIE: rc = kasync_synchronize_cookie(b->cookie); break;
	case W_COOKIE_DOMAIN:
		rc = kasync_synchronize_cookie_domain(b->cookie, b->domain);
		break;
	case W_DESTROY: rc = kasync_domain_destroy(b->domain); break;
	}
	b->rc = rc;
	__atomic_store_n(&b->done, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

static void bg_start(struct bg *b, enum wait_kind kind, kasync_cookie_t c,
		     kasync_domain *d)
{
	b->kind = kind;
	b->cookie = c;
	b->domain = d;
	b->rc = -12345;
	b->done = 0;
	if (pthread_create(&b->thread, NULL, bg_main, b) != 0) {
		fprintf(stderr, "pthread_create failed\n");
		exit(2);
	}
}

static int bg_is_done(struct bg *b)
{
	return __atomic_load_n(&b->done, __ATOMIC_SEQ_CST);
}

/* The wait's result once it returned (within 20 s), or -12345. */
static int bg_join(struct bg *b)
{
	int i;

	for (i = 0; i < 20000 && !bg_is_done(b); ++i)
		sleep_ms(1);
	if (!bg_is_done(b))
		return -12345;
	pthread_join(b->thread, NULL);
	return b->rc;
}

/* ------------------------------------------------------------------------
 * Tests */

static void test_schedule_variants(void)
{
	struct rec r[9];
	kasync_domain *d, *e, *def;
	kasync_cookie_t c[9];
	int i;

	begin("schedule variants");
	memset(r, 0, sizeof r);
	def = kasync_default_domain();
	EXPECT(def != NULL);
	EXPECT(kasync_default_domain() == def);
	EXPECT(kasync_current_is_async() == 0);

	d = kasync_domain_create(0);
	e = kasync_domain_create(1);
	EXPECT(d != NULL);
	EXPECT(e != NULL);

	c[0] = kasync_schedule(rec_call, &r[0]);
	c[1] = kasync_schedule_domain(rec_call, &r[1], d);
	c[2] = kasync_schedule_node(rec_call, &r[2], 0);
	c[3] = kasync_schedule_node_domain(rec_call, &r[3], 1, e);
	c[4] = kasync_schedule_nocall(rec_call, &r[4], KASYNC_NUMA_NO_NODE, NULL);
	c[5] = kasync_schedule_nocall(rec_call, &r[5], 0, d);
	c[6] = kasync_schedule_domain(rec_call, &r[6], NULL); /* default */
	c[7] = kasync_schedule_node(rec_call, &r[7], 999);    /* no such node */
	c[8] = kasync_schedule_node_domain(rec_call, &r[8], -5, e);

	for (i = 0; i < 9; ++i) {
		EXPECT(c[i] != 0);
		if (i > 0)
			EXPECT_EQ(c[i], c[i - 1] + 1);
	}
	EXPECT_EQ(kasync_synchronize_full(), 0);
	EXPECT_EQ(kasync_synchronize_full_domain(e), 0);
	for (i = 0; i < 9; ++i) {
		EXPECT_EQ(runs_of(&r[i]), 1);
		EXPECT_EQ(r[i].cookie, c[i]);
		EXPECT_EQ(r[i].async, 1);
		EXPECT(!pthread_equal(r[i].thread, pthread_self()));
	}
	EXPECT_EQ(kasync_lowest_in_progress(NULL), KASYNC_COOKIE_MAX);
	EXPECT(kasync_lowest_in_progress(e) == KASYNC_COOKIE_MAX);
	EXPECT_EQ(kasync_domain_destroy(d), 0);
	EXPECT_EQ(kasync_domain_destroy(e), 0);
}

static void test_synchronize(void)
{
	struct gate g;
	struct rec blocked, x;
	struct bg full, cookie, cookie_all, full_def;
	kasync_domain *def = kasync_default_domain();
	kasync_domain *d, *e;
	kasync_cookie_t cb, cx;

	begin("every synchronize on the default domain");
	gate_init(&g);
	memset(&blocked, 0, sizeof blocked);
	blocked.gate = &g;
	EXPECT_EQ(kasync_synchronize_cookie(123456), 0); /* nothing pending */
	cb = kasync_schedule(rec_call, &blocked);
	EXPECT(cb != 0);
	EXPECT_EQ(kasync_lowest_in_progress(def), cb);
	EXPECT_EQ(kasync_lowest_in_progress(NULL), cb);
	EXPECT_EQ(kasync_synchronize_cookie_domain_timeout(cb, def, LONG_WAIT_NS),
		  0);
	EXPECT_EQ(kasync_synchronize_cookie(cb), 0); /* the "+1" idiom */
	EXPECT_EQ(kasync_synchronize_cookie_domain_timeout(cb + 1, def,
							   SHORT_WAIT_NS),
		  -ETIMEDOUT);
	EXPECT_EQ(kasync_synchronize_cookie_domain_timeout(cb + 1, NULL, MS),
		  -ETIMEDOUT);
	EXPECT_EQ(kasync_synchronize_cookie_domain_timeout(KASYNC_COOKIE_MAX,
							   def, MS),
		  -ETIMEDOUT);

	bg_start(&full, W_FULL, 0, NULL);
	bg_start(&cookie, W_COOKIE, cb + 1, NULL);
	bg_start(&cookie_all, W_COOKIE_DOMAIN, cb + 1, NULL);
	bg_start(&full_def, W_FULL_DOMAIN, 0, def);
	sleep_ms(50);
	EXPECT(!bg_is_done(&full));
	EXPECT(!bg_is_done(&cookie));
	EXPECT(!bg_is_done(&cookie_all));
	EXPECT(!bg_is_done(&full_def));
	EXPECT_EQ(runs_of(&blocked), 0);
	gate_open(&g);
	EXPECT_EQ(bg_join(&full), 0);
	EXPECT_EQ(bg_join(&cookie), 0);
	EXPECT_EQ(bg_join(&cookie_all), 0);
	EXPECT_EQ(bg_join(&full_def), 0);
	EXPECT_EQ(runs_of(&blocked), 1);
	gate_destroy(&g);

	begin("synchronize_cookie is the default domain only");
	gate_init(&g);
	memset(&blocked, 0, sizeof blocked);
	memset(&x, 0, sizeof x);
	blocked.gate = &g;
	d = kasync_domain_create(0);
	EXPECT(d != NULL);
	kasync_schedule_domain(rec_call, &blocked, d);
	cx = kasync_schedule(rec_call, &x);
	bg_start(&cookie, W_COOKIE, cx + 1, NULL);
	EXPECT_EQ(bg_join(&cookie), 0);
	EXPECT_EQ(runs_of(&x), 1);
	EXPECT_EQ(kasync_synchronize_cookie_domain_timeout(cx + 1, NULL,
							   SHORT_WAIT_NS),
		  -ETIMEDOUT);
	bg_start(&full, W_FULL, 0, NULL);
	bg_start(&cookie_all, W_COOKIE_DOMAIN, cx + 1, NULL);
	sleep_ms(50);
	EXPECT(!bg_is_done(&full));
	EXPECT(!bg_is_done(&cookie_all));
	gate_open(&g);
	EXPECT_EQ(bg_join(&full), 0);
	EXPECT_EQ(bg_join(&cookie_all), 0);
	EXPECT_EQ(kasync_domain_destroy(d), 0);
	gate_destroy(&g);

	begin("exclusive domains are not part of all");
	gate_init(&g);
	memset(&blocked, 0, sizeof blocked);
	blocked.gate = &g;
	e = kasync_domain_create(1);
	EXPECT(e != NULL);
	cb = kasync_schedule_domain(rec_call, &blocked, e);
	EXPECT_EQ(kasync_lowest_in_progress(NULL), KASYNC_COOKIE_MAX);
	EXPECT_EQ(kasync_lowest_in_progress(e), cb);
	bg_start(&full, W_FULL, 0, NULL);
	bg_start(&cookie_all, W_COOKIE_DOMAIN, cb + 1, NULL);
	EXPECT_EQ(bg_join(&full), 0);
	EXPECT_EQ(bg_join(&cookie_all), 0);
	EXPECT_EQ(kasync_synchronize_cookie_domain_timeout(cb + 1, e,
							   SHORT_WAIT_NS),
		  -ETIMEDOUT);
	bg_start(&full_def, W_FULL_DOMAIN, 0, e);
	sleep_ms(50);
	EXPECT(!bg_is_done(&full_def));
	gate_open(&g);
	EXPECT_EQ(bg_join(&full_def), 0);
	EXPECT_EQ(kasync_domain_destroy(e), 0);
	gate_destroy(&g);
}

static void test_domains(void)
{
	struct gate g;
	struct rec blocked, r;
	struct bg destroyer;
	kasync_domain *d, *e, *gone, *fresh;
	kasync_cookie_t c;
	int i, nulls;

	begin("unregister");
	gate_init(&g);
	memset(&blocked, 0, sizeof blocked);
	blocked.gate = &g;
	d = kasync_domain_create(0);
	EXPECT(d != NULL);
	EXPECT_EQ(kasync_unregister_domain(d), 0);
	EXPECT_EQ(kasync_unregister_domain(d), -EINVAL); /* no longer */
	c = kasync_schedule_domain(rec_call, &blocked, d);
	EXPECT(c != 0);
	EXPECT_EQ(kasync_lowest_in_progress(NULL), KASYNC_COOKIE_MAX);
	EXPECT_EQ(kasync_lowest_in_progress(d), c);
	EXPECT_EQ(kasync_synchronize_cookie_domain_timeout(KASYNC_COOKIE_MAX,
							   NULL, LONG_WAIT_NS),
		  0);
	gate_open(&g);
	EXPECT_EQ(kasync_synchronize_full_domain(d), 0);
	EXPECT_EQ(kasync_domain_destroy(d), 0);
	gate_destroy(&g);

	e = kasync_domain_create(1);
	EXPECT(e != NULL);
	EXPECT_EQ(kasync_unregister_domain(e), -EINVAL); /* never registered */
	EXPECT_EQ(kasync_domain_destroy(e), 0);

	begin("unregister a busy domain");
	gate_init(&g);
	memset(&blocked, 0, sizeof blocked);
	blocked.gate = &g;
	d = kasync_domain_create(0);
	c = kasync_schedule_domain(rec_call, &blocked, d);
	EXPECT_EQ(kasync_unregister_domain(d), -EBUSY);
	EXPECT_EQ(kasync_lowest_in_progress(NULL), c); /* nothing changed */
	EXPECT_EQ(kasync_synchronize_cookie_domain_timeout(c + 1, NULL,
							   SHORT_WAIT_NS),
		  -ETIMEDOUT);
	gate_open(&g);
	EXPECT_EQ(kasync_synchronize_full_domain(d), 0);
	EXPECT_EQ(kasync_unregister_domain(d), 0);
	EXPECT_EQ(kasync_domain_destroy(d), 0);
	gate_destroy(&g);

	begin("destroy waits until the domain is empty");
	gate_init(&g);
	memset(&blocked, 0, sizeof blocked);
	blocked.gate = &g;
	gone = kasync_domain_create(0);
	EXPECT(gone != NULL);
	c = kasync_schedule_domain(rec_call, &blocked, gone);
	EXPECT(c != 0);
	bg_start(&destroyer, W_DESTROY, 0, gone);
	sleep_ms(50);
	EXPECT(!bg_is_done(&destroyer));
	EXPECT_EQ(runs_of(&blocked), 0);
	gate_open(&g);
	EXPECT_EQ(bg_join(&destroyer), 0);
	EXPECT_EQ(runs_of(&blocked), 1);
	gate_destroy(&g);

	begin("a destroyed domain is refused");
	memset(&r, 0, sizeof r);
	EXPECT_EQ(kasync_schedule_domain(rec_call, &r, gone), 0);
	EXPECT_EQ(kasync_schedule_node_domain(rec_call, &r, 0, gone), 0);
	EXPECT_EQ(kasync_schedule_nocall(rec_call, &r, 0, gone), 0);
	EXPECT_EQ(kasync_synchronize_full_domain(gone), -EINVAL);
	EXPECT_EQ(kasync_synchronize_cookie_domain(1, gone), -EINVAL);
	EXPECT_EQ(kasync_synchronize_cookie_domain_timeout(1, gone, MS),
		  -EINVAL);
	EXPECT_EQ(kasync_unregister_domain(gone), -EINVAL);
	EXPECT_EQ(kasync_domain_destroy(gone), -EINVAL);
	/* A new domain may reuse the slot: the old handle stays dead. */
	fresh = kasync_domain_create(0);
	EXPECT(fresh != NULL);
	EXPECT_EQ(kasync_schedule_domain(rec_call, &r, gone), 0);
	EXPECT_EQ(kasync_domain_destroy(gone), -EINVAL);
	EXPECT(kasync_schedule_domain(rec_call, &r, fresh) != 0);
	EXPECT_EQ(kasync_synchronize_full_domain(fresh), 0);
	EXPECT_EQ(kasync_synchronize_full(), 0);
	EXPECT_EQ(runs_of(&r), 1); /* only the call in the fresh domain */
	EXPECT_EQ(kasync_domain_destroy(fresh), 0);

	begin("the default domain cannot be destroyed");
	EXPECT_EQ(kasync_domain_destroy(kasync_default_domain()), -EINVAL);
	memset(&r, 0, sizeof r);
	EXPECT(kasync_schedule_domain(rec_call, &r, kasync_default_domain()) != 0);
	EXPECT_EQ(kasync_synchronize_full(), 0);
	EXPECT_EQ(runs_of(&r), 1);

	begin("many domains come and go");
	nulls = 0;
	for (i = 0; i < 2000; ++i) {
		d = kasync_domain_create(i % 2);
		if (!d) {
			++nulls;
			continue;
		}
		if (i % 7 == 0)
			kasync_schedule_domain(rec_call, &r, d);
		EXPECT_EQ(kasync_domain_destroy(d), 0);
	}
	EXPECT_EQ(nulls, 0);
}

/* Inside a call: every self-wait is refused at once. */
struct self_wait {
	kasync_domain *d;
	int full, full_domain, plus5, plus5_all, plus5_timeout, destroy;
	int shutdown, own, async, other;
};

static void self_wait_call(void *data, kasync_cookie_t k)
{
	struct self_wait *w = data;

	w->async = kasync_current_is_async();
	w->plus5_timeout = kasync_synchronize_cookie_domain_timeout(
		k + 5, w->d, 5000 * MS);
	if (w->plus5_timeout != -EDEADLK)
		return; /* the untimed forms would hang */
	w->full = kasync_synchronize_full();
	w->full_domain = kasync_synchronize_full_domain(w->d);
	w->plus5 = kasync_synchronize_cookie_domain(k + 5, w->d);
	w->plus5_all = kasync_synchronize_cookie_domain(k + 5, NULL);
	w->destroy = kasync_domain_destroy(w->d);
	w->shutdown = kasync_shutdown();
	w->own = kasync_synchronize_cookie_domain(k, w->d);
	w->other = kasync_synchronize_cookie(k + 5); /* default: idle */
}

static void default_self_wait_call(void *data, kasync_cookie_t k)
{
	struct self_wait *w = data;

	w->plus5 = kasync_synchronize_cookie_domain_timeout(k + 1, NULL,
							    5000 * MS);
	if (w->plus5 == -EDEADLK)
		w->own = kasync_synchronize_cookie(k + 1);
}

static void test_deadlock(void)
{
	struct self_wait w, wd;
	struct rec after;

	begin("EDEADLK from inside a call");
	memset(&w, 0, sizeof w);
	w.d = kasync_domain_create(0);
	EXPECT(w.d != NULL);
	EXPECT(kasync_schedule_domain(self_wait_call, &w, w.d) != 0);
	EXPECT_EQ(kasync_synchronize_full_domain(w.d), 0);
	EXPECT_EQ(w.async, 1);
	EXPECT_EQ(w.plus5_timeout, -EDEADLK);
	EXPECT_EQ(w.full, -EDEADLK);
	EXPECT_EQ(w.full_domain, -EDEADLK);
	EXPECT_EQ(w.plus5, -EDEADLK);
	EXPECT_EQ(w.plus5_all, -EDEADLK);
	EXPECT_EQ(w.destroy, -EDEADLK);
	EXPECT_EQ(w.shutdown, -EDEADLK);
	EXPECT_EQ(w.own, 0);
	EXPECT_EQ(w.other, 0);

	memset(&wd, 0, sizeof wd);
	EXPECT(kasync_schedule(default_self_wait_call, &wd) != 0);
	EXPECT_EQ(kasync_synchronize_full(), 0);
	EXPECT_EQ(wd.plus5, -EDEADLK);
	EXPECT_EQ(wd.own, -EDEADLK);

	/* The refused shutdown and destroy stopped nothing. */
	memset(&after, 0, sizeof after);
	EXPECT(kasync_schedule_domain(rec_call, &after, w.d) != 0);
	EXPECT_EQ(kasync_synchronize_full_domain(w.d), 0);
	EXPECT_EQ(runs_of(&after), 1);
	EXPECT_EQ(after.async, 1);
	EXPECT_EQ(kasync_domain_destroy(w.d), 0);
}

/* Kernel-style code, unchanged. */
static ASYNC_DOMAIN(kernel_domain);
static ASYNC_DOMAIN_EXCLUSIVE(kernel_exclusive);

#define N_ORDERED 64
static async_cookie_t order[N_ORDERED];
static int order_pos;

static void ordered_probe(void *data, async_cookie_t cookie)
{
	int pos;

	(void)data;
	async_synchronize_cookie(cookie); /* every earlier probe is done */
	pos = __atomic_fetch_add(&order_pos, 1, __ATOMIC_SEQ_CST);
	if (pos < N_ORDERED)
		order[pos] = cookie;
}

static void test_linux_async(void)
{
	struct rec r[6];
	async_cookie_t c[6];
	int i;

	begin("linux_async.h spellings");
	memset(r, 0, sizeof r);
	EXPECT(ASYNC_COOKIE_MAX == UINT64_MAX);
	EXPECT(current_is_async() == 0);
	c[0] = async_schedule(rec_call, &r[0]);
	c[1] = async_schedule_node(rec_call, &r[1], NUMA_NO_NODE);
	c[2] = async_schedule_domain(rec_call, &r[2], &kernel_domain);
	c[3] = async_schedule_node_domain(rec_call, &r[3], 0, &kernel_exclusive);
	c[4] = async_schedule_dev_nocall(rec_call, &r[4]);
	c[5] = async_schedule_domain(rec_call, &r[5], &kernel_exclusive);
	for (i = 0; i < 6; ++i)
		EXPECT(c[i] != 0);
	async_synchronize_cookie(c[1] + 1);
	EXPECT_EQ(runs_of(&r[0]), 1);
	EXPECT_EQ(runs_of(&r[1]), 1);
	async_synchronize_cookie_domain(c[5] + 1, &kernel_exclusive);
	EXPECT_EQ(runs_of(&r[3]), 1);
	EXPECT_EQ(runs_of(&r[5]), 1);
	async_synchronize_full_domain(&kernel_domain);
	EXPECT_EQ(runs_of(&r[2]), 1);
	async_synchronize_full();
	for (i = 0; i < 6; ++i) {
		EXPECT_EQ(runs_of(&r[i]), 1);
		EXPECT_EQ(r[i].async, 1);
		EXPECT_EQ(r[i].cookie, c[i]);
	}

	for (i = 0; i < N_ORDERED; ++i)
		async_schedule(ordered_probe, NULL);
	async_synchronize_full();
	EXPECT_EQ(order_pos, N_ORDERED);
	for (i = 1; i < N_ORDERED; ++i)
		EXPECT(order[i] > order[i - 1]);

	async_unregister_domain(&kernel_domain);
	EXPECT_EQ(kasync_unregister_domain(kernel_domain.handle), -EINVAL);
	EXPECT_EQ(kasync_domain_destroy(kernel_domain.handle), 0);
	EXPECT_EQ(kasync_domain_destroy(kernel_exclusive.handle), 0);
}

/* Calls that schedule one more call each, for shutdown to drain. */
static int drained;

static void leaf_call(void *data, kasync_cookie_t c)
{
	(void)data;
	(void)c;
	__atomic_fetch_add(&drained, 1, __ATOMIC_SEQ_CST);
}

static void parent_call(void *data, kasync_cookie_t c)
{
	(void)c;
	__atomic_fetch_add(&drained, 1, __ATOMIC_SEQ_CST);
	kasync_schedule_domain(leaf_call, NULL, data);
}

static void test_shutdown(void)
{
	struct rec r, refused;
	kasync_domain *d = kasync_domain_create(0);
	kasync_cookie_t first = 0, c;
	int i;

	begin("shutdown runs every pending call, then calls run in the caller");
	EXPECT(d != NULL);
	for (i = 0; i < 50; ++i) {
		c = kasync_schedule_domain(parent_call, i % 2 ? d : NULL,
					   i % 3 ? d : NULL);
		if (i == 0)
			first = c;
	}
	EXPECT_EQ(kasync_shutdown(), 0);
	EXPECT_EQ(__atomic_load_n(&drained, __ATOMIC_SEQ_CST), 100);
	EXPECT_EQ(kasync_shutdown(), 0);

	memset(&r, 0, sizeof r);
	c = kasync_schedule(rec_call, &r);
	EXPECT_EQ(c, first + 100);        /* the children took cookies too */
	EXPECT_EQ(runs_of(&r), 1);        /* before schedule returned */
	EXPECT_EQ(r.cookie, c);
	EXPECT_EQ(r.async, 0);
	EXPECT(pthread_equal(r.thread, pthread_self()));

	memset(&r, 0, sizeof r);
	EXPECT_EQ(kasync_schedule_domain(rec_call, &r, d), c + 1);
	EXPECT_EQ(runs_of(&r), 1);
	memset(&r, 0, sizeof r);
	EXPECT_EQ(kasync_schedule_node_domain(rec_call, &r, 1, d), c + 2);
	EXPECT_EQ(runs_of(&r), 1);

	memset(&refused, 0, sizeof refused);
	EXPECT_EQ(kasync_schedule_nocall(rec_call, &refused, 0, NULL), 0);
	EXPECT_EQ(runs_of(&refused), 0);

	EXPECT_EQ(kasync_synchronize_full(), 0);
	EXPECT_EQ(kasync_synchronize_full_domain(d), 0);
	EXPECT_EQ(kasync_synchronize_cookie(KASYNC_COOKIE_MAX), 0);
	EXPECT_EQ(kasync_synchronize_cookie_domain(c + 100, NULL), 0);
	EXPECT_EQ(kasync_synchronize_cookie_domain_timeout(KASYNC_COOKIE_MAX,
							   NULL, 0),
		  0);
	EXPECT_EQ(kasync_lowest_in_progress(NULL), KASYNC_COOKIE_MAX);
	EXPECT_EQ(kasync_domain_destroy(d), 0);
}

int main(void)
{
	signal(SIGALRM, on_alarm);

	test_schedule_variants();
	test_synchronize();
	test_domains();
	test_deadlock();
	test_linux_async();
	test_shutdown(); /* last: the scheduler stays stopped */

	alarm(0);
	if (failures) {
		fprintf(stderr, "test_c_api: %d check(s) FAILED\n", failures);
		return 1;
	}
	fprintf(stderr, "test_c_api: all checks passed\n");
	return 0;
}
