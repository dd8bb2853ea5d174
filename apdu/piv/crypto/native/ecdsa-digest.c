/*
 * cardlink ECDSA over a digest: a Node-API addon around OpenSSL's EVP_PKEY_sign.
 *
 * A PIV card signs the digest the host computed (SP 800-73-4 Part 2, GENERAL AUTHENTICATE), but
 * node:crypto only signs messages it hashes itself. This addon signs the given bytes as the
 * digest with the OpenSSL that Node itself links (its symbols are exported by the node binary),
 * so the arithmetic is OpenSSL's constant-time P-256/P-384 code and the nonce is OpenSSL's
 * hedged one (random bytes mixed with the private key and the digest).
 *
 * JavaScript API (see ../native-ecdsa.ts):
 *   loadKey(pkcs8Der: Buffer): External   parses a PKCS#8 EC private key once
 *   signDigest(key: External, digest: Buffer): Buffer   DER ECDSA-Sig-Value
 * The key and its signing context live in OpenSSL memory (freed, and cleansed by OpenSSL, when
 * the External is collected); JavaScript keeps only the handle.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <node_api.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

/* Longest digest accepted (SHA-512); the caller already refuses longer input. */
#define MAX_DIGEST_BYTES 64
/* A DER ECDSA signature for P-384 is at most 104 bytes; leave room. */
#define MAX_SIGNATURE_BYTES 160

/* Marks the Externals this addon made, so signDigest refuses any other External. */
static const napi_type_tag KEY_TAG = {0x636172646c696e6bULL, 0x6563647361b00001ULL};

static napi_value throw_error(napi_env env, const char *code, const char *message) {
  napi_throw_error(env, code, message);
  return NULL;
}

/* A loaded key with its signing context, initialized once: EVP_PKEY_sign may be called on the
 * same context again and again (each call draws a fresh nonce). */
typedef struct {
  EVP_PKEY *key;
  EVP_PKEY_CTX *ctx;
} key_handle;

static void free_handle(key_handle *handle) {
  EVP_PKEY_CTX_free(handle->ctx);
  EVP_PKEY_free(handle->key);
  free(handle);
}

static void free_key(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free_handle((key_handle *)data);
}

static napi_value load_key(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 1)
    return throw_error(env, "ERR_NATIVE_ARGUMENT", "loadKey takes one Buffer");
  bool is_buffer = false;
  napi_is_buffer(env, argv[0], &is_buffer);
  if (!is_buffer) return throw_error(env, "ERR_NATIVE_ARGUMENT", "loadKey takes one Buffer");
  void *data = NULL;
  size_t length = 0;
  if (napi_get_buffer_info(env, argv[0], &data, &length) != napi_ok || length == 0 || length > 4096)
    return throw_error(env, "ERR_NATIVE_ARGUMENT", "key DER has an invalid length");

  const unsigned char *cursor = (const unsigned char *)data;
  PKCS8_PRIV_KEY_INFO *p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &cursor, (long)length);
  if (p8 == NULL || cursor != (const unsigned char *)data + length) {
    PKCS8_PRIV_KEY_INFO_free(p8);
    return throw_error(env, "ERR_NATIVE_KEY", "key is not a PKCS#8 private key");
  }
  EVP_PKEY *key = EVP_PKCS82PKEY(p8);
  PKCS8_PRIV_KEY_INFO_free(p8);
  if (key == NULL) return throw_error(env, "ERR_NATIVE_KEY", "key is not a PKCS#8 private key");
  if (EVP_PKEY_get_base_id(key) != EVP_PKEY_EC) {
    EVP_PKEY_free(key);
    return throw_error(env, "ERR_NATIVE_KEY", "key is not an EC key");
  }
  key_handle *handle = calloc(1, sizeof *handle);
  if (handle == NULL) {
    EVP_PKEY_free(key);
    return throw_error(env, "ERR_NATIVE_MEMORY", "cannot allocate the key");
  }
  handle->key = key;
  handle->ctx = EVP_PKEY_CTX_new(key, NULL);
  if (handle->ctx == NULL || EVP_PKEY_sign_init(handle->ctx) != 1) {
    free_handle(handle);
    return throw_error(env, "ERR_NATIVE_KEY", "key cannot sign");
  }
  napi_value external;
  if (napi_create_external(env, handle, free_key, NULL, &external) != napi_ok) {
    free_handle(handle);
    return throw_error(env, "ERR_NATIVE_MEMORY", "cannot wrap the key");
  }
  if (napi_type_tag_object(env, external, &KEY_TAG) != napi_ok)
    return throw_error(env, "ERR_NATIVE_MEMORY", "cannot tag the key");
  return external;
}

static napi_value sign_digest(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 2)
    return throw_error(env, "ERR_NATIVE_ARGUMENT", "signDigest takes a key and a Buffer");
  napi_valuetype type;
  napi_typeof(env, argv[0], &type);
  bool tagged = false;
  if (type != napi_external || napi_check_object_type_tag(env, argv[0], &KEY_TAG, &tagged) != napi_ok || !tagged)
    return throw_error(env, "ERR_NATIVE_ARGUMENT", "first argument is not a key from loadKey");
  key_handle *handle = NULL;
  napi_get_value_external(env, argv[0], (void **)&handle);
  bool is_buffer = false;
  napi_is_buffer(env, argv[1], &is_buffer);
  if (!is_buffer) return throw_error(env, "ERR_NATIVE_ARGUMENT", "digest is not a Buffer");
  void *digest = NULL;
  size_t digest_length = 0;
  napi_get_buffer_info(env, argv[1], &digest, &digest_length);
  if (handle == NULL || digest_length == 0 || digest_length > MAX_DIGEST_BYTES)
    return throw_error(env, "ERR_NATIVE_ARGUMENT", "digest must be 1..64 bytes");

  unsigned char signature[MAX_SIGNATURE_BYTES];
  size_t signature_length = sizeof signature;
  if (EVP_PKEY_sign(handle->ctx, signature, &signature_length, (const unsigned char *)digest, digest_length) != 1) return throw_error(env, "ERR_NATIVE_SIGN", "ECDSA signing failed");

  napi_value result;
  if (napi_create_buffer_copy(env, signature_length, signature, NULL, &result) != napi_ok)
    return throw_error(env, "ERR_NATIVE_MEMORY", "cannot allocate the signature");
  return result;
}

NAPI_MODULE_INIT(/* napi_env env, napi_value exports */) {
  napi_property_descriptor methods[] = {
      {"loadKey", NULL, load_key, NULL, NULL, NULL, napi_default, NULL},
      {"signDigest", NULL, sign_digest, NULL, NULL, NULL, napi_default, NULL},
  };
  if (napi_define_properties(env, exports, sizeof methods / sizeof methods[0], methods) != napi_ok) return NULL;
  return exports;
}
