/* scrub: each secret and PII shape is replaced; look-alikes are left alone. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "scrub.h"

static void
check(const char *in, const char *want, unsigned nwant)
{
	unsigned n = 99;
	char *out = scrub_text(in, strlen(in), &n);

	assert_string_equal(out, want);
	assert_int_equal(n, nwant);
	free(out);
}

static void
test_emails(void **state)
{
	check("mail alice.smith+ci@example.co.uk now.", "mail [email] now.", 1);
	check("a@b.c is not an address", "a@b.c is not an address", 0);
	check("x@y.org,bob@host.io", "[email],[email]", 2);
	check("use @decorator here", "use @decorator here", 0);
}

static void
test_keys(void **state)
{
	check("key sk-abcdefghijklmnopqrstuv end", "key [secret] end", 1);
	check("ghp_0123456789abcdefghijABCDEFGHIJ", "[secret]", 1);
	check("token=xoxb-1234-5678-abcdefgh", "token=[secret]", 1);
	check("AKIAIOSFODNN7EXAMPLE", "[secret]", 1);
	/* Prefix inside a word, or too short: not a key. */
	check("task-sk-abcdefghijklmnopqrstuv", "task-sk-abcdefghijklmnopqrstuv", 0);
	check("sk-short", "sk-short", 0);
}

static void
test_numbers(void **state)
{
	check("ssn 123-45-6789.", "ssn [ssn].", 1);
	check("card 4111 1111 1111 1111 ok", "card [card] ok", 1);
	check("card 4111-1111-1111-1111", "card [card]", 1);
	/* Fails Luhn: an ordinary long number stays. */
	check("order 4111111111111112", "order 4111111111111112", 0);
	check("port 8080 and 12 digits 123456789012", "port 8080 and 12 digits 123456789012", 0);
}

static void
test_empty_and_plain(void **state)
{
	check("", "", 0);
	check("retry the build with a clean cache", "retry the build with a clean cache", 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_emails),
		cmocka_unit_test(test_keys),
		cmocka_unit_test(test_numbers),
		cmocka_unit_test(test_empty_and_plain),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
