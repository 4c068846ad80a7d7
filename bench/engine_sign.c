/* openssl's pkcs11 engine (libp11, Debian libengine-pkcs11-openssl) signing with a token's key in a
 * loop, in one process: ECDSA-SHA256 over a 400-byte message (about a device TBSCertificate), the
 * way an openssl-based CA would sign through the engine. The peer for bench/hsm.sh.
 * Usage: engine_sign KEY-URI SECONDS (OPENSSL_CONF names the engine and MODULE_PATH);
 * prints "signatures seconds". */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/conf.h>
#include <openssl/engine.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: engine_sign KEY-URI SECONDS\n");
        return 2;
    }
    OPENSSL_init_crypto(OPENSSL_INIT_LOAD_CONFIG, NULL);
    ENGINE *engine = ENGINE_by_id("pkcs11");
    if (!engine || !ENGINE_init(engine)) {
        fprintf(stderr, "engine_sign: the pkcs11 engine is not available\n");
        return 1;
    }
    EVP_PKEY *key = ENGINE_load_private_key(engine, argv[1], NULL, NULL);
    if (!key) {
        fprintf(stderr, "engine_sign: cannot load %s\n", argv[1]);
        return 1;
    }
    unsigned char message[400];
    memset(message, 0x5a, sizeof message);
    unsigned char signature[128];
    double seconds = atof(argv[2]), start = now(), elapsed = 0;
    long count = 0;
    while (elapsed < seconds) {
        EVP_MD_CTX *context = EVP_MD_CTX_new();
        size_t length = sizeof signature;
        if (EVP_DigestSignInit(context, NULL, EVP_sha256(), NULL, key) != 1 ||
            EVP_DigestSign(context, signature, &length, message, sizeof message) != 1) {
            fprintf(stderr, "engine_sign: signing failed\n");
            return 1;
        }
        EVP_MD_CTX_free(context);
        message[count % sizeof message] ^= 1;
        count++;
        if ((count & 63) == 0) elapsed = now() - start;
    }
    elapsed = now() - start;
    printf("%ld %.3f\n", count, elapsed);
    return 0;
}
