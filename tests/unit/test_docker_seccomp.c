/*
 * seccomp/sandbox.json, checked twice: as data (an allow-list whose default
 * is EPERM, none of the forbidden calls allowed, clone only without namespace
 * flags, clone3 ENOSYS) and in force (a child process loads the profile
 * through libseccomp the way Docker does and proves the forbidden calls fail
 * while fork, exec-free shell work and plain clone still succeed).
 */
#include <errno.h>
#include <linux/sched.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <seccomp.h>

static const char *const forbidden[] = {
	"ptrace", "mount", "umount2", "unshare", "setns", "keyctl", "add_key", "request_key",
	"bpf", "perf_event_open", "userfaultfd", "kexec_load", "kexec_file_load", "init_module",
	"finit_module", "delete_module", "open_by_handle_at", "name_to_handle_at",
	"process_vm_readv", "process_vm_writev", "io_uring_setup", "io_uring_enter",
	"io_uring_register", "pivot_root", "chroot", "swapon", "reboot", "clock_settime",
	"settimeofday", "acct", "quotactl", "syslog", "iopl", "ioperm", "lookup_dcookie",
	"fanotify_init", "pidfd_getfd", "mbind", "set_mempolicy", "move_pages",
};

static json_t *profile;

static int
load(void **state)
{
	const char *src = getenv("SANDPIT_SOURCE_DIR");
	char path[1024];

	snprintf(path, sizeof(path), "%s/seccomp/sandbox.json", src != NULL ? src : ".");
	profile = json_load_file(path, JSON_REJECT_DUPLICATES, NULL);
	return profile == NULL ? -1 : 0;
}

static int
unload(void **state)
{
	json_decref(profile);
	return 0;
}

static bool
rule_names(json_t *rule, const char *name)
{
	json_t *n;
	size_t i;

	json_array_foreach(json_object_get(rule, "names"), i, n)
		if (strcmp(json_string_value(n), name) == 0)
			return true;
	return false;
}

static void
test_data(void **state)
{
	json_t *rule, *arches;
	size_t i, j;
	bool clone_ok = false, clone3_enosys = false;

	assert_string_equal(json_string_value(json_object_get(profile, "defaultAction")),
	    "SCMP_ACT_ERRNO");
	assert_int_equal(json_integer_value(json_object_get(profile, "defaultErrnoRet")), 1);
	arches = json_object_get(profile, "archMap");
	assert_int_equal(json_array_size(arches), 2);

	json_array_foreach(json_object_get(profile, "syscalls"), i, rule) {
		const char *action = json_string_value(json_object_get(rule, "action"));

		if (strcmp(action, "SCMP_ACT_ALLOW") == 0)
			for (j = 0; j < sizeof(forbidden) / sizeof(forbidden[0]); j++)
				if (rule_names(rule, forbidden[j]))
					fail_msg("%s is allowed", forbidden[j]);
		if (rule_names(rule, "clone")) {
			json_t *arg = json_array_get(json_object_get(rule, "args"), 0);

			assert_string_equal(json_string_value(json_object_get(arg, "op")),
			    "SCMP_CMP_MASKED_EQ");
			assert_int_equal(json_integer_value(json_object_get(arg, "value")),
			    CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |
			    CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWCGROUP);
			clone_ok = true;
		}
		if (rule_names(rule, "clone3")) {
			assert_string_equal(action, "SCMP_ACT_ERRNO");
			assert_int_equal(json_integer_value(json_object_get(rule, "errnoRet")),
			    ENOSYS);
			clone3_enosys = true;
		}
	}
	assert_true(clone_ok);
	assert_true(clone3_enosys);
}

static enum scmp_compare
op_of(const char *op)
{
	if (strcmp(op, "SCMP_CMP_NE") == 0)
		return SCMP_CMP_NE;
	if (strcmp(op, "SCMP_CMP_EQ") == 0)
		return SCMP_CMP_EQ;
	if (strcmp(op, "SCMP_CMP_MASKED_EQ") == 0)
		return SCMP_CMP_MASKED_EQ;
	fail_msg("unexpected op %s", op);
	return SCMP_CMP_EQ;
}

/* Build the filter as Docker does: each rule's names, its action, its args ANDed. */
static scmp_filter_ctx
build_filter(void)
{
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ERRNO(1));
	json_t *rule, *n, *arg;
	size_t i, j, k;

	assert_non_null(ctx);
	json_array_foreach(json_object_get(profile, "syscalls"), i, rule) {
		const char *a = json_string_value(json_object_get(rule, "action"));
		uint32_t action = strcmp(a, "SCMP_ACT_ALLOW") == 0 ? SCMP_ACT_ALLOW :
		    SCMP_ACT_ERRNO((uint32_t)json_integer_value(json_object_get(rule, "errnoRet")));
		struct scmp_arg_cmp cmp[6];
		unsigned ncmp = 0;

		json_array_foreach(json_object_get(rule, "args"), k, arg) {
			assert_true(ncmp < 6);
			cmp[ncmp].arg = (unsigned)json_integer_value(json_object_get(arg, "index"));
			cmp[ncmp].op = op_of(json_string_value(json_object_get(arg, "op")));
			cmp[ncmp].datum_a = (scmp_datum_t)json_integer_value(json_object_get(arg,
			    "value"));
			cmp[ncmp].datum_b = (scmp_datum_t)json_integer_value(json_object_get(arg,
			    "valueTwo"));
			/* Docker's MASKED_EQ (value, valueTwo) is libseccomp's (mask, datum). */
			ncmp++;
		}
		json_array_foreach(json_object_get(rule, "names"), j, n) {
			int nr = seccomp_syscall_resolve_name(json_string_value(n));

			if (nr == __NR_SCMP_ERROR)
				continue;	/* another architecture's call */
			assert_int_equal(seccomp_rule_add_array(ctx, action, nr, ncmp,
			    ncmp > 0 ? cmp : NULL), 0);
		}
	}
	return ctx;
}

static int
child_checks(void)
{
	pid_t pid;
	int st;

#define EXPECT(cond) do { if (!(cond)) { dprintf(2, "failed: %s (errno %d)\n", #cond, errno); \
	return 1; } } while (0)
	/* Forbidden. */
	EXPECT(unshare(CLONE_NEWUSER) == -1 && errno == EPERM);
	EXPECT(ptrace(PTRACE_TRACEME, 0, NULL, NULL) == -1 && errno == EPERM);
	EXPECT(mount("none", "/tmp", "tmpfs", 0, NULL) == -1 && errno == EPERM);
	EXPECT(syscall(SYS_keyctl, 0, 0, 0, 0, 0) == -1 && errno == EPERM);
	EXPECT(syscall(SYS_bpf, 0, NULL, 0) == -1 && errno == EPERM);
	EXPECT(syscall(SYS_setns, 0, 0) == -1 && errno == EPERM);
	EXPECT(syscall(SYS_userfaultfd, 0) == -1 && errno == EPERM);
	EXPECT(syscall(SYS_io_uring_setup, 1, NULL) == -1 && errno == EPERM);
	EXPECT(syscall(SYS_clone, CLONE_NEWNET | SIGCHLD, NULL, NULL, NULL, 0) == -1 &&
	    errno == EPERM);
	EXPECT(syscall(SYS_clone3, NULL, 0) == -1 && errno == ENOSYS);
	EXPECT(personality(PER_BSD) == -1 && errno == EPERM);
	/* Allowed. */
	EXPECT(personality(0xffffffff) != -1);
	EXPECT(getpid() > 0);
	pid = fork();
	EXPECT(pid >= 0);
	if (pid == 0)
		_exit(7);
	EXPECT(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 7);
	return 0;
#undef EXPECT
}

static void
test_in_force(void **state)
{
	scmp_filter_ctx ctx = build_filter();
	pid_t pid;
	int st;

	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || seccomp_load(ctx) != 0)
			_exit(2);
		_exit(child_checks());
	}
	seccomp_release(ctx);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_data),
		cmocka_unit_test(test_in_force),
	};

	return cmocka_run_group_tests(tests, load, unload);
}
