/* sandpit: the CLI of the control socket (scaffold). */
#include <stdio.h>

int
main(void)
{
	fprintf(stderr, "sandpit: not built yet\n");
	return 1;
}
