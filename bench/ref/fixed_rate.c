/*
 * fixed_rate.c: a minimal, independent, single-threaded reference generator for one cell
 * of ringmq-bench's matrix: `pairs --pairs N --rate R --mqtt 3.1.1` (QoS 0, 64 B).
 *
 * N publisher and N subscriber TCP connections (TCP_NODELAY), MQTT 3.1.1 CONNECT and
 * SUBSCRIBE written by hand, subscriber i on topic "bench/pairs/i", publisher i sends there
 * at R msg/s, the publishers evenly phased over one interval. One epoll loop; publishers
 * wake on a grid of --slot-us (default 250, as ringmq-bench; 0 = wake for each message)
 * and send each message due then, stamped with its scheduled time (the end of its slot),
 * so latency = receive time - scheduled time, as ringmq-bench measures it.
 *
 * Busy = getrusage(RUSAGE_SELF) CPU time over the measured window (end of warm-up to end
 * of publishing) / wall time; ns per message = that CPU time / (sent + received).
 *
 * Knobs for experiments on the kernel's loopback cost (off by default):
 *   --quickack0      TCP_QUICKACK 0 on subscribers before every read (pingpong mode)
 *   --rcvbuf BYTES   SO_RCVBUF on subscribers before connect (no receive autotuning)
 *   --batch-recv     subscribers read only in the publishers' tick (no wake-ups for
 *                    deliveries between ticks); with app timestamps this adds the wait
 *                    to the latency, so pair it with --kstamp
 *   --kstamp         receive time = the kernel's software receive timestamp of the
 *                    segment (SO_TIMESTAMPNS, recvmsg), not the time of the read
 *
 * This is bench tooling only: it exists to say what the kernel floor is for this cell,
 * as the yardstick issue 16 names ("what an independent generator can"). It shares no
 * code with ringmq-bench. Build: cc -O2 -o fixed_rate fixed_rate.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <linux/tcp.h> /* struct tcp_info with tcpi_segs_out (glibc's is older) */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>
#include <sched.h>

#define PAYLOAD 64
#define MAXC 1024

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static uint64_t cpu_ns(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000ull +
           (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000ull;
}

/* Busy and total jiffies of one CPU from /proc/stat (busy: all but idle and iowait;
 * steal counts as busy time taken from this CPU). */
static void cpu_jiffies(int cpu, uint64_t *busy, uint64_t *total) {
    char name[16], line[512];
    snprintf(name, sizeof name, "cpu%d ", cpu);
    *busy = *total = 0;
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, name, strlen(name))) continue;
        unsigned long long v[10] = {0};
        sscanf(line + strlen(name), "%llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
               &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]);
        for (int i = 0; i < 8; i++) *total += v[i];
        *busy = *total - v[3] - v[4];
        break;
    }
    fclose(f);
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

struct pub {
    int fd;
    uint64_t seq;     /* next sequence */
    uint64_t phase;   /* ns after t0 of message 0 */
    uint8_t frame[2 + 2 + 32 + PAYLOAD];
    int flen, pay_at;
};

struct sub {
    int fd;
    uint8_t buf[65536];
    int have;
    uint64_t next_seq, recv, lost_gap, dup_or_reorder;
};

static struct pub pubs[MAXC];
static struct sub subs[MAXC];
static uint32_t *lat_us;
static size_t nlat, cap_lat;
static uint64_t measure_start, pub_end, slot_ns, period_ns, t0;
static int npairs, quickack0, rcvbuf, batch_recv, kstamp;
/* CLOCK_REALTIME - CLOCK_MONOTONIC, ns: kernel receive stamps are real time. */
static int64_t real_minus_mono;
static uint64_t kstamp_missing;
static uint64_t sent_total, sent_window, recv_window;

static int open_conn(const char *host, int port, int is_sub) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (is_sub && rcvbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf))
        die("SO_RCVBUF");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) die("connect");
    return fd;
}

static void write_all(int fd, const void *b, size_t n) {
    const uint8_t *p = b;
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            die("send");
        }
        p += w;
        n -= w;
    }
}

/* Reads exactly one small control packet (CONNACK 4 bytes, SUBACK 5 bytes), blocking. */
static void read_exact(int fd, uint8_t *b, size_t n) {
    while (n) {
        ssize_t r = recv(fd, b, n, 0);
        if (r <= 0) die("recv (setup)");
        b += r;
        n -= r;
    }
}

static void mqtt_connect(int fd, const char *id) {
    uint8_t p[64];
    size_t idl = strlen(id), i = 0;
    p[i++] = 0x10;
    p[i++] = (uint8_t)(10 + 2 + idl);
    memcpy(p + i, "\0\4MQTT\4\2\0\x3c", 10); /* 3.1.1, clean session, keep-alive 60 s */
    i += 10;
    p[i++] = 0;
    p[i++] = (uint8_t)idl;
    memcpy(p + i, id, idl);
    i += idl;
    write_all(fd, p, i);
    uint8_t ack[4];
    read_exact(fd, ack, 4);
    if (ack[0] != 0x20 || ack[3] != 0) {
        fprintf(stderr, "CONNACK refused: %02x %02x\n", ack[0], ack[3]);
        exit(2);
    }
}

static void mqtt_subscribe(int fd, const char *topic) {
    uint8_t p[64];
    size_t tl = strlen(topic), i = 0;
    p[i++] = 0x82;
    p[i++] = (uint8_t)(2 + 2 + tl + 1);
    p[i++] = 0;
    p[i++] = 1;
    p[i++] = 0;
    p[i++] = (uint8_t)tl;
    memcpy(p + i, topic, tl);
    i += tl;
    p[i++] = 0; /* QoS 0 */
    write_all(fd, p, i);
    uint8_t ack[5];
    read_exact(fd, ack, 5);
    if (ack[0] != 0x90 || ack[4] & 0x80) {
        fprintf(stderr, "SUBACK refused\n");
        exit(2);
    }
}

static void set_nonblock(int fd) {
    int one = 1;
    if (ioctl(fd, FIONBIO, &one)) die("FIONBIO");
}

static void record(uint64_t lat_ns) {
    if (nlat == cap_lat) {
        cap_lat = cap_lat ? cap_lat * 2 : 1 << 20;
        lat_us = realloc(lat_us, cap_lat * sizeof *lat_us);
        if (!lat_us) die("realloc");
    }
    uint64_t us = lat_ns / 1000;
    lat_us[nlat++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

/* Parses whole PUBLISH frames (QoS 0) at the front of the subscriber's buffer. */
static void parse(struct sub *s, int idx, uint64_t t) {
    int off = 0;
    while (s->have - off >= 2) {
        uint8_t *f = s->buf + off;
        uint32_t rl = 0, mul = 1;
        int h = 1;
        for (;;) {
            if (off + h >= s->have) goto out;
            uint8_t b = f[h++];
            rl += (b & 0x7f) * mul;
            mul <<= 7;
            if (!(b & 0x80)) break;
            if (h > 4) { fprintf(stderr, "bad length\n"); exit(2); }
        }
        if (s->have - off < h + (int)rl) break;
        if ((f[0] & 0xf0) == 0x30) {
            int tl = f[h] << 8 | f[h + 1];
            uint8_t *pay = f + h + 2 + tl;
            uint64_t seq, sched;
            uint32_t from;
            memcpy(&seq, pay, 8);
            memcpy(&sched, pay + 8, 8);
            memcpy(&from, pay + 16, 4);
            if ((int)from != idx) s->dup_or_reorder++;
            if (seq == s->next_seq) s->next_seq++;
            else if (seq > s->next_seq) { s->lost_gap += seq - s->next_seq; s->next_seq = seq + 1; }
            else s->dup_or_reorder++;
            s->recv++;
            if (sched >= measure_start && sched < pub_end) {
                recv_window++;
                record(t > sched ? t - sched : 0);
            }
        }
        off += h + (int)rl;
    }
out:
    if (off) {
        memmove(s->buf, s->buf + off, s->have - off);
        s->have -= off;
    }
}

static void sub_read(struct sub *s, int idx) {
    for (;;) {
        if (quickack0) {
            int zero = 0;
            setsockopt(s->fd, IPPROTO_TCP, TCP_QUICKACK, &zero, sizeof zero);
        }
        ssize_t r;
        uint64_t t;
        if (kstamp) {
            struct iovec iov = {.iov_base = s->buf + s->have, .iov_len = sizeof s->buf - s->have};
            union { char b[CMSG_SPACE(sizeof(struct timespec))]; struct cmsghdr a; } cb;
            struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cb.b, .msg_controllen = sizeof cb.b};
            r = recvmsg(s->fd, &m, MSG_DONTWAIT);
            t = 0;
            for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); r > 0 && c; c = CMSG_NXTHDR(&m, c))
                if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_TIMESTAMPNS) {
                    struct timespec ts;
                    memcpy(&ts, CMSG_DATA(c), sizeof ts);
                    t = (uint64_t)((int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec - real_minus_mono);
                }
            if (r > 0 && !t) kstamp_missing++;
        } else {
            r = recv(s->fd, s->buf + s->have, sizeof s->buf - s->have, MSG_DONTWAIT);
            t = 0;
        }
        if (r < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            if (errno == EINTR) continue;
            die("recv");
        }
        if (r == 0) { fprintf(stderr, "subscriber %d: broker closed\n", idx); exit(2); }
        s->have += (int)r;
        parse(s, idx, t ? t : now_ns());
        if (s->have < (int)sizeof s->buf && (size_t)r < sizeof s->buf / 2) return; /* short read: drained */
    }
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static uint32_t pct(double p) {
    if (!nlat) return 0;
    size_t i = (size_t)(p / 100.0 * (nlat - 1) + 0.5);
    return lat_us[i];
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1";
    int port = 1883;
    double rate = 1000, duration = 10, warmup = 2, drain = 2;
    npairs = 50;
    slot_ns = 250000;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-p") && v) port = atoi(v), i++;
        else if (!strcmp(a, "--host") && v) host = v, i++;
        else if (!strcmp(a, "--pairs") && v) npairs = atoi(v), i++;
        else if (!strcmp(a, "--rate") && v) rate = atof(v), i++;
        else if (!strcmp(a, "--duration") && v) duration = atof(v), i++;
        else if (!strcmp(a, "--warmup") && v) warmup = atof(v), i++;
        else if (!strcmp(a, "--slot-us") && v) slot_ns = (uint64_t)(atof(v) * 1000), i++;
        else if (!strcmp(a, "--rcvbuf") && v) rcvbuf = atoi(v), i++;
        else if (!strcmp(a, "--quickack0")) quickack0 = 1;
        else if (!strcmp(a, "--batch-recv")) batch_recv = 1;
        else if (!strcmp(a, "--kstamp")) kstamp = 1;
        else if (!strcmp(a, "--json")) json = 1;
        else {
            fprintf(stderr, "usage: %s [-p PORT] [--host IP] [--pairs N] [--rate R] [--duration S] "
                            "[--warmup S] [--slot-us US] [--rcvbuf B] [--quickack0] [--batch-recv] [--kstamp] [--json]\n"
                            "unknown or incomplete argument: %s\n", argv[0], a);
            return 2;
        }
    }
    if (npairs < 1 || npairs > MAXC || rate <= 0) {
        fprintf(stderr, "--pairs must be 1..%d and --rate > 0\n", MAXC);
        return 2;
    }
    period_ns = (uint64_t)(1e9 / rate);
    char id[32], topic[32];
    for (int i = 0; i < npairs; i++) {
        subs[i].fd = open_conn(host, port, 1);
        snprintf(id, sizeof id, "ref-sub-%d-%d", getpid(), i);
        mqtt_connect(subs[i].fd, id);
        snprintf(topic, sizeof topic, "bench/pairs/%d", i);
        mqtt_subscribe(subs[i].fd, topic);
    }
    for (int i = 0; i < npairs; i++) {
        struct pub *p = &pubs[i];
        p->fd = open_conn(host, port, 0);
        snprintf(id, sizeof id, "ref-pub-%d-%d", getpid(), i);
        mqtt_connect(p->fd, id);
        snprintf(topic, sizeof topic, "bench/pairs/%d", i);
        int tl = (int)strlen(topic), k = 0;
        p->frame[k++] = 0x30;
        p->frame[k++] = (uint8_t)(2 + tl + PAYLOAD);
        p->frame[k++] = 0;
        p->frame[k++] = (uint8_t)tl;
        memcpy(p->frame + k, topic, tl);
        k += tl;
        p->pay_at = k;
        memset(p->frame + k, 'x', PAYLOAD);
        uint32_t idx = (uint32_t)i;
        memcpy(p->frame + k + 16, &idx, 4);
        p->flen = k + PAYLOAD;
        p->phase = period_ns * (uint64_t)i / (uint64_t)npairs;
    }
    if (kstamp) {
        int one = 1;
        for (int i = 0; i < npairs; i++)
            if (setsockopt(subs[i].fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one)) die("SO_TIMESTAMPNS");
        struct timespec a, b, c;
        clock_gettime(CLOCK_MONOTONIC, &a);
        clock_gettime(CLOCK_REALTIME, &b);
        clock_gettime(CLOCK_MONOTONIC, &c);
        int64_t mono = ((int64_t)a.tv_sec * 1000000000ll + a.tv_nsec + (int64_t)c.tv_sec * 1000000000ll + c.tv_nsec) / 2;
        real_minus_mono = (int64_t)b.tv_sec * 1000000000ll + b.tv_nsec - mono;
    }
    int ep = epoll_create1(0);
    if (ep < 0) die("epoll_create1");
    for (int i = 0; i < npairs; i++) {
        set_nonblock(subs[i].fd);
        set_nonblock(pubs[i].fd);
        struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.u32 = (uint32_t)i};
        if (!batch_recv && epoll_ctl(ep, EPOLL_CTL_ADD, subs[i].fd, &ev)) die("epoll_ctl");
    }
    t0 = now_ns();
    measure_start = t0 + (uint64_t)(warmup * 1e9);
    pub_end = measure_start + (uint64_t)(duration * 1e9);
    uint64_t cpu0 = 0, wall0 = 0, cpu1 = 0, wall1 = 0, wakes = 0, wakes0 = 0;
    uint64_t jb0 = 0, jt0 = 0, jb1 = 0, jt1 = 0;
    int mycpu = sched_getcpu();
    struct epoll_event evs[256];
    int measuring = 0;
    uint64_t next_tick = t0;
    for (;;) {
        uint64_t t = now_ns();
        if (!measuring && t >= measure_start) {
            measuring = 1;
            cpu0 = cpu_ns();
            cpu_jiffies(mycpu, &jb0, &jt0);
            wall0 = t;
            wakes0 = wakes;
        }
        if (t >= pub_end) break;
        if (t >= next_tick) {
            /* Every message due by now goes out, stamped with the end of its slot. */
            uint64_t earliest = UINT64_MAX;
            for (int i = 0; i < npairs; i++) {
                struct pub *p = &pubs[i];
                for (;;) {
                    uint64_t due = t0 + p->phase + p->seq * period_ns;
                    uint64_t slot_end = slot_ns ? t0 + (due - t0 + slot_ns - 1) / slot_ns * slot_ns : due;
                    if (slot_end > t) { if (slot_end < earliest) earliest = slot_end; break; }
                    if (slot_end >= pub_end) { earliest = pub_end; break; }
                    uint8_t *pay = p->frame + p->pay_at;
                    memcpy(pay, &p->seq, 8);
                    memcpy(pay + 8, &slot_end, 8);
                    ssize_t w = send(p->fd, p->frame, p->flen, MSG_DONTWAIT | MSG_NOSIGNAL);
                    if (w != p->flen) { fprintf(stderr, "publisher %d: short send %zd\n", i, w); exit(2); }
                    p->seq++;
                    sent_total++;
                    if (slot_end >= measure_start) sent_window++;
                }
            }
            next_tick = earliest;
            if (batch_recv)
                for (int i = 0; i < npairs; i++) sub_read(&subs[i], i);
        }
        t = now_ns();
        uint64_t wait = next_tick > t ? next_tick - t : 0;
        if (wait > pub_end - t) wait = pub_end > t ? pub_end - t : 0;
        struct timespec ts = {.tv_sec = (time_t)(wait / 1000000000ull), .tv_nsec = (long)(wait % 1000000000ull)};
        int n = epoll_pwait2(ep, evs, 256, &ts, NULL);
        wakes++;
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_pwait2");
        }
        for (int k = 0; k < n; k++) sub_read(&subs[evs[k].data.u32], (int)evs[k].data.u32);
    }
    cpu1 = cpu_ns();
    cpu_jiffies(mycpu, &jb1, &jt1);
    wall1 = now_ns();
    double cpu_share = jt1 > jt0 ? 100.0 * (double)(jb1 - jb0) / (double)(jt1 - jt0) : 0;
    uint64_t wakes_window = wakes - wakes0;
    /* Drain: wait for what is still on the way (blocking epoll on every subscriber). */
    if (batch_recv)
        for (int i = 0; i < npairs; i++) {
            struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.u32 = (uint32_t)i};
            epoll_ctl(ep, EPOLL_CTL_ADD, subs[i].fd, &ev);
            sub_read(&subs[i], i);
        }
    uint64_t drain_end = now_ns() + (uint64_t)(drain * 1e9);
    for (;;) {
        uint64_t got = 0;
        for (int i = 0; i < npairs; i++) got += subs[i].recv;
        if (got >= sent_total) break;
        uint64_t t = now_ns();
        if (t >= drain_end) break;
        int n = epoll_wait(ep, evs, 256, (int)((drain_end - t) / 1000000 + 1));
        for (int k = 0; k < n; k++) sub_read(&subs[evs[k].data.u32], (int)evs[k].data.u32);
    }
    uint64_t got = 0, gaps = 0, bad = 0;
    for (int i = 0; i < npairs; i++) {
        got += subs[i].recv;
        bad += subs[i].dup_or_reorder;
        gaps += subs[i].lost_gap + (pubs[i].seq - subs[i].next_seq);
    }
    uint64_t sub_segs_out = 0, pub_segs_in = 0;
    for (int i = 0; i < npairs; i++) {
        struct tcp_info ti;
        socklen_t tl = sizeof ti;
        if (!getsockopt(subs[i].fd, IPPROTO_TCP, TCP_INFO, &ti, &tl)) sub_segs_out += ti.tcpi_segs_out;
        tl = sizeof ti;
        if (!getsockopt(pubs[i].fd, IPPROTO_TCP, TCP_INFO, &ti, &tl)) pub_segs_in += ti.tcpi_segs_in;
    }
    for (int i = 0; i < npairs; i++) {
        close(pubs[i].fd);
        close(subs[i].fd);
    }
    if (kstamp_missing) fprintf(stderr, "reads without a kernel receive stamp (time of the read used): %lu\n", kstamp_missing);
    qsort(lat_us, nlat, sizeof *lat_us, cmp_u32);
    double wall = (double)(wall1 - wall0), cpu = (double)(cpu1 - cpu0);
    double busy = 100.0 * cpu / wall;
    double nspm = cpu / (double)(sent_window + recv_window);
    if (json)
        printf("{\"pairs\":%d,\"rate\":%.0f,\"slot_us\":%.0f,\"sent\":%lu,\"received\":%lu,\"lost\":%lu,"
               "\"dup_or_reorder\":%lu,\"busy_percent\":%.1f,\"cpu_busy_percent\":%.1f,\"ns_per_message\":%.0f,\"wakeups_per_s\":%.0f,"
               "\"sub_acks_per_msg\":%.2f,\"pub_acks_per_msg\":%.2f,\"p50_us\":%u,\"p90_us\":%u,\"p99_us\":%u,\"p999_us\":%u,\"max_us\":%u,\"samples\":%zu}\n",
               npairs, rate, slot_ns / 1e3, sent_total, got, gaps, bad, busy, cpu_share, nspm,
               wakes_window / (wall / 1e9), (double)sub_segs_out / (double)got, (double)pub_segs_in / (double)sent_total,
               pct(50), pct(90), pct(99), pct(99.9), nlat ? lat_us[nlat - 1] : 0, nlat);
    else
        printf("ref fixed_rate  %d pairs x %.0f/s, 64 B QoS 0, 3.1.1, slot %.0f µs%s%s%s\n"
               "sent %lu  received %lu  lost %lu  dup/reorder %lu\n"
               "busy %.1f%% (its CPU %d: %.1f%% busy, softirqs included)  %.0f ns CPU per message sent or received  %.0f wake-ups/s\n"
               "segments out per delivery (subscribers' ACKs) %.2f  segments in per publish (broker's ACKs) %.2f\n"
               "latency p50/p90/p99 %u / %u / %u µs  p99.9/max %u / %u µs  (%zu samples)\n",
               npairs, rate, slot_ns / 1e3, quickack0 ? ", quickack0" : "", batch_recv ? ", batch-recv" : "", kstamp ? ", kernel receive stamps" : "",
               sent_total, got, gaps, bad, busy, mycpu, cpu_share, nspm, wakes_window / (wall / 1e9),
               (double)sub_segs_out / (double)got, (double)pub_segs_in / (double)sent_total, pct(50), pct(90), pct(99),
               pct(99.9), nlat ? lat_us[nlat - 1] : 0, nlat);
    return gaps || bad ? 1 : 0;
}
