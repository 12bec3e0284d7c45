/* SHA-256 (OpenSSL's libcrypto): the digest stream, and a file's digest
 * for checkpoint manifests. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <openssl/evp.h>
#include "machrt/sys.h"

/* mrt_sha256 is libcrypto's context under a name of machrt's. */
static EVP_MD_CTX *ctx_of(mrt_sha256 *h) { return (EVP_MD_CTX *)h; }

mrt_sha256 *mrt_sha256_begin(void)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx && !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
        EVP_MD_CTX_free(ctx);
        ctx = NULL;
    }
    return (mrt_sha256 *)ctx;
}

int mrt_sha256_add(mrt_sha256 *h, const void *p, size_t n)
{
    return h != NULL && (n == 0 || EVP_DigestUpdate(ctx_of(h), p, n));
}

int mrt_sha256_end(mrt_sha256 *h, char hex[MRT_SHA256_HEX])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    int ok = h != NULL && EVP_DigestFinal_ex(ctx_of(h), md, &len) && len == 32;
    EVP_MD_CTX_free(ctx_of(h));
    if (ok)
        for (unsigned int i = 0; i < len; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return ok;
}

mrt_status mrt_sys_sha256_file(const char *op, const char *path, char hex[MRT_SHA256_HEX])
{
    FILE *f = fopen(path, "rb");
    if (!f) return mrt_fail(MRT_ERR_IO, "cannot read %s: %s", path, strerror(errno));
    mrt_sha256 *h = mrt_sha256_begin();
    int ok = h != NULL;
    unsigned char buf[1 << 16];
    size_t n;
    while (ok && (n = fread(buf, 1, sizeof buf, f)) > 0) ok = mrt_sha256_add(h, buf, n);
    int read_error = ferror(f);
    fclose(f);
    ok = mrt_sha256_end(h, hex) && ok;
    if (read_error) return mrt_fail(MRT_ERR_IO, "cannot read %s: read error", path);
    if (!ok) return mrt_fail(MRT_ERR_IO, "%s: sha256 of %s failed", op, path);
    return MRT_OK;
}
