/* A TLS 1.3 mutual-TLS load generator for bench/gateway.sh: one connection at a time, each a
 * handshake with a client certificate followed by one HTTP/1.1 request (GET PATH, Connection:
 * close) read to the end, so the server's session tickets are read too. In "reuse" mode every
 * connection after the first offers the newest ticket the server sent (SSL_set_session), as a
 * device reconnecting would; s_time -reuse does not do this for TLS 1.3.
 * "bare-reuse" mode measures resumed handshakes alone: the first connection makes the request (and
 * is not counted) to get a ticket, then every connection offers that ticket, finishes the
 * handshake and closes without a request (servers send their tickets with the first answer, so
 * a bare connection gets none; both servers here accept a TLS 1.3 ticket more than once).
 * "kept-alive" mode makes one connection and sends GET PATH on it again and again (keep-alive),
 * each after the whole answer before it was read (Content-Length), for SECONDS: it prints
 * "answers answers seconds". Run several at once for concurrent connections.
 * Prints "connections resumed seconds".
 * Build: cc -O2 -o tls_load bench/tls_load.c -lssl -lcrypto
 * Usage: tls_load HOST PORT CERT KEY CAFILE PATH SECONDS new|reuse|bare-reuse|kept-alive */
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

static SSL_SESSION *latest;

static int keep_session(SSL *ssl, SSL_SESSION *session) {
    (void)ssl;
    if (latest) SSL_SESSION_free(latest);
    latest = session; /* the callback's reference is ours */
    return 1;
}

/* One kept-alive connection: requests one after another, each answer read whole. */
static int kept_alive(SSL_CTX *ctx, struct sockaddr_in *address, const char *host, const char *path, double seconds) {
    char request[512];
    int request_length = snprintf(request, sizeof request, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, host);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)address, sizeof *address) != 0) return 1;
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) != 1) {
        ERR_print_errors_fp(stderr);
        return 1;
    }
    long answers = 0;
    double start = now(), end = start + seconds;
    char buffer[16384];
    while (now() < end) {
        if (SSL_write(ssl, request, request_length) != request_length) break;
        int have = 0, body = -1, header_end = -1;
        while (1) {
            int n = SSL_read(ssl, buffer + have, sizeof buffer - have - 1);
            if (n <= 0) goto done;
            have += n;
            buffer[have] = 0;
            if (header_end < 0) {
                char *blank = strstr(buffer, "\r\n\r\n");
                if (!blank) continue;
                header_end = (int)(blank - buffer) + 4;
                if (strncmp(buffer, "HTTP/1.1 200", 12) != 0) goto done;
                char *length = strcasestr(buffer, "content-length:");
                body = length ? atoi(length + 15) : 0;
            }
            if (have >= header_end + body) break;
        }
        answers++;
    }
done:
    printf("%ld %ld %.3f\n", answers, answers, now() - start);
    SSL_shutdown(ssl);
    SSL_free(ssl);
    close(fd);
    return answers > 0 ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc != 9) {
        fprintf(stderr, "usage: tls_load HOST PORT CERT KEY CAFILE PATH SECONDS new|reuse\n");
        return 2;
    }
    const char *host = argv[1], *path = argv[6];
    int port = atoi(argv[2]);
    double seconds = atof(argv[7]);
    int bare = strcmp(argv[8], "bare-reuse") == 0;
    int reuse = bare || strcmp(argv[8], "reuse") == 0;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    if (SSL_CTX_use_certificate_file(ctx, argv[3], SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, argv[4], SSL_FILETYPE_PEM) != 1 || SSL_CTX_load_verify_locations(ctx, argv[5], NULL) != 1) {
        ERR_print_errors_fp(stderr);
        return 1;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, keep_session);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &address.sin_addr);
    char request[512];
    int request_length = snprintf(request, sizeof request, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, host);
    long connections = 0, resumed = 0, failures = 0;
    double start = now(), end = start + seconds;
    if (strcmp(argv[8], "kept-alive") == 0) return kept_alive(ctx, &address, host, path, seconds);
    while (now() < end && failures < 100) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fd, (struct sockaddr *)&address, sizeof address) != 0) {
            close(fd);
            failures++;
            continue;
        }
        SSL *ssl = SSL_new(ctx);
        SSL_set_fd(ssl, fd);
        SSL_SESSION *offered = NULL;
        if (bare && latest) {
            /* OpenSSL's client marks a TLS 1.3 session used once as not resumable: offer a copy. */
            offered = SSL_SESSION_dup(latest);
            SSL_set_session(ssl, offered);
        } else if (reuse && latest) {
            SSL_set_session(ssl, latest);
        }
        int counted = !(bare && !latest); /* bare mode's first connection only fetches a ticket */
        int ok = SSL_connect(ssl) == 1;
        char buffer[4096];
        long got = 0;
        int n, status_ok = bare && latest;
        if (ok && !status_ok) {
            ok = SSL_write(ssl, request, request_length) == request_length;
            while (ok && (n = SSL_read(ssl, buffer, sizeof buffer)) > 0) {
                if (got == 0) status_ok = n >= 12 && strncmp(buffer, "HTTP/1.1 200", 12) == 0;
                got += n;
            }
        }
        if (ok && status_ok && !counted) {
            /* the ticket-fetching connection */
        } else if (ok && status_ok) {
            connections++;
            if (SSL_session_reused(ssl)) resumed++;
        } else {
            failures++;
        }
        SSL_shutdown(ssl);
        SSL_free(ssl);
        if (offered) SSL_SESSION_free(offered);
        close(fd);
    }
    printf("%ld %ld %.3f\n", connections, resumed, now() - start);
    return failures >= 100 ? 1 : 0;
}
