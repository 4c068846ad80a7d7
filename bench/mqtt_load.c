/* An MQTT-over-mutual-TLS load generator for bench/mqtt.sh. Every exchange is checked: a run
 * fails (exit 1) on any CONNACK or PUBACK that is not a success.
 *   connect  one connection at a time for SECONDS: TCP, a full TLS 1.3 handshake with the client
 *            certificate, MQTT 3.1.1 CONNECT (client id CLIENTID), CONNACK read and checked, then
 *            DISCONNECT and close. Prints "connects 0 seconds".
 *   qos1     one session for SECONDS publishing 100-byte QoS 1 messages on TOPIC one after
 *            another, each after the PUBACK of the one before. Prints
 *            "messages p50_us p99_us seconds".
 *   qos0     one session for SECONDS publishing 100-byte QoS 0 messages on TOPIC, a PINGREQ round
 *            trip every 1,000 (so the server keeps up). Prints "messages 0 0 seconds".
 * Run several at once for concurrent sessions.
 * Build: cc -O2 -o mqtt_load bench/mqtt_load.c -lssl -lcrypto
 * Usage: mqtt_load HOST PORT CERT KEY CAFILE CLIENTID TOPIC SECONDS connect|qos1|qos0 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int read_exact(SSL *ssl, unsigned char *buffer, int length) {
    int done = 0;
    while (done < length) {
        int n = SSL_read(ssl, buffer + done, length - done);
        if (n <= 0) return -1;
        done += n;
    }
    return 0;
}

/* Reads one packet: its first byte and its body (up to capacity). Returns the body length. */
static int read_packet(SSL *ssl, unsigned char *type, unsigned char *body, int capacity) {
    if (read_exact(ssl, type, 1) != 0) return -1;
    int length = 0, shift = 0;
    unsigned char byte;
    do {
        if (read_exact(ssl, &byte, 1) != 0 || shift > 21) return -1;
        length |= (byte & 0x7f) << shift;
        shift += 7;
    } while (byte & 0x80);
    if (length > capacity) return -1;
    if (read_exact(ssl, body, length) != 0) return -1;
    return length;
}

static int write_all(SSL *ssl, const unsigned char *buffer, int length) {
    return SSL_write(ssl, buffer, length) == length ? 0 : -1;
}

static SSL *open_session(SSL_CTX *ctx, struct sockaddr_in *address, const char *client_id, int *fd_out) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)address, sizeof *address) != 0) {
        close(fd);
        return NULL;
    }
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) != 1) {
        ERR_print_errors_fp(stderr);
        SSL_free(ssl);
        close(fd);
        return NULL;
    }
    /* CONNECT, MQTT 3.1.1, clean session, keep-alive 60. */
    unsigned char packet[256];
    int id_length = (int)strlen(client_id);
    int remaining = 10 + 2 + id_length;
    int n = 0;
    packet[n++] = 0x10;
    packet[n++] = (unsigned char)remaining;
    const unsigned char header[] = {0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60};
    memcpy(packet + n, header, sizeof header);
    n += sizeof header;
    packet[n++] = (unsigned char)(id_length >> 8);
    packet[n++] = (unsigned char)id_length;
    memcpy(packet + n, client_id, id_length);
    n += id_length;
    unsigned char type, body[64];
    if (write_all(ssl, packet, n) != 0 || read_packet(ssl, &type, body, sizeof body) != 2 || type != 0x20 || body[1] != 0) {
        fprintf(stderr, "CONNACK missing or refusing (type %02x code %d)\n", type, body[1]);
        SSL_free(ssl);
        close(fd);
        return NULL;
    }
    *fd_out = fd;
    return ssl;
}

static void close_session(SSL *ssl, int fd) {
    const unsigned char disconnect[] = {0xe0, 0};
    write_all(ssl, disconnect, 2);
    SSL_shutdown(ssl);
    SSL_free(ssl);
    close(fd);
}

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc != 10) {
        fprintf(stderr, "usage: mqtt_load HOST PORT CERT KEY CAFILE CLIENTID TOPIC SECONDS connect|qos1|qos0\n");
        return 2;
    }
    const char *client_id = argv[6], *topic = argv[7], *mode = argv[9];
    double seconds = atof(argv[8]);
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (SSL_CTX_use_certificate_chain_file(ctx, argv[3]) != 1 || SSL_CTX_use_PrivateKey_file(ctx, argv[4], SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_load_verify_locations(ctx, argv[5], NULL) != 1) {
        ERR_print_errors_fp(stderr);
        return 1;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &address.sin_addr);

    double start = now(), end = start + seconds;
    long count = 0;
    if (strcmp(mode, "connect") == 0) {
        while (now() < end) {
            int fd;
            SSL *ssl = open_session(ctx, &address, client_id, &fd);
            if (!ssl) return 1;
            close_session(ssl, fd);
            count++;
        }
        printf("%ld 0 %.3f\n", count, now() - start);
        return 0;
    }
    int fd;
    SSL *ssl = open_session(ctx, &address, client_id, &fd);
    if (!ssl) return 1;
    int topic_length = (int)strlen(topic);
    int qos = strcmp(mode, "qos1") == 0 ? 1 : 0;
    unsigned char packet[512], type, body[64];
    unsigned char payload[100];
    memset(payload, 'x', sizeof payload);
    size_t capacity = 1 << 20;
    double *latencies = qos ? malloc(capacity * sizeof(double)) : NULL;
    unsigned short packet_id = 0;
    while (now() < end) {
        int remaining = 2 + topic_length + (qos ? 2 : 0) + (int)sizeof payload;
        int n = 0;
        packet[n++] = qos ? 0x32 : 0x30;
        if (remaining > 127) {
            packet[n++] = (unsigned char)((remaining & 0x7f) | 0x80);
            packet[n++] = (unsigned char)(remaining >> 7);
        } else {
            packet[n++] = (unsigned char)remaining;
        }
        packet[n++] = (unsigned char)(topic_length >> 8);
        packet[n++] = (unsigned char)topic_length;
        memcpy(packet + n, topic, topic_length);
        n += topic_length;
        if (qos) {
            packet_id = packet_id == 0xffff ? 1 : packet_id + 1;
            packet[n++] = (unsigned char)(packet_id >> 8);
            packet[n++] = (unsigned char)packet_id;
        }
        memcpy(packet + n, payload, sizeof payload);
        n += sizeof payload;
        double sent = now();
        if (write_all(ssl, packet, n) != 0) return 1;
        if (qos) {
            int length = read_packet(ssl, &type, body, sizeof body);
            if (length < 2 || type != 0x40 || ((body[0] << 8) | body[1]) != packet_id || (length > 2 && body[2] >= 0x80)) {
                fprintf(stderr, "PUBACK missing, mismatched or refusing\n");
                return 1;
            }
            if ((size_t)count < capacity) latencies[count] = now() - sent;
        } else if (count % 1000 == 999) {
            const unsigned char ping[] = {0xc0, 0};
            if (write_all(ssl, ping, 2) != 0 || read_packet(ssl, &type, body, sizeof body) != 0 || type != 0xd0) {
                fprintf(stderr, "PINGRESP missing\n");
                return 1;
            }
        }
        count++;
    }
    double elapsed = now() - start;
    close_session(ssl, fd);
    if (qos && count > 0) {
        size_t measured = (size_t)count < capacity ? (size_t)count : capacity;
        qsort(latencies, measured, sizeof(double), compare);
        printf("%ld %.0f %.0f %.3f\n", count, latencies[measured / 2] * 1e6, latencies[measured * 99 / 100] * 1e6, elapsed);
    } else {
        printf("%ld 0 0 %.3f\n", count, elapsed);
    }
    return 0;
}
