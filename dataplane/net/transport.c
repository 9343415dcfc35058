/* Dispatch from the seam to the transport that runs. */
#include <errno.h>
#include <string.h>

#include "transport-internal.h"

int transport_send(struct transport_conn *tc, const void *buf, size_t len)
{
	return tc->t->ops->send(tc, buf, len);
}

void transport_pause(struct transport_conn *tc)
{
	tc->t->ops->pause(tc);
}

void transport_resume(struct transport_conn *tc)
{
	tc->t->ops->resume(tc);
}

void transport_close(struct transport_conn *tc)
{
	tc->t->ops->close(tc);
}

void transport_abort(struct transport_conn *tc)
{
	tc->t->ops->abort(tc);
}

void transport_stop_accepting(struct transport *t)
{
	t->ops->stop_accepting(t);
}

void transport_accept_ready(struct transport *t)
{
	if (t->ops->accept_ready)
		t->ops->accept_ready(t);
}

int transport_connect(struct transport *t, const struct sockaddr_in *dst, void *upper,
		      struct transport_conn **out)
{
	return t->ops->connect ? t->ops->connect(t, dst, upper, out) : -EOPNOTSUPP;
}

void transport_free(struct transport *t)
{
	t->ops->free(t);
}

unsigned transport_conn_count(const struct transport *t)
{
	return t->conns;
}

int transport_poll(struct transport *t, uint64_t now_ms)
{
	return t->ops->poll ? t->ops->poll(t, now_ms) : 0;
}

void transport_net_stats(const struct transport *t, struct transport_net_stats *out)
{
	if (t->ops->net_stats)
		t->ops->net_stats(t, out);
	else
		memset(out, 0, sizeof *out);
}

int transport_busy_polls(const struct transport *t)
{
	return t->ops->poll != NULL;
}
