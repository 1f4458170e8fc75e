// kelp-cni: the CNI plugin binary that container runtimes exec.
//
// All CNI logic lives in the kelp agent. This binary forwards the request (the CNI_* and KELP_*
// environment plus stdin) over the agent's unix socket and prints the answer, so it must start
// and finish in a few milliseconds: libc only, no JSON library.
// Protocol (docs/ARCHITECTURE.md "Agent ⇄ kelp-cni protocol"): HTTP/1.0 `POST /v1/cni`, body =
// NUL-terminated KEY=VALUE entries, one extra NUL, stdin verbatim; response 200 with header
// `X-CNI-Exit: <n>` and a body that is exactly our stdout.
// Before reaching for the agent it checks what it relies on itself, in the agent's order and
// with the agent's words (src/cni/request.ts): the variables, that stdin is a JSON object, and
// cniVersion, name, type and agentSocket. A request failing those gets the answer the agent
// would give, agent or no agent.
// A DEL the agent cannot take (down, restarting, died mid-request) is written, as the very body
// it would have been sent, into the DEL queue next to the agent socket, which the agent replays
// at start, and answered with success: the runtime deletes the pod's netns next and never asks
// again.
// Stdout carries only the CNI protocol; logs go to stderr or CNI_LOG_FILE.
#define _GNU_SOURCE
#include <errno.h>
#include <ctype.h>
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
// The queue lives next to the socket, in the agent's run dir (src/agent/delqueue.ts delQueueDirFor).
#define DEL_QUEUE_NAME "del-queue"
#define DEFAULT_CNI_VERSION "1.1.0"
// sizeof(sockaddr_un.sun_path); the agent refuses an agentSocket this long or longer.
#define SUN_PATH_MAX 108
#define IFNAMSIZ 16
// A healthy agent accepts at once; a full accept queue means it is stuck.
#define CONNECT_TIMEOUT_MS 3000
// An ADD normally takes well under a second, but the agent serialises work per network and may
// be restoring state after a restart; giving up early only makes the runtime DEL and retry.
#define REPLY_TIMEOUT_MS 30000

// Must stay equal to SUPPORTED_VERSIONS in src/cni/version.ts (checked by the e2e test).
static const char *const supported_versions[] = { "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0" };
#define N_SUPPORTED (sizeof supported_versions / sizeof supported_versions[0])

enum {
  CNI_ERR_INCOMPATIBLE_VERSION = 1,
  CNI_ERR_INVALID_ENV = 4,
  CNI_ERR_IO = 5,
  CNI_ERR_DECODE = 6,
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

// A character below 0x80 as JSON.stringify writes it, so what we print reads as the agent's.
static bool buf_json_ascii(struct buf *b, unsigned char c) {
  switch (c) {
    case '"': return buf_puts(b, "\\\"");
    case '\\': return buf_puts(b, "\\\\");
    case '\b': return buf_puts(b, "\\b");
    case '\f': return buf_puts(b, "\\f");
    case '\n': return buf_puts(b, "\\n");
    case '\r': return buf_puts(b, "\\r");
    case '\t': return buf_puts(b, "\\t");
  }
  if (c >= 0x20) return buf_append(b, &c, 1);
  char esc[8];
  snprintf(esc, sizeof esc, "\\u%04x", c);
  return buf_append(b, esc, 6);
}

static bool buf_json_string(struct buf *b, const char *s) {
  bool ok = buf_puts(b, "\"");
  for (const unsigned char *p = (const unsigned char *)s; ok && *p; p++) ok = *p < 0x80 ? buf_json_ascii(b, *p) : buf_append(b, p, 1);
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

// The cniVersion every answer carries, as JSON: the config's when it could be read (main).
static const char *answer_version = "\"" DEFAULT_CNI_VERSION "\"";

static int out_of_memory(void) {
  static const char msg[] = "{\"cniVersion\":\"" DEFAULT_CNI_VERSION "\",\"code\":5,\"msg\":\"kelp-cni: out of memory\"}\n";
  write_all(STDOUT_FILENO, msg, sizeof msg - 1);
  return 1;
}

// Prints the spec's error object on stdout (libcni reads the error from there) and logs it.
static int cni_error(int code, const char *msg, const char *details) {
  struct buf out = { 0 };
  char num[32];
  snprintf(num, sizeof num, ",\"code\":%d,\"msg\":", code);
  bool ok = buf_puts(&out, "{\"cniVersion\":") && buf_puts(&out, answer_version) && buf_puts(&out, num) &&
            buf_json_string(&out, msg);
  if (details != NULL) ok = ok && buf_puts(&out, ",\"details\":") && buf_json_string(&out, details);
  ok = ok && buf_puts(&out, "}\n");
  if (!ok) return out_of_memory();
  write_all(STDOUT_FILENO, out.data, out.len);
  free(out.data);
  log_msg(LOG_ERROR, "code %d: %s%s%s", code, msg, details ? ": " : "", details ? details : "");
  return 1;
}

// `"v1"<sep>"v2"...`: the list in the VERSION answer (sep ",") and in messages (sep " ", as the agent words them).
static bool buf_versions(struct buf *b, const char *sep) {
  bool ok = true;
  for (size_t i = 0; ok && i < N_SUPPORTED; i++)
    ok = (i == 0 || buf_puts(b, sep)) && buf_puts(b, "\"") && buf_puts(b, supported_versions[i]) && buf_puts(b, "\"");
  return ok;
}

static int print_version(void) {
  struct buf out = { 0 };
  bool ok = buf_puts(&out, "{\"cniVersion\":") && buf_puts(&out, answer_version) &&
            buf_puts(&out, ",\"supportedVersions\":[") && buf_versions(&out, ",") && buf_puts(&out, "]}\n");
  if (!ok) return out_of_memory();
  bool written = write_all(STDOUT_FILENO, out.data, out.len);
  free(out.data);
  return written ? 0 : 1;
}

// ---- JSON -------------------------------------------------------------------------------
// One pass over stdin tells whether it is a JSON document as the agent's JSON.parse reads it,
// and where the values of the top-level members kelp-cni looks at begin (the last occurrence
// wins, as in JSON.parse). Members complete before the first syntax error still count: an
// answer to a malformed config is in its cniVersion when that could be read. Strings are taken
// as JSON.parse takes them: any escape (unpaired surrogates too) and any byte from 0x20 up (the
// agent decodes stdin as UTF-8 and replaces what is not). Nesting depth is bounded by memory
// only, as in V8; the stack of open containers is on the heap.

enum { F_VERSION, F_NAME, F_TYPE, F_SOCKET, F_COUNT };
static const char *const field_keys[F_COUNT] = { "cniVersion", "name", "type", "agentSocket" };

struct json_doc {
  bool ok;             // one well-formed JSON value and nothing after it
  bool object;         // the document is, or starts as, an object
  size_t error_at;     // !ok: byte offset of the first error
  const char *error;   // !ok: what is wrong there
  const unsigned char *end;
  const unsigned char *field[F_COUNT]; // where the value of the last complete member starts, or NULL
};

struct scan {
  const unsigned char *p, *end;
};

static void skip_ws(struct scan *s) {
  while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r')) s->p++;
}

static int hex_digit(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Steps over the string whose opening quote is at s->p. On failure s->p is at the fault.
static bool skip_string(struct scan *s, const char **why) {
  s->p++;
  while (s->p < s->end) {
    unsigned char c = *s->p;
    if (c == '"') {
      s->p++;
      return true;
    }
    if (c < 0x20) {
      *why = "control character in a string";
      return false;
    }
    s->p++;
    if (c != '\\') continue;
    if (s->p >= s->end) break;
    c = *s->p;
    if (c == 'u') {
      for (int i = 0; i < 4; i++) {
        if (++s->p >= s->end || hex_digit(*s->p) < 0) {
          *why = "bad \\u escape";
          return false;
        }
      }
    } else if (c == '\0' || strchr("\"\\/bfnrt", c) == NULL) {
      *why = "bad escape";
      return false;
    }
    s->p++;
  }
  *why = "unterminated string";
  return false;
}

static bool skip_digits(struct scan *s) {
  const unsigned char *start = s->p;
  while (s->p < s->end && *s->p >= '0' && *s->p <= '9') s->p++;
  return s->p > start;
}

static bool skip_number(struct scan *s) {
  if (s->p < s->end && *s->p == '-') s->p++;
  if (s->p < s->end && *s->p == '0')
    s->p++;
  else if (!skip_digits(s))
    return false;
  if (s->p < s->end && *s->p == '.') {
    s->p++;
    if (!skip_digits(s)) return false;
  }
  if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
    s->p++;
    if (s->p < s->end && (*s->p == '+' || *s->p == '-')) s->p++;
    if (!skip_digits(s)) return false;
  }
  return true;
}

static bool skip_literal(struct scan *s) {
  static const char *const words[] = { "true", "false", "null" };
  for (size_t i = 0; i < 3; i++) {
    size_t n = strlen(words[i]);
    if ((size_t)(s->end - s->p) >= n && memcmp(s->p, words[i], n) == 0) {
      s->p += n;
      return true;
    }
  }
  return false;
}

// The characters of a well-formed JSON string, s->p past its opening quote. Returns false at
// the closing quote; else *cp is a code point (an unpaired surrogate stays one), or, with
// *raw, a byte of the input >= 0x80 as it stands.
static bool str_next(struct scan *s, uint32_t *cp, bool *raw) {
  unsigned char c = *s->p++;
  *raw = false;
  if (c == '"') return false;
  if (c != '\\') {
    *cp = c;
    *raw = c >= 0x80;
    return true;
  }
  c = *s->p++;
  switch (c) {
    case 'b': *cp = '\b'; break;
    case 'f': *cp = '\f'; break;
    case 'n': *cp = '\n'; break;
    case 'r': *cp = '\r'; break;
    case 't': *cp = '\t'; break;
    case 'u': {
      uint32_t v = 0;
      for (int i = 0; i < 4; i++) v = v << 4 | (uint32_t)hex_digit(*s->p++);
      if (v >= 0xd800 && v < 0xdc00 && s->end - s->p >= 6 && s->p[0] == '\\' && s->p[1] == 'u') {
        uint32_t lo = 0;
        for (int i = 2; i < 6; i++) lo = lo << 4 | (uint32_t)hex_digit(s->p[i]);
        if (lo >= 0xdc00 && lo < 0xe000) {
          v = 0x10000 + ((v - 0xd800) << 10) + (lo - 0xdc00);
          s->p += 6;
        }
      }
      *cp = v;
      break;
    }
    default: *cp = c; break;
  }
  return true;
}

static size_t utf8_encode(uint32_t cp, unsigned char out[4]) {
  if (cp < 0x80) {
    out[0] = (unsigned char)cp;
    return 1;
  }
  if (cp < 0x800) {
    out[0] = (unsigned char)(0xc0 | cp >> 6);
    out[1] = (unsigned char)(0x80 | (cp & 0x3f));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = (unsigned char)(0xe0 | cp >> 12);
    out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
    out[2] = (unsigned char)(0x80 | (cp & 0x3f));
    return 3;
  }
  out[0] = (unsigned char)(0xf0 | cp >> 18);
  out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
  out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
  out[3] = (unsigned char)(0x80 | (cp & 0x3f));
  return 4;
}

static bool is_surrogate(uint32_t cp) { return cp >= 0xd800 && cp < 0xe000; }

// The string value at `at` decoded into a new NUL-terminated buffer; *len counts the NULs it
// may hold, and *odd says it holds a NUL or an unpaired surrogate (written as 3 bytes, as
// Buffer.byteLength counts it), which no path or version can contain.
static char *str_decode(const unsigned char *at, const unsigned char *end, size_t *len, bool *odd) {
  struct scan s = { at, end };
  const char *why;
  if (!skip_string(&s, &why)) return NULL;
  char *out = malloc((size_t)(s.p - at));
  if (out == NULL) return NULL;
  size_t n = 0;
  uint32_t cp;
  bool raw;
  *odd = false;
  for (s.p = at + 1; str_next(&s, &cp, &raw);) {
    if (raw) {
      out[n++] = (char)cp;
      continue;
    }
    *odd = *odd || cp == 0 || is_surrogate(cp);
    n += utf8_encode(cp, (unsigned char *)out + n);
  }
  out[n] = '\0';
  *len = n;
  return out;
}

// Appends the string value at `at` as JSON.stringify writes it.
static bool buf_json_token(struct buf *b, const unsigned char *at, const unsigned char *end) {
  struct scan s = { at + 1, end };
  uint32_t cp;
  bool raw, ok = buf_puts(b, "\"");
  while (ok && str_next(&s, &cp, &raw)) {
    unsigned char utf8[4];
    char esc[8];
    if (raw) {
      utf8[0] = (unsigned char)cp;
      ok = buf_append(b, utf8, 1);
    } else if (cp < 0x80) {
      ok = buf_json_ascii(b, (unsigned char)cp);
    } else if (is_surrogate(cp)) {
      snprintf(esc, sizeof esc, "\\u%04x", cp);
      ok = buf_append(b, esc, 6);
    } else {
      ok = buf_append(b, utf8, utf8_encode(cp, utf8));
    }
  }
  return ok && buf_puts(b, "\"");
}

static int field_of(const unsigned char *key, const unsigned char *end) {
  for (int f = 0; f < F_COUNT; f++) {
    struct scan s = { key + 1, end };
    const unsigned char *want = (const unsigned char *)field_keys[f];
    uint32_t cp;
    bool raw, same = true;
    while (str_next(&s, &cp, &raw)) {
      same = same && !raw && *want != '\0' && cp == *want;
      if (*want != '\0') want++;
    }
    if (same && *want == '\0') return f;
  }
  return -1;
}

// Fills `doc`; false only when out of memory.
static bool json_inspect(const char *data, size_t len, struct json_doc *doc) {
  struct scan s = { (const unsigned char *)(data ? data : ""), (const unsigned char *)(data ? data : "") + len };
  const unsigned char *start = s.p;
  struct buf open = { 0 }; // '{' or '[' per container not yet closed
  int pending = -1;        // the field whose value is being read, at the top level
  const unsigned char *pending_at = NULL, *key;
  const char *why;
  memset(doc, 0, sizeof *doc);
  doc->end = s.end;
  skip_ws(&s);
  doc->object = s.p < s.end && *s.p == '{';

value:
  skip_ws(&s);
  if (s.p >= s.end) {
    why = "unexpected end";
    goto fail;
  }
  switch (*s.p) {
    case '{':
    case '[': {
      char c = (char)*s.p++;
      if (!buf_append(&open, &c, 1)) goto nomem;
      skip_ws(&s);
      if (s.p < s.end && *s.p == (c == '{' ? '}' : ']')) {
        s.p++;
        open.len--;
        goto after;
      }
      if (c == '{') goto member;
      goto value;
    }
    case '"':
      if (!skip_string(&s, &why)) goto fail;
      goto after;
    case 't':
    case 'f':
    case 'n':
      why = "unexpected character";
      if (!skip_literal(&s)) goto fail;
      goto after;
    default:
      why = *s.p == '-' || (*s.p >= '0' && *s.p <= '9') ? "bad number" : "unexpected character";
      if (!skip_number(&s)) goto fail;
      goto after;
  }

after:
  // Back in the top-level object: the value of its member is complete.
  if (open.len == 1) {
    if (pending >= 0) doc->field[pending] = pending_at;
    pending = -1;
  }
  skip_ws(&s);
  if (open.len == 0) {
    if (s.p < s.end) {
      why = "data after the document";
      goto fail;
    }
    doc->ok = true;
    free(open.data);
    return true;
  }
  if (s.p < s.end && *s.p == ',') {
    s.p++;
    if (open.data[open.len - 1] == '{') goto member;
    goto value;
  }
  if (s.p < s.end && *s.p == (open.data[open.len - 1] == '{' ? '}' : ']')) {
    s.p++;
    open.len--;
    goto after;
  }
  why = s.p >= s.end ? "unexpected end" : open.data[open.len - 1] == '{' ? "expected ',' or '}'" : "expected ',' or ']'";
  goto fail;

member:
  skip_ws(&s);
  if (s.p >= s.end || *s.p != '"') {
    why = s.p >= s.end ? "unexpected end" : "expected a member name";
    goto fail;
  }
  key = s.p;
  if (!skip_string(&s, &why)) goto fail;
  skip_ws(&s);
  if (s.p >= s.end || *s.p != ':') {
    why = s.p >= s.end ? "unexpected end" : "expected ':'";
    goto fail;
  }
  s.p++;
  if (open.len == 1) {
    pending = field_of(key, s.end);
    skip_ws(&s);
    pending_at = s.p;
  }
  goto value;

fail:
  doc->error = why;
  doc->error_at = (size_t)(s.p - start);
  free(open.data);
  return true;
nomem:
  free(open.data);
  return false;
}

// Where the well-formed value at `at` ends.
static const unsigned char *value_end(const unsigned char *at, const unsigned char *end) {
  struct scan s = { at, end };
  const char *why;
  if (*s.p == '"') {
    skip_string(&s, &why);
    return s.p;
  }
  if (*s.p != '{' && *s.p != '[') {
    if (!skip_literal(&s)) skip_number(&s);
    return s.p;
  }
  size_t depth = 0;
  do {
    if (*s.p == '"') {
      skip_string(&s, &why);
      continue;
    }
    if (*s.p == '{' || *s.p == '[') depth++;
    else if (*s.p == '}' || *s.p == ']') depth--;
    s.p++;
  } while (depth > 0);
  return s.p;
}

// UTF-16 code units of the UTF-8 sequence starting with `lead` (JavaScript's string length).
static size_t utf16_units(unsigned char lead) {
  if (lead >= 0x80 && lead < 0xc0) return 0;
  return lead >= 0xf0 && lead < 0xf8 ? 2 : 1;
}

// The agent's describe() (src/cni/fields.ts) of the value at `at`: JSON.stringify of it, cut
// to 77 characters and "..." when longer than 80. Other values than strings appear as
// written, which is JSON.stringify's text for the usual ones.
static bool buf_describe(struct buf *b, const unsigned char *at, const unsigned char *end) {
  struct buf text = { 0 };
  bool ok = *at == '"' ? buf_json_token(&text, at, end) : buf_append(&text, at, (size_t)(value_end(at, end) - at));
  if (!ok) {
    free(text.data);
    return false;
  }
  // Where the first character that would not fit in 77 begins (a pair is not split).
  size_t units = 0, cut = text.len;
  for (size_t i = 0; i < text.len; i++) {
    size_t u = utf16_units((unsigned char)text.data[i]);
    if (u > 0 && units + u > 77 && cut == text.len) cut = i;
    units += u;
  }
  ok = units > 80 ? buf_append(b, text.data, cut) && buf_puts(b, "...") : buf_append(b, text.data, text.len);
  free(text.data);
  return ok;
}

// ---- the request ------------------------------------------------------------------------
// What the agent checks first (src/cni/request.ts parseRequest), in its order and with its
// words: the variables of the verb, the JSON, then cniVersion, name, type and agentSocket
// (src/cni/config.ts parseConfig). Each check prints the error and returns true on failure.

static bool env_set(const char *name) {
  const char *v = getenv(name);
  return v != NULL && *v != '\0';
}

static bool per_attachment(const char *cmd) {
  return strcmp(cmd, "ADD") == 0 || strcmp(cmd, "CHECK") == 0 || strcmp(cmd, "DEL") == 0;
}

// cni_error with details built in a buffer, which it frees.
static int cni_error_buf(int code, const char *msg, struct buf *details) {
  if (!buf_append(details, "", 1)) return out_of_memory();
  int rc = cni_error(code, msg, details->data);
  free(details->data);
  return rc;
}

static bool id_valid(const char *id) {
  if (!isalnum((unsigned char)id[0])) return false;
  for (const char *p = id; *p; p++)
    if (!isalnum((unsigned char)*p) && *p != '_' && *p != '.' && *p != '-') return false;
  return true;
}

// JavaScript's \s in UTF-8, beyond ASCII: NBSP, the Zs spaces, LS, PS and the BOM.
static bool js_space_at(const unsigned char *p) {
  if (strchr(" \t\n\v\f\r", *p) != NULL && *p != '\0') return true;
  if (p[0] == 0xc2) return p[1] == 0xa0;
  if (p[0] == 0xe1) return p[1] == 0x9a && p[2] == 0x80;
  if (p[0] == 0xe2 && p[1] == 0x80) return (p[2] >= 0x80 && p[2] <= 0x8a) || p[2] == 0xa8 || p[2] == 0xa9 || p[2] == 0xaf;
  if (p[0] == 0xe2) return p[1] == 0x81 && p[2] == 0x9f;
  if (p[0] == 0xe3) return p[1] == 0x80 && p[2] == 0x80;
  return p[0] == 0xef && p[1] == 0xbb && p[2] == 0xbf;
}

// src/cni/env.ts ifnameProblem.
static const char *ifname_problem(const char *name) {
  if (strlen(name) >= IFNAMSIZ) return "longer than 15 bytes";
  if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0) return "is \".\" or \"..\"";
  for (const unsigned char *p = (const unsigned char *)name; *p; p++)
    if (*p == '/' || *p == ':' || js_space_at(p)) return "contains \"/\", \":\" or whitespace";
  return NULL;
}

// src/cni/env.ts checkEnv: the variables the verb needs, and the attachment's names.
static bool env_invalid(const char *cmd) {
  static const char *const attach[] = { "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME" };
  struct buf msg = { 0 };
  bool ok = true;
  for (size_t i = 0; i < 3 && per_attachment(cmd); i++) {
    if (i == 1 && strcmp(cmd, "DEL") == 0) continue;
    if (!env_set(attach[i])) ok = ok && buf_puts(&msg, msg.len ? "," : "required env variables [") && buf_puts(&msg, attach[i]);
  }
  if (strcmp(cmd, "GC") == 0 && !env_set("CNI_PATH")) ok = ok && buf_puts(&msg, "required env variables [CNI_PATH");
  if (!ok) return out_of_memory();
  if (msg.len > 0) {
    if (!buf_puts(&msg, "] missing") || !buf_append(&msg, "", 1)) return out_of_memory();
    cni_error(CNI_ERR_INVALID_ENV, msg.data, NULL);
    free(msg.data);
    return true;
  }
  if (!per_attachment(cmd)) return false;
  const char *id = getenv("CNI_CONTAINERID"), *ifname = getenv("CNI_IFNAME"), *issue = ifname_problem(ifname);
  if (!id_valid(id)) {
    ok = buf_puts(&msg, "\"") && buf_puts(&msg, id) &&
         buf_puts(&msg, "\" must start with a letter or digit and contain only letters, digits, \"_\", \".\" and \"-\"");
    return ok ? cni_error_buf(CNI_ERR_INVALID_ENV, "invalid CNI_CONTAINERID", &msg) : out_of_memory();
  }
  if (issue != NULL) {
    ok = buf_puts(&msg, "\"") && buf_puts(&msg, ifname) && buf_puts(&msg, "\" ") && buf_puts(&msg, issue);
    return ok ? cni_error_buf(CNI_ERR_INVALID_ENV, "invalid CNI_IFNAME", &msg) : out_of_memory();
  }
  return false;
}

// src/cni/fields.ts Check.fail: "invalid <field>", "must be <want>, got <describe(value)>".
static bool field_invalid(const char *field, const char *want, const unsigned char *value, const unsigned char *end) {
  struct buf msg = { 0 }, details = { 0 };
  bool ok = buf_puts(&msg, "invalid ") && buf_puts(&msg, field) && buf_append(&msg, "", 1) && buf_puts(&details, "must be ") &&
            buf_puts(&details, want) && buf_puts(&details, ", got ") && buf_describe(&details, value, end);
  if (ok) cni_error_buf(CNI_ERR_INVALID_CONFIG, msg.data, &details);
  else out_of_memory();
  free(msg.data);
  return true;
}

static bool is_null(const unsigned char *v) { return v == NULL || *v == 'n'; }

static bool stdin_blank(const struct buf *in) {
  for (size_t i = 0; i < in->len; i++)
    if (strchr(" \t\n\r", in->data[i]) == NULL || in->data[i] == '\0') return false;
  return true;
}

// src/cni/config.ts decodeConfig, then parseConfig up to agentSocket. *socket is set to the
// config's agentSocket when it names one kelp-cni can use, else NULL.
static bool config_invalid(const struct buf *in, const struct json_doc *doc, char **socket) {
  const unsigned char *end = doc->end;
  *socket = NULL;
  char syntax[128];
  const char *bad = NULL;
  if (stdin_blank(in)) {
    bad = "stdin is empty";
  } else if (!doc->ok) {
    // V8 words its syntax errors its own way; where and what is as useful.
    snprintf(syntax, sizeof syntax, "invalid JSON at byte %zu: %s", doc->error_at, doc->error);
    bad = syntax;
  } else if (!doc->object) {
    bad = "not a JSON object";
  }
  if (bad != NULL) {
    cni_error(CNI_ERR_DECODE, "cannot decode network config", bad);
    return true;
  }

  const unsigned char *v = doc->field[F_VERSION];
  if (!is_null(v) && *v != '"') return field_invalid("cniVersion", "a string", v, end);
  size_t len = 0;
  bool odd = false, supported = false;
  char *version = is_null(v) || v[1] == '"' ? strdup("0.1.0") : str_decode(v, end, &len, &odd);
  if (version == NULL) return out_of_memory();
  for (size_t i = 0; i < N_SUPPORTED && !odd; i++) supported = supported || strcmp(version, supported_versions[i]) == 0;
  if (!supported) {
    // src/cni/version.ts requireSupportedVersion.
    struct buf why = { 0 };
    bool ok = buf_puts(&why, "config is \"") && buf_puts(&why, version) && buf_puts(&why, "\", plugin supports [") &&
              buf_versions(&why, " ") && buf_puts(&why, "]");
    free(version);
    return ok ? cni_error_buf(CNI_ERR_INCOMPATIBLE_VERSION, "incompatible CNI versions", &why) : out_of_memory();
  }
  free(version);

  v = doc->field[F_NAME];
  if (!is_null(v) && *v != '"') return field_invalid("name", "a string", v, end);
  if (is_null(v) || v[1] == '"') return cni_error(CNI_ERR_INVALID_CONFIG, "missing network name", NULL);
  struct scan s = { v + 1, end };
  uint32_t cp;
  bool raw, first = true, name_ok = true;
  while (str_next(&s, &cp, &raw)) {
    name_ok = name_ok && !raw && cp < 0x80 && (isalnum((int)cp) || (!first && (cp == '_' || cp == '.' || cp == '-')));
    first = false;
  }
  if (!name_ok) return field_invalid("name", "a letter or digit followed by letters, digits, \"_\", \".\" or \"-\"", v, end);

  v = doc->field[F_TYPE];
  if (!is_null(v) && *v != '"') return field_invalid("type", "a string", v, end);
  if (is_null(v) || v[1] == '"') return cni_error(CNI_ERR_INVALID_CONFIG, "missing plugin type", NULL);

  v = doc->field[F_SOCKET];
  if (is_null(v)) return false;
  if (*v != '"') return field_invalid("agentSocket", "a string", v, end);
  char *path = str_decode(v, end, &len, &odd);
  if (path == NULL) return out_of_memory();
  if (path[0] != '/' || len >= SUN_PATH_MAX) {
    free(path);
    return field_invalid("agentSocket", "an absolute path shorter than 108 bytes", v, end);
  }
  // A NUL or an unpaired surrogate passes the agent's check but names no file: ignored.
  if (odd) free(path);
  else *socket = path;
  return false;
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
static int agent_unavailable(const char *cmd, const char *msg, const char *details) {
  bool status = strcmp(cmd, "STATUS") == 0;
  return cni_error(status ? CNI_ERR_NOT_AVAILABLE : CNI_ERR_TRY_AGAIN, msg, details);
}

// ---- DEL queue --------------------------------------------------------------------------

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

// `<dirname(socket)>/del-queue`: the agent's run dir holds both (src/agent/delqueue.ts delQueueDirFor).
static char *queue_dir_for(const char *socket_path) {
  const char *slash = strrchr(socket_path, '/');
  size_t dirlen = slash == NULL ? 1 : slash == socket_path ? 0 : (size_t)(slash - socket_path);
  char *dir = malloc(dirlen + sizeof "/" DEL_QUEUE_NAME);
  if (dir == NULL) return NULL;
  memcpy(dir, slash == NULL ? "." : socket_path, dirlen);
  strcpy(dir + dirlen, "/" DEL_QUEUE_NAME);
  return dir;
}

// The agent could not take the request. A DEL is queued next to the socket and succeeds;
// everything else, and a DEL that cannot be queued, fails as before. The request has passed
// the checks of main(): it names its attachment and network, so the agent can replay it.
static int agent_down(const char *cmd, const char *socket_path, const struct buf *env, const struct buf *in,
                      const char *msg, const char *details) {
  if (strcmp(cmd, "DEL") != 0) return agent_unavailable(cmd, msg, details);
  char *queue_dir = queue_dir_for(socket_path);
  if (queue_dir == NULL) return out_of_memory();
  char why[8800], name[64];
  int rc = 0;
  if (queue_del(queue_dir, env, in, name, sizeof name, why, sizeof why))
    log_msg(LOG_WARN, "%s%s%s; DEL of %s/%s queued as %s/%s", msg, details ? ": " : "", details ? details : "",
            getenv("CNI_CONTAINERID"), getenv("CNI_IFNAME"), queue_dir, name);
  else
    rc = agent_unavailable(cmd, msg, why);
  free(queue_dir);
  return rc;
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

static int forward(const char *cmd, const char *socket_path, const struct buf *in) {
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
    int rc = agent_down(cmd, socket_path, &env, in, msg, NULL);
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
    int rc = e == EFBIG ? agent_unavailable(cmd, msg, NULL) : agent_down(cmd, socket_path, &env, in, msg, NULL);
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
    int rc = cut ? agent_down(cmd, socket_path, &env, in, msg, why) : agent_unavailable(cmd, msg, why);
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
    struct buf about = { 0 };
    bool ok = buf_puts(&about, "kelp-cni " KELP_VERSION ": CNI plugin of kelp, forwards requests to the kelp agent\n"
                               "CNI protocol versions supported:");
    for (size_t i = 0; ok && i < N_SUPPORTED; i++) ok = buf_puts(&about, i ? ", " : " ") && buf_puts(&about, supported_versions[i]);
    if (ok && buf_puts(&about, "\n")) write_all(STDERR_FILENO, about.data, about.len);
    free(about.data);
    return 0;
  }

  struct buf in = { 0 };
  int read_status = read_stdin(&in);
  int read_errno = errno;
  struct json_doc doc;
  if (!json_inspect(in.data, in.len, &doc)) return out_of_memory();
  const unsigned char *v = doc.field[F_VERSION];
  struct buf version = { 0 };
  if (v != NULL && *v == '"' && v[1] != '"') {
    if (!buf_json_token(&version, v, doc.end) || !buf_append(&version, "", 1)) return out_of_memory();
    answer_version = version.data;
  }

  // VERSION must work with closed or empty stdin and without the agent (CNI-CHECKLIST 25, 26).
  if (strcmp(cmd, "VERSION") == 0) return print_version();
  if (read_status == READ_FAILED) return cni_error(CNI_ERR_IO, "cannot read stdin", strerror(read_errno));
  if (read_status == READ_TOO_LARGE) return cni_error(CNI_ERR_IO, "stdin is larger than 16 MiB", NULL);
  if (!forwarded_verb(cmd)) {
    char msg[300];
    snprintf(msg, sizeof msg, "unknown CNI_COMMAND: %s", cmd);
    return cni_error(CNI_ERR_INVALID_ENV, msg, NULL);
  }

  // The agent marks the plugins it delegates to. Forwarding from there would make the agent run
  // us again for the very request we forward, and again, without end.
  if (env_set("KELP_DELEGATED_BY"))
    return cni_error(CNI_ERR_INVALID_CONFIG, "kelp-cni cannot be a plugin the kelp agent delegates to",
                     "a delegate (ipam.type) of this network names kelp-cni");

  char *socket_path = NULL;
  if (env_invalid(cmd) || config_invalid(&in, &doc, &socket_path)) return 1;
  if (socket_path == NULL) {
    const char *env = getenv("KELP_AGENT_SOCKET");
    socket_path = strdup(env != NULL && *env != '\0' ? env : DEFAULT_SOCKET);
    if (socket_path == NULL) return out_of_memory();
  }
  int rc = forward(cmd, socket_path, &in);
  free(socket_path);
  free(version.data);
  free(in.data);
  return rc;
}
