/**
 * Child-process side of test/support/pcsc-client.ts: one PC/SC application (one npm pcsclite
 * context) driven over IPC. Runs with the parent's environment (PCSCLITE_CSOCK_NAME).
 *
 * Why a separate process: npm pcsclite 1.0.1 holds a reader's mutex during SCardTransmit (on a
 * worker thread) and takes the same mutex on the main thread to deliver that reader's status
 * events. When the card answering the APDU is served by the same process (tests, benchmarks), the
 * main thread then blocks while pcscd waits for it: a deadlock until the driver's transmit timeout.
 */
import type pcsclite from 'pcsclite';
import { openPcsc } from '../../daemon/reader/pcsc-presence.js';

/** How long `connect` waits for pcscd to announce the reader. */
const READER_WAIT_MS = 5000;

export type AppRequest =
  | { id: number; op: 'readers' }
  | { id: number; op: 'connect'; reader: string; share: 'exclusive' | 'shared' }
  | { id: number; op: 'transmit'; reader: string; apdu: string; max: number }
  | { id: number; op: 'disconnect'; reader: string; disposition: 'leave' | 'reset' | 'unpower' }
  | { id: number; op: 'bench'; reader: string; apdu: string; n: number; warmup: number };

export type AppReply =
  { id: number; ok: true; value?: unknown } | { id: number; ok: false; error: string; code?: string };

interface Connection {
  reader: pcsclite.CardReader;
  protocol: number;
}

const connections = new Map<string, Connection>();
let pcsc: pcsclite.PCSCLite;

function reader(name: string): Promise<pcsclite.CardReader> {
  const known = pcsc.readers[name];
  if (known) return Promise.resolve(known);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      pcsc.off('reader', onReader);
      reject(
        new Error(`reader "${name}" not announced by pcscd; known: ${Object.keys(pcsc.readers).join(', ')}`),
      );
    }, READER_WAIT_MS);
    const onReader = (r: pcsclite.CardReader): void => {
      if (r.name !== name) return;
      clearTimeout(timer);
      pcsc.off('reader', onReader);
      resolve(r);
    };
    pcsc.on('reader', onReader);
  });
}

function connection(name: string): Connection {
  const c = connections.get(name);
  if (!c) throw new Error(`not connected to "${name}"`);
  return c;
}

function transmit(c: Connection, apdu: Buffer, max: number): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    c.reader.transmit(apdu, max, c.protocol, (err, data) => (err ? reject(err) : resolve(data))),
  );
}

async function handle(req: AppRequest): Promise<unknown> {
  switch (req.op) {
    case 'readers':
      return Object.keys(pcsc.readers);
    case 'connect': {
      const r = await reader(req.reader);
      const share_mode = req.share === 'exclusive' ? r.SCARD_SHARE_EXCLUSIVE : r.SCARD_SHARE_SHARED;
      const protocol = await new Promise<number>((resolve, reject) =>
        r.connect({ share_mode, protocol: r.SCARD_PROTOCOL_T0 | r.SCARD_PROTOCOL_T1 }, (err, p) =>
          err ? reject(err) : resolve(p),
        ),
      );
      connections.set(req.reader, { reader: r, protocol });
      return protocol;
    }
    case 'transmit':
      return (await transmit(connection(req.reader), Buffer.from(req.apdu, 'base64'), req.max)).toString(
        'base64',
      );
    case 'disconnect': {
      const c = connection(req.reader);
      const d = {
        leave: c.reader.SCARD_LEAVE_CARD,
        reset: c.reader.SCARD_RESET_CARD,
        unpower: c.reader.SCARD_UNPOWER_CARD,
      }[req.disposition];
      await new Promise<void>((resolve, reject) =>
        c.reader.disconnect(d, (err) => (err ? reject(err) : resolve())),
      );
      connections.delete(req.reader);
      return undefined;
    }
    case 'bench': {
      const c = connection(req.reader);
      const apdu = Buffer.from(req.apdu, 'base64');
      for (let i = 0; i < req.warmup; i++) await transmit(c, apdu, 65538);
      const times: number[] = [];
      for (let i = 0; i < req.n; i++) {
        const t0 = process.hrtime.bigint();
        const r = await transmit(c, apdu, 65538);
        times.push(Number(process.hrtime.bigint() - t0) / 1e6);
        if (r.length < 2) throw new Error('short answer');
      }
      return times;
    }
  }
}

const send = (reply: AppReply): void => {
  process.send?.(reply);
};

try {
  pcsc = openPcsc();
  process.on('message', (req: AppRequest) => {
    handle(req).then(
      (value) => send({ id: req.id, ok: true, value }),
      (err: unknown) =>
        send({
          id: req.id,
          ok: false,
          error: err instanceof Error ? err.message : String(err),
          code: (err as { code?: string }).code,
        }),
    );
  });
  send({ id: 0, ok: true, value: 'ready' });
} catch (err) {
  send({
    id: 0,
    ok: false,
    error: err instanceof Error ? err.message : String(err),
    code: (err as { code?: string }).code,
  });
  process.exitCode = 1;
  process.disconnect?.();
}
// The parent ends this process (SIGTERM) when the application closes.
process.on('disconnect', () => process.exit(0));
