/* libcublas.so.12 for the faiss-gpu wheel on a machine that has only CUDA 13's cuBLAS (see README.md).
 *
 * faiss-gpu 1.15.1 is built against CUDA 12 and calls eight cuBLAS functions, versioned libcublas.so.12.
 * Their prototypes and the enum values FAISS passes are the same in CUDA 12.9 and 13 (checked against both
 * headers), so this library defines them under that version and forwards each call to libcublas.so.13,
 * opened from $RSRETRIEVE_CUBLAS13 (else the loader's search path). Built once with
 *     cc -shared -fPIC -O2 -Wl,-soname,libcublas.so.12 -Wl,--version-script=cublas12.map -o libcublas.so.12 cublas12_shim.c -ldl
 * Handles and streams are opaque pointers, enums are ints: the x86-64 calling convention is all that matters.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

enum { NOT_INITIALIZED = 1 }; /* CUBLAS_STATUS_NOT_INITIALIZED: returned when CUDA 13's cuBLAS is missing */

static void *cublas13(void) {
    static void *library;
    if (library == NULL) {
        const char *path = getenv("RSRETRIEVE_CUBLAS13");
        library = dlopen(path != NULL && *path ? path : "libcublas.so.13", RTLD_NOW | RTLD_LOCAL);
        if (library == NULL) fprintf(stderr, "cublas12 shim: cannot open CUDA 13 cuBLAS: %s\n", dlerror());
    }
    return library;
}

static void *resolve(const char *name) {
    void *library = cublas13();
    void *function = library == NULL ? NULL : dlsym(library, name);
    if (library != NULL && function == NULL) fprintf(stderr, "cublas12 shim: %s not in CUDA 13 cuBLAS\n", name);
    return function;
}

#define FORWARD(name, params, args)                          \
    int name params {                                        \
        static int(*real) params;                            \
        if (real == NULL) real = (int(*) params)resolve(#name); \
        return real == NULL ? NOT_INITIALIZED : real args;   \
    }

typedef void *handle_t;

FORWARD(cublasCreate_v2, (handle_t * handle), (handle))
FORWARD(cublasDestroy_v2, (handle_t handle), (handle))
FORWARD(cublasSetStream_v2, (handle_t handle, void *stream), (handle, stream))
FORWARD(cublasSetMathMode, (handle_t handle, int mode), (handle, mode))
FORWARD(cublasGetMathMode, (handle_t handle, int *mode), (handle, mode))
FORWARD(cublasSgemmEx,
        (handle_t h, int ta, int tb, int m, int n, int k, const float *alpha, const void *a, int at, int lda,
         const void *b, int bt, int ldb, const float *beta, void *c, int ct, int ldc),
        (h, ta, tb, m, n, k, alpha, a, at, lda, b, bt, ldb, beta, c, ct, ldc))
FORWARD(cublasGemmEx,
        (handle_t h, int ta, int tb, int m, int n, int k, const void *alpha, const void *a, int at, int lda,
         const void *b, int bt, int ldb, const void *beta, void *c, int ct, int ldc, int compute, int algo),
        (h, ta, tb, m, n, k, alpha, a, at, lda, b, bt, ldb, beta, c, ct, ldc, compute, algo))
FORWARD(cublasGemmStridedBatchedEx,
        (handle_t h, int ta, int tb, int m, int n, int k, const void *alpha, const void *a, int at, int lda,
         long long sa, const void *b, int bt, int ldb, long long sb, const void *beta, void *c, int ct, int ldc,
         long long sc, int batches, int compute, int algo),
        (h, ta, tb, m, n, k, alpha, a, at, lda, sa, b, bt, ldb, sb, beta, c, ct, ldc, sc, batches, compute, algo))
