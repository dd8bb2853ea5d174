/**
 * The user's cards in the reader: after each new session the manager lists the user's cards,
 * opens each, and inserts a FrontCard for it into a slot; it takes them out again on takeover,
 * logout, token expiry, or when the server stays unreachable past the grace period.
 *
 * Opening: a session that began with a token a person just handed over opens with takeOver (a
 * login on this machine logs the card out elsewhere, as the product promises). A session the
 * daemon reopened by itself (after the server lost the old one) does not: a card someone took
 * meanwhile stays with them and shows as taken over here.
 *
 * Slots: a card keeps its slot while it is managed, so middleware that remembers the reader name
 * finds it again after a reconnect.
 *
 * A new session reopens the cards: one still in the reader stays there when its contents are the
 * same (a PC/SC program keeps its handle through an outage), and is re-inserted when they changed
 * meanwhile (new certificates from a renewal, an enrollment or a short-lived 9A), as for
 * CARD_CHANGED, so PKCS#11 modules that cached the old certificates read the card again.
 */
import { EventEmitter } from 'node:events';
import type { ReferenceBlocking, ReferenceKind } from '../../apdu/piv/core/index.js';
import { decodeSnapshot, sameSnapshotContents, type CardSnapshot } from '../../apdu/piv/core/index.js';
import { FrontCard } from './front-card.js';
import { CardlinkError } from '../../protocol/errors.js';
import type { Logger } from '../../protocol/log.js';
import type { CardEntry, FrameOf } from '../../protocol/wire/frames.js';
import type { CardStatus } from '../control/control-protocol.js';
import type { ReaderSlots } from '../reader/bridge-reader.js';
import type { VirtualCard } from '../reader/virtual-card.js';
import { errorFromFrame, type ServerLink, type SessionInfo } from '../session/server-link.js';
import { RemoteCard } from './remote-card.js';
import { tracedCard } from './traced-card.js';

export interface CardManagerEvents {
  inserted: [CardStatus];
  removed: [CardStatus];
  /** The server changed the card (new certificates): it was re-inserted with the new contents. */
  changed: [CardStatus];
  'taken-over': [CardStatus & { takenOverBy: string }];
  /** An answer showed the card's PIN or PUK blocked, where it was not known to be. */
  blocked: [CardStatus & { reference: ReferenceKind }];
  error: [CardlinkError];
}

interface ManagedCard {
  readonly cardId: string;
  label: string;
  slot: number | undefined;
  state: CardStatus['state'];
  takenOverBy: string | undefined;
  front: FrontCard | undefined;
  readonly remote: RemoteCard;
  /** What the card's answers last said about its PIN and PUK (reference-blocking.ts). */
  readonly blocked: Record<ReferenceKind, boolean>;
}

export interface CardManagerOptions {
  readonly link: ServerLink;
  readonly reader: ReaderSlots;
  /** How long cards stay inserted while the server is unreachable. */
  readonly graceMs: number;
  readonly logger: Logger;
}

/** How long `enroll` waits for the enrolled card to come back into the reader (CARD_CHANGED). */
export const ENROLL_REINSERT_WAIT_MS = 10_000;

export class CardManager extends EventEmitter<CardManagerEvents> {
  private readonly cards = new Map<string, ManagedCard>();
  private graceTimer: NodeJS.Timeout | undefined;
  /** Serialises syncs: a second session event waits for the first sync to finish. */
  private syncing: Promise<void> = Promise.resolve();
  /** The next sync opens with takeOver (a person asked: login or "connect"). */
  private takeOverNext = false;

  constructor(private readonly options: CardManagerOptions) {
    super();
    const { link } = options;
    link.on('session', (info) => {
      this.cancelGrace();
      this.syncing = this.syncing.then(() => this.sync(info)).catch((error: unknown) => this.report(error));
    });
    link.on('down', () => this.startGrace());
    link.on('token-refused', () => void this.removeAll('the access token was refused or expired', true));
    link.on('push', (frame) => {
      if (frame.type === 'TAKEN_OVER') void this.onTakenOver(frame);
      else if (frame.type === 'CARD_CHANGED') {
        // After any sync in progress: a sync may be opening the card this frame is about.
        this.syncing = this.syncing.then(() => this.onChanged(frame)).catch((e: unknown) => this.report(e));
      }
    });
  }

  /** The cards as the user should see them, by slot. */
  list(): CardStatus[] {
    return [...this.cards.values()]
      .map((c) => this.statusOf(c))
      .sort((a, b) => (a.slot ?? 99) - (b.slot ?? 99) || a.cardId.localeCompare(b.cardId));
  }

  /**
   * Runs one PIN command (CHANGE REFERENCE DATA, RESET RETRY COUNTER) on a card this daemon has in
   * the reader, by the same way the host's commands take (the remote card: the server's card state
   * checks and counts), and resolves with the card's answer. What the answer says of the PIN and
   * PUK updates the card's blocked flags (and the `blocked` event) as for the host's commands.
   * ERR_CARD_NOT_FOUND when the card is not one of the user's, or not in this reader.
   */
  async transmitToCard(cardId: string, command: Uint8Array): Promise<Uint8Array> {
    const card = this.cards.get(cardId);
    if (!card || card.state !== 'inserted' || card.remote.handle === undefined) {
      throw new CardlinkError(
        'ERR_CARD_NOT_FOUND',
        card ? `card ${card.label} is not in the reader: connect first` : 'no such card in the reader',
        { card: cardId.slice(0, 64) },
      );
    }
    return card.remote.transmit(command, false);
  }

  /**
   * Self-service enrollment (ENROLL) of the card `cardId`, or of the only card in the reader.
   * Resolves once the server answered and the card is back in the reader with the new
   * certificates (the CARD_CHANGED that follows; see reinsert), or after
   * `ENROLL_REINSERT_WAIT_MS` without it. The server's refusal comes back as its error.
   */
  async enroll(cardId?: string): Promise<{ cardId: string; label: string; certificates: number }> {
    const inserted = [...this.cards.values()].filter((c) => c.state === 'inserted');
    const card =
      cardId === undefined ? (inserted.length === 1 ? inserted[0] : undefined) : this.cards.get(cardId);
    if (!card || card.state !== 'inserted' || card.remote.handle === undefined) {
      throw new CardlinkError(
        'ERR_CARD_NOT_FOUND',
        cardId === undefined
          ? inserted.length === 0
            ? 'no card in the reader: log in or connect first'
            : 'several cards are in the reader: name one (--card)'
          : 'no such card in the reader',
        cardId === undefined ? {} : { card: cardId.slice(0, 64) },
      );
    }
    const handle = card.remote.handle;
    let changed!: () => void;
    const reinserted = new Promise<void>((resolve) => (changed = resolve));
    const onChanged = (status: CardStatus): void => {
      if (status.cardId === card.cardId) changed();
    };
    this.on('changed', onChanged);
    try {
      const answer = await this.options.link.request({ type: 'ENROLL', handle });
      if (answer.type !== 'ENROLLED')
        throw errorFromFrame(answer, `card ${card.label} could not be enrolled`);
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        reinserted,
        new Promise<void>((resolve) => (timer = setTimeout(resolve, ENROLL_REINSERT_WAIT_MS))),
      ]);
      clearTimeout(timer);
      return { cardId: card.cardId, label: card.label, certificates: answer.certificates };
    } finally {
      this.off('changed', onChanged);
    }
  }

  /** A person asked for the cards ("connect"): the next sync takes them over; sync now if possible. */
  async claimAll(): Promise<void> {
    this.takeOverNext = true;
    const info = this.options.link.sessionInfo;
    if (info) {
      this.syncing = this.syncing.then(() => this.sync(info)).catch((error: unknown) => this.report(error));
      await this.syncing;
    }
  }

  /** Logout: closes the cards on the server (best effort) and takes them out of the reader. */
  async closeAll(): Promise<void> {
    const { link } = this.options;
    await Promise.all(
      [...this.cards.values()].map(async (c) => {
        const handle = c.remote.handle;
        if (handle !== undefined && link.sessionInfo)
          await link.request({ type: 'CLOSE_CARD', handle }).catch(() => undefined);
      }),
    );
    await this.removeAll('logged out', true, true);
  }

  /**
   * Takes every card out of the reader. `sessionOver`: their handles are gone too (token refused,
   * logout); otherwise (grace period passed) a resumed session puts them back in.
   */
  async removeAll(why: string, sessionOver = false, forget = false): Promise<void> {
    this.cancelGrace();
    for (const card of [...this.cards.values()]) {
      await this.takeOut(card, why);
      if (sessionOver) card.remote.detach();
      if (forget) this.cards.delete(card.cardId);
    }
  }

  // --- session events ------------------------------------------------------------------------

  private async sync(info: SessionInfo): Promise<void> {
    const { link, logger } = this.options;
    if (info.kind === 'new') {
      // Handles of the old session mean nothing now (and may name other cards): drop them first.
      for (const card of this.cards.values()) card.remote.detach();
    }
    if (info.deviceStatus === 'pending') {
      this.report(
        new CardlinkError(
          'ERR_DEVICE_PENDING',
          `this device (${info.deviceId}) waits for an administrator to approve it; log in again afterwards`,
        ),
      );
    }
    const listed = await link.request({ type: 'LIST_CARDS' });
    if (listed.type !== 'CARDS') throw errorFromFrame(listed, 'the card server did not list the cards');
    const takeOver = info.fromFreshToken || this.takeOverNext;
    this.takeOverNext = false;
    const present = new Set(listed.cards.map((c) => c.cardId));
    for (const card of [...this.cards.values()]) {
      if (!present.has(card.cardId)) {
        await this.takeOut(card, 'the card no longer exists');
        this.cards.delete(card.cardId);
      }
    }
    for (const entry of listed.cards) {
      const card = this.cards.get(entry.cardId) ?? this.adopt(entry);
      card.label = entry.label;
      if (card.remote.handle !== undefined) {
        if (card.state !== 'inserted') this.putIn(card);
        continue;
      }
      if (card.state === 'taken-over' && !takeOver) continue;
      if (info.deviceStatus === 'pending') continue;
      await this.open(card, entry, takeOver);
    }
    logger.info('cards synchronised', {
      listed: listed.cards.length,
      inserted: [...this.cards.values()].filter((c) => c.state === 'inserted').length,
    });
  }

  private adopt(entry: CardEntry): ManagedCard {
    const card: ManagedCard = {
      cardId: entry.cardId,
      label: entry.label,
      slot: undefined,
      state: 'removed',
      takenOverBy: undefined,
      front: undefined,
      remote: new RemoteCard(
        this.options.link,
        entry.cardId,
        (by) => void this.markTakenOver(card, by),
        (seen) => this.noteReferences(card, seen),
      ),
      blocked: { pin: false, puk: false },
    };
    this.cards.set(entry.cardId, card);
    return card;
  }

  private async open(card: ManagedCard, entry: CardEntry, takeOver: boolean): Promise<void> {
    const answer = await this.options.link.request({ type: 'OPEN_CARD', cardId: card.cardId, takeOver });
    if (answer.type === 'ERROR') {
      if (answer.code === 'ERR_CARD_BUSY') {
        await this.markTakenOver(card, entry.openOn || 'another device');
        return;
      }
      this.report(errorFromFrame(answer, `card ${card.cardId} could not be opened`));
      return;
    }
    if (answer.type !== 'CARD_OPENED') throw errorFromFrame(answer, 'unexpected answer to OPEN_CARD');
    if (!this.options.link.verifySnapshot(card.cardId, answer.snapshot, answer.snapshotSignature)) {
      // Nothing is answered from a snapshot the server did not sign: the card stays (or goes) out.
      void this.options.link.request({ type: 'CLOSE_CARD', handle: answer.handle }).catch(() => undefined);
      await this.takeOut(card, 'its snapshot is not signed by the card server');
      this.report(
        new CardlinkError(
          'ERR_SNAPSHOT_INVALID',
          `the snapshot of card ${card.cardId} is not signed by the card server`,
        ),
      );
      return;
    }
    const snapshot = decodeSnapshot(answer.snapshot);
    // What the reader showed until now (a stale front's snapshot is older still: changed too).
    const changed = card.front !== undefined && !sameSnapshotContents(card.front.snapshot, snapshot);
    if (card.front) card.front.resync(snapshot);
    else card.front = new FrontCard(snapshot, card.remote);
    card.remote.attach(answer.handle);
    card.takenOverBy = undefined;
    if (changed && card.state === 'inserted')
      await this.replug(card, card.front, 'card contents changed while away: re-inserted');
    else this.putIn(card);
  }

  private putIn(card: ManagedCard): void {
    if (card.state === 'inserted' || !card.front) return;
    const slot = card.slot ?? this.freeSlot();
    if (slot === undefined) {
      this.report(
        new CardlinkError('ERR_SLOT_UNAVAILABLE', `no free reader slot for card ${card.label}`, {
          slots: this.options.reader.slotCount,
        }),
      );
      return;
    }
    card.slot = slot;
    this.options.reader.insert(slot, this.readerCard(card, card.front));
    card.state = 'inserted';
    this.options.logger.info('card inserted', { card: card.cardId, slot });
    this.emit('inserted', this.statusOf(card));
  }

  /** What the reader gets for the card: its front, traced when debug logging is on. */
  private readerCard(card: ManagedCard, front: FrontCard): VirtualCard {
    return this.options.logger.isDebugEnabled() ? tracedCard(front, this.options.logger, card.cardId) : front;
  }

  private freeSlot(): number | undefined {
    const used = new Set([...this.cards.values()].map((c) => c.slot).filter((s) => s !== undefined));
    for (let slot = 0; slot < this.options.reader.slotCount; slot++) if (!used.has(slot)) return slot;
    return undefined;
  }

  /** Out of the reader; waiting commands fail at once (6F00) rather than at their timeout. */
  private async takeOut(card: ManagedCard, why: string): Promise<void> {
    card.remote.abortWaiting();
    if (card.state !== 'inserted' || card.slot === undefined) return;
    const status = this.statusOf(card);
    card.state = 'removed';
    await this.options.reader.remove(card.slot);
    this.options.logger.info('card removed', { card: card.cardId, slot: card.slot, why });
    this.emit('removed', status);
  }

  private async markTakenOver(card: ManagedCard, byDeviceName: string): Promise<void> {
    if (card.state === 'taken-over') return;
    card.remote.detach();
    await this.takeOut(card, `taken over by ${byDeviceName}`);
    card.state = 'taken-over';
    card.takenOverBy = byDeviceName;
    this.options.logger.info('card taken over', { card: card.cardId, by: byDeviceName });
    this.emit('taken-over', { ...this.statusOf(card), takenOverBy: byDeviceName });
  }

  /** Tells (once) when an answer shows a reference blocked; an answer that it is usable clears it. */
  private noteReferences(card: ManagedCard, seen: ReferenceBlocking): void {
    for (const reference of ['pin', 'puk'] as const) {
      const blocked = seen[reference];
      if (blocked === undefined || blocked === card.blocked[reference]) continue;
      card.blocked[reference] = blocked;
      this.options.logger.info(blocked ? 'card reference blocked' : 'card reference usable again', {
        card: card.cardId,
        reference,
      });
      if (blocked) this.emit('blocked', { ...this.statusOf(card), reference });
    }
  }

  private async onTakenOver(frame: FrameOf<'TAKEN_OVER'>): Promise<void> {
    const card = this.cards.get(frame.cardId);
    if (!card || card.remote.handle !== frame.handle) return;
    // Release the server's handle; its answer does not matter.
    void this.options.link.request({ type: 'CLOSE_CARD', handle: frame.handle }).catch(() => undefined);
    await this.markTakenOver(card, frame.byDeviceName);
  }

  private async onChanged(frame: FrameOf<'CARD_CHANGED'>): Promise<void> {
    const card = this.cards.get(frame.cardId);
    if (!card) return;
    if (frame.change === 'updated') {
      await this.reinsert(card);
      return;
    }
    await this.takeOut(card, 'the card was removed on the server');
    card.remote.detach();
    this.cards.delete(card.cardId);
  }

  /**
   * The server changed the card's contents (CARD_CHANGED `updated`, e.g. new certificates from an
   * enrollment): fetch the new snapshot, then take the card out of its slot and put it back at
   * once. The re-insertion is what makes PC/SC middleware read the card again: PC/SC has no
   * "contents changed" event, and PKCS#11 modules that stay loaded (a browser's NSS, ssh-agent,
   * p11-kit) keep the certificates they read until the card is removed. The host loses its PIN
   * verification with it, as the server's reloaded card has (it starts like a reset card). The
   * reader driver counts every insert and remove, so pcscd sees even an immediate remove+insert.
   */
  private async reinsert(card: ManagedCard): Promise<void> {
    const front = card.front;
    if (!front) return;
    let snapshot: CardSnapshot;
    try {
      snapshot = await card.remote.snapshot();
    } catch (error) {
      // The next local answer fetches it again (and fails the same way if it still cannot).
      front.invalidate();
      this.report(error);
      return;
    }
    front.resync(snapshot);
    await this.replug(card, front, 'card changed on the server: re-inserted');
  }

  /**
   * Takes the inserted card out of its slot and puts it back at once with `front` (whose snapshot
   * is the new one): the only way to tell PC/SC middleware that the contents changed.
   */
  private async replug(card: ManagedCard, front: FrontCard, message: string): Promise<void> {
    const slot = card.slot;
    if (card.state !== 'inserted' || slot === undefined) return;
    card.remote.abortWaiting();
    await this.options.reader.remove(slot);
    // A takeover or removal while the slot was empty leaves it empty.
    if (card.state !== 'inserted' || card.front !== front) return;
    this.options.reader.insert(slot, this.readerCard(card, front));
    this.options.logger.info(message, { card: card.cardId, slot });
    this.emit('changed', this.statusOf(card));
  }

  private startGrace(): void {
    if (this.graceTimer || ![...this.cards.values()].some((c) => c.state === 'inserted')) return;
    this.graceTimer = setTimeout(() => {
      this.graceTimer = undefined;
      void this.removeAll('the card server stayed unreachable past the grace period');
    }, this.options.graceMs);
    this.graceTimer.unref();
  }

  private cancelGrace(): void {
    clearTimeout(this.graceTimer);
    this.graceTimer = undefined;
  }

  private statusOf(card: ManagedCard): CardStatus {
    const inserted = card.state === 'inserted' && card.slot !== undefined;
    return {
      cardId: card.cardId,
      label: card.label,
      state: card.state,
      ...(inserted ? { slot: card.slot, readerName: this.options.reader.readerName(card.slot!) } : {}),
      ...(card.takenOverBy ? { takenOverBy: card.takenOverBy } : {}),
      ...(card.blocked.pin ? { pinBlocked: true as const } : {}),
      ...(card.blocked.puk ? { pukBlocked: true as const } : {}),
      ...(card.front ? { apdus: { local: card.front.counters.local, remote: card.remote.roundTrips } } : {}),
    };
  }

  private report(error: unknown): void {
    const e =
      error instanceof CardlinkError
        ? error
        : new CardlinkError('ERR_INTERNAL', 'the cards could not be loaded');
    this.options.logger.warn('card manager', { code: e.code, error: e.message });
    this.emit('error', e);
  }
}
