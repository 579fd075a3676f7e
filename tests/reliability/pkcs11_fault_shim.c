/*
 * A PKCS#11 module that forwards every call to a real one (SoftHSM2) and, while a fault
 * file exists, answers the cryptographic calls with a device error, as a failing HSM does
 * while its management path (slots, sessions, login) still works.
 *
 *   PKCS11_SHIM_MODULE      path of the real module (required)
 *   PKCS11_SHIM_FAULT_FILE  while this file exists, C_EncryptInit, C_Encrypt,
 *                           C_DecryptInit, C_Decrypt, C_SignInit, C_Sign and
 *                           C_GenerateRandom return CKR_DEVICE_ERROR
 *
 * Built by tests/reliability/test_hsm_faults.py with `cc -shared -fPIC`. Self-contained
 * (no PKCS#11 header needed): the function list is the PKCS#11 v2.40 CK_FUNCTION_LIST, a
 * CK_VERSION followed by 68 function pointers in the order of pkcs11f.h.
 */
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef unsigned long CK_ULONG;
typedef CK_ULONG CK_RV;
typedef void (*CK_FN)(void);
typedef struct { unsigned char major, minor; } CK_VERSION;
typedef struct { CK_VERSION version; CK_FN fn[68]; } FUNCTION_LIST;

#define CKR_GENERAL_ERROR 0x05UL
#define CKR_ARGUMENTS_BAD 0x07UL
#define CKR_DEVICE_ERROR 0x30UL

/* Indices in the function list (pkcs11f.h order). */
enum {
    I_GET_FUNCTION_LIST = 3,
    I_ENCRYPT_INIT = 29, I_ENCRYPT = 30,
    I_DECRYPT_INIT = 33, I_DECRYPT = 34,
    I_SIGN_INIT = 42, I_SIGN = 43,
    I_GENERATE_RANDOM = 64,
};

typedef CK_RV (*init_fn)(CK_ULONG, void *, CK_ULONG);
typedef CK_RV (*crypt_fn)(CK_ULONG, void *, CK_ULONG, void *, CK_ULONG *);
typedef CK_RV (*random_fn)(CK_ULONG, void *, CK_ULONG);
typedef CK_RV (*get_list_fn)(FUNCTION_LIST **);

static FUNCTION_LIST real;
static FUNCTION_LIST shim;
static int loaded;

static int faulty(void) {
    const char *path = getenv("PKCS11_SHIM_FAULT_FILE");
    return path != NULL && access(path, F_OK) == 0;
}

/* The wrappers: the real function, or CKR_DEVICE_ERROR while the fault file exists. */
#define WRAP_INIT(name, index) \
    static CK_RV name(CK_ULONG s, void *m, CK_ULONG k) { \
        return faulty() ? CKR_DEVICE_ERROR : ((init_fn)real.fn[index])(s, m, k); \
    }
#define WRAP_CRYPT(name, index) \
    static CK_RV name(CK_ULONG s, void *d, CK_ULONG n, void *o, CK_ULONG *on) { \
        return faulty() ? CKR_DEVICE_ERROR : ((crypt_fn)real.fn[index])(s, d, n, o, on); \
    }
WRAP_INIT(encrypt_init, I_ENCRYPT_INIT)
WRAP_CRYPT(encrypt, I_ENCRYPT)
WRAP_INIT(decrypt_init, I_DECRYPT_INIT)
WRAP_CRYPT(decrypt, I_DECRYPT)
WRAP_INIT(sign_init, I_SIGN_INIT)
WRAP_CRYPT(sign, I_SIGN)

static CK_RV generate_random(CK_ULONG s, void *out, CK_ULONG n) {
    return faulty() ? CKR_DEVICE_ERROR : ((random_fn)real.fn[I_GENERATE_RANDOM])(s, out, n);
}

CK_RV C_GetFunctionList(FUNCTION_LIST **list) {
    if (list == NULL) return CKR_ARGUMENTS_BAD;
    if (!loaded) {
        const char *path = getenv("PKCS11_SHIM_MODULE");
        void *handle = path ? dlopen(path, RTLD_NOW | RTLD_LOCAL) : NULL;
        get_list_fn get = handle ? (get_list_fn)dlsym(handle, "C_GetFunctionList") : NULL;
        FUNCTION_LIST *inner = NULL;
        if (get == NULL || get(&inner) != 0 || inner == NULL) return CKR_GENERAL_ERROR;
        memcpy(&real, inner, sizeof real);
        memcpy(&shim, inner, sizeof shim);
        shim.fn[I_GET_FUNCTION_LIST] = (CK_FN)C_GetFunctionList;
        shim.fn[I_ENCRYPT_INIT] = (CK_FN)encrypt_init;
        shim.fn[I_ENCRYPT] = (CK_FN)encrypt;
        shim.fn[I_DECRYPT_INIT] = (CK_FN)decrypt_init;
        shim.fn[I_DECRYPT] = (CK_FN)decrypt;
        shim.fn[I_SIGN_INIT] = (CK_FN)sign_init;
        shim.fn[I_SIGN] = (CK_FN)sign;
        shim.fn[I_GENERATE_RANDOM] = (CK_FN)generate_random;
        loaded = 1;
    }
    *list = &shim;
    return 0;
}
