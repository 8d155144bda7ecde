/*
 * The default scheduler configured by the environment, from C99: meson runs
 * this with KASYNC_MAX_PENDING=2 and KASYNC_THREADS=1, so the synchronous
 * fallback is reached after three queued calls.
 *
 * Checks: with the limit reached a call runs in the caller before
 * kasync_schedule() returns, with its own cookie, and kasync_current_is_async()
 * is 0 in it; kasync_schedule_nocall() returns 0 and takes no cookie; a
 * fallback run inside a call sees kasync_current_is_async() == 1.
 *
 * SPDX-License-Identifier: MIT
 */
#define _POSIX_C_SOURCE 200809L

#include <kasync/kasync.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int failures;

#define EXPECT_EQ(a, b)                                                      \
	do {                                                                 \
		long long va_ = (long long)(a), vb_ = (long long)(b);        \
		if (va_ != vb_) {                                            \
			fprintf(stderr, "%s:%d: FAILED: %s == %s (%lld != %lld)\n", \
				__FILE__, __LINE__, #a, #b, va_, vb_);       \
			++failures;                                          \
		}                                                            \
	} while (0)

static void on_alarm(int sig)
{
	static const char msg[] =
		"\nWATCHDOG: test_c_env still running after 30 s; aborting\n";
	ssize_t ignored;

	(void)sig;
	ignored = write(2, msg, sizeof msg - 1);
	(void)ignored;
	abort();
}

static pthread_t main_thread;
static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int released;   /* under m */
static int x_done;     /* under m */

struct rec {
	int runs;
	int in_caller;
	int async;
	kasync_cookie_t cookie;
	pthread_t thread;
};

/* Blocks until released, unless run by the main thread (a fallback). */
static void held_call(void *data, kasync_cookie_t cookie)
{
	struct rec *r = data;

	r->cookie = cookie;
	r->async = kasync_current_is_async();
	r->in_caller = pthread_equal(pthread_self(), main_thread);
	__atomic_fetch_add(&r->runs, 1, __ATOMIC_SEQ_CST);
	if (r->in_caller)
		return;
	kasync_blocking_begin();
	pthread_mutex_lock(&m);
	while (!released)
		pthread_cond_wait(&cv, &m);
	pthread_mutex_unlock(&m);
	kasync_blocking_end();
}

static void plain_call(void *data, kasync_cookie_t cookie)
{
	struct rec *r = data;

	r->cookie = cookie;
	r->async = kasync_current_is_async();
	r->in_caller = pthread_equal(pthread_self(), main_thread);
	r->thread = pthread_self();
	__atomic_fetch_add(&r->runs, 1, __ATOMIC_SEQ_CST);
}

static struct rec y;
static pthread_t x_thread;

/* Runs while the limit is reached: what it schedules falls back in it. */
static void x_call(void *data, kasync_cookie_t cookie)
{
	(void)data;
	(void)cookie;
	x_thread = pthread_self();
	kasync_schedule(plain_call, &y);
	pthread_mutex_lock(&m);
	x_done = 1;
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&m);
}

static void release_all(void)
{
	pthread_mutex_lock(&m);
	released = 1;
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&m);
}

int main(void)
{
	struct rec held[3], fb, refused, next, held2[2];
	kasync_cookie_t c[3], cf, cn;
	const char *limit = getenv("KASYNC_MAX_PENDING");
	struct timespec until;
	int i, rc = 0;

	signal(SIGALRM, on_alarm);
	alarm(30);
	main_thread = pthread_self();
	if (!limit || strcmp(limit, "2") != 0) {
		fprintf(stderr, "test_c_env: run with KASYNC_MAX_PENDING=2\n");
		return 1;
	}

	/* Three calls queue (limit 2: with 2 pending one more queues). */
	memset(held, 0, sizeof held);
	for (i = 0; i < 3; ++i)
		c[i] = kasync_schedule(held_call, &held[i]);
	for (i = 0; i < 3; ++i)
		EXPECT_EQ(held[i].in_caller, 0);
	EXPECT_EQ(c[1], c[0] + 1);
	EXPECT_EQ(c[2], c[1] + 1);

	/* The fourth runs in the caller, with the next cookie. */
	memset(&fb, 0, sizeof fb);
	cf = kasync_schedule(plain_call, &fb);
	EXPECT_EQ(fb.runs, 1);
	EXPECT_EQ(fb.in_caller, 1);
	EXPECT_EQ(fb.async, 0);
	EXPECT_EQ(fb.cookie, cf);
	EXPECT_EQ(cf, c[2] + 1);

	/* nocall refuses and takes no cookie. */
	memset(&refused, 0, sizeof refused);
	EXPECT_EQ(kasync_schedule_nocall(plain_call, &refused, -1, NULL), 0);
	EXPECT_EQ(refused.runs, 0);
	memset(&next, 0, sizeof next);
	cn = kasync_schedule(plain_call, &next);
	EXPECT_EQ(cn, cf + 1);
	EXPECT_EQ(next.in_caller, 1);

	release_all();
	EXPECT_EQ(kasync_synchronize_full(), 0);
	for (i = 0; i < 3; ++i)
		EXPECT_EQ(held[i].runs, 1);

	/* A fallback run by a call: current_is_async() is 1 in it. */
	pthread_mutex_lock(&m);
	released = 0;
	pthread_mutex_unlock(&m);
	memset(held2, 0, sizeof held2);
	kasync_schedule(held_call, &held2[0]);
	kasync_schedule(held_call, &held2[1]);
	kasync_schedule(x_call, NULL); /* the third: queues */
	EXPECT_EQ(held2[0].in_caller + held2[1].in_caller, 0);

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 20;
	pthread_mutex_lock(&m);
	while (!x_done && rc == 0)
		rc = pthread_cond_timedwait(&cv, &m, &until);
	pthread_mutex_unlock(&m);
	EXPECT_EQ(x_done, 1);
	EXPECT_EQ(y.runs, 1);
	EXPECT_EQ(y.async, 1);
	EXPECT_EQ(pthread_equal(y.thread, x_thread) != 0, 1);

	release_all();
	EXPECT_EQ(kasync_synchronize_full(), 0);
	EXPECT_EQ(kasync_shutdown(), 0);

	alarm(0);
	if (failures) {
		fprintf(stderr, "test_c_env: %d check(s) FAILED\n", failures);
		return 1;
	}
	fprintf(stderr, "test_c_env: all checks passed\n");
	return 0;
}
