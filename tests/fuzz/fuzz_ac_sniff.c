/*
 * Fuzz target: the sniff that tells an opaque /ac/ value from an ActionResult
 * (rpc_ac_check_may_decode, src/rpc/ac_check.c), on the first piece of a value read over
 * HTTP/1.1. It must never call opaque what protobuf-c decodes (else a GET would serve a
 * stored result whose outputs are gone, skipping the completeness check):
 *
 * - when protobuf-c unpacks the value as an ActionResult (or as a Tree, any message at all
 *   of the ones a value may hold), every prefix of it may decode;
 * - a verdict of "cannot decode" on a prefix stands for every longer prefix;
 * - nothing is read past the prefix it is given, and no memory is kept.
 *
 * Input layout: byte 0 picks the prefix lengths tried besides 0, 1 and all; the rest is the
 * value.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/assert.h"
#include "proto/alloc.h"
#include "proto/build/bazel/remote/execution/v2/remote_execution.pb-c.h"
#include "rpc/ac_check.h"

/* Calls the sniff on an exact copy of <p>/<len>, so ASan sees a read past the prefix. */
static bool may_decode(const uint8_t *p, size_t len, uint64_t total)
{
    uint8_t *copy = malloc(len ? len : 1);
    ASSERT(copy);
    if (len) memcpy(copy, p, len);
    bool may = rpc_ac_check_may_decode(copy, len, total);
    free(copy);
    return may;
}

static bool decodes(const uint8_t *p, size_t len, ProtobufCAllocator *pa)
{
    Build__Bazel__Remote__Execution__V2__ActionResult *ar =
        build__bazel__remote__execution__v2__action_result__unpack(pa, len, p);
    if (ar) {
        build__bazel__remote__execution__v2__action_result__free_unpacked(ar, pa);
        return true;
    }
    Build__Bazel__Remote__Execution__V2__Tree *t =
        build__bazel__remote__execution__v2__tree__unpack(pa, len, p);
    if (t) {
        build__bazel__remote__execution__v2__tree__free_unpacked(t, pa);
        return true;
    }
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    static struct proto_alloc a;
    ProtobufCAllocator pa;
    proto_alloc_init(&a);
    proto_alloc_protobuf(&a, &pa);
    const uint8_t *p = data + 1;
    size_t len = size - 1;
    bool whole = may_decode(p, len, len);
    if (decodes(p, len, &pa)) ASSERT(whole);
    ASSERT(base_counter_get(&a.bytes) == 0);
    /* Prefixes in increasing length: once refused, refused for good. */
    size_t step = (size_t)data[0] % 16 + 1;
    bool refused = false;
    /* Bounded: <at> grows by at least 1 each turn up to <len>. */
    for (size_t at = 0; at <= len; at += step) {
        bool may = may_decode(p, at, len);
        ASSERT(!(refused && may));
        refused = !may;
    }
    ASSERT(!(refused && whole));
    return 0;
}
