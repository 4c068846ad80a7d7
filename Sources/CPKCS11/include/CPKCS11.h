/* The few PKCS#11 calls Fleetward makes, over a module loaded with dlopen: each returns the
 * module's CK_RV (or CKR_GENERAL_ERROR with a message for a load failure). */
#ifndef FLEETWARD_CPKCS11_H
#define FLEETWARD_CPKCS11_H

#include "pkcs11.h"
#include <stddef.h>

/* Loads `path` (dlopen), finds C_GetFunctionList and calls C_Initialize (OS locking; a module
 * already initialised in this process is fine). `error` gets dlerror()'s text on failure. */
CK_RV fw_p11_load(const char *path, void **handle, CK_FUNCTION_LIST_PTR *functions, char *error, size_t error_size);

/* The slot whose token is labelled `label` (labels are blank-padded to 32 bytes in CK_TOKEN_INFO).
 * CKR_TOKEN_NOT_PRESENT when no present token has it. */
CK_RV fw_p11_find_token(CK_FUNCTION_LIST_PTR f, const char *label, CK_SLOT_ID *slot);

/* A read-write session on `slot`, logged in as the user with `pin` (NULL: no login). */
CK_RV fw_p11_open_session(CK_FUNCTION_LIST_PTR f, CK_SLOT_ID slot, const char *pin, size_t pin_length, CK_SESSION_HANDLE *session);

/* A P-256 key pair generated in the token: the private key token-resident, private, sensitive,
 * never extractable, for signing (and ECDH derivation when `derive`); both halves labelled
 * `label` with CKA_ID `id`. */
CK_RV fw_p11_generate_p256(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE session, const char *label, const unsigned char *id,
                           size_t id_length, int derive, CK_OBJECT_HANDLE *public_key, CK_OBJECT_HANDLE *private_key);

/* The first object of `object_class` labelled `label`; CKR_OK with *found = 0 when none. */
CK_RV fw_p11_find_object(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE session, CK_OBJECT_CLASS object_class, const char *label,
                         CK_OBJECT_HANDLE *object, int *found);

/* One attribute's bytes: call with value NULL to learn *length, then with a buffer. */
CK_RV fw_p11_attribute(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object, CK_ATTRIBUTE_TYPE type,
                       unsigned char *value, unsigned long *length);

/* A CK_BBOOL attribute. */
CK_RV fw_p11_bool_attribute(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object, CK_ATTRIBUTE_TYPE type,
                            int *value);

/* CKM_ECDSA over `digest`: `signature` gets the raw r || s (64 bytes for P-256). */
CK_RV fw_p11_sign_ecdsa(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE session, CK_OBJECT_HANDLE key, const unsigned char *digest,
                        size_t digest_length, unsigned char *signature, unsigned long *signature_length);

/* ECDH (CKM_ECDH1_DERIVE, no KDF) of the private `key` with the peer's uncompressed point: `secret`
 * gets the shared x-coordinate (32 bytes for P-256) from a session-only generic secret that is
 * destroyed at once. */
CK_RV fw_p11_ecdh(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE session, CK_OBJECT_HANDLE key, const unsigned char *point,
                  size_t point_length, unsigned char *secret, unsigned long *secret_length);

/* Sets CKA_LABEL of `object`. */
CK_RV fw_p11_set_label(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object, const char *label);

/* Up to `capacity` objects of `object_class` (any label). */
CK_RV fw_p11_find_all(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE session, CK_OBJECT_CLASS object_class, CK_OBJECT_HANDLE *objects,
                      unsigned long capacity, unsigned long *count);

CK_RV fw_p11_destroy(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object);

CK_RV fw_p11_close_session(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE session);

#endif
