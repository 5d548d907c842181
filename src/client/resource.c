/*
 * ByteStream resource names and upload ids (client side).
 */
#include "client/resource.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "base/clock.h"

static bool is_keyword(const char *seg, size_t len)
{
    static const char *const words[] = {
        "blobs",      "uploads",      "actions",          "actionResults",
        "operations", "capabilities", "compressed-blobs",
    };
    for (size_t i = 0; i < ARRAY_LEN(words); i++) {
        if (strlen(words[i]) == len && memcmp(words[i], seg, len) == 0) return true;
    }
    return false;
}

int client_resource_check_instance(const char *instance, const char **why)
{
    size_t len = strlen(instance);
    if (len == 0) return 0;
    if (len > CLIENT_INSTANCE_MAX) {
        *why = "instance name longer than 512 bytes";
        return -EINVAL;
    }
    const char *seg = instance;
    /* Bounded by the name's segments. */
    for (;;) {
        const char *slash = strchr(seg, '/');
        size_t n = slash ? (size_t)(slash - seg) : strlen(seg);
        if (n == 0) {
            *why = "instance name has an empty segment (leading, trailing or double '/')";
            return -EINVAL;
        }
        if (is_keyword(seg, n)) {
            *why = "instance name has a segment that is a REAPI keyword (blobs, uploads, ...)";
            return -EINVAL;
        }
        if (!slash) return 0;
        seg = slash + 1;
    }
}

static int resource_format(char *out, size_t size, const char *instance, const char *uuid,
                           const struct client_digest *d, bool zstd)
{
    char hex[2 * CLIENT_HASH_SIZE + 1];
    for (size_t i = 0; i < CLIENT_HASH_SIZE; i++) {
        static const char digits[] = "0123456789abcdef";
        hex[2 * i] = digits[d->hash[i] >> 4];
        hex[2 * i + 1] = digits[d->hash[i] & 15];
    }
    hex[2 * CLIENT_HASH_SIZE] = '\0';
    int n = snprintf(out, size, "%s%s%s%s%s%s/%s/%llu", instance, instance[0] ? "/" : "",
                     uuid ? "uploads/" : "", uuid ? uuid : "", uuid ? "/" : "",
                     zstd ? "compressed-blobs/zstd" : "blobs", hex, (unsigned long long)d->size);
    if (n < 0 || (size_t)n >= size) return -ENAMETOOLONG;
    return n;
}

int client_resource_read(char *out, size_t size, const char *instance,
                         const struct client_digest *d, bool zstd)
{
    return resource_format(out, size, instance, NULL, d, zstd);
}

int client_resource_write(char *out, size_t size, const char *instance, const char *uuid,
                          const struct client_digest *d, bool zstd)
{
    ASSERT(uuid && uuid[0]);
    return resource_format(out, size, instance, uuid, d, zstd);
}

void client_resource_uuid(char out[CLIENT_UUID_SIZE])
{
    uint8_t b[16];
    ssize_t n = getrandom(b, sizeof(b), GRND_NONBLOCK);
    if (n != (ssize_t)sizeof(b)) {
        /* No entropy yet (early boot): an upload id need only be unique, not secret. */
        uint64_t t = base_clock_now_ns() ^ base_clock_wall_ns();
        for (size_t i = 0; i < sizeof(b); i++) {
            b[i] = (uint8_t)(t >> ((i % 8) * 8)) ^ (uint8_t)(i * 151u);
        }
    }
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    (void)snprintf(out, CLIENT_UUID_SIZE,
                   "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
                   b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
                   b[14], b[15]);
}
