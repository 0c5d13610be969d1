/*
 * Secrets and PII scrubbing for memory text before it is stored: e-mail
 * addresses, API-key-shaped tokens (sk-…, ghp_…/gho_…/ghs_…/github_pat_…,
 * xox[abprs]-…, AKIA…), US social security numbers and card-like digit runs
 * (13–19 digits, spaces or dashes allowed, Luhn-valid). Pure functions, no
 * state; the patterns are hand-written scanners, not regexes, so the cost is
 * one pass over the text.
 */
#ifndef SANDPIT_SCRUB_H
#define SANDPIT_SCRUB_H

#include <stddef.h>

/*
 * Return a malloc'd, NUL-terminated copy of text[0..len) with every match
 * replaced by a marker ("[email]", "[secret]", "[ssn]", "[card]"). *nrep (if
 * not NULL) receives the number of replacements. Never fails (xmalloc).
 */
char *scrub_text(const char *text, size_t len, unsigned *nrep);

#endif
