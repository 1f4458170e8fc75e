/*
 * TCP request/response load generator for bench/pod2pod.ts (what netperf's TCP_RR and TCP_CRR
 * measure), so the figures do not depend on a package this machine may lack.
 *
 *   rr server PORT LIFETIME_S
 *   rr client rr|crr SECONDS SLICE_MS NETNS_PATH,IP,PORT...
 *
 * One transaction is a 1-byte request and a 1-byte response. rr: all on one established
 * connection. crr: a new connection each time, closed by the server right after its response
 * (the server's side keeps TIME_WAIT, so the client never runs out of ports or scans TIME_WAIT
 * sockets in connect()). The request byte tells the server which: 'r' keep open, 'c' close.
 *
 * One client drives several targets, each a server in its own network namespace (setns() before
 * making a socket there): after a 0.1 s warm-up each, the targets take turns, SLICE_MS each,
 * until every one has had SECONDS. On a shared VM whose speed drifts by ±10% within seconds,
 * the targets' rates are then comparable to a percent or two, where separate runs are not.
 * The client prints one line per target, in order:
 *   target=I transactions=N seconds=S rate=R all=A   (N, S, R measured; A with the warm-up)
 * The server serves clients one after another and exits after LIFETIME_S at most.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what)
{
	fprintf(stderr, "rr: %s: %s\n", what, strerror(errno));
	exit(1);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static long number(const char *s, const char *what)
{
	char *end;
	long v = strtol(s, &end, 10);

	if (*s == '\0' || *end != '\0' || v < 0) {
		fprintf(stderr, "rr: %s must be a non-negative integer, got \"%s\"\n", what, s);
		exit(2);
	}
	return v;
}

static void nodelay(int fd)
{
	int one = 1;

	/* 1-byte writes must leave at once: Nagle would hold a request behind an unacked one. */
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
		die("TCP_NODELAY");
}

static _Noreturn void serve(int port, int lifetime)
{
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons(port) };
	int one = 1, lfd;

	/* The default action of SIGALRM ends the process: a forgotten server cannot outlive this. */
	alarm(lifetime);
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	if (lfd < 0)
		die("socket");
	if (setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
		die("SO_REUSEADDR");
	nodelay(lfd);
	if (bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
		die("bind");
	if (listen(lfd, 1024) < 0)
		die("listen");
	printf("listening %d\n", port);
	fflush(stdout);

	for (;;) {
		char buf[64];
		ssize_t n;
		int fd = accept(lfd, NULL, NULL);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			die("accept");
		}
		nodelay(fd);
		while ((n = read(fd, buf, sizeof(buf))) > 0) {
			if (write(fd, buf, n) != n)
				break;
			if (buf[n - 1] == 'c')
				break;
		}
		close(fd);
	}
}

static int dial(const struct sockaddr_in *addr, double give_up)
{
	for (;;) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);

		if (fd < 0)
			die("socket");
		nodelay(fd);
		if (connect(fd, (const struct sockaddr *)addr, sizeof(*addr)) == 0)
			return fd;
		/* Only while the server may still be starting: later, a refusal is a failure. */
		if (errno != ECONNREFUSED || now() > give_up)
			die("connect");
		close(fd);
		usleep(10000);
	}
}

struct target {
	int netns;		/* fd of the namespace to make connections in */
	struct sockaddr_in addr;
	int fd;			/* rr: the one connection */
	long count;		/* transactions in measured slices */
	double seconds;		/* time spent in measured slices */
	long all;		/* transactions, warm-up included */
};

/* One request and its response; false when the connection broke. */
static int transact(int fd, char req)
{
	char c;

	if (write(fd, &req, 1) != 1)
		return 0;
	return read(fd, &c, 1) == 1;
}

static void crr_transact(struct target *t, double give_up)
{
	char c;
	int fd = dial(&t->addr, give_up);

	if (!transact(fd, 'c'))
		die("crr transaction");
	/* Wait for the server's FIN: closing first would leave TIME_WAIT on this side. */
	if (read(fd, &c, 1) != 0)
		die("crr: server did not close");
	close(fd);
}

/* Transactions on t for `slice` seconds; returns the time it actually took. */
static double run_slice(struct target *t, int crr, double slice, double give_up, long *done)
{
	double t0 = now(), t1 = t0;
	long n = 0;

	/* Sockets belong to the namespace they are made in: crr makes one per transaction. */
	if (crr && setns(t->netns, CLONE_NEWNET) < 0)
		die("setns");
	for (;;) {
		if (crr)
			crr_transact(t, give_up);
		else if (!transact(t->fd, 'r'))
			die("rr transaction");
		n++;
		/* A clock read costs ~20 ns against microseconds per transaction. */
		if ((n & 7) == 0) {
			t1 = now();
			if (t1 - t0 >= slice)
				break;
		}
	}
	*done = n;
	t->all += n;
	return t1 - t0;
}

static int client(int crr, double seconds, double slice, struct target *targets, int n)
{
	double give_up = now() + 3, measured = 0;
	long done;
	int i;

	for (i = 0; i < n; i++) {
		if (setns(targets[i].netns, CLONE_NEWNET) < 0)
			die("setns");
		if (!crr)
			targets[i].fd = dial(&targets[i].addr, give_up);
	}
	/* Warm-up: connections, caches and the first retries while a server starts, uncounted. */
	for (i = 0; i < n; i++)
		run_slice(&targets[i], crr, 0.1, give_up, &done);
	/* Targets take turns slice by slice, so all of them see the same machine load. */
	while (measured < seconds) {
		for (i = 0; i < n; i++) {
			struct target *t = &targets[i];

			t->seconds += run_slice(t, crr, slice, 0, &done);
			t->count += done;
		}
		measured += slice;
	}
	for (i = 0; i < n; i++)
		printf("target=%d transactions=%ld seconds=%.3f rate=%.0f all=%ld\n", i, targets[i].count,
		       targets[i].seconds, targets[i].count / targets[i].seconds, targets[i].all);
	return 0;
}

static void parse_target(const char *arg, struct target *t)
{
	char buf[512], *ip, *port;

	snprintf(buf, sizeof(buf), "%s", arg);
	ip = strchr(buf, ',');
	port = ip ? strchr(ip + 1, ',') : NULL;
	if (!ip || !port) {
		fprintf(stderr, "rr: target must be NETNS_PATH,IP,PORT, got \"%s\"\n", arg);
		exit(2);
	}
	*ip++ = '\0';
	*port++ = '\0';
	memset(t, 0, sizeof(*t));
	t->addr.sin_family = AF_INET;
	t->addr.sin_port = htons(number(port, "PORT"));
	if (inet_pton(AF_INET, ip, &t->addr.sin_addr) != 1) {
		fprintf(stderr, "rr: not an IPv4 address: %s\n", ip);
		exit(2);
	}
	t->netns = open(buf, O_RDONLY | O_CLOEXEC);
	if (t->netns < 0)
		die(buf);
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	if (argc == 4 && strcmp(argv[1], "server") == 0)
		serve(number(argv[2], "PORT"), number(argv[3], "LIFETIME_S"));
	if (argc >= 6 && strcmp(argv[1], "client") == 0 && (strcmp(argv[2], "rr") == 0 || strcmp(argv[2], "crr") == 0)) {
		int n = argc - 5;
		struct target *targets = calloc(n, sizeof(*targets));

		if (!targets)
			die("calloc");
		for (int i = 0; i < n; i++)
			parse_target(argv[5 + i], &targets[i]);
		return client(strcmp(argv[2], "crr") == 0, number(argv[3], "SECONDS"),
			      number(argv[4], "SLICE_MS") / 1e3, targets, n);
	}
	fprintf(stderr, "usage: rr server PORT LIFETIME_S\n"
			"       rr client rr|crr SECONDS SLICE_MS NETNS_PATH,IP,PORT...\n");
	return 2;
}
