/**
 * A stand-in for vsmartcard's vpcd speaking its protocol over TCP (2-byte big-endian length, then
 * the payload), for tests of the card side without pcscd.
 */
import net from 'node:net';
import { VPCD_LOOPBACK_HOST } from '../../daemon/reader/vpcd-card-server.js';

export class VpcdPeer {
  private buffered = Buffer.alloc(0);
  private waiters: ((b: Buffer) => void)[] = [];

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (c: Buffer) => {
      this.buffered = Buffer.concat([this.buffered, c]);
      while (this.buffered.length >= 2 && this.buffered.length >= 2 + this.buffered.readUInt16BE(0)) {
        const len = this.buffered.readUInt16BE(0);
        const msg = this.buffered.subarray(2, 2 + len);
        this.buffered = this.buffered.subarray(2 + len);
        this.waiters.shift()?.(Buffer.from(msg));
      }
    });
  }

  /** A connection the test accepted as vpcd in its normal mode (the card side connected to it). */
  static wrap(socket: net.Socket): VpcdPeer {
    return new VpcdPeer(socket);
  }

  static connect(port: number): Promise<VpcdPeer> {
    return new Promise((resolve, reject) => {
      const s = net.createConnection({ host: VPCD_LOOPBACK_HOST, port });
      s.once('connect', () => resolve(new VpcdPeer(s)));
      s.once('error', reject);
    });
  }

  send(payload: Uint8Array): void {
    const out = Buffer.alloc(2 + payload.length);
    out.writeUInt16BE(payload.length, 0);
    out.set(payload, 2);
    this.socket.write(out);
  }

  request(payload: Uint8Array): Promise<Buffer> {
    const p = new Promise<Buffer>((resolve) => this.waiters.push(resolve));
    this.send(payload);
    return p;
  }
}
