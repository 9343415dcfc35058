/* agentsim: simulates a fleet of inventory agents uploading to a beacon over
 * mutual TLS. Shared types of the simulator's parts. */
#ifndef AGENTSIM_H
#define AGENTSIM_H

#include <netinet/in.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

enum sim_mode { MODE_FULL, MODE_RESUME, MODE_KEEPALIVE, MODE_IDLE };

/* Why an upload or connection failed; each kind is counted apart so a
 * result shows whether the server refused, broke or was merely slow. */
enum err_kind {
	ERR_CONNECT,   /* TCP connect refused or failed */
	ERR_HANDSHAKE, /* TLS handshake failed */
	ERR_STATUS,    /* HTTP status not the expected one */
	ERR_TIMEOUT,   /* a phase took longer than --timeout */
	ERR_CLOSED,    /* the server closed or reset mid-request */
	ERR_PROTOCOL,  /* a response we could not parse */
	ERR_OVERLOAD,  /* open loop: arrivals dropped, queue full */
	ERR_KINDS
};

extern const char *const err_kind_names[ERR_KINDS];

#define SIM_MAX_EXPECT 4

struct sim_options {
	struct sockaddr_in addr;
	struct sockaddr_in source; /* sin_family 0: the kernel's choice */
	char host[256 + 8];	   /* Host header (and SNI when --sni) */
	const char *sni;
	enum sim_mode mode;
	int tls; /* 13 or 12 */
	const char *ciphers;
	unsigned certs;
	const char *ca_cert, *ca_key, *cache_dir;
	const char *server_ca;
	unsigned concurrency, threads;
	double duration_s;
	uint64_t requests; /* 0: until --duration */
	double rate;	   /* > 0: open loop, arrivals per second */
	bool burst;	   /* open loop: all --requests arrive at the start */
	size_t body_min, body_max;
	int expect[SIM_MAX_EXPECT];
	int n_expect;
	double timeout_s;
	const char *ready_file; /* idle: created once all are connected */
	bool quiet;
	bool stages; /* record where each upload's time went (stages.c) */
	/* GET mode (--method GET): downloads instead of uploads */
	bool get;
	const char *path;	       /* request path; {device} is the agent's name */
	const char *if_modified_since; /* sent by up-to-date agents */
	const char *if_none_match;     /* sent by up-to-date agents */
	double stale;		       /* fraction of polls from out-of-date agents */
	long long expect_length;       /* >= 0: every 200 carries this many bytes */
	uint64_t warmup;	       /* requests before the measured window */
	int server_pid;		       /* > 0: report its CPU time over the window */
	const char *body_file;	       /* every body is this file's bytes */
	/* --dpdk: beacond's own TCP stack on a DPDK port as the client */
	const char *dpdk_eal;	  /* EAL arguments; NULL: kernel sockets */
	struct in_addr dpdk_addr; /* the stack's address */
	unsigned dpdk_prefix;	  /* and its prefix length */
};

/* Latency histogram: log-linear buckets, 64 per power of two (~1.6%). */
#define HIST_BUCKETS (64 + 40 * 64)
struct hist {
	uint64_t count[HIST_BUCKETS];
	uint64_t total;
};
void hist_add(struct hist *h, uint64_t us);
void hist_merge(struct hist *into, const struct hist *from);
double hist_quantile_ms(const struct hist *h, double q);

/* Counters a worker thread bumps and the main thread reads for progress. */
struct sim_stats {
	_Atomic uint64_t handshakes, resumed, uploads, body_bytes;
	_Atomic uint64_t http_503;	     /* also counted as a status error unless expected */
	_Atomic uint64_t http_200, http_304; /* GET mode: full answers, not modified */
	_Atomic uint64_t open_conns;
	_Atomic uint64_t errors[ERR_KINDS];
};

/* Agent credentials, DER, pointing into the cache file's mapping. */
struct agent_cred {
	const unsigned char *cert, *key;
	uint16_t cert_len, key_len;
};

struct agent_set {
	struct agent_cred *creds;
	unsigned count;
	void *map;
	size_t map_len;
};

int agents_load_or_make(struct agent_set *set, const struct sim_options *o);
void agents_release(struct agent_set *set);
void agent_name(unsigned index, char *buf, size_t len);

/* A read-only pool of inventory-like bytes that request bodies are cut from. */
struct body_pool {
	unsigned char *bytes;
	size_t len;
};
int body_pool_make(struct body_pool *pool, size_t want);
/* The pool is one file's bytes (--body-file), which every body then is. */
int body_pool_load(struct body_pool *pool, const char *path);

/* --stages (stages.c): each upload's time from arrival to answer, cut at the
 * instants the client sees, in microseconds. */
enum stage {
	STAGE_CLIENT_WAIT,
	STAGE_TCP,
	STAGE_SERVER_FIRST,
	STAGE_CLIENT_HS,
	STAGE_RESPONSE,
	STAGES
};
struct stage_record {
	uint32_t us[STAGES];
	uint32_t total_us;
};
struct stage_log {
	struct stage_record *rec;
	size_t n, cap;
	uint64_t dropped;
};
void stage_log_add(struct stage_log *l, const struct stage_record *r);
void stage_log_free(struct stage_log *l);

struct io_ops;

struct sim_thread {
	unsigned index;
	const struct sim_options *opt;
	const struct agent_set *agents;
	const struct body_pool *bodies;
	struct sim_stats stats;
	struct hist latency;
	struct stage_log stages; /* --stages */
	void *wolf_ctx;		 /* WOLFSSL_CTX *, shared read-only */
	const struct io_ops *io; /* how connections reach the server (io.h) */
	int failed;
};

/* Set by the main thread when the run is over; workers stop soon after. */
extern atomic_bool sim_stop;
/* Uploads started so far across threads, against --requests. */
extern _Atomic uint64_t sim_started;
/* Idle mode: connections established across threads. */
extern _Atomic uint64_t sim_idle_ready;
/* False during --warmup: nothing is counted yet. sim_finished: requests
 * finished so far (counted with --warmup only); sim_window_ns: when the
 * warm-up's last one finished. */
extern atomic_bool sim_measuring;
extern _Atomic uint64_t sim_finished, sim_window_ns;

void *sim_thread_run(void *arg);
/* Prints the merged --stages report as a JSON member (stages.c). */
void stage_report(const struct sim_thread *t, unsigned threads);
uint64_t now_ns(void);

#endif
