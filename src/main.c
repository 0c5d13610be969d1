/* sandpitd: the composition root (scaffold; wired up as modules land). */
#include <stdio.h>

int
main(void)
{
	fprintf(stderr, "sandpitd: not built yet\n");
	return 1;
}
