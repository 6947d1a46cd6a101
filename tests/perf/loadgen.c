/*
 * loadgen: a compact open-loop HTTP/1.1 load generator (constant arrival rate, wrk2-style).
 *
 * Request i is due at start + i / rate whatever happened to earlier requests; it goes out on an idle
 * keep-alive connection, or on a new one (up to --max-conns), or waits in a queue. Its latency is
 * counted from the moment it was due, so queueing in the generator or in the system under test is
 * not hidden (no coordinated omission). One thread, epoll, a timerfd for the schedule.
 *
 * Built and run by tests/perf/bench_gateway.py:
 *   loadgen --port P --rate R --duration S --warmup W --request FILE --out FILE
 *           [--max-conns N] [--timeout-ms T]
 * FILE holds the raw request bytes. For each request due after the warm-up, OUT gets one line
 * "latency_us send_lag_us status", where a status under 100 is a transport failure: 0 connection reset
 * or closed, 1 timeout, 2 connect error. Stdout gets one JSON summary line.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define BUF_SIZE 65536
#define TIMER_TAG UINT64_MAX

enum state { FREE, CONNECTING, IDLE, BUSY };
enum failure { RESET = 0, TIMEOUT = 1, CONNECT = 2 };

typedef struct {
    int fd;
    enum state st;
    int64_t seq;      /* request in flight, -1 when none */
    size_t wrote;     /* bytes of the request written */
    size_t used;      /* bytes in buf */
    char buf[BUF_SIZE];
} conn_t;

static struct {
    const char *host, *req_path, *out_path;
    int port, max_conns, timeout_ms;
    double rate, duration, warmup;
} opt = {"127.0.0.1", NULL, NULL, 0, 512, 5000, 0, 0, 0};

static char *req;
static size_t req_len;
static conn_t *conns;
static int *idle, n_idle, n_open, n_connecting, max_open, epfd;
static int64_t total, next_seq, *queue, q_head, q_tail;
static int64_t *lat_ns, *lag_ns;
static int *status_of;
static int64_t t0, completed, errors, connect_errors, timeouts, resets;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t due_ns(int64_t seq) { return t0 + (int64_t)((double)seq * 1e9 / opt.rate); }

static void die(const char *what) {
    perror(what);
    exit(2);
}

static void finish_request(int64_t seq, int status, int64_t now) {
    lat_ns[seq] = now - due_ns(seq);
    status_of[seq] = status;
    completed++;
    if (status < 200 || status > 299) errors++;
}

static void watch(conn_t *c, int op, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.u64 = (uint64_t)(c - conns)};
    if (epoll_ctl(epfd, op, c->fd, &ev) < 0) die("epoll_ctl");
}

static void drop_idle(conn_t *c) {
    for (int i = 0; i < n_idle; i++)
        if (&conns[idle[i]] == c) {
            idle[i] = idle[--n_idle];
            return;
        }
}

static void close_conn(conn_t *c) {
    if (c->st == IDLE) drop_idle(c);
    if (c->st == CONNECTING) n_connecting--;
    close(c->fd);
    c->st = FREE;
    c->fd = -1;
    c->seq = -1;
    n_open--;
}

static conn_t *free_slot(void) {
    for (int i = 0; i < opt.max_conns; i++)
        if (conns[i].st == FREE) return &conns[i];
    return NULL;
}

static void open_conn(void) {
    conn_t *c = free_slot();
    if (!c) return;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port)};
    inet_pton(AF_INET, opt.host, &sa.sin_addr);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS) {
        close(fd);
        connect_errors++;
        return;
    }
    *c = (conn_t){.fd = fd, .st = CONNECTING, .seq = -1};
    n_open++;
    n_connecting++;
    if (n_open > max_open) max_open = n_open;
    watch(c, EPOLL_CTL_ADD, EPOLLOUT | EPOLLIN);
}

static void write_some(conn_t *c) {
    while (c->wrote < req_len) {
        ssize_t n = send(c->fd, req + c->wrote, req_len - c->wrote, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN) {
                watch(c, EPOLL_CTL_MOD, EPOLLIN | EPOLLOUT);
                return;
            }
            resets++;
            finish_request(c->seq, RESET, now_ns());
            close_conn(c);
            return;
        }
        c->wrote += (size_t)n;
    }
    watch(c, EPOLL_CTL_MOD, EPOLLIN);
}

static void start_request(conn_t *c, int64_t seq) {
    c->st = BUSY;
    c->seq = seq;
    c->wrote = 0;
    c->used = 0;
    lag_ns[seq] = now_ns() - due_ns(seq);
    write_some(c);
}

/* Hand queued requests to idle connections; open connections for the rest. */
static void dispatch(void) {
    while (q_head < q_tail && n_idle > 0) start_request(&conns[idle[--n_idle]], queue[q_head++]);
    int64_t waiting = q_tail - q_head - n_connecting;
    for (; waiting > 0 && n_open < opt.max_conns; waiting--) open_conn();
}

static void schedule_due(int64_t now) {
    while (next_seq < total && due_ns(next_seq) <= now) queue[q_tail++] = next_seq++;
}

static void arm_timer(int tfd) {
    struct itimerspec its = {0};
    if (next_seq < total) {
        int64_t t = due_ns(next_seq);
        its.it_value.tv_sec = t / 1000000000;
        its.it_value.tv_nsec = t % 1000000000;
    }
    if (timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL) < 0) die("timerfd_settime");
}

/* Length of a complete response in buf, 0 when more bytes are needed; sets *status, *close_after,
 * and *until_close for a body that ends when the server closes the connection. */
static size_t response_length(conn_t *c, int *status, int *close_after, int *until_close) {
    c->buf[c->used] = '\0';
    char *end = strstr(c->buf, "\r\n\r\n");
    if (!end) return 0;
    size_t head = (size_t)(end - c->buf) + 4;
    *status = atoi(c->buf + 9);
    long clen = -1;
    int chunked = 0;
    *close_after = strncmp(c->buf, "HTTP/1.0", 8) == 0;
    for (char *line = strstr(c->buf, "\r\n") + 2; line < end; line = strstr(line, "\r\n") + 2) {
        if (strncasecmp(line, "content-length:", 15) == 0) clen = atol(line + 15);
        else if (strncasecmp(line, "transfer-encoding:", 18) == 0) chunked = strcasestr(line, "chunked") != NULL;
        else if (strncasecmp(line, "connection:", 11) == 0) {
            char *eol = strstr(line, "\r\n");
            char saved = *eol;
            *eol = '\0';
            if (strcasestr(line, "close")) *close_after = 1;
            else if (strcasestr(line, "keep-alive")) *close_after = 0;
            *eol = saved;
        }
    }
    if (!chunked) {
        *until_close = clen < 0;
        if (clen < 0) return 0;
        return c->used >= head + (size_t)clen ? head + (size_t)clen : 0;
    }
    size_t pos = head;
    for (;;) {
        char *eol = strstr(c->buf + pos, "\r\n");
        if (!eol) return 0;
        size_t size = strtoul(c->buf + pos, NULL, 16);
        pos = (size_t)(eol - c->buf) + 2;
        if (size == 0) {
            char *trailer_end = strstr(c->buf + pos - 2, "\r\n\r\n");
            return trailer_end ? (size_t)(trailer_end - c->buf) + 4 : 0;
        }
        pos += size + 2;
        if (pos > c->used) return 0;
    }
}

static void on_readable(conn_t *c) {
    if (c->used >= BUF_SIZE - 1) {
        finish_request(c->seq, RESET, now_ns());
        close_conn(c);
        return;
    }
    ssize_t n = recv(c->fd, c->buf + c->used, BUF_SIZE - 1 - c->used, 0);
    if (n < 0 && errno == EAGAIN) return;
    int64_t now = now_ns();
    if (n <= 0) {
        if (c->st == BUSY) {
            int status = RESET, close_after = 0, until_close = 0;
            if (n == 0 && c->used > 0) response_length(c, &status, &close_after, &until_close);
            if (!until_close) status = RESET, resets++;
            finish_request(c->seq, status, now);
        }
        close_conn(c);
        return;
    }
    if (c->st != BUSY) return; /* unexpected bytes on an idle connection: ignore */
    c->used += (size_t)n;
    int status = 0, close_after = 0, until_close = 0;
    if (!response_length(c, &status, &close_after, &until_close)) return;
    finish_request(c->seq, status, now);
    c->seq = -1;
    if (close_after) {
        close_conn(c);
        return;
    }
    c->st = IDLE;
    idle[n_idle++] = (int)(c - conns);
}

static void on_writable(conn_t *c) {
    if (c->st == CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            connect_errors++;
            close_conn(c);
            if (q_head < q_tail) finish_request(queue[q_head++], CONNECT, now_ns());
            return;
        }
        n_connecting--;
        c->st = IDLE;
        watch(c, EPOLL_CTL_MOD, EPOLLIN);
        idle[n_idle++] = (int)(c - conns);
        return;
    }
    if (c->st == BUSY) write_some(c);
}

static void expire(int64_t now) {
    int64_t limit = (int64_t)opt.timeout_ms * 1000000;
    for (int i = 0; i < opt.max_conns; i++) {
        conn_t *c = &conns[i];
        if (c->st == BUSY && now - due_ns(c->seq) - lag_ns[c->seq] > limit) {
            timeouts++;
            finish_request(c->seq, TIMEOUT, now);
            close_conn(c);
        }
    }
}

static void parse_args(int argc, char **argv) {
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--host")) opt.host = v;
        else if (!strcmp(k, "--port")) opt.port = atoi(v);
        else if (!strcmp(k, "--rate")) opt.rate = atof(v);
        else if (!strcmp(k, "--duration")) opt.duration = atof(v);
        else if (!strcmp(k, "--warmup")) opt.warmup = atof(v);
        else if (!strcmp(k, "--request")) opt.req_path = v;
        else if (!strcmp(k, "--out")) opt.out_path = v;
        else if (!strcmp(k, "--max-conns")) opt.max_conns = atoi(v);
        else if (!strcmp(k, "--timeout-ms")) opt.timeout_ms = atoi(v);
        else {
            fprintf(stderr, "loadgen: unknown option %s\n", k);
            exit(2);
        }
    }
    if (!opt.port || opt.rate <= 0 || opt.duration <= 0 || !opt.req_path || !opt.out_path) {
        fprintf(stderr, "usage: loadgen --port P --rate R --duration S --warmup W --request F --out F\n");
        exit(2);
    }
}

static void read_request(void) {
    FILE *f = fopen(opt.req_path, "rb");
    if (!f) die(opt.req_path);
    struct stat st;
    fstat(fileno(f), &st);
    req_len = (size_t)st.st_size;
    req = malloc(req_len);
    if (fread(req, 1, req_len, f) != req_len) die("fread");
    fclose(f);
}

static void allocate(void) {
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    total = (int64_t)((opt.warmup + opt.duration) * opt.rate);
    conns = calloc((size_t)opt.max_conns, sizeof *conns);
    idle = calloc((size_t)opt.max_conns, sizeof *idle);
    queue = calloc((size_t)total + 1, sizeof *queue);
    lat_ns = calloc((size_t)total + 1, sizeof *lat_ns);
    lag_ns = calloc((size_t)total + 1, sizeof *lag_ns);
    status_of = calloc((size_t)total + 1, sizeof *status_of);
    if (!conns || !idle || !queue || !lat_ns || !lag_ns || !status_of) die("calloc");
    for (int i = 0; i < opt.max_conns; i++) conns[i].fd = -1, conns[i].seq = -1;
}

static void run(void) {
    epfd = epoll_create1(EPOLL_CLOEXEC);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (epfd < 0 || tfd < 0) die("epoll/timerfd");
    struct epoll_event tev = {.events = EPOLLIN, .data.u64 = TIMER_TAG};
    epoll_ctl(epfd, EPOLL_CTL_ADD, tfd, &tev);
    t0 = now_ns() + 1000000;
    arm_timer(tfd);
    int64_t last_expiry = t0, deadline = INT64_MAX;
    struct epoll_event evs[256];
    while (completed < total) {
        int n = epoll_wait(epfd, evs, 256, 100);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        for (int i = 0; i < n; i++) {
            if (evs[i].data.u64 == TIMER_TAG) {
                uint64_t ticks;
                ssize_t r = read(tfd, &ticks, sizeof ticks);
                (void)r;
                continue;
            }
            conn_t *c = &conns[evs[i].data.u64];
            if (c->st == FREE) continue;
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR) && c->st != CONNECTING) on_readable(c);
            else if (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) on_writable(c);
        }
        int64_t now = now_ns();
        schedule_due(now);
        dispatch();
        arm_timer(tfd);
        if (now - last_expiry > 50000000) expire(last_expiry = now);
        if (next_seq >= total && deadline == INT64_MAX) deadline = now + (int64_t)opt.timeout_ms * 1000000;
        if (now > deadline) break;
    }
    /* whatever is still queued or in flight at the deadline failed */
    int64_t now = now_ns();
    for (int i = 0; i < opt.max_conns; i++)
        if (conns[i].st == BUSY) timeouts++, finish_request(conns[i].seq, TIMEOUT, now);
    while (q_head < q_tail) timeouts++, finish_request(queue[q_head++], TIMEOUT, now);
}

static void write_results(double wall_s) {
    FILE *out = fopen(opt.out_path, "w");
    if (!out) die(opt.out_path);
    int64_t first = (int64_t)(opt.warmup * opt.rate), measured = 0, measured_errors = 0;
    for (int64_t s = first; s < total; s++) {
        fprintf(out, "%lld %lld %d\n", (long long)(lat_ns[s] / 1000), (long long)(lag_ns[s] / 1000), status_of[s]);
        measured++;
        if (status_of[s] < 200 || status_of[s] > 299) measured_errors++;
    }
    fclose(out);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    printf("{\"sent\": %lld, \"measured\": %lld, \"measured_errors\": %lld, \"errors\": %lld, "
           "\"timeouts\": %lld, \"connect_errors\": %lld, \"resets\": %lld, \"max_conns_used\": %d, "
           "\"wall_s\": %.3f, \"cpu_s\": %.3f}\n",
           (long long)next_seq, (long long)measured, (long long)measured_errors, (long long)errors,
           (long long)timeouts, (long long)connect_errors, (long long)resets, max_open, wall_s, cpu);
}

int main(int argc, char **argv) {
    parse_args(argc, argv);
    read_request();
    allocate();
    int64_t start = now_ns();
    run();
    write_results((double)(now_ns() - start) / 1e9);
    return 0;
}
