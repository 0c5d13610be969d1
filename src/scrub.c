/*
 * scrub: replaces secrets and PII in memory text with markers. It owns no
 * state and must stay a single forward pass: the text comes from agents and
 * is bounded by the memory module's limits before it gets here.
 */
#include <ctype.h>
#include <stdbool.h>
#include <string.h>

#include "scrub.h"
#include "xmalloc.h"

struct scrub_buf {
	char *p;
	size_t len, cap;
};

static void
scrub_put(struct scrub_buf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		while (b->len + n + 1 > b->cap)
			b->cap = b->cap ? b->cap * 2 : 64;
		b->p = xrealloc(b->p, b->cap);
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static bool
scrub_is_word(unsigned char c)
{
	return isalnum(c) || c == '_' || c == '-';
}

static bool
scrub_email_local(unsigned char c)
{
	return isalnum(c) || strchr("._%+-", c) != NULL;
}

/*
 * An e-mail address whose '@' is at t[at]: extend left over local-part
 * characters and right over a dotted domain with a 2+ letter TLD. Sets
 * [*s, *e) and returns true on a match.
 */
static bool
scrub_email(const char *t, size_t len, size_t at, size_t from, size_t *s, size_t *e)
{
	size_t l = at, r = at + 1, dot = 0, i;

	while (l > from && scrub_email_local((unsigned char)t[l - 1]))
		l--;
	if (l == at)
		return false;
	while (r < len && (isalnum((unsigned char)t[r]) || t[r] == '-' || t[r] == '.'))
		r++;
	/* Trailing dots end a sentence, not the domain. */
	while (r > at + 1 && t[r - 1] == '.')
		r--;
	for (i = r; i > at + 1; i--)
		if (t[i - 1] == '.') {
			dot = i - 1;
			break;
		}
	if (dot == 0 || dot == at + 1 || r - dot - 1 < 2)
		return false;
	for (i = dot + 1; i < r; i++)
		if (!isalpha((unsigned char)t[i]))
			return false;
	*s = l;
	*e = r;
	return true;
}

/* Known key prefixes; the token after the prefix must be long enough. */
static const struct {
	const char *prefix;
	size_t minrest;
} scrub_keys[] = {
	{ "sk-", 16 }, { "sk_live_", 16 }, { "sk_test_", 16 }, { "rk_live_", 16 },
	{ "ghp_", 20 }, { "gho_", 20 }, { "ghs_", 20 }, { "ghu_", 20 }, { "ghr_", 20 },
	{ "github_pat_", 20 },
	{ "xoxb-", 10 }, { "xoxa-", 10 }, { "xoxp-", 10 }, { "xoxr-", 10 }, { "xoxs-", 10 },
	{ "AKIA", 16 }, { "AIza", 30 }, { "glpat-", 20 },
};

static bool
scrub_key(const char *t, size_t len, size_t i, size_t *e)
{
	size_t k, n, r;

	/* Only at a word start, so "task-" never matches "sk-". */
	if (i > 0 && scrub_is_word((unsigned char)t[i - 1]))
		return false;
	for (k = 0; k < sizeof(scrub_keys) / sizeof(scrub_keys[0]); k++) {
		n = strlen(scrub_keys[k].prefix);
		if (len - i < n || memcmp(t + i, scrub_keys[k].prefix, n) != 0)
			continue;
		r = i + n;
		while (r < len && scrub_is_word((unsigned char)t[r]))
			r++;
		if (r - i - n >= scrub_keys[k].minrest) {
			*e = r;
			return true;
		}
	}
	return false;
}

/* ddd-dd-dddd not inside a longer digit run. */
static bool
scrub_ssn(const char *t, size_t len, size_t i, size_t *e)
{
	static const char shape[] = "ddd-dd-dddd";
	size_t k;

	if (i > 0 && isdigit((unsigned char)t[i - 1]))
		return false;
	if (len - i < sizeof(shape) - 1)
		return false;
	for (k = 0; k < sizeof(shape) - 1; k++) {
		if (shape[k] == 'd' ? !isdigit((unsigned char)t[i + k]) : t[i + k] != '-')
			return false;
	}
	if (i + k < len && (isdigit((unsigned char)t[i + k]) || t[i + k] == '-'))
		return false;
	*e = i + k;
	return true;
}

/* 13–19 digits, single spaces or dashes between groups, passing Luhn. */
static bool
scrub_card(const char *t, size_t len, size_t i, size_t *e)
{
	int digits[19];
	size_t n = 0, r = i, last = i;
	int sum = 0;

	if (i > 0 && (isalnum((unsigned char)t[i - 1])))
		return false;
	while (r < len) {
		if (isdigit((unsigned char)t[r])) {
			if (n == 19)
				return false;
			digits[n++] = t[r] - '0';
			last = ++r;
		} else if ((t[r] == ' ' || t[r] == '-') && r + 1 < len &&
			   isdigit((unsigned char)t[r + 1]) && n > 0) {
			r++;
		} else {
			break;
		}
	}
	if (n < 13 || (last < len && isalnum((unsigned char)t[last])))
		return false;
	for (size_t k = 0; k < n; k++) {
		int d = digits[n - 1 - k];

		if (k % 2 == 1) {
			d *= 2;
			if (d > 9)
				d -= 9;
		}
		sum += d;
	}
	if (sum % 10 != 0)
		return false;
	*e = last;
	return true;
}

char *
scrub_text(const char *text, size_t len, unsigned *nrep)
{
	struct scrub_buf b = { 0 };
	size_t i = 0, copied = 0, s, e;
	unsigned reps = 0;

	scrub_put(&b, "", 0);
	while (i < len) {
		const char *marker = NULL;

		if (text[i] == '@' && scrub_email(text, len, i, copied, &s, &e)) {
			marker = "[email]";
		} else if (scrub_key(text, len, i, &e)) {
			s = i;
			marker = "[secret]";
		} else if (isdigit((unsigned char)text[i]) && scrub_ssn(text, len, i, &e)) {
			s = i;
			marker = "[ssn]";
		} else if (isdigit((unsigned char)text[i]) && scrub_card(text, len, i, &e)) {
			s = i;
			marker = "[card]";
		}
		if (marker == NULL) {
			i++;
			continue;
		}
		scrub_put(&b, text + copied, s - copied);
		scrub_put(&b, marker, strlen(marker));
		copied = i = e;
		reps++;
	}
	scrub_put(&b, text + copied, len - copied);
	if (nrep != NULL)
		*nrep = reps;
	return b.p;
}
