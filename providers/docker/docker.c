/* The Docker provider (scaffold: every operation refuses until it lands). */
#include <errno.h>
#include <sandpit/provider.h>

static int
docker_init(struct sp_provider *p, sp_done_cb cb, void *arg)
{
	return -ENOTSUP;
}

const struct sp_provider_ops sp_docker_provider = {
	.name = "docker",
	.init = docker_init,
};
