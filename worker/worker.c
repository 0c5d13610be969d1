/*
 * sandpit-worker, for now the sandbox's minimal main process: it runs under
 * Docker's init (tini as PID 1), waits for SIGTERM or SIGINT and exits 0. It
 * keeps the container alive for execs. The QUIC worker replaces it; it owns
 * nothing and must stay tiny and statically linked.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

int
main(int argc, char *argv[])
{
	sigset_t set;
	int sig;

	if (argc > 1 && strcmp(argv[1], "--version") == 0) {
		printf("sandpit-worker %s\n", SANDPIT_VERSION);
		return 0;
	}
	if (argc > 1) {
		fprintf(stderr, "usage: sandpit-worker [--version]\n");
		return 2;
	}
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	if (sigprocmask(SIG_BLOCK, &set, NULL) != 0)
		return 1;
	do
		sig = sigwaitinfo(&set, NULL);
	while (sig < 0);
	return 0;
}
