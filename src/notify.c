/*
 * The sd_notify datagram protocol without libsystemd: one AF_UNIX datagram
 * per state change to $NOTIFY_SOCKET, and the watchdog interval from the
 * environment. It owns no state between calls and never logs.
 */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "notify.h"

int
notify_send(const char *state)
{
	struct sockaddr_un sun;
	const char *path;
	socklen_t len;
	size_t plen;
	ssize_t n;
	int fd, r = 0;

	path = getenv("NOTIFY_SOCKET");
	if (path == NULL || path[0] == '\0')
		return 0;
	/* An absolute path or an abstract name; anything else is not ours to guess. */
	if (path[0] != '/' && path[0] != '@')
		return -EAFNOSUPPORT;
	plen = strlen(path);
	if (plen >= sizeof(sun.sun_path))
		return -ENAMETOOLONG;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, path, plen);
	if (sun.sun_path[0] == '@')
		sun.sun_path[0] = '\0';		/* abstract: no terminator counted */
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen +
			  (path[0] == '@' ? 0 : 1));

	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* MSG_NOSIGNAL: a vanished manager must not kill us with SIGPIPE. */
	n = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sun, len);
	if (n < 0)
		r = -errno;
	else if ((size_t)n != strlen(state))
		r = -EMSGSIZE;
	close(fd);
	return r;
}

uint64_t
notify_watchdog_usec(void)
{
	const char *s, *pid;
	unsigned long long v;
	char *end;

	s = getenv("WATCHDOG_USEC");
	if (s == NULL || *s == '\0')
		return 0;
	/* systemd sets WATCHDOG_PID so a forked child does not ping for its parent. */
	pid = getenv("WATCHDOG_PID");
	if (pid != NULL && *pid != '\0') {
		unsigned long long p;

		errno = 0;
		p = strtoull(pid, &end, 10);
		if (errno != 0 || *end != '\0' || end == pid || p != (unsigned long long)getpid())
			return 0;
	}
	if (*s < '0' || *s > '9')
		return 0;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0')
		return 0;
	return (uint64_t)v;
}
