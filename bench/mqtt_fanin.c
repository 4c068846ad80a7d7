/* Many publishers to one subscriber over MQTT 3.1.1 with mutual TLS 1.3, for bench/mqtt_fleet.sh.
 *
 * The subscriber (client id SUBSCRIBER) subscribes to devices/+/telemetry at QOS; then PUBLISHERS
 * threads (client ids pub-001, pub-002, … with certificates CERTDIR/<id>.pem and the key
 * CERTDIR/<id>.key) each publish 100-byte messages on devices/<id>/telemetry at QOS for SECONDS
 * (QoS 1: each PUBACK is read and checked before the next message).
 * The loop is closed end to end: a publisher has at most WINDOW (8) messages that the subscriber
 * has not received yet, so the rate measured is what the path delivers, not what a broker accepts
 * and then drops for a subscriber that cannot keep up (brokers drop past their queue limits: 100
 * publishers × 8 stay under mosquitto's default max_queued_messages of 1,000).
 * Every payload carries its publisher and send time; the subscriber records publish → delivery
 * latency and acknowledges QoS 1 deliveries (one write per read). After the publishers stop, the
 * subscriber drains for up to 2 s. A run fails (exit 1) on any refused CONNACK, SUBACK or PUBACK,
 * and when a publisher's messages went missing beyond the last window (see the end of main).
 * Publishers run at nice 10 so the one subscriber thread, on the same core, keeps up.
 * Prints "published delivered p50_us p99_us seconds".
 * Build: cc -O2 -pthread -o mqtt_fanin bench/mqtt_fanin.c -lssl -lcrypto
 * Usage: mqtt_fanin HOST PORT CAFILE CERTDIR SUBSCRIBER PUBLISHERS SECONDS QOS */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static struct sockaddr_in address;
static const char *cafile, *certdir;
static double seconds, stop_at;
static int qos;
static atomic_long published, failures;
static atomic_int publishers_ready, go;
#define WINDOW 8
#define MAX_PUBLISHERS 1000
/* Per publisher: messages the subscriber received, and whether the publisher sleeps on it. */
static _Atomic int received[MAX_PUBLISHERS], waiting[MAX_PUBLISHERS];
static long sent_by[MAX_PUBLISHERS];

static void futex_wait(_Atomic int *word, int value) {
    struct timespec limit = {.tv_sec = 0, .tv_nsec = 100000000}; /* a lost message must not hang the run */
    syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, value, &limit, NULL, 0);
}
static void futex_wake(_Atomic int *word) { syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0); }

/* A buffered reader over one TLS connection. */
typedef struct {
    SSL *ssl;
    unsigned char buffer[65536];
    int start, end;
} Reader;

static int fill(Reader *r) {
    if (r->start > 0 && r->start == r->end) r->start = r->end = 0;
    if (r->end == (int)sizeof r->buffer) {
        memmove(r->buffer, r->buffer + r->start, r->end - r->start);
        r->end -= r->start;
        r->start = 0;
    }
    int n = SSL_read(r->ssl, r->buffer + r->end, (int)sizeof r->buffer - r->end);
    if (n <= 0) return -1;
    r->end += n;
    return 0;
}

/* One packet: its first byte, its body (pointer into the buffer, valid until the next call). */
static int next_packet(Reader *r, unsigned char *type, unsigned char **body, int *length) {
    for (;;) {
        int available = r->end - r->start, index = r->start + 1, value = 0, shift = 0;
        if (available >= 2) {
            int complete = 0;
            while (index < r->end && shift <= 21) {
                unsigned char byte = r->buffer[index++];
                value |= (byte & 0x7f) << shift;
                shift += 7;
                if (!(byte & 0x80)) {
                    complete = 1;
                    break;
                }
            }
            if (complete && r->end - index >= value) {
                *type = r->buffer[r->start];
                *body = r->buffer + index;
                *length = value;
                r->start = index + value;
                return 0;
            }
        }
        if (fill(r) != 0) return -1;
    }
}

/* Whether a whole packet is buffered (next_packet would not read). */
static int has_packet(const Reader *r) {
    int index = r->start + 1, value = 0, shift = 0;
    if (r->end - r->start < 2) return 0;
    while (index < r->end && shift <= 21) {
        unsigned char byte = r->buffer[index++];
        value |= (byte & 0x7f) << shift;
        shift += 7;
        if (!(byte & 0x80)) return r->end - index >= value;
    }
    return 0;
}

static SSL_CTX *context_for(const char *id) {
    char cert[1024], key[1024];
    snprintf(cert, sizeof cert, "%s/%s.pem", certdir, id);
    snprintf(key, sizeof key, "%s/%s.key", certdir, id);
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 || SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_load_verify_locations(ctx, cafile, NULL) != 1) {
        ERR_print_errors_fp(stderr);
        exit(1);
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    return ctx;
}

static int write_all(SSL *ssl, const unsigned char *data, int length) { return SSL_write(ssl, data, length) == length ? 0 : -1; }

/* TCP, TLS with the device's certificate, CONNECT (3.1.1, clean session, keep-alive 0), CONNACK checked. */
static SSL *open_session(const char *id, Reader *reader) {
    SSL_CTX *ctx = context_for(id);
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&address, sizeof address) != 0) return NULL;
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) != 1) {
        ERR_print_errors_fp(stderr);
        return NULL;
    }
    unsigned char packet[256];
    int id_length = (int)strlen(id), n = 0;
    packet[n++] = 0x10;
    packet[n++] = (unsigned char)(10 + 2 + id_length);
    const unsigned char header[] = {0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 0};
    memcpy(packet + n, header, sizeof header);
    n += sizeof header;
    packet[n++] = 0;
    packet[n++] = (unsigned char)id_length;
    memcpy(packet + n, id, id_length);
    n += id_length;
    reader->ssl = ssl;
    reader->start = reader->end = 0;
    unsigned char type, *body;
    int length;
    if (write_all(ssl, packet, n) != 0 || next_packet(reader, &type, &body, &length) != 0 || type != 0x20 || length != 2 || body[1] != 0) {
        fprintf(stderr, "%s: CONNACK missing or refusing\n", id);
        return NULL;
    }
    return ssl;
}

static void *publisher(void *argument) {
    const char *id = argument;
    int index = atoi(id + 4) - 1;
    /* The subscriber shares the load's core with 100 publishers: it must not be the one starved. */
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 10);
    Reader *reader = malloc(sizeof *reader);
    SSL *ssl = open_session(id, reader);
    if (!ssl) {
        failures++;
        publishers_ready++;
        return NULL;
    }
    publishers_ready++;
    while (!go) usleep(1000);
    char topic[128];
    int topic_length = snprintf(topic, sizeof topic, "devices/%s/telemetry", id);
    unsigned char packet[512], type, *body;
    int length;
    unsigned short packet_id = 0;
    long sent = 0;
    while (now() < stop_at) {
        int remaining = 2 + topic_length + (qos ? 2 : 0) + 100, n = 0;
        packet[n++] = qos ? 0x32 : 0x30;
        packet[n++] = (unsigned char)((remaining & 0x7f) | (remaining > 127 ? 0x80 : 0));
        if (remaining > 127) packet[n++] = (unsigned char)(remaining >> 7);
        packet[n++] = 0;
        packet[n++] = (unsigned char)topic_length;
        memcpy(packet + n, topic, topic_length);
        n += topic_length;
        if (qos) {
            packet_id = packet_id == 0xffff ? 1 : packet_id + 1;
            packet[n++] = (unsigned char)(packet_id >> 8);
            packet[n++] = (unsigned char)packet_id;
        }
        /* At most WINDOW undelivered messages. */
        while (sent - received[index] >= WINDOW && now() < stop_at) {
            int seen = received[index];
            waiting[index] = 1;
            if (sent - seen >= WINDOW) futex_wait(&received[index], seen);
            waiting[index] = 0;
        }
        double stamp = now();
        memset(packet + n, 'x', 100);
        memcpy(packet + n, &stamp, sizeof stamp);
        memcpy(packet + n + sizeof stamp, &index, sizeof index);
        n += 100;
        if (write_all(ssl, packet, n) != 0) {
            failures++;
            break;
        }
        sent++;
        if (qos) {
            if (next_packet(reader, &type, &body, &length) != 0 || type != 0x40 || length < 2 || ((body[0] << 8) | body[1]) != packet_id) {
                fprintf(stderr, "%s: PUBACK missing or mismatched\n", id);
                failures++;
                break;
            }
        }
    }
    published += sent;
    sent_by[index] = sent;
    const unsigned char disconnect[] = {0xe0, 0};
    write_all(ssl, disconnect, 2);
    return NULL;
}

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc != 9) {
        fprintf(stderr, "usage: mqtt_fanin HOST PORT CAFILE CERTDIR SUBSCRIBER PUBLISHERS SECONDS QOS\n");
        return 2;
    }
    address.sin_family = AF_INET;
    address.sin_port = htons(atoi(argv[2]));
    inet_pton(AF_INET, argv[1], &address.sin_addr);
    cafile = argv[3];
    certdir = argv[4];
    const char *subscriber_id = argv[5];
    int count = atoi(argv[6]);
    if (count < 1 || count > MAX_PUBLISHERS) return 2;
    seconds = atof(argv[7]);
    qos = atoi(argv[8]);

    Reader *reader = malloc(sizeof *reader);
    SSL *sink = open_session(subscriber_id, reader);
    if (!sink) return 1;
    const char *filter = "devices/+/telemetry";
    unsigned char packet[128], type, *body;
    int n = 0, length, filter_length = (int)strlen(filter);
    packet[n++] = 0x82;
    packet[n++] = (unsigned char)(2 + 2 + filter_length + 1);
    packet[n++] = 0;
    packet[n++] = 1;
    packet[n++] = 0;
    packet[n++] = (unsigned char)filter_length;
    memcpy(packet + n, filter, filter_length);
    n += filter_length;
    packet[n++] = (unsigned char)qos;
    if (write_all(sink, packet, n) != 0 || next_packet(reader, &type, &body, &length) != 0 || type != 0x90 || length != 3 || body[2] >= 0x80) {
        fprintf(stderr, "SUBACK missing or refusing\n");
        return 1;
    }

    pthread_t *threads = calloc(count, sizeof *threads);
    char **ids = calloc(count, sizeof *ids);
    stop_at = now() + 3600;
    for (int i = 0; i < count; i++) {
        ids[i] = malloc(16);
        snprintf(ids[i], 16, "pub-%03d", i + 1);
        pthread_attr_t attributes;
        pthread_attr_init(&attributes);
        pthread_attr_setstacksize(&attributes, 256 * 1024);
        pthread_create(&threads[i], &attributes, publisher, ids[i]);
    }
    /* Publishers connect first and wait for go; then the clock starts. */
    while (publishers_ready < count) usleep(1000);
    if (failures) return 1;
    double start = now();
    stop_at = start + seconds;
    go = 1;

    size_t capacity = 1 << 24;
    double *latencies = malloc(capacity * sizeof(double));
    long delivered = 0;
    unsigned char acks[4096];
    int pending = 0;
    struct timeval timeout = {.tv_sec = 0, .tv_usec = 200000};
    setsockopt(SSL_get_fd(sink), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    double quiet_since = 0;
    for (;;) {
        /* Acknowledge what was read before waiting for more (the broker's in-flight window). */
        if (pending > 0 && !has_packet(reader)) {
            if (write_all(sink, acks, pending) != 0) return 1;
            pending = 0;
        }
        if (next_packet(reader, &type, &body, &length) != 0) {
            /* A read timeout: nothing for 200 ms. */
            if (getenv("FANIN_DEBUG")) fprintf(stderr, "quiet at %.3f s (delivered %ld, pending acks %d)\n", now() - start, delivered, pending);
            if (now() > stop_at) {
                if (quiet_since == 0) quiet_since = now();
                if (now() - quiet_since > 2 || (!qos && now() > stop_at + 2)) break;
            }
            ERR_clear_error();
            continue;
        }
        quiet_since = 0;
        if ((type & 0xf0) != 0x30) continue;
        int topic_length = (body[0] << 8) | body[1];
        int offset = 2 + topic_length;
        int message_qos = (type >> 1) & 3;
        if (message_qos) {
            acks[pending++] = 0x40;
            acks[pending++] = 2;
            acks[pending++] = body[offset];
            acks[pending++] = body[offset + 1];
            offset += 2;
        }
        double stamp;
        int from;
        memcpy(&stamp, body + offset, sizeof stamp);
        memcpy(&from, body + offset + sizeof stamp, sizeof from);
        if (from >= 0 && from < count) {
            received[from]++;
            if (waiting[from]) futex_wake(&received[from]);
        }
        if ((size_t)delivered < capacity) latencies[delivered] = now() - stamp;
        delivered++;
        if (pending > (int)sizeof acks - 8) {
            if (write_all(sink, acks, pending) != 0) return 1;
            pending = 0;
        }
        if (now() > stop_at + 10) break;
    }
    double elapsed = stop_at - start;
    for (int i = 0; i < count; i++) pthread_join(threads[i], NULL);
    if (failures) return 1;
    /* Messages still on their way when the publishers stopped may stay in a broker's queue
     * (mosquitto 2.0.11 serving TLS itself keeps the last QoS 1 messages queued for a subscriber
     * until something new is queued for it): up to one window per publisher is let go, and said;
     * anything more is a loss. */
    if (delivered < published) {
        fprintf(stderr, "%ld of %ld published messages were not delivered by the end; by publisher:", (long)published - delivered, (long)published);
        for (int i = 0; i < count; i++)
            if (sent_by[i] != received[i]) fprintf(stderr, " %s %ld", ids[i], sent_by[i] - received[i]);
        fprintf(stderr, "\n");
        for (int i = 0; i < count; i++)
            if (sent_by[i] - received[i] > WINDOW) return 1;
    }
    size_t measured = (size_t)delivered < capacity ? (size_t)delivered : capacity;
    if (measured == 0) return 1;
    qsort(latencies, measured, sizeof(double), compare);
    printf("%ld %ld %.0f %.0f %.3f\n", (long)published, delivered, latencies[measured / 2] * 1e6, latencies[measured * 99 / 100] * 1e6, elapsed);
    return 0;
}
