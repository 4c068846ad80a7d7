#include "CPKCS11.h"
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

CK_RV fw_p11_load(const char *path, void **handle, CK_FUNCTION_LIST_PTR *functions, char *error, size_t error_size) {
    void *module = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!module) {
        snprintf(error, error_size, "%s", dlerror());
        return CKR_GENERAL_ERROR;
    }
    CK_C_GetFunctionList get = (CK_C_GetFunctionList)dlsym(module, "C_GetFunctionList");
    if (!get) {
        snprintf(error, error_size, "%s has no C_GetFunctionList: not a PKCS#11 module", path);
        dlclose(module);
        return CKR_GENERAL_ERROR;
    }
    CK_FUNCTION_LIST_PTR list = NULL;
    CK_RV rv = get(&list);
    if (rv != CKR_OK || !list) {
        snprintf(error, error_size, "C_GetFunctionList failed");
        dlclose(module);
        return rv != CKR_OK ? rv : CKR_GENERAL_ERROR;
    }
    CK_C_INITIALIZE_ARGS args;
    memset(&args, 0, sizeof args);
    args.flags = CKF_OS_LOCKING_OK;
    rv = list->C_Initialize(&args);
    if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
        snprintf(error, error_size, "C_Initialize failed");
        dlclose(module);
        return rv;
    }
    *handle = module;
    *functions = list;
    return CKR_OK;
}

CK_RV fw_p11_find_token(CK_FUNCTION_LIST_PTR f, const char *label, CK_SLOT_ID *slot) {
    CK_ULONG count = 0;
    CK_RV rv = f->C_GetSlotList(CK_TRUE, NULL, &count);
    if (rv != CKR_OK) return rv;
    if (count == 0) return CKR_TOKEN_NOT_PRESENT;
    CK_SLOT_ID slots[256];
    if (count > 256) count = 256;
    rv = f->C_GetSlotList(CK_TRUE, slots, &count);
    if (rv != CKR_OK) return rv;
    char padded[32];
    memset(padded, ' ', sizeof padded);
    size_t length = strlen(label);
    memcpy(padded, label, length > 32 ? 32 : length);
    for (CK_ULONG i = 0; i < count; i++) {
        CK_TOKEN_INFO info;
        if (f->C_GetTokenInfo(slots[i], &info) != CKR_OK) continue;
        if (memcmp(info.label, padded, 32) == 0) {
            *slot = slots[i];
            return CKR_OK;
        }
    }
    return CKR_TOKEN_NOT_PRESENT;
}

CK_RV fw_p11_open_session(CK_FUNCTION_LIST_PTR f, CK_SLOT_ID slot, const char *pin, size_t pin_length, CK_SESSION_HANDLE *session) {
    CK_RV rv = f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, session);
    if (rv != CKR_OK || !pin) return rv;
    rv = f->C_Login(*session, CKU_USER, (CK_UTF8CHAR_PTR)pin, pin_length);
    if (rv == CKR_USER_ALREADY_LOGGED_IN) return CKR_OK;
    if (rv != CKR_OK) f->C_CloseSession(*session);
    return rv;
}

/* The DER of OID 1.2.840.10045.3.1.7 (prime256v1), as CKA_EC_PARAMS wants it. */
static const unsigned char p256_parameters[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};

CK_RV fw_p11_generate_p256(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE session, const char *label, const unsigned char *id,
                           size_t id_length, int derive, CK_OBJECT_HANDLE *public_key, CK_OBJECT_HANDLE *private_key) {
    CK_MECHANISM mechanism = {CKM_EC_KEY_PAIR_GEN, NULL, 0};
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE, can_derive = derive ? CK_TRUE : CK_FALSE;
    CK_ATTRIBUTE public_template[] = {
        {CKA_TOKEN, &yes, sizeof yes},
        {CKA_VERIFY, &yes, sizeof yes},
        {CKA_EC_PARAMS, (void *)p256_parameters, sizeof p256_parameters},
        {CKA_LABEL, (void *)label, strlen(label)},
        {CKA_ID, (void *)id, id_length},
    };
    CK_ATTRIBUTE private_template[] = {
        {CKA_TOKEN, &yes, sizeof yes},
        {CKA_PRIVATE, &yes, sizeof yes},
        {CKA_SENSITIVE, &yes, sizeof yes},
        {CKA_EXTRACTABLE, &no, sizeof no},
        {CKA_SIGN, &yes, sizeof yes},
        {CKA_DERIVE, &can_derive, sizeof can_derive},
        {CKA_LABEL, (void *)label, strlen(label)},
        {CKA_ID, (void *)id, id_length},
    };
    return f->C_GenerateKeyPair(session, &mechanism, public_template, sizeof public_template / sizeof *public_template, private_template,
                                sizeof private_template / sizeof *private_template, public_key, private_key);
}

CK_RV fw_p11_find_object(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE session, CK_OBJECT_CLASS object_class, const char *label,
                         CK_OBJECT_HANDLE *object, int *found) {
    CK_ATTRIBUTE template[] = {
        {CKA_CLASS, &object_class, sizeof object_class},
        {CKA_LABEL, (void *)label, strlen(label)},
    };
    *found = 0;
    CK_RV rv = f->C_FindObjectsInit(session, template, 2);
    if (rv != CKR_OK) return rv;
    CK_ULONG count = 0;
    rv = f->C_FindObjects(session, object, 1, &count);
    CK_RV final = f->C_FindObjectsFinal(session);
    if (rv != CKR_OK) return rv;
    *found = count > 0;
    return final;
}

CK_RV fw_p11_attribute(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object, CK_ATTRIBUTE_TYPE type,
                       unsigned char *value, unsigned long *length) {
    CK_ATTRIBUTE attribute = {type, value, value ? *length : 0};
    CK_RV rv = f->C_GetAttributeValue(session, object, &attribute, 1);
    *length = attribute.ulValueLen;
    return rv;
}

CK_RV fw_p11_bool_attribute(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object, CK_ATTRIBUTE_TYPE type,
                            int *value) {
    CK_BBOOL flag = CK_FALSE;
    CK_ATTRIBUTE attribute = {type, &flag, sizeof flag};
    CK_RV rv = f->C_GetAttributeValue(session, object, &attribute, 1);
    *value = flag == CK_TRUE;
    return rv;
}

CK_RV fw_p11_sign_ecdsa(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE session, CK_OBJECT_HANDLE key, const unsigned char *digest,
                        size_t digest_length, unsigned char *signature, unsigned long *signature_length) {
    CK_MECHANISM mechanism = {CKM_ECDSA, NULL, 0};
    CK_RV rv = f->C_SignInit(session, &mechanism, key);
    if (rv != CKR_OK) return rv;
    CK_ULONG length = *signature_length;
    rv = f->C_Sign(session, (CK_BYTE_PTR)digest, digest_length, signature, &length);
    *signature_length = length;
    return rv;
}

CK_RV fw_p11_ecdh(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE session, CK_OBJECT_HANDLE key, const unsigned char *point,
                  size_t point_length, unsigned char *secret, unsigned long *secret_length) {
    CK_ECDH1_DERIVE_PARAMS parameters;
    memset(&parameters, 0, sizeof parameters);
    parameters.kdf = CKD_NULL;
    parameters.pPublicData = (CK_BYTE_PTR)point;
    parameters.ulPublicDataLen = point_length;
    CK_MECHANISM mechanism = {CKM_ECDH1_DERIVE, &parameters, sizeof parameters};
    CK_OBJECT_CLASS secret_class = CKO_SECRET_KEY;
    CK_KEY_TYPE secret_type = CKK_GENERIC_SECRET;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_ULONG length = 32;
    CK_ATTRIBUTE template[] = {
        {CKA_CLASS, &secret_class, sizeof secret_class},
        {CKA_KEY_TYPE, &secret_type, sizeof secret_type},
        {CKA_TOKEN, &no, sizeof no},
        {CKA_SENSITIVE, &no, sizeof no},
        {CKA_EXTRACTABLE, &yes, sizeof yes},
        {CKA_VALUE_LEN, &length, sizeof length},
    };
    CK_OBJECT_HANDLE derived = 0;
    CK_RV rv = f->C_DeriveKey(session, &mechanism, key, template, sizeof template / sizeof *template, &derived);
    if (rv != CKR_OK) return rv;
    CK_ATTRIBUTE value = {CKA_VALUE, secret, *secret_length};
    rv = f->C_GetAttributeValue(session, derived, &value, 1);
    *secret_length = value.ulValueLen;
    f->C_DestroyObject(session, derived);
    return rv;
}

CK_RV fw_p11_set_label(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object, const char *label) {
    CK_ATTRIBUTE attribute = {CKA_LABEL, (void *)label, strlen(label)};
    return f->C_SetAttributeValue(session, object, &attribute, 1);
}

CK_RV fw_p11_find_all(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE session, CK_OBJECT_CLASS object_class, CK_OBJECT_HANDLE *objects,
                      unsigned long capacity, unsigned long *count) {
    CK_ATTRIBUTE template[] = {{CKA_CLASS, &object_class, sizeof object_class}};
    *count = 0;
    CK_RV rv = f->C_FindObjectsInit(session, template, 1);
    if (rv != CKR_OK) return rv;
    CK_ULONG found = 0;
    rv = f->C_FindObjects(session, objects, capacity, &found);
    CK_RV final = f->C_FindObjectsFinal(session);
    *count = found;
    return rv != CKR_OK ? rv : final;
}

CK_RV fw_p11_destroy(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object) {
    return f->C_DestroyObject(session, object);
}

CK_RV fw_p11_close_session(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE session) { return f->C_CloseSession(session); }
