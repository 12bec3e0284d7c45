/* SHA-256 of a file (OpenSSL's libcrypto), for checkpoint manifests. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <openssl/evp.h>
#include "machrt/sys.h"

mrt_status mrt_sys_sha256_file(const char *op, const char *path, char hex[MRT_SHA256_HEX])
{
    FILE *f = fopen(path, "rb");
    if (!f) return mrt_fail(MRT_ERR_IO, "cannot read %s: %s", path, strerror(errno));
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    unsigned char buf[1 << 16];
    size_t n;
    while (ok && (n = fread(buf, 1, sizeof buf, f)) > 0) ok = EVP_DigestUpdate(ctx, buf, n);
    int read_error = ferror(f);
    fclose(f);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (ok) ok = EVP_DigestFinal_ex(ctx, md, &len);
    EVP_MD_CTX_free(ctx);
    if (read_error) return mrt_fail(MRT_ERR_IO, "cannot read %s: read error", path);
    if (!ok || len != 32) return mrt_fail(MRT_ERR_IO, "%s: sha256 of %s failed", op, path);
    for (unsigned int i = 0; i < len; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return MRT_OK;
}
