/*
 * UDP prober for bench/policy.ts: streams of small probes between pods, one every INTERVAL_US,
 * each stamped with CLOCK_MONOTONIC (the clock of Node's process.hrtime), and listeners that
 * report every probe that reaches them. Whether a probe arrives is the policy verdict it met.
 *
 *   probe INTERVAL_US LIFETIME_S
 *
 * Commands on stdin, one a line; each is answered "ok ID" (or "err ID <why>") on stdout:
 *   listen ID NETNS_PATH PORT            a UDP socket bound to 0.0.0.0:PORT in that netns
 *   send ID NETNS_PATH DST_IP PORT MODE  a stream of probes from that netns to DST_IP:PORT;
 *                                        MODE fixed: one socket, one flow for the stream's life;
 *                                        MODE fresh: a socket per probe, bound to the next port of
 *                                        10000..59999, so each probe is a new flow for conntrack
 *                                        (the fresh streams of the process share one counter: a
 *                                        port comes round again after 50,000 of their probes)
 *   stop ID                              ends the stream or listener ID
 * Output, besides the answers:
 *   s ID SEQ SENT_NS                     a probe sent (SEQ counts from 0 per stream)
 *   r LISTENER ID SEQ SENT_NS RECV_NS    a probe of stream ID received by LISTENER
 * EOF on stdin, or LIFETIME_S, ends the process: a forgotten prober cannot outlive its run.
 * A socket keeps the netns it was made in, so one thread serves pods of several namespaces.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_STREAMS 16
#define MAX_LISTENERS 16
#define MAGIC 0x6b656c70u /* "kelp" */
#define FRESH_FIRST 10000
#define FRESH_COUNT 50000

struct probe {
	uint32_t magic;
	uint32_t id;
	uint64_t seq;
	uint64_t sent_ns;
};

struct stream {
	int used;
	uint32_t id;
	int netns;
	int fd; /* fixed mode; -1 in fresh mode */
	struct sockaddr_in dst;
	uint64_t seq;
};

struct listener {
	int used;
	uint32_t id;
	int fd;
};

static struct stream streams[MAX_STREAMS];
static struct listener listeners[MAX_LISTENERS];
static int current_netns = -1; /* the netns this thread is in, as an fd we opened; -1: the initial one */
static unsigned next_fresh_port; /* offset from FRESH_FIRST */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + ts.tv_nsec;
}

static long number(const char *s, const char *what, long max)
{
	char *end;
	long v = strtol(s, &end, 10);

	if (*s == '\0' || *end != '\0' || v < 0 || v > max) {
		fprintf(stderr, "probe: %s must be an integer in 0..%ld, got \"%s\"\n", what, max, s);
		exit(2);
	}
	return v;
}

static int enter(int netns)
{
	if (netns == current_netns)
		return 0;
	if (setns(netns, CLONE_NEWNET) < 0)
		return -1;
	current_netns = netns;
	return 0;
}

static int open_netns(const char *path)
{
	return open(path, O_RDONLY | O_CLOEXEC);
}

static int udp_socket(void)
{
	return socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
}

static int bind_port(int fd, unsigned port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };

	return bind(fd, (struct sockaddr *)&a, sizeof(a));
}

static void answer_err(uint32_t id, const char *what)
{
	printf("err %u %s: %s\n", id, what, strerror(errno));
}

static void cmd_listen(uint32_t id, const char *path, unsigned port)
{
	struct listener *l = NULL;
	int ns, fd;

	for (int i = 0; i < MAX_LISTENERS; i++)
		if (!listeners[i].used) {
			l = &listeners[i];
			break;
		}
	if (!l) {
		errno = ENOSPC;
		return answer_err(id, "listen");
	}
	ns = open_netns(path);
	if (ns < 0)
		return answer_err(id, "open netns");
	if (enter(ns) < 0) {
		answer_err(id, "setns");
		close(ns);
		return;
	}
	fd = udp_socket();
	if (fd < 0 || bind_port(fd, port) < 0) {
		answer_err(id, "bind");
		if (fd >= 0)
			close(fd);
		/* The thread stays in that netns: every later socket setns()es to its own first. */
		return;
	}
	*l = (struct listener){ .used = 1, .id = id, .fd = fd };
	printf("ok %u\n", id);
}

static void cmd_send(uint32_t id, const char *path, const char *ip, unsigned port, const char *mode)
{
	struct stream *s = NULL;
	int fresh = strcmp(mode, "fresh") == 0;

	if (!fresh && strcmp(mode, "fixed") != 0) {
		errno = EINVAL;
		return answer_err(id, "mode must be fixed or fresh");
	}
	for (int i = 0; i < MAX_STREAMS; i++)
		if (!streams[i].used) {
			s = &streams[i];
			break;
		}
	if (!s) {
		errno = ENOSPC;
		return answer_err(id, "send");
	}
	*s = (struct stream){ .id = id, .fd = -1, .dst = { .sin_family = AF_INET, .sin_port = htons(port) } };
	if (inet_pton(AF_INET, ip, &s->dst.sin_addr) != 1) {
		errno = EINVAL;
		return answer_err(id, "destination address");
	}
	s->netns = open_netns(path);
	if (s->netns < 0)
		return answer_err(id, "open netns");
	if (!fresh) {
		if (enter(s->netns) < 0 || (s->fd = udp_socket()) < 0) {
			answer_err(id, "socket");
			close(s->netns);
			return;
		}
	}
	s->used = 1;
	printf("ok %u\n", id);
}

static void cmd_stop(uint32_t id)
{
	for (int i = 0; i < MAX_STREAMS; i++)
		if (streams[i].used && streams[i].id == id) {
			if (streams[i].fd >= 0)
				close(streams[i].fd);
			/* Not the netns we are in: that fd stays open until we leave it. */
			if (streams[i].netns != current_netns)
				close(streams[i].netns);
			streams[i].used = 0;
		}
	for (int i = 0; i < MAX_LISTENERS; i++)
		if (listeners[i].used && listeners[i].id == id) {
			close(listeners[i].fd);
			listeners[i].used = 0;
		}
	printf("ok %u\n", id);
}

static void command(char *line)
{
	char *argv[8];
	int argc = 0;
	uint32_t id;

	for (char *tok = strtok(line, " \t"); tok && argc < 8; tok = strtok(NULL, " \t"))
		argv[argc++] = tok;
	if (argc < 2) {
		fprintf(stderr, "probe: bad command\n");
		exit(2);
	}
	id = number(argv[1], "ID", UINT32_MAX);
	if (strcmp(argv[0], "listen") == 0 && argc == 4)
		cmd_listen(id, argv[2], number(argv[3], "PORT", 65535));
	else if (strcmp(argv[0], "send") == 0 && argc == 6)
		cmd_send(id, argv[2], argv[3], number(argv[4], "PORT", 65535), argv[5]);
	else if (strcmp(argv[0], "stop") == 0 && argc == 2)
		cmd_stop(id);
	else {
		fprintf(stderr, "probe: unknown command \"%s\" with %d arguments\n", argv[0], argc);
		exit(2);
	}
}

/* One probe of stream s; a send the datapath refuses is not an error, it is what we measure. */
static void send_probe(struct stream *s)
{
	struct probe p = { .magic = MAGIC, .id = s->id, .seq = s->seq };
	int fd = s->fd;

	if (fd < 0) {
		if (enter(s->netns) < 0 || (fd = udp_socket()) < 0)
			return;
		/* A port some other socket holds is skipped. */
		for (int tries = 0; tries < 16; tries++) {
			unsigned port = FRESH_FIRST + next_fresh_port;

			next_fresh_port = (next_fresh_port + 1) % FRESH_COUNT;
			if (bind_port(fd, port) == 0)
				break;
		}
	}
	p.sent_ns = now_ns();
	sendto(fd, &p, sizeof(p), 0, (struct sockaddr *)&s->dst, sizeof(s->dst));
	printf("s %u %llu %llu\n", s->id, (unsigned long long)s->seq, (unsigned long long)p.sent_ns);
	s->seq++;
	if (fd != s->fd)
		close(fd);
}

static void drain(struct listener *l)
{
	struct probe p;

	for (;;) {
		ssize_t n = recv(l->fd, &p, sizeof(p), 0);
		uint64_t at = now_ns();

		if (n < 0)
			return;
		if (n == sizeof(p) && p.magic == MAGIC)
			printf("r %u %u %llu %llu %llu\n", l->id, p.id, (unsigned long long)p.seq, (unsigned long long)p.sent_ns,
			       (unsigned long long)at);
	}
}

int main(int argc, char **argv)
{
	static char in[65536];
	size_t have = 0;
	uint64_t interval, next;

	if (argc != 3) {
		fprintf(stderr, "usage: probe INTERVAL_US LIFETIME_S\n");
		return 2;
	}
	interval = number(argv[1], "INTERVAL_US", 1000000) * 1000;
	if (interval == 0) {
		fprintf(stderr, "probe: INTERVAL_US must be positive\n");
		return 2;
	}
	alarm(number(argv[2], "LIFETIME_S", 86400));
	setvbuf(stdout, NULL, _IOFBF, 1 << 16);
	fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
	printf("ready\n");
	fflush(stdout);
	next = now_ns();
	for (;;) {
		struct pollfd fds[1 + MAX_LISTENERS];
		struct listener *who[1 + MAX_LISTENERS];
		int nfds = 1;
		uint64_t t = now_ns();
		struct timespec wait;

		if (t >= next) {
			for (int i = 0; i < MAX_STREAMS; i++)
				if (streams[i].used)
					send_probe(&streams[i]);
			/* Late (descheduled): the next tick is one interval from now, no burst to catch up. */
			next = next + interval > t ? next + interval : t + interval;
			t = now_ns();
		}
		fds[0] = (struct pollfd){ .fd = 0, .events = POLLIN };
		for (int i = 0; i < MAX_LISTENERS; i++)
			if (listeners[i].used) {
				who[nfds] = &listeners[i];
				fds[nfds++] = (struct pollfd){ .fd = listeners[i].fd, .events = POLLIN };
			}
		fflush(stdout);
		wait.tv_sec = 0;
		wait.tv_nsec = next > t ? next - t : 0;
		if (ppoll(fds, nfds, &wait, NULL) < 0 && errno != EINTR) {
			perror("probe: ppoll");
			return 1;
		}
		for (int i = 1; i < nfds; i++)
			if (fds[i].revents & POLLIN)
				drain(who[i]);
		if (fds[0].revents & (POLLIN | POLLHUP)) {
			ssize_t n = read(0, in + have, sizeof(in) - 1 - have);
			char *line, *nl;

			if (n == 0)
				return 0;
			if (n < 0) {
				if (errno == EAGAIN)
					continue;
				perror("probe: read");
				return 1;
			}
			have += n;
			in[have] = '\0';
			line = in;
			while ((nl = strchr(line, '\n'))) {
				*nl = '\0';
				if (*line)
					command(line);
				line = nl + 1;
			}
			have -= line - in;
			memmove(in, line, have);
		}
	}
}
