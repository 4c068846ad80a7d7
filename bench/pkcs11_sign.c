/* The token's own signing rate, for bench/hsm.sh: C_SignInit + C_Sign (CKM_ECDSA over a 32-byte
 * digest) in a loop for SECONDS with the private key labelled LABEL, straight through the module:
 * what any client of that token (openssl's pkcs11 engine included) can reach at most.
 * Build: cc -O2 -I Sources/CPKCS11/include -o pkcs11_sign bench/pkcs11_sign.c -ldl
 * Usage: FLEETWARD_PKCS11_PIN=… pkcs11_sign MODULE TOKEN-LABEL KEY-LABEL SECONDS
 * Prints "signatures seconds". */
#include "pkcs11.h"
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

#define CHECK(call)                                                           \
    do {                                                                      \
        CK_RV rv = (call);                                                    \
        if (rv != CKR_OK) {                                                   \
            fprintf(stderr, "%s failed: 0x%lx\n", #call, (unsigned long)rv); \
            return 1;                                                         \
        }                                                                     \
    } while (0)

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: pkcs11_sign MODULE TOKEN-LABEL KEY-LABEL SECONDS\n");
        return 2;
    }
    const char *pin = getenv("FLEETWARD_PKCS11_PIN");
    void *module = dlopen(argv[1], RTLD_NOW);
    if (!module || !pin) return 1;
    CK_C_GetFunctionList get = (CK_C_GetFunctionList)dlsym(module, "C_GetFunctionList");
    CK_FUNCTION_LIST_PTR f;
    CHECK(get(&f));
    CHECK(f->C_Initialize(NULL));
    CK_SLOT_ID slots[64];
    CK_ULONG count = 64;
    CHECK(f->C_GetSlotList(CK_TRUE, slots, &count));
    char padded[32];
    memset(padded, ' ', 32);
    memcpy(padded, argv[2], strlen(argv[2]) < 32 ? strlen(argv[2]) : 32);
    CK_SLOT_ID slot = (CK_SLOT_ID)-1;
    for (CK_ULONG i = 0; i < count; i++) {
        CK_TOKEN_INFO info;
        if (f->C_GetTokenInfo(slots[i], &info) == CKR_OK && memcmp(info.label, padded, 32) == 0) slot = slots[i];
    }
    if (slot == (CK_SLOT_ID)-1) return 1;
    CK_SESSION_HANDLE session;
    CHECK(f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &session));
    CHECK(f->C_Login(session, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin)));
    CK_OBJECT_CLASS class = CKO_PRIVATE_KEY;
    CK_ATTRIBUTE template[] = {{CKA_CLASS, &class, sizeof class}, {CKA_LABEL, argv[3], strlen(argv[3])}};
    CK_OBJECT_HANDLE key;
    CK_ULONG found = 0;
    CHECK(f->C_FindObjectsInit(session, template, 2));
    CHECK(f->C_FindObjects(session, &key, 1, &found));
    CHECK(f->C_FindObjectsFinal(session));
    if (!found) return 1;
    unsigned char digest[32], signature[128];
    memset(digest, 0x5a, sizeof digest);
    CK_MECHANISM mechanism = {CKM_ECDSA, NULL, 0};
    double start = now(), end = start + atof(argv[4]);
    long signatures = 0;
    while (now() < end) {
        CK_ULONG length = sizeof signature;
        CHECK(f->C_SignInit(session, &mechanism, key));
        CHECK(f->C_Sign(session, digest, sizeof digest, signature, &length));
        signatures++;
    }
    printf("%ld %.3f\n", signatures, now() - start);
    return 0;
}
