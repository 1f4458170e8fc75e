// kelp-cni: the CNI plugin binary that container runtimes exec.
//
// All CNI logic lives in the kelp agent. This binary only forwards the request (the CNI_* and
// KELP_* environment plus stdin) over the agent's unix socket and prints the answer, so it must
// start and finish in a few milliseconds: libc only, no JSON library.
// Protocol (docs/ARCHITECTURE.md "Agent ⇄ kelp-cni protocol"): HTTP/1.0 `POST /v1/cni`, body =
// NUL-terminated KEY=VALUE entries, one extra NUL, stdin verbatim; response 200 with header
// `X-CNI-Exit: <n>` and a body that is exactly our stdout.
// A DEL the agent cannot take (down, restarting, died mid-request) is written, as the very body
// it would have been sent, into the DEL queue directory the agent replays at start, and
// answered with success: the runtime deletes the pod's netns next and never asks again.
// Stdout carries only the CNI protocol; logs go to stderr or CNI_LOG_FILE.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef KELP_VERSION
#define KELP_VERSION "0.1.0"
#endif

#define MAX_STDIN ((size_t)16 << 20)
// Generous: an answer is one result or error document.
#define MAX_RESPONSE ((size_t)16 << 20)
#define DEFAULT_SOCKET "/run/kelp/kelp.sock"
// Must stay equal to the agent's default (<state dir>/del-queue); the conflist names it.
#define DEFAULT_DEL_QUEUE_DIR "/run/kelp/state/del-queue"
#define DEFAULT_CNI_VERSION "1.1.0"
// Must stay equal to SUPPORTED_VERSIONS in src/cni/version.ts (checked by the e2e test).
#define SUPPORTED_VERSIONS "\"0.3.0\",\"0.3.1\",\"0.4.0\",\"1.0.0\",\"1.1.0\""
#define SUPPORTED_VERSIONS_TEXT "0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"
// A healthy agent accepts at once; a full accept queue means it is stuck.
#define CONNECT_TIMEOUT_MS 3000
// An ADD normally takes well under a second, but the agent serialises work per network and may
// be restoring state after a restart; giving up early only makes the runtime DEL and retry.
#define REPLY_TIMEOUT_MS 30000

enum {
  CNI_ERR_INVALID_ENV = 4,
  CNI_ERR_IO = 5,
  CNI_ERR_INVALID_CONFIG = 7,
  CNI_ERR_TRY_AGAIN = 11,
  CNI_ERR_NOT_AVAILABLE = 50,
};

extern char **environ;

// ---- logging ----------------------------------------------------------------------------

enum { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };
static const char *const level_names[] = { "error", "warn", "info", "debug" };
static int log_fd = STDERR_FILENO;
static int log_level = LOG_WARN;

static void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// snprintf returns the length it wanted; keep the offset inside the line whatever it was.
static size_t advance(size_t n, int wanted, size_t cap) {
  if (wanted <= 0) return n;
  return n + (size_t)wanted < cap ? n + (size_t)wanted : cap - 1;
}

static void log_msg(int level, const char *fmt, ...) {
  if (level > log_level) return;
  char line[2048];
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  size_t n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
  n = advance(n, snprintf(line + n, sizeof line - n, ".%03ldZ kelp-cni[%d] %s: ", ts.tv_nsec / 1000000L,
                          (int)getpid(), level_names[level]), sizeof line);
  va_list ap;
  va_start(ap, fmt);
  n = advance(n, vsnprintf(line + n, sizeof line - n, fmt, ap), sizeof line);
  va_end(ap);
  line[n] = '\n';
  // One write per line keeps lines whole when several plugin processes share the file.
  if (write(log_fd, line, n + 1) < 0) { /* nowhere left to report it */ }
}

static void log_setup(void) {
  const char *level = getenv("CNI_LOG_LEVEL");
  if (level != NULL) {
    for (int i = 0; i <= LOG_DEBUG; i++)
      if (strcasecmp(level, level_names[i]) == 0) log_level = i;
  }
  const char *file = getenv("CNI_LOG_FILE");
  if (file != NULL && *file != '\0') {
    int fd = open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0)
      log_fd = fd;
    else
      log_msg(LOG_WARN, "cannot open CNI_LOG_FILE %s: %s; logging to stderr", file, strerror(errno));
  }
}

// ---- buffers ----------------------------------------------------------------------------

struct buf {
  char *data;
  size_t len, cap;
};

// Callers enforce their own limits before growing, so failure here is only ENOMEM.
static bool buf_reserve(struct buf *b, size_t extra) {
  if (b->cap - b->len >= extra) return true;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap - b->len < extra) {
    if (cap > SIZE_MAX / 2) return false;
    cap *= 2;
  }
  char *p = realloc(b->data, cap);
  if (p == NULL) return false;
  b->data = p;
  b->cap = cap;
  return true;
}

static bool buf_append(struct buf *b, const void *data, size_t n) {
  if (!buf_reserve(b, n)) return false;
  memcpy(b->data + b->len, data, n);
  b->len += n;
  return true;
}

static bool buf_puts(struct buf *b, const char *s) { return buf_append(b, s, strlen(s)); }

static bool buf_json_string(struct buf *b, const char *s) {
  bool ok = buf_puts(b, "\"");
  for (const unsigned char *p = (const unsigned char *)s; ok && *p; p++) {
    char esc[8];
    if (*p == '"' || *p == '\\') {
      esc[0] = '\\';
      esc[1] = (char)*p;
      ok = buf_append(b, esc, 2);
    } else if (*p < 0x20) {
      snprintf(esc, sizeof esc, "\\u%04x", *p);
      ok = buf_append(b, esc, 6);
    } else {
      ok = buf_append(b, p, 1);
    }
  }
  return ok && buf_puts(b, "\"");
}

static bool write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += w;
    n -= (size_t)w;
  }
  return true;
}

// ---- CNI output -------------------------------------------------------------------------

static int out_of_memory(void) {
  static const char msg[] = "{\"cniVersion\":\"" DEFAULT_CNI_VERSION "\",\"code\":5,\"msg\":\"kelp-cni: out of memory\"}\n";
  write_all(STDOUT_FILENO, msg, sizeof msg - 1);
  return 1;
}

// Prints the spec's error object on stdout (libcni reads the error from there) and logs it.
static int cni_error(const char *cni_version, int code, const char *msg, const char *details) {
  struct buf out = { 0 };
  char num[32];
  snprintf(num, sizeof num, ",\"code\":%d,\"msg\":", code);
  bool ok = buf_puts(&out, "{\"cniVersion\":") && buf_json_string(&out, cni_version) &&
            buf_puts(&out, num) && buf_json_string(&out, msg);
  if (details != NULL) ok = ok && buf_puts(&out, ",\"details\":") && buf_json_string(&out, details);
  ok = ok && buf_puts(&out, "}\n");
  if (!ok) return out_of_memory();
  write_all(STDOUT_FILENO, out.data, out.len);
  free(out.data);
  log_msg(LOG_ERROR, "code %d: %s%s%s", code, msg, details ? ": " : "", details ? details : "");
  return 1;
}

static int print_version(const char *cni_version) {
  struct buf out = { 0 };
  bool ok = buf_puts(&out, "{\"cniVersion\":") && buf_json_string(&out, cni_version) &&
            buf_puts(&out, ",\"supportedVersions\":[" SUPPORTED_VERSIONS "]}\n");
  if (!ok) return out_of_memory();
  bool written = write_all(STDOUT_FILENO, out.data, out.len);
  free(out.data);
  return written ? 0 : 1;
}

// ---- top-level JSON key scanner ---------------------------------------------------------
// Finds one top-level string value without parsing the document: enough to locate the agent
// socket and the cniVersion to answer in. Nested values are skipped by depth counting that
// steps over strings, so {"ipam":{"agentSocket":"x"}} or a value containing "agentSocket" never
// match. Like JSON.parse in the agent, the last occurrence of a duplicated key wins.

struct scan {
  const unsigned char *p, *end;
};

enum { STR_MALFORMED = -1, STR_UNUSABLE = -2 };

static void skip_ws(struct scan *s) {
  while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r')) s->p++;
}

static bool hex4(struct scan *s, uint32_t *out) {
  if (s->end - s->p < 4) return false;
  uint32_t v = 0;
  for (int i = 0; i < 4; i++) {
    unsigned char c = *s->p++;
    v <<= 4;
    if (c >= '0' && c <= '9')
      v |= c - '0';
    else if (c >= 'a' && c <= 'f')
      v |= c - 'a' + 10;
    else if (c >= 'A' && c <= 'F')
      v |= c - 'A' + 10;
    else
      return false;
  }
  *out = v;
  return true;
}

// Decodes the string starting at the opening quote into out (NUL-terminated, may be NULL).
// Returns its length, STR_MALFORMED (scanning cannot go on) or STR_UNUSABLE (well-formed, but
// too long for out or containing NUL); in every case but malformed, s->p is past the string.
static long scan_string(struct scan *s, char *out, size_t outcap) {
  size_t n = 0;
  bool unusable = false;
  s->p++;
  while (s->p < s->end) {
    uint32_t c = *s->p++;
    if (c == '"') {
      if (unusable || out == NULL) return unusable ? STR_UNUSABLE : 0;
      out[n] = '\0';
      return (long)n;
    }
    if (c < 0x20) return STR_MALFORMED;
    unsigned char utf8[4];
    size_t len = 1;
    utf8[0] = (unsigned char)c;
    if (c == '\\') {
      if (s->p >= s->end) return STR_MALFORMED;
      c = *s->p++;
      switch (c) {
        case '"': case '\\': case '/': utf8[0] = (unsigned char)c; break;
        case 'b': utf8[0] = '\b'; break;
        case 'f': utf8[0] = '\f'; break;
        case 'n': utf8[0] = '\n'; break;
        case 'r': utf8[0] = '\r'; break;
        case 't': utf8[0] = '\t'; break;
        case 'u': {
          uint32_t cp, lo;
          if (!hex4(s, &cp)) return STR_MALFORMED;
          if (cp >= 0xd800 && cp < 0xdc00) {
            if (s->end - s->p < 2 || s->p[0] != '\\' || s->p[1] != 'u') return STR_MALFORMED;
            s->p += 2;
            if (!hex4(s, &lo) || lo < 0xdc00 || lo >= 0xe000) return STR_MALFORMED;
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          } else if (cp >= 0xdc00 && cp < 0xe000) {
            return STR_MALFORMED;
          }
          if (cp == 0) unusable = true;
          if (cp < 0x80) {
            utf8[0] = (unsigned char)cp;
          } else if (cp < 0x800) {
            utf8[0] = (unsigned char)(0xc0 | cp >> 6);
            utf8[1] = (unsigned char)(0x80 | (cp & 0x3f));
            len = 2;
          } else if (cp < 0x10000) {
            utf8[0] = (unsigned char)(0xe0 | cp >> 12);
            utf8[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
            utf8[2] = (unsigned char)(0x80 | (cp & 0x3f));
            len = 3;
          } else {
            utf8[0] = (unsigned char)(0xf0 | cp >> 18);
            utf8[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
            utf8[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
            utf8[3] = (unsigned char)(0x80 | (cp & 0x3f));
            len = 4;
          }
          break;
        }
        default: return STR_MALFORMED;
      }
    }
    if (out == NULL || unusable) continue;
    if (outcap - n <= len) {
      unusable = true;
      continue;
    }
    memcpy(out + n, utf8, len);
    n += len;
  }
  return STR_MALFORMED;
}

static bool skip_value(struct scan *s) {
  if (s->p >= s->end) return false;
  if (*s->p == '"') return scan_string(s, NULL, 0) != STR_MALFORMED;
  if (*s->p == '{' || *s->p == '[') {
    size_t depth = 0;
    do {
      if (s->p >= s->end) return false;
      unsigned char c = *s->p;
      if (c == '"') {
        if (scan_string(s, NULL, 0) == STR_MALFORMED) return false;
        continue;
      }
      if (c == '{' || c == '[') depth++;
      if (c == '}' || c == ']') depth--;
      s->p++;
    } while (depth > 0);
    return true;
  }
  const unsigned char *start = s->p;
  while (s->p < s->end && strchr(",}] \t\r\n", *s->p) == NULL) s->p++;
  return s->p > start;
}

// Copies the (decoded, non-empty) string value of top-level `key` into out.
static bool json_top_string(const char *doc, size_t len, const char *key, char *out, size_t outcap) {
  if (doc == NULL) return false;
  struct scan s = { (const unsigned char *)doc, (const unsigned char *)doc + len };
  bool found = false;
  char name[64];
  skip_ws(&s);
  if (s.p >= s.end || *s.p != '{') return false;
  s.p++;
  for (;;) {
    skip_ws(&s);
    if (s.p >= s.end || *s.p != '"') break;
    long klen = scan_string(&s, name, sizeof name);
    if (klen == STR_MALFORMED) break;
    skip_ws(&s);
    if (s.p >= s.end || *s.p != ':') break;
    s.p++;
    skip_ws(&s);
    bool match = klen >= 0 && strcmp(name, key) == 0;
    if (match && s.p < s.end && *s.p == '"') {
      long vlen = scan_string(&s, out, outcap);
      if (vlen == STR_MALFORMED) break;
      found = vlen > 0;
    } else {
      if (match) found = false;
      if (!skip_value(&s)) break;
    }
    skip_ws(&s);
    if (s.p >= s.end || *s.p != ',') break;
    s.p++;
  }
  return found;
}

// ---- agent connection -------------------------------------------------------------------

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *reason(int err) {
  if (err == EAGAIN || err == EWOULDBLOCK || err == ETIMEDOUT) return "timed out";
  return strerror(err);
}

static int agent_connect(const char *path) {
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  if (strlen(path) >= sizeof sa.sun_path) {
    errno = ENAMETOOLONG;
    return -1;
  }
  memcpy(sa.sun_path, path, strlen(path) + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  // SO_SNDTIMEO bounds a unix-socket connect (full accept queue) and each send.
  struct timeval tv = { .tv_sec = CONNECT_TIMEOUT_MS / 1000, .tv_usec = (CONNECT_TIMEOUT_MS % 1000) * 1000 };
  if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0 ||
      connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

static bool send_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    // MSG_NOSIGNAL: an agent that hangs up early must give an error, not kill us with SIGPIPE.
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += w;
    n -= (size_t)w;
  }
  return true;
}

// Reads until EOF within one overall deadline. Returns false with errno set on failure
// (EFBIG when the answer exceeds MAX_RESPONSE).
static bool recv_all(int fd, struct buf *rsp, int timeout_ms) {
  int64_t deadline = now_ms() + timeout_ms;
  for (;;) {
    int64_t left = deadline - now_ms();
    if (left <= 0) {
      errno = ETIMEDOUT;
      return false;
    }
    struct pollfd pfd = { .fd = fd, .events = POLLIN };
    int r = poll(&pfd, 1, (int)left);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return false;
    if (r == 0) {
      errno = ETIMEDOUT;
      return false;
    }
    if (!buf_reserve(rsp, 65536)) {
      errno = ENOMEM;
      return false;
    }
    ssize_t n = read(fd, rsp->data + rsp->len, rsp->cap - rsp->len);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) return false;
    if (n == 0) return true;
    rsp->len += (size_t)n;
    if (rsp->len > MAX_RESPONSE) {
      errno = EFBIG;
      return false;
    }
  }
}

static bool parse_uint(const char *s, size_t n, unsigned long max, unsigned long *out) {
  unsigned long v = 0;
  if (n == 0) return false;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (unsigned long)(s[i] - '0');
    if (v > max) return false;
  }
  *out = v;
  return true;
}

// Splits an HTTP response into exit code and body. On failure, `why` says what was wrong and
// `cut` whether the answer was cut short (the agent died while answering) rather than wrong.
static bool parse_response(const struct buf *rsp, int *exit_code, const char **body, size_t *body_len,
                           const char **why, bool *cut) {
  const char *data = rsp->data ? rsp->data : "";
  const char *hend = memmem(data, rsp->len, "\r\n\r\n", 4);
  *cut = false;
  if (hend == NULL) {
    *why = rsp->len == 0 ? "connection closed without an answer" : "incomplete HTTP header";
    *cut = true;
    return false;
  }
  const char *line = data, *eol = memmem(line, (size_t)(hend - line) + 2, "\r\n", 2);
  if ((size_t)(eol - line) < 12 || memcmp(line, "HTTP/1.", 7) != 0 || memcmp(line + 8, " 200", 4) != 0 ||
      (eol - line > 12 && line[12] != ' ')) {
    *why = "HTTP status is not 200";
    return false;
  }
  bool have_exit = false, have_length = false;
  unsigned long code = 0, length = 0;
  for (line = eol + 2; line < hend; line = eol + 2) {
    eol = memmem(line, (size_t)(hend - line) + 2, "\r\n", 2);
    const char *colon = memchr(line, ':', (size_t)(eol - line));
    if (colon == NULL) continue;
    const char *v = colon + 1, *vend = eol;
    while (v < vend && (*v == ' ' || *v == '\t')) v++;
    while (vend > v && (vend[-1] == ' ' || vend[-1] == '\t')) vend--;
    size_t name_len = (size_t)(colon - line);
    if (name_len == 10 && strncasecmp(line, "X-CNI-Exit", 10) == 0) {
      if (!parse_uint(v, (size_t)(vend - v), 255, &code)) {
        *why = "X-CNI-Exit is not a number from 0 to 255";
        return false;
      }
      have_exit = true;
    } else if (name_len == 14 && strncasecmp(line, "Content-Length", 14) == 0) {
      have_length = parse_uint(v, (size_t)(vend - v), MAX_RESPONSE, &length);
    }
  }
  if (!have_exit) {
    *why = "no X-CNI-Exit header";
    return false;
  }
  *body = hend + 4;
  *body_len = rsp->len - (size_t)(*body - data);
  if (have_length) {
    // The agent dying mid-answer must not pass for a complete (truncated) result.
    if (*body_len < length) {
      *why = "answer shorter than its Content-Length";
      *cut = true;
      return false;
    }
    *body_len = length;
  }
  *exit_code = (int)code;
  return true;
}

// ADD/CHECK/DEL/GC: "try again later"; STATUS: "plugin not available" (SPEC §2 STATUS).
static int agent_unavailable(const char *cmd, const char *cni_version, const char *msg, const char *details) {
  bool status = strcmp(cmd, "STATUS") == 0;
  return cni_error(cni_version, status ? CNI_ERR_NOT_AVAILABLE : CNI_ERR_TRY_AGAIN, msg, details);
}

// ---- DEL queue --------------------------------------------------------------------------

static bool env_set(const char *name) {
  const char *v = getenv(name);
  return v != NULL && *v != '\0';
}

// Writes `env` + `in` (the request body) as <dir>/<ns since epoch>-<pid>.del: a temp file,
// fsync'd, renamed, and the directory fsync'd, so the entry is complete and survives a crash
// once we report success. The directory must exist (the agent creates it): a missing one means
// no agent ever ran with it, and we create nothing in places we were not given.
static bool queue_del(const char *dir, const struct buf *env, const struct buf *in, char *name, size_t namecap,
                      char *why, size_t whycap) {
  if (dir[0] != '/') {
    snprintf(why, whycap, "cannot queue the DEL: %s is not an absolute path", dir);
    return false;
  }
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) {
    snprintf(why, whycap, "cannot queue the DEL: %s: %s", dir, strerror(errno));
    return false;
  }
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  char tmp[128];
  snprintf(name, namecap, "%010lld%09ld-%d.del", (long long)ts.tv_sec, ts.tv_nsec, (int)getpid());
  snprintf(tmp, sizeof tmp, ".%s.tmp", name);
  bool ok = false;
  const char *step = "create";
  int fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd >= 0) {
    step = "write";
    ok = write_all(fd, env->data, env->len) && (in->len == 0 || write_all(fd, in->data, in->len));
    if (ok) {
      step = "fsync";
      ok = fsync(fd) == 0;
    }
    if (close(fd) != 0 && ok) {
      step = "close";
      ok = false;
    }
    if (ok) {
      step = "rename";
      ok = renameat(dfd, tmp, dfd, name) == 0;
    }
    if (!ok) {
      int e = errno;
      unlinkat(dfd, tmp, 0);
      errno = e;
    }
  }
  if (!ok) snprintf(why, whycap, "cannot queue the DEL: %s %s/%s: %s", step, dir, tmp, strerror(errno));
  // The rename is durable only once the directory is; a failure here is not worth failing for.
  if (ok && fsync(dfd) != 0) log_msg(LOG_WARN, "fsync %s: %s", dir, strerror(errno));
  close(dfd);
  return ok;
}

// The agent could not take the request. A DEL is queued and succeeds; everything else, and a DEL
// that cannot be queued (or that the agent could not serve later either), fails as before.
static int agent_down(const char *cmd, const char *cni_version, const char *queue_dir, const struct buf *env,
                      const struct buf *in, const char *msg, const char *details) {
  if (strcmp(cmd, "DEL") != 0) return agent_unavailable(cmd, cni_version, msg, details);
  char why[8800];
  if (!env_set("CNI_CONTAINERID") || !env_set("CNI_IFNAME")) {
    snprintf(why, sizeof why, "%s%s%s; not queued: CNI_CONTAINERID and CNI_IFNAME are required", msg,
             details ? ": " : "", details ? details : "");
    return agent_unavailable(cmd, cni_version, why, NULL);
  }
  char network[256];
  if (!json_top_string(in->data, in->len, "name", network, sizeof network)) {
    snprintf(why, sizeof why, "%s%s%s; not queued: the config has no network name", msg, details ? ": " : "",
             details ? details : "");
    return agent_unavailable(cmd, cni_version, why, NULL);
  }
  char name[64];
  if (!queue_del(queue_dir, env, in, name, sizeof name, why, sizeof why))
    return agent_unavailable(cmd, cni_version, msg, why);
  log_msg(LOG_WARN, "%s%s%s; DEL of %s/%s queued as %s/%s", msg, details ? ": " : "", details ? details : "",
          getenv("CNI_CONTAINERID"), getenv("CNI_IFNAME"), queue_dir, name);
  return 0;
}

static int reply_timeout_ms(void) {
  const char *v = getenv("KELP_CNI_TIMEOUT_MS");
  unsigned long ms;
  if (v != NULL && parse_uint(v, strlen(v), 3600000, &ms) && ms > 0) return (int)ms;
  return REPLY_TIMEOUT_MS;
}

static bool forwarded_var(const char *entry) {
  return (strncmp(entry, "CNI_", 4) == 0 || strncmp(entry, "KELP_", 5) == 0) && strchr(entry, '=') != NULL;
}

static int forward(const char *cmd, const char *cni_version, const char *socket_path, const char *queue_dir,
                   const struct buf *in) {
  struct buf env = { 0 };
  for (char **e = environ; *e != NULL; e++)
    if (forwarded_var(*e) && !buf_append(&env, *e, strlen(*e) + 1)) return out_of_memory();
  if (!buf_append(&env, "", 1)) return out_of_memory();

  char header[256];
  int hlen = snprintf(header, sizeof header,
                      "POST /v1/cni HTTP/1.0\r\nHost: kelp\r\nContent-Type: application/octet-stream\r\n"
                      "Content-Length: %zu\r\n\r\n",
                      env.len + in->len);
  char msg[4300];
  int fd = agent_connect(socket_path);
  if (fd < 0) {
    snprintf(msg, sizeof msg, "kelp agent is not reachable at %s: %s", socket_path, reason(errno));
    int rc = agent_down(cmd, cni_version, queue_dir, &env, in, msg, NULL);
    free(env.data);
    return rc;
  }
  log_msg(LOG_DEBUG, "%s: forwarding %zu env bytes and %zu stdin bytes to %s", cmd, env.len, in->len, socket_path);
  // No shutdown(SHUT_WR) after the request: Node's HTTP server aborts a request whose client
  // half-closes, so EOF is signalled by Content-Length alone.
  bool sent = send_all(fd, header, (size_t)hlen) && send_all(fd, env.data, env.len) &&
              (in->len == 0 || send_all(fd, in->data, in->len));
  struct buf rsp = { 0 };
  if (!sent || !recv_all(fd, &rsp, reply_timeout_ms())) {
    int e = errno;
    close(fd);
    free(rsp.data);
    snprintf(msg, sizeof msg, "kelp agent is not reachable at %s: %s %s", socket_path,
             sent ? "reading the answer:" : "sending the request:", e == EFBIG ? "answer too large" : reason(e));
    // A DEL the agent may or may not have carried out is queued all the same: DEL is idempotent.
    int rc = e == EFBIG ? agent_unavailable(cmd, cni_version, msg, NULL)
                        : agent_down(cmd, cni_version, queue_dir, &env, in, msg, NULL);
    free(env.data);
    return rc;
  }
  close(fd);

  int code;
  const char *body, *why;
  size_t body_len;
  bool cut;
  if (!parse_response(&rsp, &code, &body, &body_len, &why, &cut)) {
    snprintf(msg, sizeof msg, "kelp agent at %s sent an invalid answer", socket_path);
    // Cut short: the agent died while answering. Otherwise it is up and said something else.
    int rc = cut ? agent_down(cmd, cni_version, queue_dir, &env, in, msg, why)
                 : agent_unavailable(cmd, cni_version, msg, why);
    free(rsp.data);
    free(env.data);
    return rc;
  }
  free(env.data);
  log_msg(LOG_DEBUG, "%s: agent answered exit %d with %zu bytes", cmd, code, body_len);
  bool written = write_all(STDOUT_FILENO, body, body_len);
  free(rsp.data);
  if (!written) {
    log_msg(LOG_ERROR, "cannot write the answer to stdout: %s", strerror(errno));
    return 1;
  }
  return code;
}

// ---- main -------------------------------------------------------------------------------

enum { READ_OK, READ_FAILED, READ_TOO_LARGE };

static int read_stdin(struct buf *in) {
  for (;;) {
    if (!buf_reserve(in, 65536)) return READ_FAILED;
    size_t room = in->cap - in->len;
    if (room > MAX_STDIN + 1 - in->len) room = MAX_STDIN + 1 - in->len;
    ssize_t n = read(STDIN_FILENO, in->data + in->len, room);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return READ_FAILED;
    if (n == 0) return READ_OK;
    in->len += (size_t)n;
    if (in->len > MAX_STDIN) return READ_TOO_LARGE;
  }
}

static bool forwarded_verb(const char *cmd) {
  static const char *const verbs[] = { "ADD", "DEL", "CHECK", "STATUS", "GC" };
  for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++)
    if (strcmp(cmd, verbs[i]) == 0) return true;
  return false;
}

int main(void) {
  log_setup();
  const char *cmd = getenv("CNI_COMMAND");
  if (cmd == NULL || *cmd == '\0') {
    // What libcni's skel does for humans running the binary by hand; stdin is not read.
    static const char about[] = "kelp-cni " KELP_VERSION ": CNI plugin of kelp, forwards requests to the kelp agent\n"
                                "CNI protocol versions supported: " SUPPORTED_VERSIONS_TEXT "\n";
    write_all(STDERR_FILENO, about, sizeof about - 1);
    return 0;
  }

  struct buf in = { 0 };
  int read_status = read_stdin(&in);
  int read_errno = errno;
  char cni_version[64];
  if (!json_top_string(in.data, in.len, "cniVersion", cni_version, sizeof cni_version))
    strcpy(cni_version, DEFAULT_CNI_VERSION);

  // VERSION must work with closed or empty stdin and without the agent (CNI-CHECKLIST 25, 26).
  if (strcmp(cmd, "VERSION") == 0) return print_version(cni_version);
  if (read_status == READ_FAILED) return cni_error(cni_version, CNI_ERR_IO, "cannot read stdin", strerror(read_errno));
  if (read_status == READ_TOO_LARGE) return cni_error(cni_version, CNI_ERR_IO, "stdin is larger than 16 MiB", NULL);
  if (!forwarded_verb(cmd)) {
    char msg[300];
    snprintf(msg, sizeof msg, "unknown CNI_COMMAND: %s", cmd);
    return cni_error(cni_version, CNI_ERR_INVALID_ENV, msg, NULL);
  }

  // The agent marks the plugins it delegates to. Forwarding from there would make the agent run
  // us again for the very request we forward, and again, without end.
  if (env_set("KELP_DELEGATED_BY"))
    return cni_error(cni_version, CNI_ERR_INVALID_CONFIG, "kelp-cni cannot be a plugin the kelp agent delegates to",
                     "a delegate (ipam.type) of this network names kelp-cni");

  char socket_path[4096];
  if (!json_top_string(in.data, in.len, "agentSocket", socket_path, sizeof socket_path)) {
    const char *env = getenv("KELP_AGENT_SOCKET");
    snprintf(socket_path, sizeof socket_path, "%s", env != NULL && *env != '\0' ? env : DEFAULT_SOCKET);
  }
  char queue_dir[4096];
  if (!json_top_string(in.data, in.len, "delQueueDir", queue_dir, sizeof queue_dir))
    strcpy(queue_dir, DEFAULT_DEL_QUEUE_DIR);
  int rc = forward(cmd, cni_version, socket_path, queue_dir, &in);
  free(in.data);
  return rc;
}
