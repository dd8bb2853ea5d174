/**
 * A small client of the card server's wire protocol for tests: one WebSocket, HELLO, AUTH or
 * RESUME with a device proof, numbered requests awaited by id, pushes collected in order.
 */
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import WebSocket from 'ws';
import { secretHash, signDeviceProof } from '../../protocol/wire/device-proof.js';
import { decodeFrame, encodeFrame } from '../../protocol/wire/frame-codec.js';
import { FRAME_FLAG, type Frame, type FrameOf } from '../../protocol/wire/frames.js';
import { PROTOCOL_VERSION } from '../../protocol/wire/limits.js';

export interface DeviceKey {
  readonly privateKey: KeyObject;
  readonly spki: Uint8Array;
}

export function newDeviceKey(): DeviceKey {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  return { privateKey, spki: new Uint8Array(publicKey.export({ type: 'spki', format: 'der' })) };
}

/** Distributes an Omit over the frame union (keeps each member's own fields). */
type RequestBody<F> = F extends Frame ? Omit<F, 'id' | 'flags'> : never;
export type Request = RequestBody<Frame>;

export interface Closed {
  code: number;
  reason: string;
}

export class SessionClient {
  readonly pushes: Frame[] = [];
  private readonly waiting = new Map<number, (f: Frame) => void>();
  private readonly handshake: Frame[] = [];
  private handshakeWaiter: ((f: Frame) => void) | undefined;
  private nextId = 1;
  nonce: Uint8Array = new Uint8Array(0);
  session: FrameOf<'AUTH_OK'> | undefined;
  resumeToken: Uint8Array = new Uint8Array(0);
  readonly closed: Promise<Closed>;

  private constructor(
    readonly ws: WebSocket,
    readonly url: string,
  ) {
    this.closed = new Promise((resolve) =>
      ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })),
    );
    ws.on('message', (data: Buffer) => {
      const frame = decodeFrame(new Uint8Array(data));
      if (frame.id !== 0 && this.waiting.has(frame.id)) {
        const done = this.waiting.get(frame.id)!;
        this.waiting.delete(frame.id);
        done(frame);
      } else if (['TAKEN_OVER', 'CARD_CHANGED', 'TOKEN_EXPIRING'].includes(frame.type)) {
        this.pushes.push(frame);
      } else if (this.handshakeWaiter) {
        const w = this.handshakeWaiter;
        this.handshakeWaiter = undefined;
        w(frame);
      } else {
        this.handshake.push(frame);
      }
    });
  }

  /** `localAddress` picks the source address (127.0.0.2, ...: another client, as the server sees it). */
  static async connect(
    url: string,
    ca: string,
    options: { localAddress?: string } = {},
  ): Promise<SessionClient> {
    const ws = new WebSocket(url, { ca, perMessageDeflate: false, ...options });
    ws.on('error', () => undefined);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    return new SessionClient(ws, url);
  }

  /** The next handshake frame (HELLO_ACK, AUTH_OK, RESUME_OK, or an ERROR). */
  nextHandshakeFrame(): Promise<Frame> {
    const queued = this.handshake.shift();
    if (queued) return Promise.resolve(queued);
    return new Promise((resolve) => (this.handshakeWaiter = resolve));
  }

  sendRaw(bytes: Uint8Array | string): void {
    this.ws.send(bytes);
  }

  sendFrame(frame: Frame): void {
    this.ws.send(encodeFrame(frame));
  }

  async hello(): Promise<FrameOf<'HELLO_ACK'>> {
    this.sendFrame({
      type: 'HELLO',
      id: 0,
      flags: 0,
      versions: [PROTOCOL_VERSION],
      clientName: 'cardlink-test/1',
    });
    const ack = await this.nextHandshakeFrame();
    if (ack.type !== 'HELLO_ACK') throw new Error(`expected HELLO_ACK, got ${ack.type}`);
    this.nonce = ack.nonce;
    return ack;
  }

  /** AUTH; resolves with AUTH_OK or the ERROR the server sent. */
  async auth(
    accessToken: string,
    device: DeviceKey,
    deviceName: string,
    signWith?: KeyObject,
  ): Promise<Frame> {
    const signature = signDeviceProof(signWith ?? device.privateKey, {
      purpose: 'auth',
      nonce: this.nonce,
      secretHash: secretHash(accessToken),
      serverUrl: this.url,
      protocolVersion: PROTOCOL_VERSION,
    });
    this.sendFrame({
      type: 'AUTH',
      id: 0,
      flags: 0,
      accessToken,
      devicePublicKey: device.spki,
      signature,
      deviceName,
    });
    const answer = await this.nextHandshakeFrame();
    if (answer.type === 'AUTH_OK') {
      this.session = answer;
      this.resumeToken = answer.resumeToken;
    }
    return answer;
  }

  async resume(
    sessionId: string,
    resumeToken: Uint8Array,
    device: DeviceKey,
    lastAcked: number,
  ): Promise<Frame> {
    const signature = signDeviceProof(device.privateKey, {
      purpose: 'resume',
      nonce: this.nonce,
      secretHash: secretHash(resumeToken),
      serverUrl: this.url,
      protocolVersion: PROTOCOL_VERSION,
    });
    this.sendFrame({
      type: 'RESUME',
      id: 0,
      flags: 0,
      sessionId,
      resumeToken,
      lastAckedSequence: lastAcked,
      signature,
    });
    const answer = await this.nextHandshakeFrame();
    if (answer.type === 'RESUME_OK') this.resumeToken = answer.resumeToken;
    return answer;
  }

  /** Continues the numbering of a resumed session. */
  setNextId(id: number): void {
    this.nextId = id;
  }

  /** Sends a numbered request and resolves with its answer. */
  request(
    body: Request,
    options: { id?: number; retransmit?: boolean; flags?: number } = {},
  ): Promise<Frame> {
    const id = options.id ?? this.nextId++;
    const flags = (options.flags ?? 0) | (options.retransmit ? FRAME_FLAG.RETRANSMIT : 0);
    const frame = { ...body, id, flags } as Frame;
    const answer = new Promise<Frame>((resolve) => this.waiting.set(id, resolve));
    this.sendFrame(frame);
    return answer;
  }

  async apdu(handle: number, hex: string): Promise<string> {
    const answer = await this.request({
      type: 'APDU',
      handle,
      command: Buffer.from(hex.replace(/\s+/g, ''), 'hex'),
    });
    if (answer.type !== 'APDU_RESULT')
      throw new Error(`APDU answered ${answer.type} ${answer.type === 'ERROR' ? answer.code : ''}`);
    return Buffer.from(answer.response).toString('hex').toUpperCase();
  }

  close(): void {
    this.ws.close(1000);
  }
}
