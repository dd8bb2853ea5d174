/*
 * cardlink reader bridge: the wire protocol between the IFD handler (in pcscd)
 * and the cardlink daemon. Specified in docs/reader-bridge.md; the Node side
 * is daemon/reader/bridge-socket-client.ts. Keep the three in step.
 *
 * Every message: 4-byte big-endian length L of the rest, then 1 byte type,
 * 1 byte slot, then L - 2 bytes of payload.
 *
 * The handler speaks first: WELCOME right after accepting (or GOODBYE busy,
 * or a plain close for a peer uid that is not allowed). The client's first
 * message must be HELLO, within CL_HELLO_TIMEOUT_MS.
 */
#ifndef CARDLINK_BRIDGE_PROTOCOL_H
#define CARDLINK_BRIDGE_PROTOCOL_H

/** Protocol version carried in HELLO and WELCOME. */
#define CL_BRIDGE_VERSION 1

/** Bytes of the length prefix. */
#define CL_LENGTH_PREFIX 4
/** Bytes of type + slot, counted in the length. */
#define CL_HEADER_AFTER_LENGTH 2
/**
 * Largest payload: a C-APDU or R-APDU up to pcsc-lite's
 * MAX_BUFFER_SIZE_EXTENDED (4 + 3 + 65536 + 3 + 2 = 65548 bytes).
 */
#define CL_MAX_PAYLOAD 65548
/** Largest value of the length prefix. */
#define CL_MAX_LENGTH (CL_HEADER_AFTER_LENGTH + CL_MAX_PAYLOAD)
/** Largest ATR, ISO/IEC 7816-3 (pcsc-lite MAX_ATR_SIZE). */
#define CL_MAX_ATR 33

/* Client (daemon) -> handler. */
#define CL_MSG_HELLO 0x01    /* slot 0, payload: version (1 byte); first message */
#define CL_MSG_INSERT 0x02   /* payload: ATR (1..33 bytes, TS 3B or 3F) */
#define CL_MSG_REMOVE 0x03   /* no payload; answered with REMOVED */
#define CL_MSG_RESPONSE 0x04 /* payload: R-APDU (2..65548 bytes) */

/* Handler -> client. */
#define CL_MSG_WELCOME 0x81   /* slot 0, payload: version, number of slots; first message */
#define CL_MSG_POWER_ON 0x82  /* no payload: cold reset, the card clears volatile state */
#define CL_MSG_POWER_OFF 0x83 /* no payload */
#define CL_MSG_RESET 0x84     /* no payload: warm reset, the card clears volatile state */
#define CL_MSG_APDU 0x85      /* payload: C-APDU (1..65548 bytes); answer with one RESPONSE */
#define CL_MSG_REMOVED 0x86   /* no payload: the REMOVE of this slot is done */
#define CL_MSG_GOODBYE 0x87   /* slot 0, payload: reason (1 byte); the handler closes next */

/* GOODBYE reasons. */
#define CL_BYE_PROTOCOL 1 /* malformed or unexpected message */
#define CL_BYE_VERSION 2  /* HELLO with a version the handler does not speak */
#define CL_BYE_TIMEOUT 3  /* a RESPONSE did not arrive in time */
#define CL_BYE_BUSY 4     /* another client is connected */
#define CL_BYE_SHUTDOWN 5 /* the reader is being closed by pcscd */

#endif
