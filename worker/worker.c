/* sandpit-worker (scaffold). */
int
main(void)
{
	return 1;
}
