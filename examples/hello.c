/* The C API in a few lines: parallel work, in-order output.
 *
 * SPDX-License-Identifier: MIT
 */
#include <kasync/kasync.h>

#include <stdio.h>

static unsigned long squares[8];

static void square(void *data, kasync_cookie_t cookie)
{
	unsigned long n = (unsigned long)(unsigned long long)(size_t)data;

	squares[n] = n * n;                   /* in parallel */
	kasync_synchronize_cookie(cookie);    /* all earlier calls are done */
	printf("%lu squared is %lu\n", n, squares[n]);  /* in order */
}

int main(void)
{
	unsigned long i;

	for (i = 0; i < 8; i++)
		kasync_schedule(square, (void *)(size_t)i);
	kasync_synchronize_full();
	return kasync_shutdown();
}
