/**
 * A VirtualCard that logs each command and answer at debug level (daemon/log/apdu-trace.ts masks
 * the data of PIN, key and authentication commands). Inserted in place of the card only when the
 * log level is debug, so normal operation pays nothing for it.
 */
import type { Logger } from '../../protocol/log.js';
import { describeApdu } from '../log/apdu-trace.js';
import type { VirtualCard } from '../reader/virtual-card.js';

export function tracedCard(card: VirtualCard, logger: Logger, cardId: string): VirtualCard {
  return {
    get atr() {
      return card.atr;
    },
    reset() {
      logger.debug('card reset', { card: cardId });
      card.reset();
    },
    async transmit(apdu: Uint8Array): Promise<Uint8Array> {
      const started = process.hrtime.bigint();
      const response = await card.transmit(apdu);
      logger.debug('apdu', {
        card: cardId,
        ...describeApdu(apdu, response),
        ms: Number(process.hrtime.bigint() - started) / 1e6,
      });
      return response;
    },
  };
}
