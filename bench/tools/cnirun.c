/*
 * Execs one CNI plugin the way a container runtime does and times it, for bench/cni.ts.
 *
 *   cnirun [-n NETNS_PATH] PROGRAM [ARGS...]   (plugin config on stdin, CNI_* in the environment)
 *
 * Node's child_process spawn costs ~4 ms here before the child runs a single instruction, and
 * `ip netns exec` adds a mount namespace and a /sys remount on top (~7 ms together): both would
 * be timed as the plugin's. A runtime (containerd, CRI-O, podman) is a small process that
 * vfork-execs the plugin from the node's namespace. So this tool joins NETNS_PATH (the node),
 * reads the whole config, and only then starts the clock: posix_spawn (vfork + exec), config
 * written to the plugin's stdin, stdout and stderr read to EOF, waitpid. It relays the plugin's
 * stdout and stderr, exits with its exit code, and prints the time as the last stderr line:
 *   cnirun-ns=N
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

struct buf {
	char *data;
	size_t len, cap;
};

static void die(const char *what)
{
	fprintf(stderr, "cnirun: %s: %s\n", what, strerror(errno));
	exit(125);
}

static void buf_add(struct buf *b, const char *p, size_t n)
{
	if (b->len + n > b->cap) {
		b->cap = (b->len + n) * 2 + 4096;
		b->data = realloc(b->data, b->cap);
		if (!b->data)
			die("realloc");
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

static void read_all(int fd, struct buf *b)
{
	char chunk[65536];
	ssize_t n;

	while ((n = read(fd, chunk, sizeof(chunk))) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("read stdin");
		}
		buf_add(b, chunk, n);
	}
}

static void write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return; /* the plugin closed its stdin early: its exit code tells the rest */
		}
		p += w;
		n -= w;
	}
}

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	struct buf in = { 0 }, out = { 0 }, err = { 0 };
	int argi = 1, in_pipe[2], out_pipe[2], err_pipe[2], status;
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t pipe_only;
	long long t0, t1;
	pid_t pid;

	if (argc > 2 && strcmp(argv[1], "-n") == 0) {
		int fd = open(argv[2], O_RDONLY | O_CLOEXEC);

		if (fd < 0 || setns(fd, CLONE_NEWNET) < 0)
			die(argv[2]);
		close(fd);
		argi = 3;
	}
	if (argi >= argc) {
		fprintf(stderr, "usage: cnirun [-n NETNS_PATH] PROGRAM [ARGS...]\n");
		return 125;
	}
	read_all(0, &in);
	if (pipe2(in_pipe, O_CLOEXEC) || pipe2(out_pipe, O_CLOEXEC) || pipe2(err_pipe, O_CLOEXEC))
		die("pipe2");
	/* A plugin that exits without reading its stdin must not kill us with SIGPIPE; the plugin
	 * itself gets the default disposition back (an ignored signal survives exec). */
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&pipe_only);
	sigaddset(&pipe_only, SIGPIPE);
	posix_spawnattr_init(&attr);
	posix_spawnattr_setsigdefault(&attr, &pipe_only);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, in_pipe[0], 0);
	posix_spawn_file_actions_adddup2(&fa, out_pipe[1], 1);
	posix_spawn_file_actions_adddup2(&fa, err_pipe[1], 2);

	t0 = now_ns();
	errno = posix_spawn(&pid, argv[argi], &fa, &attr, argv + argi, environ);
	if (errno)
		die(argv[argi]);
	close(in_pipe[0]);
	close(out_pipe[1]);
	close(err_pipe[1]);
	/* Configs are a few KiB, well under the pipe's buffer: one write, then EOF. */
	write_all(in_pipe[1], in.data ? in.data : "", in.len);
	close(in_pipe[1]);

	struct pollfd fds[2] = { { .fd = out_pipe[0], .events = POLLIN }, { .fd = err_pipe[0], .events = POLLIN } };
	int open_fds = 2;

	while (open_fds > 0) {
		if (poll(fds, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			die("poll");
		}
		for (int i = 0; i < 2; i++) {
			char chunk[65536];
			ssize_t n;

			if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			n = read(fds[i].fd, chunk, sizeof(chunk));
			if (n > 0) {
				buf_add(i == 0 ? &out : &err, chunk, n);
				continue;
			}
			if (n < 0 && errno == EINTR)
				continue;
			close(fds[i].fd);
			fds[i].fd = -1;
			open_fds--;
		}
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			die("waitpid");
	t1 = now_ns();

	write_all(1, out.data ? out.data : "", out.len);
	write_all(2, err.data ? err.data : "", err.len);
	fprintf(stderr, "%scnirun-ns=%lld\n", err.len && err.data[err.len - 1] != '\n' ? "\n" : "", t1 - t0);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}
