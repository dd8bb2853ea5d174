/*
 * cardlink TCP_QUICKACK: a Node-API addon that sets one socket option Node does not expose.
 *
 * Debian 12's vpcd (virtualsmartcard 0.8) sends each message as two send() calls (the 2-byte length,
 * then the payload) without TCP_NODELAY: Nagle holds the payload until the length is acknowledged,
 * and Linux delays that acknowledgement by up to ~40 ms because the card side has nothing to send
 * yet. TCP_QUICKACK makes the kernel acknowledge at once, but Linux leaves quick-ACK mode again on
 * its own (after our reply it expects request/response traffic and goes back to delaying), so the
 * option is set again before every read: see ../vpcd-card-server.ts and docs/reader-vpcd.md.
 *
 * JavaScript API (see ../tcp-quickack.ts):
 *   quickAck(fd: number): void   setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, 1); throws on failure
 */
#include <errno.h>
#include <string.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <node_api.h>

static napi_value quick_ack(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd = -1;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 1 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, "ERR_NATIVE_ARGUMENT", "quickAck takes one file descriptor");
    return NULL;
  }
  int on = 1;
  if (setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &on, sizeof on) != 0) {
    /* errno names the reason (EBADF, ENOTSOCK, EOPNOTSUPP); nothing secret is involved. */
    napi_throw_error(env, "ERR_NATIVE_SOCKET_OPTION", strerror(errno));
    return NULL;
  }
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value fn;
  if (napi_create_function(env, "quickAck", NAPI_AUTO_LENGTH, quick_ack, NULL, &fn) != napi_ok ||
      napi_set_named_property(env, exports, "quickAck", fn) != napi_ok)
    return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
