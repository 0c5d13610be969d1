/*
 * config: the embedded defaults (root and non-root), the grammar (quotes,
 * escapes, comments), every error kind with its file:line, provider
 * directives through a fake ops table, the repeatable pool directive, the
 * size/duration parsers at their edges, the shipped example file, and random
 * input that must never crash.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

#include <sandpit/error.h>

#include "config.h"

static const struct sp_directive fake_directives[] = {
	{ "fake.socket", SP_DIR_PATH, "/var/run/fake.sock", "the fake socket" },
	{ "fake.network", SP_DIR_STRING, "fakenet", "network name" },
	{ "fake.retries", SP_DIR_INT, "3", "retries" },
	{ "fake.cache", SP_DIR_SIZE, "1m", "cache size" },
	{ "fake.strict", SP_DIR_BOOL, "yes", "strict mode" },
	{ "fake.token", SP_DIR_STRING, NULL, "no default" },
	{ NULL, 0, NULL, NULL },
};
static const struct sp_provider_ops fake_ops = {
	.name = "fake",
	.directives = fake_directives,
};
static const struct sp_directive bad_default_directives[] = {
	{ "broken.size", SP_DIR_SIZE, "lots", "bad default" },
	{ NULL, 0, NULL, NULL },
};
static const struct sp_provider_ops broken_ops = {
	.name = "broken",
	.directives = bad_default_directives,
};
static const struct sp_provider_ops *const fake_providers[] = { &fake_ops, NULL };

static char tmpdir[64];
static char tmpfile_path[128];

static int
group_setup(void **state)
{
	strcpy(tmpdir, "/tmp/sp-test-config-XXXXXX");
	assert_non_null(mkdtemp(tmpdir));
	snprintf(tmpfile_path, sizeof(tmpfile_path), "%s/sandpitd.conf", tmpdir);
	return 0;
}

static int
group_teardown(void **state)
{
	unlink(tmpfile_path);
	rmdir(tmpdir);
	return 0;
}

static void
write_file(const char *data, size_t len)
{
	FILE *f = fopen(tmpfile_path, "w");

	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

/* Load text as a config file; returns config_load's result. */
static int
load(const char *text, const struct sp_provider_ops *const *prov, struct config **c,
     char *err, size_t errlen)
{
	write_file(text, strlen(text));
	return config_load(tmpfile_path, prov, c, err, errlen);
}

static void
test_defaults_root_or_not(void **state)
{
	struct config *c = NULL;
	char err[256], exe[PATH_MAX], want[PATH_MAX + 32], *slash;
	ssize_t n;

	assert_int_equal(config_load(NULL, NULL, &c, err, sizeof(err)), 0);
	assert_null(c->file);
	if (geteuid() == 0) {
		assert_string_equal(c->state_dir, "/var/lib/sandpit");
		assert_string_equal(c->socket_path, "/run/sandpit/sandpitd.sock");
	}
	assert_null(c->socket_group);
	assert_int_equal(c->socket_gid, (gid_t)-1);
	assert_int_equal(c->max_clients, 64);
	assert_int_equal(c->max_body, 1024 * 1024);
	assert_int_equal(c->max_header, 16 * 1024);
	assert_int_equal(c->log_level, LOG_INFO);
	assert_string_equal(c->default_provider, "auto");
	assert_string_equal(c->untrusted_placement, "auto");
	assert_int_equal(c->burst_max_sandboxes, 20);
	assert_int_equal(c->max_sandboxes, 64);
	assert_int_equal(c->reconcile_interval_ms, 30000);
	assert_string_equal(c->worker_image, "sandpit/worker:" SANDPIT_VERSION);
	assert_int_equal(c->worker_port, 7443);
	assert_int_equal(c->sandbox_memory, 512LL << 20);
	assert_int_equal(c->sandbox_memory_max, 8LL << 30);
	assert_int_equal(c->sandbox_cpus, 1000000000LL);
	assert_int_equal(c->sandbox_cpus_max, 4000000000LL);
	assert_int_equal(c->sandbox_pids, 256);
	assert_int_equal(c->sandbox_pids_max, 4096);
	assert_int_equal(c->sandbox_nofile, 1024);
	assert_int_equal(c->sandbox_tmp, 64LL << 20);
	assert_int_equal(c->sandbox_work, 256LL << 20);
	assert_int_equal(c->exec_timeout_ms, 600000);
	assert_int_equal(c->exec_timeout_max_ms, 86400000);
	assert_int_equal(c->nkv, 0);

	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	assert_true(n > 0);
	exe[n] = '\0';
	slash = strrchr(exe, '/');
	*slash = '\0';
	snprintf(want, sizeof(want), "%s/sandpit-worker", exe);
	assert_string_equal(c->worker_binary, want);
	config_free(c);
	config_free(NULL);
}

/* In a child that is not root: ./var against the cwd, and the XDG rule. */
static int
child_nonroot(void)
{
	struct config *c = NULL;
	char err[256];

	if (chdir(tmpdir) != 0)
		return 10;
	unsetenv("XDG_RUNTIME_DIR");
	if (config_load(NULL, NULL, &c, err, sizeof(err)) != 0)
		return 11;
	{
		char want[256];

		snprintf(want, sizeof(want), "%s/var", tmpdir);
		if (strcmp(c->state_dir, want) != 0)
			return 13;
		snprintf(want, sizeof(want), "%s/var/sandpitd.sock", tmpdir);
		if (strcmp(c->socket_path, want) != 0)
			return 14;
	}
	config_free(c);
	setenv("XDG_RUNTIME_DIR", "/run/user/65534", 1);
	if (config_load(NULL, NULL, &c, err, sizeof(err)) != 0)
		return 15;
	if (strcmp(c->socket_path, "/run/user/65534/sandpit/sandpitd.sock") != 0)
		return 16;
	config_free(c);
	/* An explicit state_dir moves the XDG-less socket with it. */
	unsetenv("XDG_RUNTIME_DIR");
	if (load("state_dir /srv/sp\n", NULL, &c, err, sizeof(err)) != 0)
		return 17;
	if (strcmp(c->socket_path, "/srv/sp/sandpitd.sock") != 0)
		return 18;
	config_free(c);
	return 0;
}

static void
test_defaults_nonroot(void **state)
{
	pid_t pid;
	int st;

	if (geteuid() != 0) {
		assert_int_equal(child_nonroot(), 0);
		return;
	}
	/* The temporary directory must be enterable and writable by nobody. */
	assert_int_equal(chmod(tmpdir, 0777), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (setgroups(0, NULL) != 0 || setresgid(65534, 65534, 65534) != 0 ||
		    setresuid(65534, 65534, 65534) != 0)
			_exit(9);
		_exit(child_nonroot());
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	assert_int_equal(chmod(tmpdir, 0700), 0);
	unlink(tmpfile_path);
}

static void
test_grammar(void **state)
{
	struct config *c = NULL;
	char err[256];

	assert_int_equal(load("# a comment\n"
			      "\n"
			      "   \t  \n"
			      "  # indented comment\n"
			      "max_clients 12   # trailing comment\n"
			      "\tworker_image\t\"img:with spaces # not a comment\"  # but this is\n"
			      "worker_binary \"/opt/q\\\"uote\\\\d\"\n"
			      "provider a#b\n"
			      "log_level debug\r\n"
			      "max_body 2m",		/* no final newline */
			      NULL, &c, err, sizeof(err)), 0);
	assert_int_equal(c->max_clients, 12);
	assert_string_equal(c->worker_image, "img:with spaces # not a comment");
	assert_string_equal(c->worker_binary, "/opt/q\"uote\\d");
	assert_string_equal(c->default_provider, "a#b");
	assert_int_equal(c->log_level, LOG_DEBUG);
	assert_int_equal(c->max_body, 2 * 1024 * 1024);
	assert_string_equal(c->file, tmpfile_path);
	config_free(c);

	assert_int_equal(load("sandbox_cpus 1.5\nsandbox_cpus_max 2.25\n"
			      "sandbox_memory 1g\nexec_timeout 1500ms\nexec_timeout_max 1d\n"
			      "reconcile_interval 2m\nsocket \"/tmp/x y.sock\"\nsocket_group root\n",
			      NULL, &c, err, sizeof(err)), 0);
	assert_int_equal(c->sandbox_cpus, 1500000000LL);
	assert_int_equal(c->sandbox_cpus_max, 2250000000LL);
	assert_int_equal(c->sandbox_memory, 1LL << 30);
	assert_int_equal(c->exec_timeout_ms, 1500);
	assert_int_equal(c->exec_timeout_max_ms, 86400000);
	assert_int_equal(c->reconcile_interval_ms, 120000);
	assert_string_equal(c->socket_path, "/tmp/x y.sock");
	assert_string_equal(c->socket_group, "root");
	assert_int_equal(c->socket_gid, 0);
	config_free(c);
}

static void
test_errors(void **state)
{
	static const struct {
		const char *text;
		const char *want;	/* after "<file>:" */
	} cases[] = {
		{ "bogus 1\n", "1: unknown directive 'bogus'" },
		{ "\n# c\nBad!Name x\n", "3: unknown directive 'Bad!Name'" },
		{ "max_clients\n", "1: max_clients: missing value" },
		{ "max_clients   # only a comment\n", "1: max_clients: missing value" },
		{ "max_clients \"\"\n", "1: max_clients: missing value" },
		{ "\nmax_clients ten\n", "2: max_clients: 'ten' is not an integer" },
		{ "max_clients 0\n", "1: max_clients: 0 is out of range 1..65536" },
		{ "max_clients 99999999999999999999999\n", "1: max_clients: '99999999999999999999999' is not an integer" },
		{ "worker_port 65536\n", "1: worker_port: 65536 is out of range 1..65535" },
		{ "sandbox_memory 12q\n", "1: sandbox_memory: '12q' is not a size" },
		{ "sandbox_memory 1m\n", "1: sandbox_memory: 1m is out of range 6m..1t" },
		{ "max_header 99999999999t\n", "1: max_header: '99999999999t' is not a size" },
		{ "exec_timeout 10\n", "1: exec_timeout: '10' is not a duration" },
		{ "exec_timeout 31d\n", "1: exec_timeout: 31d is out of range" },
		{ "sandbox_cpus 1.2.3\n", "1: sandbox_cpus: '1.2.3' is not a number of CPUs" },
		{ "sandbox_cpus 0.0000000001\n", "1: sandbox_cpus: '0.0000000001' is not a number of CPUs" },
		{ "sandbox_cpus 0.001\n", "1: sandbox_cpus: 0.001 is out of range" },
		{ "log_level loud\n", "1: log_level: 'loud' is not err, warning, info or debug" },
		{ "state_dir var\n", "1: state_dir: 'var' is not an absolute path" },
		{ "socket_group no-such-group-sp\n", "1: unknown socket_group 'no-such-group-sp'" },
		{ "max_clients 1\n\nmax_clients 2\n", "3: duplicate directive 'max_clients' (first on line 1)" },
		{ "max_clients 1 2\n", "1: max_clients: unexpected text after the value" },
		{ "worker_image \"abc\n", "1: worker_image: unterminated quoted value" },
		{ "worker_image \"a\\nb\"\n", "1: worker_image: bad escape" },
		{ "worker_image \"a\"b\n", "1: worker_image: unexpected text after quoted value" },
		{ "worker_image a\x01" "b\n", "1: worker_image: control character in value" },
		{ "sandbox_memory 16g\n", "1: sandbox_memory exceeds sandbox_memory_max" },
		{ "sandbox_memory 1g\nsandbox_memory_max 512m\n", "2: sandbox_memory exceeds sandbox_memory_max" },
		{ "sandbox_cpus_max 2\n#\nsandbox_cpus 3\n", "3: sandbox_cpus exceeds sandbox_cpus_max" },
		{ "sandbox_pids 5000\n", "1: sandbox_pids exceeds sandbox_pids_max" },
		{ "exec_timeout_max 1m\n", "1: exec_timeout exceeds exec_timeout_max" },
		{ "\nprices \"docker 1 x\"\n", "2: prices: " },
		{ "prices \"docker 0.1 0.2; docker\"\n", "1: prices: " },
		{ "socket /tmp/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.sock\n",
		  "1: socket path '/tmp/aaa" },
		{ "provider docker\n", "1: provider: 'docker' is not a built provider, auto or local" },
		{ "fake.retries many\n", "1: fake.retries: 'many' is not an integer" },
		{ "fake.strict maybe\n", "1: fake.strict: 'maybe' is not a boolean" },
		{ "fake.cache 1x\n", "1: fake.cache: '1x' is not a size" },
		{ "fake.socket rel/path\n", "1: fake.socket: 'rel/path' is not an absolute path" },
		{ "fake.token a\nfake.token b\n", "2: duplicate directive 'fake.token' (first on line 1)" },
		{ "other.thing 1\n", "1: unknown directive 'other.thing'" },
	};
	struct config *c;
	char err[512], want[512];
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		c = (struct config *)0x1;	/* must stay untouched on error */
		err[0] = '\0';
		assert_int_equal(load(cases[i].text, fake_providers, &c, err, sizeof(err)),
				 SP_ECONFIG);
		assert_ptr_equal(c, (struct config *)0x1);
		snprintf(want, sizeof(want), "%s:%s", tmpfile_path, cases[i].want);
		if (strncmp(err, want, strlen(want)) != 0)
			fail_msg("case %zu: got \"%s\", want prefix \"%s\"", i, err, want);
	}
}

static void
test_pool_directive(void **state)
{
	static const struct {
		const char *text;
		const char *want;	/* after "<file>:" */
	} bad[] = {
		{ "pool py\n", "1: pool: \"NAME SIZE [FIELD=VALUE ...]\" is required" },
		{ "pool \"Py 1\"\n", "1: pool: 'Py' is not a pool name" },
		{ "pool \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa 1\"\n", "1: pool: 'aaaa" },
		{ "pool \"default 1\"\n", "1: pool: the name 'default' is pool_size's pool" },
		{ "pool \"py 1\"\n\npool \"py 2\"\n", "3: pool: duplicate pool 'py' (first on line 1)" },
		{ "pool \"py x\"\n", "1: pool: size 'x' is not an integer 0..1024" },
		{ "pool \"py 1025\"\n", "1: pool: size '1025' is not an integer 0..1024" },
		{ "pool \"py -1\"\n", "1: pool: size '-1' is not an integer 0..1024" },
		{ "pool \"py 1 colour=red\"\n", "1: pool: 'colour' is not FIELD=VALUE" },
		{ "pool \"py 1 memory\"\n", "1: pool: 'memory' is not FIELD=VALUE" },
		{ "pool \"py 1 memory=1g memory=2g\"\n", "1: pool: memory given twice" },
		{ "pool \"py 1 memory=lots\"\n", "1: pool: memory 'lots' is not a size" },
		{ "pool \"py 1 tmp=0\"\n", "1: pool: tmp '0' is not a size" },
		{ "pool \"py 1 cpus=0.001\"\n", "1: pool: cpus '0.001' is not a number of CPUs" },
		{ "pool \"py 1 pids=-4\"\n", "1: pool: pids '-4' is not a positive integer" },
		{ "pool \"py 1 image=-x\"\n", "1: pool: image '-x' is not an image reference" },
		{ "pool \"py 1 image=a$b\"\n", "1: pool: image 'a$b' is not an image reference" },
		{ "pool \"py 1 provider=docker\"\n", "1: pool: provider 'docker' is not built in" },
		{ "pool \"py 1 provider=\"\n", "1: pool: provider '' is not built in" },
	};
	struct config *c;
	char err[512], want[512], text[64 * 40];
	size_t i;

	(void)state;
	assert_int_equal(load("pool_size 3\n"
			      "pool \"py 2 image=python:3.12-slim cpus=1.5 memory=1g\"\n"
			      "pool\t\"small-1  0  tmp=64m  provider=fake\"  # none for now\n",
			      fake_providers, &c, err, sizeof(err)), 0);
	assert_int_equal(c->pool_size, 3);
	assert_int_equal(c->npools, 2);
	assert_string_equal(c->pools[0].name, "py");
	assert_int_equal(c->pools[0].size, 2);
	assert_string_equal(c->pools[0].spec,
			    "{\"cpus\":1.5,\"image\":\"python:3.12-slim\",\"memory\":1073741824}");
	assert_int_equal(c->pools[0].line, 2);
	assert_string_equal(c->pools[1].name, "small-1");
	assert_int_equal(c->pools[1].size, 0);
	assert_string_equal(c->pools[1].spec, "{\"provider\":\"fake\",\"tmp\":67108864}");
	config_free(c);
	/* None by default; a template-less pool is the default template's. */
	assert_int_equal(load("pool \"plain 1\"\n", NULL, &c, err, sizeof(err)), 0);
	assert_int_equal(c->pool_size, 0);
	assert_int_equal(c->npools, 1);
	assert_string_equal(c->pools[0].spec, "{}");
	config_free(c);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		c = (struct config *)0x1;
		err[0] = '\0';
		assert_int_equal(load(bad[i].text, fake_providers, &c, err, sizeof(err)),
				 SP_ECONFIG);
		assert_ptr_equal(c, (struct config *)0x1);
		snprintf(want, sizeof(want), "%s:%s", tmpfile_path, bad[i].want);
		if (strncmp(err, want, strlen(want)) != 0)
			fail_msg("case %zu: got \"%s\", want prefix \"%s\"", i, err, want);
	}
	/* At most CONFIG_POOLS_MAX. */
	text[0] = '\0';
	for (i = 0; i <= CONFIG_POOLS_MAX; i++)
		snprintf(text + strlen(text), sizeof(text) - strlen(text), "pool \"p%zu 1\"\n", i);
	assert_int_equal(load(text, NULL, &c, err, sizeof(err)), SP_ECONFIG);
	snprintf(want, sizeof(want), "%s:%d: pool: more than %d pools", tmpfile_path,
		 CONFIG_POOLS_MAX + 1, CONFIG_POOLS_MAX);
	assert_string_equal(err, want);
}

static void
test_long_line_and_nul(void **state)
{
	struct config *c = (struct config *)0x1;
	char err[512], want[256], *buf;
	size_t len = 5000;

	buf = malloc(len + 32);
	assert_non_null(buf);
	strcpy(buf, "max_clients 1\n# ");
	memset(buf + strlen(buf), 'x', len);
	buf[16 + len] = '\n';
	buf[17 + len] = '\0';
	assert_int_equal(load(buf, NULL, &c, err, sizeof(err)), SP_ECONFIG);
	snprintf(want, sizeof(want), "%s:2: line longer than 4096 bytes", tmpfile_path);
	assert_string_equal(err, want);
	free(buf);

	write_file("max_clients 1\nmax_body 1\0m\n", 27);
	assert_int_equal(config_load(tmpfile_path, NULL, &c, err, sizeof(err)), SP_ECONFIG);
	snprintf(want, sizeof(want), "%s:2: NUL byte in line", tmpfile_path);
	assert_string_equal(err, want);

	/* A file that cannot be opened names the file, no line. */
	assert_int_equal(config_load("/nonexistent/sandpitd.conf", NULL, &c, err, sizeof(err)),
			 SP_ECONFIG);
	assert_string_equal(err, "/nonexistent/sandpitd.conf: No such file or directory");
	/* A directory opens but cannot be read. */
	assert_int_equal(config_load(tmpdir, NULL, &c, err, sizeof(err)), SP_ECONFIG);
	assert_non_null(strstr(err, "read error: Is a directory"));
	/* A NULL or tiny error buffer is fine. */
	assert_int_equal(load("bogus 1\n", NULL, &c, NULL, 0), SP_ECONFIG);
	assert_int_equal(load("bogus 1\n", NULL, &c, err, 4), SP_ECONFIG);
	assert_int_equal(strlen(err), 3);
	assert_ptr_equal(c, (struct config *)0x1);
}

static void
test_provider_directives(void **state)
{
	const struct sp_provider_ops *const broken[] = { &broken_ops, NULL };
	struct config *c = NULL;
	char err[256];

	/* Defaults only, normalised: sizes in bytes, booleans true/false. */
	assert_int_equal(config_load(NULL, fake_providers, &c, err, sizeof(err)), 0);
	assert_string_equal(config_get(c, "fake.socket"), "/var/run/fake.sock");
	assert_string_equal(config_get(c, "fake.network"), "fakenet");
	assert_string_equal(config_get(c, "fake.retries"), "3");
	assert_string_equal(config_get(c, "fake.cache"), "1048576");
	assert_string_equal(config_get(c, "fake.strict"), "true");
	assert_null(config_get(c, "fake.token"));
	assert_null(config_get(c, "max_clients"));
	assert_int_equal(c->nkv, 5);
	config_free(c);

	assert_int_equal(load("fake.retries -7\nfake.cache 2k\nfake.strict OFF\n"
			      "fake.token \"s3cr#t\"\nprovider fake\nfake.network n2\n",
			      fake_providers, &c, err, sizeof(err)), 0);
	assert_string_equal(config_get(c, "fake.retries"), "-7");
	assert_string_equal(config_get(c, "fake.cache"), "2048");
	assert_string_equal(config_get(c, "fake.strict"), "false");
	assert_string_equal(config_get(c, "fake.token"), "s3cr#t");
	assert_string_equal(config_get(c, "fake.network"), "n2");
	assert_string_equal(config_get(c, "fake.socket"), "/var/run/fake.sock");
	assert_string_equal(c->default_provider, "fake");
	assert_int_equal(c->nkv, 6);
	config_free(c);

	/* Without the provider its directives are unknown. */
	assert_int_equal(load("fake.retries 1\n", NULL, &c, err, sizeof(err)), SP_ECONFIG);

	/* A provider shipping a bad default is caught, not silently kept. */
	assert_int_equal(config_load(NULL, broken, &c, err, sizeof(err)), SP_ECONFIG);
	assert_non_null(strstr(err, "built-in default of broken.size"));
}

static void
test_parse_size(void **state)
{
	int64_t v;

	assert_int_equal(config_parse_size("0", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(config_parse_size("1024", &v), 0);
	assert_int_equal(v, 1024);
	assert_int_equal(config_parse_size("512k", &v), 0);
	assert_int_equal(v, 512 * 1024);
	assert_int_equal(config_parse_size("64M", &v), 0);
	assert_int_equal(v, 64LL << 20);
	assert_int_equal(config_parse_size("1g", &v), 0);
	assert_int_equal(v, 1LL << 30);
	assert_int_equal(config_parse_size("2T", &v), 0);
	assert_int_equal(v, 2LL << 40);
	assert_int_equal(config_parse_size("9223372036854775807", &v), 0);
	assert_int_equal(v, INT64_MAX);
	assert_int_equal(config_parse_size("8388607t", &v), 0);		/* (2^63-1) >> 40 */
	assert_int_equal(v, 8388607LL << 40);

	v = 42;
	assert_int_equal(config_parse_size("9223372036854775808", &v), SP_ECONFIG);
	assert_int_equal(config_parse_size("18446744073709551616", &v), SP_ECONFIG);
	assert_int_equal(config_parse_size("99999999999999999999999", &v), SP_ECONFIG);
	assert_int_equal(config_parse_size("8388608t", &v), SP_ECONFIG);
	assert_int_equal(config_parse_size("8589934592g", &v), SP_ECONFIG);
	assert_int_equal(config_parse_size("", &v), SP_ECONFIG);
	assert_int_equal(config_parse_size(NULL, &v), SP_ECONFIG);
	assert_int_equal(config_parse_size("-1", &v), SP_ECONFIG);
	assert_int_equal(config_parse_size("+1", &v), SP_ECONFIG);
	assert_int_equal(config_parse_size(" 1", &v), SP_ECONFIG);
	assert_int_equal(config_parse_size("1 ", &v), SP_ECONFIG);
	assert_int_equal(config_parse_size("k", &v), SP_ECONFIG);
	assert_int_equal(config_parse_size("1kb", &v), SP_ECONFIG);
	assert_int_equal(config_parse_size("1x", &v), SP_ECONFIG);
	assert_int_equal(config_parse_size("1.5g", &v), SP_ECONFIG);
	assert_int_equal(config_parse_size("0x10", &v), SP_ECONFIG);
	assert_int_equal(v, 42);	/* untouched on error */
}

static void
test_parse_duration(void **state)
{
	uint64_t v;

	assert_int_equal(config_parse_duration("0", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(config_parse_duration("500ms", &v), 0);
	assert_int_equal(v, 500);
	assert_int_equal(config_parse_duration("30s", &v), 0);
	assert_int_equal(v, 30000);
	assert_int_equal(config_parse_duration("5m", &v), 0);
	assert_int_equal(v, 300000);
	assert_int_equal(config_parse_duration("1h", &v), 0);
	assert_int_equal(v, 3600000);
	assert_int_equal(config_parse_duration("2d", &v), 0);
	assert_int_equal(v, 172800000);
	assert_int_equal(config_parse_duration("18446744073709551615ms", &v), 0);
	assert_int_equal(v, UINT64_MAX);

	v = 42;
	assert_int_equal(config_parse_duration("18446744073709551616ms", &v), SP_ECONFIG);
	assert_int_equal(config_parse_duration("18446744073709551615s", &v), SP_ECONFIG);
	assert_int_equal(config_parse_duration("213503982335d", &v), SP_ECONFIG);
	assert_int_equal(config_parse_duration("10", &v), SP_ECONFIG);
	assert_int_equal(config_parse_duration("", &v), SP_ECONFIG);
	assert_int_equal(config_parse_duration(NULL, &v), SP_ECONFIG);
	assert_int_equal(config_parse_duration("s", &v), SP_ECONFIG);
	assert_int_equal(config_parse_duration("-1s", &v), SP_ECONFIG);
	assert_int_equal(config_parse_duration("1.5s", &v), SP_ECONFIG);
	assert_int_equal(config_parse_duration("1sec", &v), SP_ECONFIG);
	assert_int_equal(config_parse_duration("1S", &v), SP_ECONFIG);
	assert_int_equal(config_parse_duration("1 s", &v), SP_ECONFIG);
	assert_int_equal(config_parse_duration("1msx", &v), SP_ECONFIG);
	assert_int_equal(v, 42);
}

static char *
read_example(void)
{
	const char *src = getenv("SANDPIT_SOURCE_DIR");
	char path[PATH_MAX];
	char *buf;
	long len;
	FILE *f;

	if (src == NULL)
		return NULL;
	snprintf(path, sizeof(path), "%s/config/sandpitd.conf.example", src);
	f = fopen(path, "r");
	if (f == NULL)
		fail_msg("cannot open %s", path);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	len = ftell(f);
	assert_true(len > 0);
	rewind(f);
	buf = calloc(1, (size_t)len + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)len, f), (size_t)len);
	fclose(f);
	return buf;
}

static void
test_example_file(void **state)
{
	struct config *c = NULL, *def = NULL;
	char err[512], *text, *out, *line, *save;
	size_t n = 0;

	/* CTest sets SANDPIT_SOURCE_DIR; run by hand without it, there is no file to read. */
	if ((text = read_example()) == NULL)
		skip();
	/* As shipped: comments only, so it parses. */
	assert_int_equal(load(text, fake_providers, &c, err, sizeof(err)), 0);
	config_free(c);

	/*
	 * Uncommented ("#name value" → "name value"): the documented defaults
	 * must parse and equal the built-in ones. socket_group names a group
	 * this host may not have, and worker_binary's default depends on where
	 * the binary lives, so those two stay comments.
	 */
	out = calloc(1, strlen(text) * 2 + 1);
	assert_non_null(out);
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		/* Provider directives (docker.*) are their providers' to check, and
		 * the embedder's example URL is not a default. */
		bool provider = memchr(line, '.', strcspn(line, " ")) != NULL;

		if (line[0] == '#' && line[1] >= 'a' && line[1] <= 'z' && !provider &&
		    strncmp(line, "#memory_embedder_", 17) != 0 &&
		    strncmp(line, "#pool ", 6) != 0 &&
		    strncmp(line, "#socket_group ", 14) != 0 &&
		    strncmp(line, "#worker_binary ", 15) != 0 &&
		    strncmp(line, "#worker_image ", 14) != 0) {
			line++;
			n++;
		}
		strcat(out, line);
		strcat(out, "\n");
	}
	assert_int_equal(n, 28 + 19);
	if (load(out, NULL, &c, err, sizeof(err)) != 0)
		fail_msg("uncommented example: %s", err);
	assert_int_equal(config_load(NULL, NULL, &def, err, sizeof(err)), 0);
	if (geteuid() == 0) {
		assert_string_equal(c->state_dir, def->state_dir);
		assert_string_equal(c->socket_path, def->socket_path);
	}
	assert_int_equal(c->max_clients, def->max_clients);
	assert_int_equal(c->max_body, def->max_body);
	assert_int_equal(c->max_header, def->max_header);
	assert_int_equal(c->log_level, def->log_level);
	assert_string_equal(c->default_provider, def->default_provider);
	assert_int_equal(c->max_sandboxes, def->max_sandboxes);
	assert_int_equal(c->tenant_max_sandboxes, def->tenant_max_sandboxes);
	assert_int_equal(c->max_starts, def->max_starts);
	assert_int_equal(c->reconcile_interval_ms, def->reconcile_interval_ms);
	assert_int_equal(c->worker_port, def->worker_port);
	assert_string_equal(c->worker_listen, def->worker_listen);
	assert_int_equal(c->worker_token_ttl_ms, def->worker_token_ttl_ms);
	assert_int_equal(c->worker_idle_timeout_ms, def->worker_idle_timeout_ms);
	assert_int_equal(c->worker_poll_ms, def->worker_poll_ms);
	assert_int_equal(c->worker_max_body, def->worker_max_body);
	assert_int_equal(c->sandbox_memory, def->sandbox_memory);
	assert_int_equal(c->sandbox_memory_max, def->sandbox_memory_max);
	assert_int_equal(c->sandbox_cpus, def->sandbox_cpus);
	assert_int_equal(c->sandbox_cpus_max, def->sandbox_cpus_max);
	assert_int_equal(c->sandbox_pids, def->sandbox_pids);
	assert_int_equal(c->sandbox_pids_max, def->sandbox_pids_max);
	assert_int_equal(c->sandbox_nofile, def->sandbox_nofile);
	assert_int_equal(c->sandbox_tmp, def->sandbox_tmp);
	assert_int_equal(c->sandbox_work, def->sandbox_work);
	assert_int_equal(c->exec_timeout_ms, def->exec_timeout_ms);
	assert_int_equal(c->exec_timeout_max_ms, def->exec_timeout_max_ms);
	assert_memory_equal(&c->memory, &def->memory, sizeof(c->memory));
	config_free(c);
	config_free(def);
	free(out);
	free(text);
}

/*
 * config/sandpitd.service: the lines the daemon relies on are there, and
 * `systemd-analyze verify` (when installed) has nothing to say about it. The
 * binary is not installed here, so ExecStart is pointed at /bin/true.
 */
static void
test_service_file(void **state)
{
	static const char *const need[] = {
		"Type=notify\n", "ExecStart=/usr/local/bin/sandpitd -f /etc/sandpit/sandpitd.conf\n",
		"ExecReload=/bin/kill -HUP $MAINPID\n", "WatchdogSec=30s\n", "Restart=on-failure\n",
		"RuntimeDirectory=sandpit\n", "StateDirectory=sandpit\n", "NoNewPrivileges=yes\n",
		"ProtectSystem=strict\n", "MemoryDenyWriteExecute=yes\n",
		"RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK\n",
		"CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_CHOWN CAP_DAC_OVERRIDE CAP_FOWNER\n",
	};
	const char *src = getenv("SANDPIT_SOURCE_DIR");
	char path[PATH_MAX], unit[PATH_MAX], cmd[PATH_MAX * 2], out[4096];
	char *text, *exec;
	size_t i, n;
	FILE *f;

	if (src == NULL)
		skip();
	snprintf(path, sizeof(path), "%s/config/sandpitd.service", src);
	f = fopen(path, "r");
	assert_non_null(f);
	text = calloc(1, 65536);
	assert_non_null(text);
	n = fread(text, 1, 65535, f);
	fclose(f);
	assert_true(n > 0);
	for (i = 0; i < sizeof(need) / sizeof(need[0]); i++)
		if (strstr(text, need[i]) == NULL)
			fail_msg("sandpitd.service lacks %s", need[i]);

	if (access("/usr/bin/systemd-analyze", X_OK) != 0) {
		free(text);
		skip();
	}
	exec = strstr(text, "ExecStart=/usr/local/bin/sandpitd");
	assert_non_null(exec);
	/* Write the unit with that one line replaced. */
	snprintf(unit, sizeof(unit), "%s/sp-test.service", tmpdir);
	f = fopen(unit, "w");
	assert_non_null(f);
	*exec = '\0';
	fputs(text, f);
	fputs("ExecStart=/bin/true\n", f);
	fputs(strchr(exec + 1, '\n') + 1, f);
	assert_int_equal(fclose(f), 0);

	snprintf(cmd, sizeof(cmd), "cd %s && systemd-analyze verify %s 2>&1", tmpdir, unit);
	f = popen(cmd, "r");
	assert_non_null(f);
	n = fread(out, 1, sizeof(out) - 1, f);
	out[n] = '\0';
	assert_int_equal(pclose(f), 0);
	unlink(unit);
	if (n != 0)
		fail_msg("systemd-analyze verify: %s", out);
	free(text);
}

/* xorshift64*: deterministic, so a failure reproduces. */
static uint64_t
rng(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ULL;
}

static void
test_random_input(void **state)
{
	static const char *const words[] = {
		"max_clients", "sandbox_cpus", "sandbox_memory", "exec_timeout", "socket",
		"fake.retries", "fake.strict", "fake.cache", "log_level", "state_dir",
		"\"", "\\", "#", " ", "\t", "\n", "1", "1.5", "99999999999999999999", "k",
		"ms", "/abs", "yes", "\r", "\0",
	};
	uint64_t seed = 0x5eed5a4d01ULL;
	char buf[600], err[512];
	struct config *c;
	size_t len, i, k;
	int r, ok = 0;

	for (i = 0; i < 3000; i++) {
		len = rng(&seed) % 512;
		for (k = 0; k < len;) {
			if (rng(&seed) % 3 == 0) {
				buf[k++] = (char)rng(&seed);
			} else {
				const char *w = words[rng(&seed) % (sizeof(words) / sizeof(words[0]))];
				size_t wl = strlen(w) ? strlen(w) : 1;

				if (k + wl > len)
					break;
				memcpy(buf + k, w, wl);
				k += wl;
			}
		}
		write_file(buf, k);
		c = NULL;
		r = config_load(tmpfile_path, fake_providers, &c, err, sizeof(err));
		if (r == 0) {
			assert_non_null(c);
			ok++;
			config_free(c);
		} else {
			assert_int_equal(r, SP_ECONFIG);
			assert_null(c);
			/* Every error names the file. */
			assert_memory_equal(err, tmpfile_path, strlen(tmpfile_path));
		}
	}
	/* Some inputs (blank, comments only) must parse, or the generator is broken. */
	print_message("random input: %d of 3000 parsed, the rest SP_ECONFIG\n", ok);
	assert_true(ok > 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults_root_or_not),
		cmocka_unit_test(test_defaults_nonroot),
		cmocka_unit_test(test_grammar),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_pool_directive),
		cmocka_unit_test(test_long_line_and_nul),
		cmocka_unit_test(test_provider_directives),
		cmocka_unit_test(test_parse_size),
		cmocka_unit_test(test_parse_duration),
		cmocka_unit_test(test_example_file),
		cmocka_unit_test(test_service_file),
		cmocka_unit_test(test_random_input),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
