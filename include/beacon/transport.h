/*
 * transport: the seam between the network and everything above it. A
 * transport delivers byte streams: a connection is accepted, bytes come in,
 * bytes go out, the connection closes. The kernel transport (kernel TCP
 * through io_uring) and the DPDK transport (our own TCP over DPDK ports) both
 * implement this header; TLS, HTTP and the store never know which one runs.
 *
 * Threads: a transport instance belongs to one worker; every function and
 * every callback runs on that worker's thread.
 *
 * Buffers: bytes in are lent to the upper layer for the duration of the
 * `received` callback only; it must consume or copy them before returning.
 * Bytes out are lent to the transport by transport_send until the `sent`
 * callback: the upper layer must not touch them before, and has at most one
 * send in flight per connection.
 */
#ifndef BEACON_TRANSPORT_H
#define BEACON_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>

struct transport;
struct transport_conn;
struct ring;
struct config;

/* What the layer above is told. `upper` is what `accepted` returned. */
struct transport_events {
	/* A new connection. Returns the upper layer's state for it, or NULL to
	 * refuse it (the transport closes it at once). */
	void *(*accepted)(void *ctx, struct transport_conn *tc, const struct sockaddr *peer,
			  socklen_t peer_len);
	/* Bytes arrived; valid only during the call. */
	void (*received)(void *upper, const uint8_t *data, size_t len);
	/* The buffer of the last transport_send went out whole. */
	void (*sent)(void *upper);
	/* The connection is gone (peer closed, error, or after transport_close);
	 * `err` is 0 or a negative errno. No callback for it follows. */
	void (*closed)(void *upper, int err);
	/* How many more connections the layer above would take now (NULL: no
	 * bound). Past it the transport leaves new connections waiting
	 * unanswered (the kernel's accept queue; over DPDK the peer's
	 * retransmitted handshake ACK) rather than accept and close them. */
	unsigned (*accept_room)(void *ctx);
	/* An active open (transport_connect) completed its handshake: the
	 * connection is established. NULL where nothing connects. */
	void (*connected)(void *upper);
};

/* Starts listening on the configured address for this worker (kernel: a
 * SO_REUSEPORT socket of its own). `ctx` is passed to `accepted`. */
int transport_kernel_open(struct ring *ring, const struct config *cfg,
			  const struct transport_events *ev, void *ctx, struct transport **out);

/* The DPDK transport (dataplane/net/dpdk.c): our own TCP/IPv4 over a DPDK
 * port. transport_dpdk_init starts the EAL and the port from [dpdk]; call
 * it once, on the main thread, before any worker starts (0, or -1 with a
 * message in err). transport_dpdk_open runs on the worker's own thread
 * (it registers the thread with DPDK) and serves that worker's queue;
 * with one queue for several workers, workers past the first get a
 * transport that never accepts and does not poll. transport_dpdk_shutdown
 * stops the port and the EAL after every worker's transport is freed. */
int transport_dpdk_init(const struct config *cfg, unsigned nworkers, char *err, size_t errlen);
int transport_dpdk_open(struct ring *ring, unsigned worker_id, const struct config *cfg,
			const struct transport_events *ev, void *ctx, struct transport **out);
void transport_dpdk_shutdown(void);

/* Transports that poll (DPDK) do their receive work here, once per loop
 * turn of the worker; returns how much work was done (0: idle), or -errno.
 * The kernel transport's work arrives on the ring instead: 0. */
int transport_poll(struct transport *t, uint64_t now_ms);

/* Whether the worker must spin (poll without sleeping in the ring). */
int transport_busy_polls(const struct transport *t);

/* The layer above has room again (accept_room grew): take the connections
 * that wait. */
void transport_accept_ready(struct transport *t);

/* Stops accepting; existing connections stay until closed. */
void transport_stop_accepting(struct transport *t);
/* Frees the transport after every connection has closed. */
void transport_free(struct transport *t);

/* Sends buf[0..len) whole (the transport retries partial writes), then calls
 * `sent`. Returns 0 or -errno. */
int transport_send(struct transport_conn *tc, const void *buf, size_t len);

/* Flow control: while paused, no `received` calls arrive for this
 * connection and the peer is pushed back by TCP's window. */
void transport_pause(struct transport_conn *tc);
void transport_resume(struct transport_conn *tc);

/* Closes gracefully: after the send in flight, sends FIN and discards what
 * the peer still sends until it closes too (so the peer reads our last
 * response instead of a reset). `closed` follows. */
void transport_close(struct transport_conn *tc);

/* Closes now, dropping anything unsent (or a graceful close that lingers
 * too long). `closed` follows. */
void transport_abort(struct transport_conn *tc);

/* Active open, DPDK transport only: perf/agentsim's DPDK mode runs this
 * stack as a client, so that both ends of a benchmark are kernel-free.
 * Sends a SYN from an ephemeral port of the transport's own address to
 * dst. `upper` is the layer above's state for the connection from the
 * start. When the handshake completes `connected(upper)` is called, then
 * `received`, `sent` and `closed` as for an accepted connection; a reset
 * calls `closed(upper, -ECONNREFUSED)`, no answer after the SYN's
 * retransmissions `closed(upper, -ETIMEDOUT)`. Returns 0 with *out set, or
 * -errno: -EADDRNOTAVAIL (no free port), -ENOMEM, -EOPNOTSUPP (the kernel
 * transport: the kernel connects for itself). Over DPDK: -EOPNOTSUPP too
 * on a port with several queues (the SYN-ACK may reach another worker's)
 * or a worker without a queue; -ENETUNREACH for dst off the [dpdk] subnet
 * (no router); -EINVAL for our own or the broadcast address, or port 0.
 * A send before `connected` waits for the handshake; a close before it
 * drops the attempt (`closed(upper, 0)`). A client-only transport is
 * opened as usual, then transport_stop_accepting: its own connections
 * still receive everything. */
int transport_connect(struct transport *t, const struct sockaddr_in *dst, void *upper,
		      struct transport_conn **out);

/* Connections open on this transport. */
unsigned transport_conn_count(const struct transport *t);

/* What the DPDK transport's own TCP/IPv4 stack counts, per worker (bad
 * input is counted and dropped, never fatal). One list, X(name, help), so
 * that the struct, the sum over workers and /metrics cannot drift apart;
 * the kernel's TCP counts for itself, so the kernel transport gives zeros. */
#define TRANSPORT_NET_COUNTERS(X)                                                                  \
	X(rx_frames, "Ethernet frames received.")                                                  \
	X(rx_bad_eth, "Frames dropped: runt or chained.")                                          \
	X(rx_not_for_us, "Frames dropped: for another MAC address.")                               \
	X(rx_other_proto, "Frames dropped: neither IPv4 nor ARP.")                                 \
	X(arp_in, "ARP frames received.")                                                          \
	X(arp_bad, "ARP frames dropped as malformed.")                                             \
	X(arp_replies_sent, "ARP replies sent.")                                                   \
	X(arp_requests_sent, "ARP requests sent (gratuitous ARP included).")                       \
	X(arp_shared, "ARP news passed to the other workers.")                                     \
	X(arp_share_dropped, "ARP news dropped: a worker's ring was full.")                        \
	X(arp_from_peers, "ARP news learned from the other workers.")                              \
	X(ip_in, "IPv4 datagrams received.")                                                       \
	X(ip_bad, "IPv4 datagrams dropped: malformed header or length.")                           \
	X(ip_bad_csum, "IPv4 datagrams dropped: bad header checksum.")                             \
	X(ip_fragments, "IPv4 fragments dropped.")                                                 \
	X(ip_not_ours, "IPv4 datagrams dropped: for another address.")                             \
	X(ip_other_proto, "IPv4 datagrams dropped: neither TCP nor ICMP.")                         \
	X(icmp_in, "ICMP messages received.")                                                      \
	X(icmp_bad, "ICMP messages dropped: short or bad checksum.")                               \
	X(icmp_echo_replies, "ICMP echo replies sent.")                                            \
	X(tcp_in, "TCP segments received.")                                                        \
	X(tcp_bad, "TCP segments dropped: malformed header.")                                      \
	X(tcp_bad_csum, "TCP segments dropped: bad checksum.")                                     \
	X(tcp_no_listener, "TCP segments for a port we do not serve (reset).")                     \
	X(tcp_rst_sent, "TCP resets sent.")                                                        \
	X(syn_received, "SYNs received for the service's port.")                                   \
	X(syn_cookies_sent, "SYN-ACKs sent, each carrying a SYN cookie.")                          \
	X(syn_cookies_bad, "Handshake ACKs refused: no valid SYN cookie.")                         \
	X(tcp_accepted, "TCP connections handed to the layer above.")                              \
	X(tcp_refused, "TCP connections the layer above refused.")                                 \
	X(tcp_unacceptable, "TCP segments outside the receive window.")                            \
	X(tcp_challenge_acks, "Challenge ACKs sent (RFC 5961).")                                   \
	X(tcp_rst_in, "TCP resets received in the window.")                                        \
	X(tcp_ooo_queued, "TCP segments held out of order.")                                       \
	X(tcp_ooo_dropped, "TCP segments dropped: out-of-order queue full.")                       \
	X(tcp_dup_data, "TCP segments that brought only bytes already received.")                  \
	X(tcp_retransmits, "TCP segments retransmitted.")                                          \
	X(tcp_fast_retransmits, "TCP fast retransmits (three duplicate ACKs).")                    \
	X(tcp_rto_expiries, "TCP retransmission timeouts.")                                        \
	X(tcp_timeouts, "TCP connections given up on: no word while retransmitting.")              \
	X(tcp_window_probes, "TCP zero-window probes sent.")                                       \
	X(tcp_time_wait_reused, "TIME_WAIT connections ended early to make room.")                 \
	X(tcp_table_full, "TCP handshakes refused: connection table full.")                        \
	X(tcp_accept_held, "Handshake ACKs left unanswered: no room above; the peer resends.")     \
	X(tcp_paws_rejected, "TCP segments dropped by PAWS (an old timestamp).")                   \
	X(tcp_ts_missing, "TCP segments dropped: no timestamp where agreed.")                      \
	X(tcp_keepalive_probes, "TCP keepalive probes sent.")                                      \
	X(tcp_keepalive_drops, "TCP connections reset after unanswered keepalives.")               \
	X(tx_frames, "Frames sent.")                                                               \
	X(tx_dropped, "Frames dropped: transmit ring full.")                                       \
	X(tx_nombuf, "Frames not built: no mbuf left.")

struct transport_net_stats {
#define TRANSPORT_NET_FIELD(name, help) uint64_t name;
	TRANSPORT_NET_COUNTERS(TRANSPORT_NET_FIELD)
#undef TRANSPORT_NET_FIELD
};

/* Copies the transport's stack counters into *out (zeros for the kernel
 * transport). On the worker's thread, like everything here: the worker
 * publishes them for other threads (beacon/worker.h). */
void transport_net_stats(const struct transport *t, struct transport_net_stats *out);

#endif
