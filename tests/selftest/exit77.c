/* An executable that cannot run here and says so with the GNU "skipped"
 * status 77 before any case (as the DPDK tests do without root). */
int main(void)
{
	return 77;
}
