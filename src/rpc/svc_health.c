/*
 * grpc.health.v1.Health/Check (grpc/grpc doc/health-checking.md): SERVING for the server ("")
 * and each service it implements, NOT_SERVING when /readyz would say 503 (draining, or the
 * data folder was removed), NOT_FOUND for a service it does not know.
 */
#include <string.h>

#include "proto/grpc/health/v1/health.pb-c.h"
#include "rpc/internal.h"
#include "rpc/ops.h"
#include "rpc/svc.h"

static void check_on_message(struct rpc_call *c, const uint8_t *msg, size_t len)
{
    ProtobufCAllocator *a = rpc_call_pb_allocator(c);
    Grpc__Health__V1__HealthCheckRequest *req =
        rpc_call_unpack(c, &grpc__health__v1__health_check_request__descriptor, msg, len, 0, NULL);
    if (!req) return;
    bool known = rpc_svc_is_known_service(req->service, strlen(req->service));
    grpc__health__v1__health_check_request__free_unpacked(req, a);
    if (!known) {
        rpc_call_finish(c, PROTO_STATUS_NOT_FOUND, "unknown service");
        return;
    }
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    resp.status = rpc_ops_unready(c->rc)
                      ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
                      : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    if (rpc_call_send_message(c, &resp.base) < 0) {
        rpc_call_finish_err(c, -ENOMEM, NULL);
        return;
    }
    rpc_call_finish(c, PROTO_STATUS_OK, NULL);
}

const struct rpc_method rpc_svc_health_check = {
    .path = "/grpc.health.v1.Health/Check",
    .route = RPC_ROUTE_GRPC_HEALTH_CHECK,
    .on_message = check_on_message,
};
